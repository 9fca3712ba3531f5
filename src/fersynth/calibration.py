"""Calibrate synthetic faces with teacher classifiers trained on real images only.

Teachers: `ensemble_size` classifiers trained on the real train split (seeds seed, seed+1, ...) and
checkpoint-selected on the real val split; their mean softmax scores every synthetic image. They are
cached one directory per teacher, keyed on everything that determines its weights (teacher config,
its seed, the classes, a fingerprint of the real train+val data): a threshold or policy change, or a
larger ensemble, reuses what is already trained.

Policies (`CalibrateConfig.policy`):
- `filter`: keep an image when the teachers' argmax is its intended class and that class's
  probability (then also the maximum) reaches `threshold`; the label stays the intended one.
- `relabel`: keep every image, labelled with the teachers' argmax and its probability as confidence
  (`threshold` is not used).
- `soft`: keep the images whose maximum probability reaches `threshold` (0 keeps all) and store the
  whole probability vector as soft label; the hard label is the argmax. Thresholding here drops the
  near-uniform vectors that would teach the student little but noise.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from fersynth.config import CalibrateConfig, ClassifierConfig
from fersynth.datasets.format import NO_LABEL, Dataset, read_dataset
from fersynth.errors import DataError
from fersynth.io import atomic_directory, write_json
from fersynth.metrics import frechet_distance, macro_f1
from fersynth.training import extract_features, fit_classifier, load_classifier, predict_proba, save_classifier

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher.pt"
TEACHER_INFO_FILE = "teacher.json"


@dataclass(frozen=True)
class Decision:
    """Per synthetic image: kept or not, its label, confidence and (soft policy) probability vector."""

    keep: np.ndarray  # (N,) bool
    labels: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float32
    soft_labels: np.ndarray | None  # (N, K) float32, soft policy only


@dataclass(frozen=True)
class TeacherEnsemble:
    """Teachers in eval mode, each with its macro-F1 on the real validation split."""

    models: Sequence[nn.Module]
    val_macro_f1: Sequence[float]

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Mean softmax of the teachers, (N, K) float32 (N may be 0)."""
        return np.mean([predict_proba(model, images) for model in self.models], axis=0).astype(np.float32)


@dataclass(frozen=True)
class CalibrationResult:
    dataset: Dataset  # the kept synthetic images, labelled by the policy
    metrics: dict[str, float | int]
    histogram_png: bytes


def decide(proba: np.ndarray, intended: np.ndarray, policy: str, threshold: float) -> Decision:
    """Apply a calibration policy to teacher probabilities (N, K) of images meant to show `intended`."""
    predicted = proba.argmax(axis=1).astype(np.int64)
    top = proba.max(axis=1, initial=0.0).astype(np.float32)
    if policy == "filter":
        intended_probability = proba[np.arange(len(proba)), intended].astype(np.float32)
        keep = (predicted == intended) & (intended_probability >= threshold)
        return Decision(keep, intended.astype(np.int64), intended_probability, None)
    if policy == "relabel":
        return Decision(np.ones(len(proba), dtype=bool), predicted, top, None)
    if policy == "soft":
        return Decision(top >= threshold, predicted, top, proba.astype(np.float32))
    raise ValueError(f"unknown calibration policy {policy!r}")


def apply_decision(synthetic: Dataset, intended: np.ndarray, decision: Decision) -> Dataset:
    """The kept rows with the decision's labels; source and intended label are kept."""
    labelled = replace(
        synthetic,
        labels=decision.labels,
        intended=intended,
        confidence=decision.confidence,
        soft_labels=decision.soft_labels,
    )
    return labelled.subset(decision.keep)


def calibration_metrics(
    proba: np.ndarray, intended: np.ndarray, decision: Decision, classes: Sequence[str]
) -> dict[str, float | int]:
    """Flat metrics of one calibration, per intended class and overall.

    `mean_confidence_<c>` is the teachers' mean probability of class c over all images generated as c,
    whatever the policy kept: it measures how recognisable the generator's c faces are.
    `labelled_<c>` counts the kept images by their final label (differs from accepted under relabel/soft).
    """
    intended_probability = proba[np.arange(len(proba)), intended]
    kept_labels = decision.labels[decision.keep]
    metrics: dict[str, float | int] = {}
    for index, name in enumerate(classes):
        generated = intended == index
        count = int(generated.sum())
        accepted = int((decision.keep & generated).sum())
        metrics[f"generated_{name}"] = count
        metrics[f"accepted_{name}"] = accepted
        metrics[f"labelled_{name}"] = int((kept_labels == index).sum())
        metrics[f"acceptance_rate_{name}"] = accepted / count if count else 0.0
        metrics[f"mean_confidence_{name}"] = float(intended_probability[generated].mean()) if count else 0.0
    total = len(proba)
    metrics["generated_total"] = total
    metrics["accepted_total"] = int(decision.keep.sum())
    metrics["acceptance_rate"] = metrics["accepted_total"] / total if total else 0.0
    metrics["expression_accuracy"] = float((proba.argmax(axis=1) == intended).mean()) if total else 0.0
    return metrics


