"""Classification metrics (scikit-learn) and the Fréchet distance between feature sets."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in `y_true` or `y_pred`.

    Classes absent from both would score an undefined 0 and only lower every model alike.
    """
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def classification_report_flat(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """accuracy, balanced_accuracy (UAR), macro_f1, then precision/recall/f1/support per class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(f"need as many predictions as labels, at least one (got {len(y_true)}, {len(y_pred)})")
    with warnings.catch_warnings():
        # balanced accuracy warns when a predicted class never occurs in y_true; that is expected here.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        report: dict[str, float] = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": macro_f1(y_true, y_pred),
        }
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(len(classes)), zero_division=0
    )
    for index, name in enumerate(classes):
        report[f"precision_{name}"] = float(precision[index])
        report[f"recall_{name}"] = float(recall[index])
        report[f"f1_{name}"] = float(f1[index])
        report[f"support_{name}"] = int(support[index])
    return report


def confusion_rows(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> list[dict[str, str]]:
    """One {"actual", "predicted"} row per sample: the input of DVC's `confusion` plot template."""
    return [
        {"actual": classes[int(actual)], "predicted": classes[int(predicted)]}
        for actual, predicted in zip(y_true, y_pred, strict=True)
    ]


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (as in FID).

    ||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^½), with the trace of the matrix square root taken
    from the eigenvalues of the symmetric S_a^½ S_b S_a^½: real and stable where sqrtm of the
    non-symmetric product can return complex noise.
    """
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays of the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two samples in each feature set to fit a covariance")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _symmetric_sqrt(cov_a)
    cross_eigenvalues = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_cross = np.sqrt(np.clip(cross_eigenvalues, 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_cross
    return float(max(distance, 0.0))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
