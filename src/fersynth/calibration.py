"""Calibrate synthetic faces with teacher classifiers trained on real images only.

Teachers: `ensemble_size` classifiers (seeds seed, seed+1, ...) per class weighting in
`ensemble_class_weightings` (default: the teacher's own), trained on the real train split and
checkpoint-selected on the real val split; their mean softmax scores every synthetic image. They are
cached one directory per teacher, keyed on everything that determines its weights (teacher config,
its seed, the classes, a fingerprint of the real train+val data): a threshold or policy change, or a
larger ensemble, reuses what is already trained. `teacher_checkpoints` replaces them with classifiers
an earlier fersynth run trained (its model.pt), so a recipe's strong student can judge for the next.

Policies (`CalibrateConfig.policy`), under the default `threshold` selection:
- `filter`: keep an image when the teachers' argmax is its intended class and that class's
  probability (then also the maximum) reaches `threshold`; the label stays the intended one.
- `relabel`: keep every image, labelled with the teachers' argmax and its probability as confidence
  (`threshold` is not used).
- `soft`: keep the images whose maximum probability reaches `threshold` (0 keeps all) and store the
  whole probability vector as soft label; the hard label is the argmax. Thresholding here drops the
  near-uniform vectors that would teach the student little but noise.
- `vote` (SynFER's label rectification, arXiv 2410.09865): keep every image; where every teacher's
  argmax is the intended class the image keeps its intended label (one-hot soft label), elsewhere its
  soft label is the teachers' mean softmax and its hard label that mean's argmax. `threshold` is not
  used: SynFER rectifies labels and drops nothing. `vote_agreed_<c>`, `vote_agreed_total` and
  `vote_agreement_rate(_<c>)` count the images whose teachers all agreed with the intended class.

Selections (`CalibrateConfig.selection`) decide which images `filter` and `soft` keep (`relabel` and `vote`
keep every image); the policy still decides their labels. One absolute threshold keeps nothing of a class
the teachers find hard (real disgust faces scored 0.08-0.20), so `quota` and `precision` adapt to each
intended class: they score an image by the teachers' probability of its intended class, whatever their
argmax, and never keep one below `confidence_floor`.
- `threshold` (default): the policy's own rule above, one `threshold` for every class.
- `quota`: the `quota_per_class` most probable images of each intended class (top-k per class, as
  classifier-filtered synthetic data is usually selected); ties go to the earlier image.
- `precision`: class c is held to the lowest t at which "p_c >= t" predicts c with precision
  `target_precision` on the real val split (one-vs-rest, so below 0.5 too); a class that never gets
  there falls back to `threshold`, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from rich.table import Table
from torch import nn

from fersynth.config import CalibrateConfig, ClassifierConfig
from fersynth.datasets.format import NO_LABEL, Dataset
from fersynth.errors import DataError
from fersynth.metrics import frechet_distance, macro_f1
from fersynth.quality import synthetic_quality
from fersynth.registry import Registry
from fersynth.runtime.io import atomic_directory, remove_staging_of, write_json
from fersynth.training import extract_features, fit_classifier, load_classifier, predict_proba, save_classifier

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher.pt"
TEACHER_INFO_FILE = "teacher.json"
CACHE_ENTRY = "{role}-{key}"  # one folder per cached classifier
CACHE_ENTRY_PATTERN = CACHE_ENTRY.format(role="[a-z]+", key="[0-9a-f]{16}")  # any role; teacher_key's 16 hex digits


@dataclass(frozen=True)
class Decision:
    """Per synthetic image: kept or not, its label, confidence and (soft policy) probability vector."""

    keep: np.ndarray  # (N,) bool
    labels: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float32
    soft_labels: np.ndarray | None  # (N, K) float32, soft policy only
    thresholds: np.ndarray  # (K,) float64 per intended class: its threshold (quota: its cut-off), nan if unknown


@dataclass(frozen=True)
class ValScores:
    """The teacher ensemble's probabilities on the real val split, with the true labels."""

    proba: np.ndarray  # (N, K) float32
    labels: np.ndarray  # (N,) int64
    classes: tuple[str, ...]