def confidence_histogram_png(
    intended_probability: np.ndarray,
    intended: np.ndarray,
    keep: np.ndarray,
    classes: Sequence[str],
    threshold: float | None,
) -> bytes:
    """One panel per intended class: teacher probability of that class, accepted vs rejected.

    `threshold` (None when the policy ignores it) is drawn as a dashed line.
    """
    columns = 4
    rows = -(-len(classes) // columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows))  # no pyplot: no global state, Agg renders the PNG
    axes = figure.subplots(rows, columns, squeeze=False)
    bins = np.linspace(0.0, 1.0, 21)
    for index, axis in enumerate(axes.flat):
        if index >= len(classes):
            axis.set_visible(False)
            continue
        generated = intended == index
        axis.hist(
            [intended_probability[generated & keep], intended_probability[generated & ~keep]],
            bins=bins,
            stacked=True,
            histtype="stepfilled",  # one polygon per series instead of a patch per bar: much faster to draw
            color=["tab:green", "tab:gray"],
            label=["accepted", "rejected"],
        )
        if threshold is not None:
            axis.axvline(threshold, color="tab:red", linestyle="--", label="threshold")
        axis.set_title(f"{classes[index]} (n={int(generated.sum())})", fontsize=9)
        axis.set_xlim(0.0, 1.0)
    axes.flat[0].legend(fontsize=7)
    figure.supxlabel("teacher probability of the intended class")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def data_fingerprint(*datasets: Dataset) -> str:
    """sha256 of images (with their shape) and labels: what a teacher's weights depend on from the data."""
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(repr(dataset.images.shape).encode())
        digest.update(np.ascontiguousarray(dataset.images).data)
        digest.update(np.ascontiguousarray(dataset.labels, dtype=np.int64).data)
    return digest.hexdigest()


def teacher_key(config: ClassifierConfig, seed: int, classes: Sequence[str], fingerprint: str) -> str:
    """Cache key of one teacher: a hash of everything that determines its trained weights."""
    described = {"teacher": config.model_dump(mode="json"), "seed": seed, "classes": list(classes), "data": fingerprint}
    if config.weights_path and Path(config.weights_path).is_file():
        # Same path, new file: the pretrained start changed, so must the key.
        described["weights"] = hashlib.sha256(Path(config.weights_path).read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def load_or_train_teachers(
    train: Dataset, val: Dataset, config: CalibrateConfig, seed: int, cache_dir: Path
) -> TeacherEnsemble:
    """Teachers seed, seed+1, ...: loaded from `cache_dir` when cached, else trained and cached atomically."""
    fingerprint = data_fingerprint(train, val)
    models = []
    for member in range(config.ensemble_size):
        member_seed = seed + member
        entry = Path(cache_dir) / f"teacher-{teacher_key(config.teacher, member_seed, train.classes, fingerprint)}"
        if (entry / TEACHER_FILE).is_file():
            log.info(
                "teacher %d/%d (seed %d): cache hit, loading %s", member + 1, config.ensemble_size, member_seed, entry
            )
            models.append(load_classifier(entry / TEACHER_FILE).model)
            continue
        log.info(
            "teacher %d/%d (seed %d): not cached, training -> %s", member + 1, config.ensemble_size, member_seed, entry
        )
        description = f"teacher {member + 1}/{config.ensemble_size}"
        model = fit_classifier(train, val, config.teacher, seed=member_seed, description=description).model
        with atomic_directory(entry) as staging:
            save_classifier(staging / TEACHER_FILE, model, config.teacher, train.classes, tuple(train.images.shape[1:]))
            info = {"seed": member_seed, "classes": list(train.classes), "data_fingerprint": fingerprint}
            write_json(staging / TEACHER_INFO_FILE, {**info, "config": config.teacher.model_dump(mode="json")})
        models.append(model)
    scores = [macro_f1(val.labels, predict_proba(model, val.images).argmax(axis=1)) for model in models]
    log.info("teacher macro-F1 on real val: %s", ", ".join(f"{score:.3f}" for score in scores))
    return TeacherEnsemble(models=models, val_macro_f1=scores)


def calibrate(
    synthetic: Dataset,
    real: Dataset,
    config: CalibrateConfig,
    seed: int,
    teachers_dir: Path,
    synthetic_name: str = "synthetic set",
    real_name: str = "real set",
) -> CalibrationResult:
    """Score `synthetic` with teachers trained on `real` and keep/relabel it under `config.policy`."""
    is_real = real.sources == "real"
    train, val = real.subset(is_real & (real.splits == "train")), real.subset(is_real & (real.splits == "val"))
    if not len(train) or not len(val):
        raise DataError(f"{real_name}: teachers need real train and val images (found {len(train)} and {len(val)})")
    if len(synthetic) and synthetic.images.shape[1:] != train.images.shape[1:]:
        raise DataError(
            f"{synthetic_name}: images are {synthetic.images.shape[1:]} (H, W, C), "
            f"the real images of {real_name} are {train.images.shape[1:]}"
        )
    if not len(synthetic):
        # A real-only run (nothing generated) should not pay for training teachers it would never use.
        log.info("%s is empty: nothing to calibrate, teachers not trained", synthetic_name)
        return _empty_result(synthetic, real.classes, config)
    teachers = load_or_train_teachers(train, val, config, seed, teachers_dir)
    # Rows generated without an intended class (none so far) count as meant to show their label.
    intended = np.where(synthetic.intended == NO_LABEL, synthetic.labels, synthetic.intended).astype(np.int64)
    proba = teachers.predict_proba(synthetic.images)
    decision = decide(proba, intended, config.policy, config.threshold)
    metrics = calibration_metrics(proba, intended, decision, real.classes)
    metrics["teacher_val_macro_f1"] = float(np.mean(teachers.val_macro_f1))
    metrics["frechet_distance"] = _frechet_to_real(teachers.models[0], train.images, synthetic.images)
    log.info(
        "%s policy (threshold %.2f): kept %d of %d synthetic images; expression accuracy %.3f",
        config.policy,
        config.threshold,
        metrics["accepted_total"],
        metrics["generated_total"],
        metrics["expression_accuracy"],
    )
    intended_probability = proba[np.arange(len(proba)), intended]
    drawn_threshold = None if config.policy == "relabel" else config.threshold
    return CalibrationResult(
        dataset=apply_decision(synthetic, intended, decision),
        metrics=metrics,
        histogram_png=confidence_histogram_png(
            intended_probability, intended, decision.keep, real.classes, drawn_threshold
        ),
    )


def _empty_result(synthetic: Dataset, classes: Sequence[str], config: CalibrateConfig) -> CalibrationResult:
    proba = np.zeros((0, len(classes)), dtype=np.float32)
    intended = np.zeros(0, dtype=np.int64)
    decision = decide(proba, intended, config.policy, config.threshold)
    metrics = calibration_metrics(proba, intended, decision, classes)
    metrics["teacher_val_macro_f1"] = float("nan")
    metrics["frechet_distance"] = float("nan")
    histogram = confidence_histogram_png(np.zeros(0, dtype=np.float32), intended, decision.keep, classes, None)
    return CalibrationResult(dataset=synthetic, metrics=metrics, histogram_png=histogram)


def calibrate_directories(
    input_dir: Path, real_dir: Path, teachers_dir: Path, config: CalibrateConfig, classes: Sequence[str], seed: int
) -> CalibrationResult:
    """Read the generated and the aligned real datasets and calibrate; errors name the directory."""
    synthetic = read_dataset(input_dir, classes)
    real = read_dataset(real_dir, classes)
    return calibrate(synthetic, real, config, seed, teachers_dir, str(input_dir), str(real_dir))


def _frechet_to_real(teacher: nn.Module, real_images: np.ndarray, synthetic_images: np.ndarray) -> float:
    """Fréchet distance between real-train and synthetic features of the first teacher; nan below 2 images."""
    if len(synthetic_images) < 2 or len(real_images) < 2:
        return float("nan")
    return frechet_distance(extract_features(teacher, real_images), extract_features(teacher, synthetic_images))
