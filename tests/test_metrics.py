"""Metrics against hand-computed values and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from fersynth.metrics import classification_report_flat, confusion_rows, frechet_distance, macro_f1

CLASSES = ("angry", "happy", "sad")


def test_report_matches_hand_computation() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    report = classification_report_flat(y_true, y_pred, CLASSES)
    # angry: P 1/2 R 1/2; happy: P 2/3 R 1; sad: P 1 R 1/2.
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert report["precision_happy"] == pytest.approx(2 / 3)
    assert report["recall_sad"] == pytest.approx(1 / 2)
    assert report["f1_angry"] == pytest.approx(1 / 2)
    assert report["f1_happy"] == pytest.approx(0.8)
    assert report["f1_sad"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((1 / 2 + 0.8 + 2 / 3) / 3)
    assert report["support_angry"] == 2 and isinstance(report["support_angry"], int)
    assert list(report)[:3] == ["accuracy", "balanced_accuracy", "macro_f1"]


def test_report_keeps_keys_of_absent_classes() -> None:
    report = classification_report_flat(np.array([0, 1]), np.array([0, 1]), CLASSES)
    assert report["support_sad"] == 0 and report["f1_sad"] == 0.0
    assert report["macro_f1"] == pytest.approx(1.0)  # an absent, never-predicted class does not count
    assert macro_f1(np.array([0, 1]), np.array([0, 2])) == pytest.approx((1 + 0 + 0) / 3)


def test_report_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        classification_report_flat(np.array([0, 1]), np.array([0]), CLASSES)


def test_confusion_rows_name_both_classes() -> None:
    rows = confusion_rows(np.array([0, 2]), np.array([1, 2]), CLASSES)
    assert rows == [{"actual": "angry", "predicted": "happy"}, {"actual": "sad", "predicted": "sad"}]


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    features = np.random.default_rng(0).normal(size=(200, 5))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_closed_form_in_one_dimension() -> None:
    a = np.random.default_rng(1).normal(size=(500, 1))
    b = 2 * a + 3  # same shape, mean shifted and spread doubled
    mean_a, var_a = a.mean(), a.var(ddof=1)
    expected = (mean_a - (2 * mean_a + 3)) ** 2 + (np.sqrt(var_a) - 2 * np.sqrt(var_a)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_sqrtm_formula() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 4))
    b = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4)) + 1.0
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_frechet_distance_rejects_unusable_input() -> None:
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