@dataclass(frozen=True)
class TeacherEnsemble:
    """Teachers in eval mode, each with its macro-F1 on the real validation split, and their mean scores there."""

    models: Sequence[nn.Module]
    val_macro_f1: Sequence[float]  # per member
    val: ValScores
    data_fingerprint: str  # of the real train+val data they learned from: the judge's cache key reuses it

    @property
    def ensemble_val_macro_f1(self) -> float:
        """Macro-F1 of the mean softmax on real val: the figure of what actually selects images."""
        return macro_f1(self.val.labels, self.val.proba.argmax(axis=1))

    def member_proba(self, images: np.ndarray) -> np.ndarray:
        """Each teacher's softmax, (M, N, K) float32 for M teachers (N may be 0)."""
        return np.stack([predict_proba(model, images) for model in self.models])

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Mean softmax of the teachers, (N, K) float32 (N may be 0)."""
        return mean_proba(self.member_proba(images))


def mean_proba(members: np.ndarray) -> np.ndarray:
    """(N, K) float32: the mean over the teachers of their (M, N, K) probabilities."""
    return np.mean(members, axis=0).astype(np.float32)


@dataclass(frozen=True)
class CalibrationResult:
    dataset: Dataset  # the kept synthetic images, labelled by the policy
    figures: dict[str, float | int]
    histogram_png: bytes
    closest_pairs_png: bytes | None  # the judge's closest synthetic/real pairs; None without a judge or images

    def metrics(self) -> dict[str, float | int]:
        """Flat metrics: per intended class and overall (`calibration_metrics`), teachers', quality and judge's."""
        return dict(self.figures)


Selector = Callable[[np.ndarray, np.ndarray, CalibrateConfig, ValScores | None], tuple[np.ndarray, np.ndarray]]


def intended_probability(proba: np.ndarray, intended: np.ndarray) -> np.ndarray:
    """(N,) float32: each image's teacher probability of the class it was generated as."""
    return proba[np.arange(len(proba)), intended].astype(np.float32)


def decide(
    proba: np.ndarray,
    intended: np.ndarray,
    config: CalibrateConfig,
    val: ValScores | None = None,
    members: np.ndarray | None = None,
) -> Decision:
    """Select (`config.selection`) and label (`config.policy`) images meant to show `intended`.

    `proba` are the teachers' mean probabilities (N, K); `val`, their scores on real val, only the
    precision selection needs; `members`, each teacher's probabilities (M, N, K) whose mean `proba` is,
    only the vote policy needs (None: `proba` is the only teacher).
    """
    policy = CALIBRATE_POLICIES[config.policy]
    if members is None:
        members = proba[np.newaxis]
    if members.ndim != 3 or members.shape[1:] != proba.shape:
        raise ValueError(f"per-teacher probabilities {members.shape} do not match the mean's {proba.shape}")
    if policy.selects:
        keep, thresholds = SELECTIONS[config.selection](proba, intended, config, val)
    else:
        keep, thresholds = np.ones(len(proba), dtype=bool), np.zeros(proba.shape[1])  # as if every threshold were 0
    labels, confidence, soft_labels = policy.label(proba, intended, members)
    return Decision(keep, labels, confidence, soft_labels, thresholds)


# (labels (N,) int64, confidence (N,) float32, soft labels (N, K) float32 or None)
Labelling = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class CalibratePolicy:
    """How a kept image is labelled, and whether the selection decides which are kept."""

    # (teachers' mean proba (N, K), intended (N,), each teacher's proba (M, N, K)) -> labelling
    label: Callable[[np.ndarray, np.ndarray, np.ndarray], Labelling]
    selects: bool = True  # False: every image is kept (relabel, vote: the label is the whole decision)
    # The policy's own diagnostics, from (each teacher's proba (M, N, K), intended (N,), classes); None: none
    metrics: Callable[[np.ndarray, np.ndarray, Sequence[str]], dict[str, float | int]] | None = None


CALIBRATE_POLICIES: Registry[CalibratePolicy] = Registry("calibration policy", "calibrate.policy")


def _as_intended(proba: np.ndarray, intended: np.ndarray, members: np.ndarray) -> Labelling:
    """filter: the label it was generated as, with the teachers' probability of it."""
    return intended.astype(np.int64), intended_probability(proba, intended), None


def _teachers_label(proba: np.ndarray, intended: np.ndarray, members: np.ndarray) -> Labelling:
    """relabel: the teachers' most probable class."""
    return proba.argmax(axis=1).astype(np.int64), proba.max(axis=1, initial=0.0).astype(np.float32), None


def _teachers_probabilities(proba: np.ndarray, intended: np.ndarray, members: np.ndarray) -> Labelling:
    """soft: the teachers' whole probability vector (and their top class as the hard label)."""
    labels, confidence, _ = _teachers_label(proba, intended, members)
    return labels, confidence, proba.astype(np.float32)


def experts_agree(members: np.ndarray, intended: np.ndarray) -> np.ndarray:
    """(N,) bool: every teacher's argmax (members (M, N, K)) is the image's intended class."""
    return (members.argmax(axis=2) == intended[np.newaxis]).all(axis=0)


def _vote(proba: np.ndarray, intended: np.ndarray, members: np.ndarray) -> Labelling:
    """vote (SynFER): the intended label, one-hot, where every teacher agrees with it; else the mean softmax.

    Confidence is the mean probability of the final label, as under relabel.
    """
    agreed = experts_agree(members, intended)
    labels = np.where(agreed, intended, proba.argmax(axis=1)).astype(np.int64)
    one_hot = np.eye(proba.shape[1], dtype=np.float32)[intended]
    soft_labels = np.where(agreed[:, np.newaxis], one_hot, proba).astype(np.float32)
    return labels, proba[np.arange(len(proba)), labels].astype(np.float32), soft_labels


CALIBRATE_POLICIES.register("filter")(CalibratePolicy(_as_intended))
CALIBRATE_POLICIES.register("relabel")(CalibratePolicy(_teachers_label, selects=False))
CALIBRATE_POLICIES.register("soft")(CalibratePolicy(_teachers_probabilities))


def vote_metrics(members: np.ndarray, intended: np.ndarray, classes: Sequence[str]) -> dict[str, float | int]:
    """Per intended class and overall: how many images every teacher agreed with (the vote kept their label)."""
    agreed = experts_agree(members, intended)
    metrics: dict[str, float | int] = {}
    for index, name in enumerate(classes):
        generated = intended == index
        count = int(generated.sum())
        metrics[f"vote_agreed_{name}"] = int((agreed & generated).sum())
        metrics[f"vote_agreement_rate_{name}"] = metrics[f"vote_agreed_{name}"] / count if count else 0.0
    metrics["vote_agreed_total"] = int(agreed.sum())
    metrics["vote_agreement_rate"] = metrics["vote_agreed_total"] / len(intended) if len(intended) else 0.0
    return metrics


# SynFER keeps every generated image and only rectifies its label, so no selection applies.
CALIBRATE_POLICIES.register("vote")(CalibratePolicy(_vote, selects=False, metrics=vote_metrics))


def select_by_threshold(
    proba: np.ndarray, intended: np.ndarray, config: CalibrateConfig, val: ValScores | None
) -> tuple[np.ndarray, np.ndarray]:
    """filter: argmax is the intended class at `threshold` or more; soft: any class reaches `threshold`."""
    if config.policy == "soft":
        keep = proba.max(axis=1, initial=0.0) >= config.threshold
    else:
        keep = (proba.argmax(axis=1) == intended) & (intended_probability(proba, intended) >= config.threshold)
    return keep, np.full(proba.shape[1], config.threshold)


def select_by_quota(
    proba: np.ndarray, intended: np.ndarray, config: CalibrateConfig, val: ValScores | None
) -> tuple[np.ndarray, np.ndarray]:
    """The `quota_per_class` most probable images of each intended class at `confidence_floor` or more.

    A class's threshold is the score of its last kept image (the floor when it kept none).
    """
    score = intended_probability(proba, intended)
    keep = np.zeros(len(proba), dtype=bool)
    thresholds = np.full(proba.shape[1], config.confidence_floor)
    for index in range(proba.shape[1]):
        candidates = np.flatnonzero((intended == index) & (score >= config.confidence_floor))
        best = candidates[np.argsort(-score[candidates], kind="stable")[: config.quota_per_class]]
        keep[best] = True
        if len(best):
            thresholds[index] = score[best[-1]]
    return keep, thresholds


def select_by_precision(
    proba: np.ndarray, intended: np.ndarray, config: CalibrateConfig, val: ValScores | None
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose intended-class probability reaches that class's threshold from `precision_thresholds`."""
    if val is None:
        raise ValueError("the precision selection needs the teachers' scores on real val")
    thresholds = precision_thresholds(val, config.target_precision, config.threshold, config.confidence_floor)
    return intended_probability(proba, intended) >= thresholds[intended], thresholds


SELECTIONS: dict[str, Selector] = {
    "threshold": select_by_threshold,
    "quota": select_by_quota,
    "precision": select_by_precision,
}


def precision_thresholds(val: ValScores, target: float, fallback: float, floor: float) -> np.ndarray:
    """(K,) per class c: the lowest t where the val images with p_c >= t are class c at `target` precision or more.

    Candidates are the val scores themselves (between two of them the selected set does not change).
    A class that never reaches `target` gets `fallback`, with a warning; no threshold is below `floor`.
    """
    thresholds = np.full(len(val.classes), fallback, dtype=np.float64)
    for index, name in enumerate(val.classes):
        order = np.argsort(-val.proba[:, index], kind="stable")
        scores = val.proba[order, index]
        precision = np.cumsum(val.labels[order] == index) / np.arange(1, len(scores) + 1)
        # Equal scores are selected together: only the last of each run is a reachable cut.
        reached = np.append(scores[1:] != scores[:-1], True) & (precision >= target)
        if reached.any():
            thresholds[index] = scores[np.flatnonzero(reached)[-1]]
        else:
            best = float(precision.max(initial=0.0))
            log.warning(
                "teachers never reach precision %.2f for %s on real val (best %.2f): using threshold %.2f",
                target,
                name,
                best,
                fallback,
            )
    thresholds = np.maximum(thresholds, floor)
    log.info(
        "per-class thresholds at precision %.2f: %s",
        target,
        ", ".join(f"{name} {value:.3f}" for name, value in zip(val.classes, thresholds, strict=True)),
    )
    return thresholds


def teacher_val_recall(val: ValScores) -> dict[str, float]:
    """`teacher_val_recall_<c>`: the share of real val images of class c the ensemble's argmax calls c (nan if none)."""
    predicted = val.proba.argmax(axis=1)
    recall: dict[str, float] = {}
    for index, name in enumerate(val.classes):
        truth = val.labels == index
        recall[f"teacher_val_recall_{name}"] = (
            float((predicted[truth] == index).mean()) if truth.any() else float("nan")
        )
    return recall


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
    `threshold_<c>` is the threshold class c was held to. `classes_with_nothing_kept` counts the classes
    that were generated but lost every image, each also logged as a warning: merge would silently
    train without their synthetic faces.
    """
    score = intended_probability(proba, intended)
    kept_labels = decision.labels[decision.keep]
    metrics: dict[str, float | int] = {}
    nothing_kept = 0
    for index, name in enumerate(classes):
        generated = intended == index
        count = int(generated.sum())
        accepted = int((decision.keep & generated).sum())
        metrics[f"generated_{name}"] = count
        metrics[f"accepted_{name}"] = accepted
        metrics[f"labelled_{name}"] = int((kept_labels == index).sum())
        metrics[f"acceptance_rate_{name}"] = accepted / count if count else 0.0
        metrics[f"mean_confidence_{name}"] = float(score[generated].mean()) if count else 0.0
        metrics[f"threshold_{name}"] = float(decision.thresholds[index])
        if count and not accepted:
            nothing_kept += 1
            log.warning(
                "none of the %d images generated as %s was kept: the teachers gave them at most %.3f for %s "
                "(threshold %.3f)",
                count,
                name,
                float(score[generated].max()),
                name,
                float(decision.thresholds[index]),
            )
    metrics["classes_with_nothing_kept"] = nothing_kept
    total = len(proba)
    metrics["generated_total"] = total
    metrics["accepted_total"] = int(decision.keep.sum())
    metrics["acceptance_rate"] = metrics["accepted_total"] / total if total else 0.0
    metrics["expression_accuracy"] = float((proba.argmax(axis=1) == intended).mean()) if total else 0.0
    return metrics


def acceptance_table(metrics: Mapping[str, float | int], classes: Sequence[str]) -> Table:
    """Per intended class, from `calibration_metrics`: generated, kept, acceptance, mean confidence, threshold.

    A class that was generated and kept nothing is shown in red.
    """
    table = Table(title=f"calibrate: kept {metrics['accepted_total']} of {metrics['generated_total']} synthetic images")
    table.add_column("class")
    for heading in ("generated", "kept", "acceptance", "mean confidence", "threshold"):
        table.add_column(heading, justify="right")
    for name in classes:
        generated, kept = int(metrics[f"generated_{name}"]), int(metrics[f"accepted_{name}"])
        table.add_row(
            name,
            str(generated),
            str(kept),
            f"{metrics[f'acceptance_rate_{name}']:.1%}" if generated else "-",
            f"{metrics[f'mean_confidence_{name}']:.3f}" if generated else "-",
            _shown(float(metrics[f"threshold_{name}"])),
            style="bold red" if generated and not kept else None,
        )
    rate = f"{metrics['acceptance_rate']:.1%}" if metrics["generated_total"] else "-"
    table.add_row("total", str(metrics["generated_total"]), str(metrics["accepted_total"]), rate, "", "", style="bold")
    return table


def _shown(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def confidence_histogram_png(
    intended_probability: np.ndarray,
    intended: np.ndarray,
    keep: np.ndarray,
    classes: Sequence[str],
    thresholds: np.ndarray | None,
) -> bytes:
    """One panel per intended class: teacher probability of that class, accepted vs rejected.

    The class's threshold (`thresholds`, None when the policy ignores them) is drawn as a dashed line.
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
        if thresholds is not None and not math.isnan(thresholds[index]):
            axis.axvline(thresholds[index], color="tab:red", linestyle="--", label="threshold")
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


def load_or_train_classifier(
    train: Dataset, val: Dataset, config: ClassifierConfig, seed: int, cache_dir: Path, role: str, fingerprint: str
) -> nn.Module:
    """One real-data classifier (a teacher or the judge): loaded from `cache_dir` when cached, else trained there.

    `fingerprint` is `data_fingerprint(train, val)`, hashed once by the caller for all its classifiers.
    """
    entry = Path(cache_dir) / CACHE_ENTRY.format(role=role, key=teacher_key(config, seed, train.classes, fingerprint))
    cached = cached_classifier(entry / TEACHER_FILE, train)
    if cached is not None:
        log.info("%s (seed %d): cache hit, loaded %s", role, seed, entry)
        return cached
    log.info("%s (seed %d): not cached, training -> %s", role, seed, entry)
    model = fit_classifier(train, val, config, seed=seed, description=role, params_key=f"calibrate.{role}").model
    with atomic_directory(entry) as staging:
        save_classifier(staging / TEACHER_FILE, model, config, train.classes, tuple(train.images.shape[1:]))
        info = {"role": role, "seed": seed, "classes": list(train.classes), "data_fingerprint": fingerprint}
        write_json(staging / TEACHER_INFO_FILE, {**info, "config": config.model_dump(mode="json")})
    return model


def cached_classifier(file: Path, train: Dataset) -> nn.Module | None:
    """The classifier cached in `file`, or None when there is none or it is unusable (damaged, or for other data).

    A cache entry is only a saving: an unusable one is reported and trained again, which replaces it.
    """
    if not file.is_file():
        return None
    try:
        loaded = load_classifier(file)
    except DataError as error:
        log.warning("%s; training it again", error)
        return None
    if loaded.classes != train.classes or loaded.image_shape != tuple(train.images.shape[1:]):
        log.warning("%s: cached for other classes or image shape; training it again", file)
        return None
    return loaded.model


def pretrained_teacher(file: Path, train: Dataset) -> nn.Module:
    """A classifier an earlier fersynth run trained (its model.pt), as a teacher for `train`'s classes and images."""
    loaded = load_classifier(file)
    if loaded.classes != train.classes or loaded.image_shape != tuple(train.images.shape[1:]):
        raise DataError(
            f"{file}: a classifier of classes {list(loaded.classes)} on {loaded.image_shape} (H, W, C) images cannot "
            f"judge these of classes {list(train.classes)} on {tuple(train.images.shape[1:])}"
        )
    log.info("teacher: %s (%s, trained by an earlier run)", file, loaded.config.arch)
    return loaded.model


def load_or_train_teachers(
    train: Dataset, val: Dataset, config: CalibrateConfig, seed: int, cache_dir: Path
) -> TeacherEnsemble:
    """Teachers seed, seed+1, ... (seed from calibrate.teacher.seed or common.seed) for each class weighting of
    `config.teacher_configs()`, each cached on its own."""
    # A calibrate run killed while caching a classifier left its staging folder; a changed key would never clear it.
    remove_staging_of(Path(cache_dir), CACHE_ENTRY_PATTERN)
    first_seed = config.teacher.seed_or(seed)
    fingerprint = data_fingerprint(train, val)
    if config.teacher_checkpoints:
        models = [pretrained_teacher(Path(path), train) for path in config.teacher_checkpoints]
    else:
        models = [
            load_or_train_classifier(train, val, teacher, first_seed + member, cache_dir, "teacher", fingerprint)
            for teacher in config.teacher_configs()
            for member in range(config.ensemble_size)
        ]
    val_probas = [predict_proba(model, val.images) for model in models]
    scores = [macro_f1(val.labels, proba.argmax(axis=1)) for proba in val_probas]
    log.info("teacher macro-F1 on real val: %s", ", ".join(f"{score:.3f}" for score in scores))
    ensemble_val = ValScores(
        np.mean(val_probas, axis=0).astype(np.float32), val.labels.astype(np.int64), tuple(train.classes)
    )
    return TeacherEnsemble(models=models, val_macro_f1=scores, val=ensemble_val, data_fingerprint=fingerprint)


def judge_metrics(
    val_labels: np.ndarray,
    val_predicted: np.ndarray,
    predicted: np.ndarray,
    intended: np.ndarray,
    decision: Decision,
    classes: Sequence[str],
) -> dict[str, float]:
    """How recognisable the generated faces are to a classifier that did not select them.

    Takes the judge's predicted classes (of real val and of every synthetic image), computed once for
    the quality figures. `judge_expression_accuracy(_<c>)` grades every generated image (the generator's
    quality); `judge_kept_agreement` grades the kept ones against their final label (the selection's quality).
    """
    metrics = {"judge_val_macro_f1": macro_f1(val_labels, val_predicted)}
    metrics["judge_expression_accuracy"] = float((predicted == intended).mean())
    for index, name in enumerate(classes):
        generated = intended == index
        metrics[f"judge_expression_accuracy_{name}"] = (
            float((predicted[generated] == index).mean()) if generated.any() else float("nan")
        )
    kept = decision.keep
    metrics["judge_kept_agreement"] = (
        float((predicted[kept] == decision.labels[kept]).mean()) if kept.any() else float("nan")
    )
    return metrics


def teacher_data(real: Dataset, real_name: str = "real set") -> tuple[Dataset, Dataset]:
    """The real train and val images of `real` that teachers and the judge learn from."""
    is_real = real.sources == "real"
    train, val = real.subset(is_real & (real.splits == "train")), real.subset(is_real & (real.splits == "val"))
    if not len(train) or not len(val):
        raise DataError(f"{real_name}: teachers need real train and val images (found {len(train)} and {len(val)})")
    return train, val


def load_or_train_judge(
    train: Dataset, val: Dataset, config: CalibrateConfig, seed: int, cache_dir: Path, fingerprint: str
) -> nn.Module:
    """`config.judge` (which must be set), cached beside the teachers it shares the data fingerprint with."""
    assert config.judge is not None
    # Its first default seed is one no teacher uses, so it is not a copy of teacher 1.
    judge_seed = config.judge.seed_or(config.teacher.seed_or(seed) + config.ensemble_size)
    return load_or_train_classifier(train, val, config.judge, judge_seed, cache_dir, "judge", fingerprint)


def calibrate(
    synthetic: Dataset,
    real: Dataset,
    config: CalibrateConfig,
    seed: int,
    teachers_dir: Path,
    synthetic_name: str = "synthetic set",
    real_name: str = "real set",
) -> CalibrationResult:
    """Score `synthetic` with teachers trained on `real`; keep it by `config.selection`, label it by `config.policy`."""
    train, val = teacher_data(real, real_name)
    if len(synthetic) and synthetic.images.shape[1:] != train.images.shape[1:]:
        raise DataError(
            f"{synthetic_name}: images are {synthetic.images.shape[1:]} (H, W, C), "
            f"the real images of {real_name} are {train.images.shape[1:]}"
        )
    if not len(synthetic):
        # A real-only run (nothing generated) should not pay for training teachers it would never use.
        log.info("%s is empty: nothing to calibrate, teachers not trained", synthetic_name)
        return _empty_result(synthetic, real.classes)
    teachers = load_or_train_teachers(train, val, config, seed, teachers_dir)
    # Rows generated without an intended class (none so far) count as meant to show their label.
    intended = np.where(synthetic.intended == NO_LABEL, synthetic.labels, synthetic.intended).astype(np.int64)
    policy = CALIBRATE_POLICIES[config.policy]
    members = teachers.member_proba(synthetic.images)
    proba = mean_proba(members)
    decision = decide(proba, intended, config, teachers.val, members)
    metrics = calibration_metrics(proba, intended, decision, real.classes)
    if policy.metrics is not None:
        metrics.update(policy.metrics(members, intended, real.classes))
    metrics["teacher_val_macro_f1"] = teachers.ensemble_val_macro_f1
    metrics.update({f"teacher_val_macro_f1_member{index}": score for index, score in enumerate(teachers.val_macro_f1)})
    metrics.update(teacher_val_recall(teachers.val))
    metrics["frechet_distance"] = _frechet_to_real(teachers.models[0], train.images, synthetic.images)
    closest_pairs_png = None
    if config.judge is not None:
        judge = load_or_train_judge(train, val, config, seed, teachers_dir, teachers.data_fingerprint)
        # Real val is the reference: real faces the judge never trained on, so their figures are the best reachable.
        quality = synthetic_quality(judge, train, val, synthetic, intended, seed)
        metrics.update(
            judge_metrics(val.labels, quality.reference_predicted, quality.predicted, intended, decision, real.classes)
        )
        metrics.update(quality.metrics)
        closest_pairs_png = quality.closest_pairs_png
    log.info(
        "%s policy, %s selection: kept %d of %d synthetic images; expression accuracy %.3f",
        config.policy,
        config.selection,
        metrics["accepted_total"],
        metrics["generated_total"],
        metrics["expression_accuracy"],
    )
    drawn_thresholds = decision.thresholds if policy.selects else None
    return CalibrationResult(
        dataset=apply_decision(synthetic, intended, decision),
        figures=metrics,
        histogram_png=confidence_histogram_png(
            intended_probability(proba, intended), intended, decision.keep, real.classes, drawn_thresholds
        ),
        closest_pairs_png=closest_pairs_png,
    )


def _empty_result(synthetic: Dataset, classes: Sequence[str]) -> CalibrationResult:
    """Nothing scored: no teachers, so no teacher figures and no thresholds (nan)."""
    proba = np.zeros((0, len(classes)), dtype=np.float32)
    intended = np.zeros(0, dtype=np.int64)
    nothing = np.zeros(0, dtype=bool)
    decision = Decision(nothing, intended, np.zeros(0, dtype=np.float32), None, np.full(len(classes), np.nan))
    metrics = calibration_metrics(proba, intended, decision, classes)
    metrics["teacher_val_macro_f1"] = float("nan")
    metrics.update({f"teacher_val_recall_{name}": float("nan") for name in classes})
    metrics["frechet_distance"] = float("nan")
    histogram = confidence_histogram_png(np.zeros(0, dtype=np.float32), intended, decision.keep, classes, None)
    return CalibrationResult(dataset=synthetic, figures=metrics, histogram_png=histogram, closest_pairs_png=None)


def _frechet_to_real(teacher: nn.Module, real_images: np.ndarray, synthetic_images: np.ndarray) -> float:
    """Fréchet distance between real-train and synthetic features of the first teacher; nan below 2 images."""
    if len(synthetic_images) < 2 or len(real_images) < 2:
        return float("nan")
    return frechet_distance(extract_features(teacher, real_images), extract_features(teacher, synthetic_images))
