from __future__ import annotations

import io
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import f1_score

from fersynth import calibration
from fersynth.calibration import (
    ValScores,
    acceptance_table,
    apply_decision,
    calibrate,
    calibration_metrics,
    confidence_histogram_png,
    decide,
    load_or_train_teachers,
    precision_thresholds,
    teacher_val_recall,
)
from fersynth.config import CalibrateConfig, ClassifierConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import DataError, ParamsError
from fersynth.metrics import macro_f1
from fersynth.training import extract_features, fit_classifier, predict_proba, save_classifier

from .conftest import make_dataset
from .helpers import synthetic_rows

CLASSES = ("angry", "happy", "sad")
# Six synthetic images of intended classes 0, 0, 0, 1, 2, 2 and their teacher probabilities.
PROBA = np.array(
    [
        [0.80, 0.10, 0.10],  # right, confident
        [0.40, 0.35, 0.25],  # right, below 0.5
        [0.10, 0.70, 0.20],  # wrong, confident
        [0.20, 0.50, 0.30],  # right, exactly at 0.5
        [0.30, 0.30, 0.40],  # right, below 0.5
        [0.05, 0.05, 0.90],  # right, confident
    ],
    dtype=np.float32,
)
INTENDED = np.array([0, 0, 0, 1, 2, 2], dtype=np.int64)
# Teacher probabilities of seven real val images and their true classes. Ranked by p_angry, the labels
# read 0 0 1 0 0 2 1: precision 1, 1, 2/3, 3/4, 4/5, 4/6, 4/7 at the cuts 0.9 ... 0.3. Ranked by p_happy,
# 0.6 (1), 0.3 (0), 0.2 (1), then three tied at 0.1 (0, 0, 2) and 0.05 (0).
VAL = ValScores(
    proba=np.array(
        [
            [0.90, 0.05, 0.05],
            [0.80, 0.10, 0.10],
            [0.70, 0.20, 0.10],
            [0.60, 0.30, 0.10],
            [0.50, 0.10, 0.40],
            [0.40, 0.10, 0.50],
            [0.30, 0.60, 0.10],
        ],
        dtype=np.float32,
    ),
    labels=np.array([0, 0, 1, 0, 0, 2, 1], dtype=np.int64),
    classes=CLASSES,
)
TINY_TEACHER = ClassifierConfig(arch="linear", epochs=1, batch_size=8, flip_augment=False, shift_augment=0)


def test_filter_keeps_exactly_confident_agreeing_images() -> None:
    decision = decide(PROBA, INTENDED, CalibrateConfig(threshold=0.5))
    assert decision.keep.tolist() == [True, False, False, True, False, True]
    assert decision.labels.tolist() == INTENDED.tolist()
    np.testing.assert_allclose(decision.confidence, [0.8, 0.4, 0.1, 0.5, 0.4, 0.9])
    assert decision.soft_labels is None


def test_filter_threshold_zero_still_requires_agreement() -> None:
    assert decide(PROBA, INTENDED, CalibrateConfig(threshold=0.0)).keep.tolist() == [
        True,
        True,
        False,
        True,
        True,
        True,
    ]


def test_relabel_keeps_all_with_teacher_argmax() -> None:
    decision = decide(PROBA, INTENDED, CalibrateConfig(policy="relabel", threshold=0.9))
    assert decision.keep.all()
    assert decision.labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(decision.confidence, [0.8, 0.4, 0.7, 0.5, 0.4, 0.9])


def test_soft_keeps_confident_images_with_probability_vectors() -> None:
    decision = decide(PROBA, INTENDED, CalibrateConfig(policy="soft", threshold=0.5))
    assert decision.keep.tolist() == [True, False, True, True, False, True]
    assert decision.labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(decision.soft_labels, PROBA)
    assert decide(PROBA, INTENDED, CalibrateConfig(policy="soft", threshold=0.0)).keep.all()


# Two teachers' probabilities (M=2, N=4, K=3) of images intended as 0, 1, 2, 0.
VOTE_MEMBERS = np.array(
    [
        [[0.60, 0.30, 0.10], [0.20, 0.70, 0.10], [0.50, 0.20, 0.30], [0.10, 0.10, 0.80]],
        [[0.50, 0.10, 0.40], [0.50, 0.40, 0.10], [0.60, 0.10, 0.30], [0.40, 0.50, 0.10]],
    ],
    dtype=np.float32,
)
VOTE_INTENDED = np.array([0, 1, 2, 0], dtype=np.int64)


def test_vote_keeps_the_intended_label_where_every_teacher_agrees_and_averages_elsewhere() -> None:
    """Image 0: both teachers say angry, as intended. Image 1: the mean says happy, as intended, but one teacher
    says angry. Image 2: the teachers agree with each other (angry), not with the intended sad. Image 3: neither
    agrees."""
    proba = VOTE_MEMBERS.mean(axis=0)
    decision = decide(proba, VOTE_INTENDED, CalibrateConfig(policy="vote", threshold=0.9), members=VOTE_MEMBERS)
    assert decision.keep.all()  # no selection: even a 0.9 threshold drops nothing
    assert decision.labels.tolist() == [0, 1, 0, 2]
    assert decision.soft_labels is not None and decision.soft_labels.dtype == np.float32
    np.testing.assert_array_equal(decision.soft_labels[0], [1.0, 0.0, 0.0])  # the intended label, exactly
    np.testing.assert_allclose(decision.soft_labels[1:], [[0.35, 0.55, 0.10], [0.55, 0.15, 0.30], [0.25, 0.30, 0.45]])
    np.testing.assert_allclose(decision.confidence, [0.55, 0.55, 0.55, 0.45])
    assert decision.thresholds.tolist() == [0.0, 0.0, 0.0]


def test_vote_with_one_teacher_agrees_where_its_argmax_is_the_intended_class() -> None:
    expected = np.eye(3, dtype=np.float32)[INTENDED]
    expected[2] = PROBA[2]  # the only row whose argmax (happy) is not the intended angry
    for members in (None, PROBA[np.newaxis]):
        decision = decide(PROBA, INTENDED, CalibrateConfig(policy="vote"), members=members)
        assert decision.keep.all()
        assert decision.labels.tolist() == [0, 0, 1, 1, 2, 2]
        np.testing.assert_array_equal(decision.soft_labels, expected)


def test_vote_metrics_count_the_images_every_teacher_agreed_with() -> None:
    metrics = calibration.vote_metrics(VOTE_MEMBERS, VOTE_INTENDED, CLASSES)
    assert metrics == {
        "vote_agreed_angry": 1,
        "vote_agreement_rate_angry": 0.5,
        "vote_agreed_happy": 0,
        "vote_agreement_rate_happy": 0.0,
        "vote_agreed_sad": 0,
        "vote_agreement_rate_sad": 0.0,
        "vote_agreed_total": 1,
        "vote_agreement_rate": 0.25,
    }


def test_vote_refuses_a_selection_it_would_ignore_and_teachers_that_do_not_match() -> None:
    with pytest.raises(ValueError, match=r"calibrate\.policy 'vote' keeps every image"):
        CalibrateConfig(policy="vote", selection="quota", quota_per_class=1)
    with pytest.raises(ValueError, match="do not match"):
        decide(PROBA, INTENDED, CalibrateConfig(policy="vote"), members=VOTE_MEMBERS)


def test_threshold_selection_holds_every_class_to_the_threshold() -> None:
    assert decide(PROBA, INTENDED, CalibrateConfig(threshold=0.5)).thresholds.tolist() == [0.5, 0.5, 0.5]
    assert decide(PROBA, INTENDED, CalibrateConfig(policy="relabel")).thresholds.tolist() == [0.0, 0.0, 0.0]


def test_quota_keeps_the_most_probable_images_of_each_class_above_the_floor() -> None:
    # Eight images generated as angry with these angry probabilities, two as happy.
    angry = np.array([0.30, 0.90, 0.50, 0.70, 0.20, 0.60, 0.05, 0.65], dtype=np.float32)
    happy = np.array([0.10, 0.45], dtype=np.float32)
    proba = np.zeros((10, 3), dtype=np.float32)
    proba[:8, 0], proba[:8, 2] = angry, 1 - angry
    proba[8:, 1], proba[8:, 2] = happy, 1 - happy
    intended = np.array([0] * 8 + [1] * 2, dtype=np.int64)

    decision = decide(proba, intended, CalibrateConfig(selection="quota", quota_per_class=3))
    assert np.flatnonzero(decision.keep).tolist() == [1, 3, 7, 8, 9]  # 0.9, 0.7, 0.65; happy has only two
    np.testing.assert_allclose(decision.thresholds, [0.65, 0.10, 0.0])  # cut-offs: last kept score, else the floor

    floored = decide(proba, intended, CalibrateConfig(selection="quota", quota_per_class=3, confidence_floor=0.68))
    assert np.flatnonzero(floored.keep).tolist() == [1, 3]
    np.testing.assert_allclose(floored.thresholds, [0.7, 0.68, 0.68])


def test_quota_ranks_by_intended_probability_whatever_the_argmax() -> None:
    # Image 2 was meant as angry, the teachers' argmax is happy: quota still keeps it, labelled angry.
    decision = decide(PROBA, INTENDED, CalibrateConfig(selection="quota", quota_per_class=3))
    assert decision.keep.tolist() == [True, True, True, True, True, True]
    assert decision.labels.tolist() == INTENDED.tolist()
    ties = np.array([[0.4, 0.6], [0.4, 0.6], [0.4, 0.6]], dtype=np.float32)
    tied = decide(ties, np.zeros(3, dtype=np.int64), CalibrateConfig(selection="quota", quota_per_class=2))
    assert tied.keep.tolist() == [True, True, False]  # equal scores: the earlier images


def test_quota_under_soft_keeps_probability_vectors() -> None:
    decision = decide(PROBA, INTENDED, CalibrateConfig(policy="soft", selection="quota", quota_per_class=1))
    assert decision.keep.tolist() == [True, False, False, True, False, True]
    assert decision.labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(decision.soft_labels, PROBA)


def test_precision_thresholds_are_the_lowest_cut_reaching_the_target() -> None:
    # angry: 4/6 at 0.4 (4/7 at 0.3); 4/5 at 0.5 although 0.7 only reaches 2/3. happy: 0.2 (2/3), as the
    # tie at 0.1 is cut as a whole (2/6), never after its first image (2/4). sad: 0.5 (1/1), then 1/2.
    np.testing.assert_allclose(precision_thresholds(VAL, 0.6, fallback=0.5, floor=0.0), [0.4, 0.2, 0.5])
    np.testing.assert_allclose(precision_thresholds(VAL, 0.75, fallback=0.5, floor=0.0), [0.5, 0.6, 0.5])
    np.testing.assert_allclose(precision_thresholds(VAL, 0.9, fallback=0.5, floor=0.0), [0.8, 0.6, 0.5])
    np.testing.assert_allclose(precision_thresholds(VAL, 0.75, fallback=0.5, floor=0.55), [0.55, 0.6, 0.55])


def test_precision_falls_back_to_the_threshold_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    no_sad = replace(VAL, labels=np.array([0, 0, 1, 0, 0, 1, 1], dtype=np.int64))
    with caplog.at_level(logging.WARNING, logger="fersynth.calibration"):
        thresholds = precision_thresholds(no_sad, 0.75, fallback=0.35, floor=0.0)
    np.testing.assert_allclose(thresholds, [0.5, 0.6, 0.35])
    assert [record.getMessage() for record in caplog.records] == [
        "teachers never reach precision 0.75 for sad on real val (best 0.00): using threshold 0.35"
    ]


def test_precision_selection_keeps_images_at_their_class_threshold() -> None:
    config = CalibrateConfig(selection="precision", target_precision=0.75)
    decision = decide(PROBA, INTENDED, config, VAL)
    # thresholds 0.5, 0.6, 0.5; the intended probabilities are 0.8 0.4 0.1 | 0.5 | 0.4 0.9
    assert decision.keep.tolist() == [True, False, False, False, False, True]
    np.testing.assert_allclose(decision.thresholds, [0.5, 0.6, 0.5])
    with pytest.raises(ValueError, match="needs the teachers' scores on real val"):
        decide(PROBA, INTENDED, config)


def test_teacher_val_recall_per_class() -> None:
    # argmax: 0 0 0 0 0 2 1 for labels 0 0 1 0 0 2 1
    assert teacher_val_recall(VAL) == {
        "teacher_val_recall_angry": 1.0,
        "teacher_val_recall_happy": 0.5,
        "teacher_val_recall_sad": 1.0,
    }
    no_sad = replace(VAL, labels=np.array([0, 0, 1, 0, 0, 1, 1], dtype=np.int64))
    assert math.isnan(teacher_val_recall(no_sad)["teacher_val_recall_sad"])


def test_apply_decision_keeps_source_and_intended() -> None:
    synthetic = Dataset(
        images=np.zeros((6, 4, 4, 1), dtype=np.uint8),
        labels=INTENDED.copy(),
        splits=np.full(6, "train", dtype=object),
        classes=CLASSES,
        ids=np.array([f"g{n}" for n in range(6)], dtype=object),
        sources=np.full(6, "gan", dtype=object),
    )
    kept = apply_decision(synthetic, INTENDED, decide(PROBA, INTENDED, CalibrateConfig(policy="soft", threshold=0.5)))
    assert kept.ids.tolist() == ["g0", "g2", "g3", "g5"]
    assert kept.labels.tolist() == [0, 1, 1, 2]
    assert kept.intended.tolist() == [0, 0, 1, 2]  # g2 was meant as angry, the teachers saw happy
    assert set(kept.sources) == {"gan"}
    np.testing.assert_allclose(kept.confidence, [0.8, 0.7, 0.5, 0.9])
    assert kept.soft_labels is not None and kept.soft_labels.shape == (4, 3)


def test_metrics_on_hand_made_case() -> None:
    metrics = calibration_metrics(PROBA, INTENDED, decide(PROBA, INTENDED, CalibrateConfig(threshold=0.5)), CLASSES)
    assert metrics["generated_angry"] == 3 and metrics["accepted_angry"] == 1
    assert metrics["acceptance_rate_angry"] == pytest.approx(1 / 3)
    assert metrics["mean_confidence_angry"] == pytest.approx((0.8 + 0.4 + 0.1) / 3)
    assert metrics["accepted_happy"] == 1 and metrics["acceptance_rate_happy"] == 1.0
    assert metrics["generated_sad"] == 2 and metrics["accepted_sad"] == 1
    assert metrics["generated_total"] == 6 and metrics["accepted_total"] == 3
    assert metrics["expression_accuracy"] == pytest.approx(5 / 6)
    assert metrics["threshold_angry"] == metrics["threshold_sad"] == 0.5
    assert metrics["classes_with_nothing_kept"] == 0


def test_classes_generated_and_all_rejected_are_counted_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    classes = (*CLASSES, "surprise")  # surprise: nothing generated, so nothing lost
    proba = np.hstack([PROBA, np.zeros((6, 1), dtype=np.float32)])
    with caplog.at_level(logging.WARNING, logger="fersynth.calibration"):
        metrics = calibration_metrics(
            proba, INTENDED, decide(proba, INTENDED, CalibrateConfig(threshold=0.85)), classes
        )
    assert metrics["accepted_sad"] == 1 and metrics["accepted_surprise"] == 0
    assert metrics["classes_with_nothing_kept"] == 2
    assert [record.getMessage() for record in caplog.records] == [
        "none of the 3 images generated as angry was kept: the teachers gave them at most 0.800 for angry "
        "(threshold 0.850)",
        "none of the 1 images generated as happy was kept: the teachers gave them at most 0.500 for happy "
        "(threshold 0.850)",
    ]


def table_rows(metrics: dict[str, float | int], classes: tuple[str, ...]) -> list[list[str]]:
    """The acceptance table's cells, row by row, as rich renders them."""
    rendered = io.StringIO()
    Console(file=rendered, width=200).print(acceptance_table(metrics, classes))
    lines = rendered.getvalue().replace("┃", "│").splitlines()  # the header row has heavy borders
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]


def test_acceptance_table_lists_every_class() -> None:
    classes = (*CLASSES, "surprise")
    proba = np.hstack([PROBA, np.zeros((6, 1), dtype=np.float32)])
    metrics = calibration_metrics(proba, INTENDED, decide(proba, INTENDED, CalibrateConfig(threshold=0.85)), classes)
    assert table_rows(metrics, classes) == [
        ["class", "generated", "kept", "acceptance", "mean confidence", "threshold"],
        ["angry", "3", "0", "0.0%", "0.433", "0.850"],
        ["happy", "1", "0", "0.0%", "0.500", "0.850"],
        ["sad", "2", "1", "50.0%", "0.650", "0.850"],
        ["surprise", "0", "0", "-", "-", "0.850"],
        ["total", "6", "1", "16.7%", "", ""],
    ]


def test_relabel_metrics_count_final_labels() -> None:
    metrics = calibration_metrics(PROBA, INTENDED, decide(PROBA, INTENDED, CalibrateConfig(policy="relabel")), CLASSES)
    assert metrics["accepted_angry"] == 3 and metrics["labelled_angry"] == 2 and metrics["labelled_happy"] == 2


def test_metrics_of_nothing_are_zero() -> None:
    empty = np.zeros((0, 3), dtype=np.float32)
    none = np.zeros(0, dtype=np.int64)
    metrics = calibration_metrics(empty, none, decide(empty, none, CalibrateConfig()), CLASSES)
    assert metrics["generated_total"] == metrics["accepted_total"] == 0
    assert metrics["expression_accuracy"] == 0.0 and metrics["acceptance_rate_sad"] == 0.0


def test_histogram_is_a_png() -> None:
    decision = decide(PROBA, INTENDED, CalibrateConfig(threshold=0.5))
    thresholds = np.array([0.5, np.nan, 0.2])  # nan: no line
    png = confidence_histogram_png(PROBA[np.arange(6), INTENDED], INTENDED, decision.keep, CLASSES, thresholds)
    assert png.startswith(b"\x89PNG")


def count_training(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the seed of every teacher actually trained."""
    seeds: list[int] = []
    real_fit = calibration.fit_classifier

    def counting_fit(*args: Any, **kwargs: Any) -> Any:
        seeds.append(kwargs["seed"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(calibration, "fit_classifier", counting_fit)
    return seeds


def test_teachers_are_cached_per_member(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trained = count_training(monkeypatch)
    real = make_dataset(per_class=6, size=8)
    train, val = real.split("train"), real.split("val")
    config = CalibrateConfig(ensemble_size=2, teacher=TINY_TEACHER)
    first = load_or_train_teachers(train, val, config, seed=3, cache_dir=tmp_path)
    assert trained == [3, 4]
    assert len(list(tmp_path.glob("teacher-*/teacher.pt"))) == 2
    assert not list(tmp_path.glob(".teacher-*"))  # no staging directories left
    # The val scores that gave the macro-F1 are kept: the ensemble's mean, for recall and precision thresholds.
    np.testing.assert_allclose(first.val.proba, first.predict_proba(val.images), atol=1e-6)
    assert first.val.labels.tolist() == val.labels.tolist() and first.val.classes == real.classes

    other_policy = config.model_copy(update={"threshold": 0.9, "policy": "relabel"})
    again = load_or_train_teachers(train, val, other_policy, seed=3, cache_dir=tmp_path)
    assert trained == [3, 4]  # cache hit: nothing retrained
    np.testing.assert_allclose(again.predict_proba(val.images), first.predict_proba(val.images), atol=1e-6)
    assert again.val_macro_f1 == first.val_macro_f1

    load_or_train_teachers(train, val, config.model_copy(update={"ensemble_size": 3}), seed=3, cache_dir=tmp_path)
    assert trained == [3, 4, 5]  # only the new member trains

    relabelled = replace(train, labels=np.roll(train.labels, 1))
    load_or_train_teachers(relabelled, val, config, seed=3, cache_dir=tmp_path)
    assert trained == [3, 4, 5, 3, 4]  # other real data: other teachers


def test_a_diverging_teacher_names_its_own_learning_rate_and_is_not_cached(tmp_path: Path) -> None:
    real = make_dataset(per_class=6, size=8)
    config = CalibrateConfig(teacher=TINY_TEACHER.model_copy(update={"lr": 1.0e30}))
    with pytest.raises(ParamsError, match=r"calibrate\.teacher\.lr 1e\+30: training diverged, .* in epoch 1"):
        load_or_train_teachers(real.split("train"), real.split("val"), config, seed=0, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mixed_ensemble_trains_one_teacher_per_class_weighting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trained_weightings: list[str] = []
    real_fit = calibration.fit_classifier

    def recording_fit(*args: Any, **kwargs: Any) -> Any:
        trained_weightings.append(args[2].class_weighting)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(calibration, "fit_classifier", recording_fit)
    real = make_dataset(per_class=6, size=8)
    config = CalibrateConfig(teacher=TINY_TEACHER, ensemble_class_weightings=["none", "balanced"])
    teachers = load_or_train_teachers(real.split("train"), real.split("val"), config, seed=0, cache_dir=tmp_path)
    assert trained_weightings == ["none", "balanced"] and len(teachers.models) == 2
    mean_proba = teachers.predict_proba(real.split("val").images)
    assert teachers.ensemble_val_macro_f1 == macro_f1(real.split("val").labels, mean_proba.argmax(axis=1))
    assert len(list(tmp_path.glob("teacher-*/teacher.pt"))) == 2  # same seed, different keys
    unweighted_only = config.model_copy(update={"ensemble_class_weightings": []})
    load_or_train_teachers(real.split("train"), real.split("val"), unweighted_only, seed=0, cache_dir=tmp_path)
    assert trained_weightings == ["none", "balanced"]  # the default (teacher's own weighting) is a cache hit
    with pytest.raises(ValueError, match="each weighting once"):
        CalibrateConfig(ensemble_class_weightings=["balanced", "balanced"])


def test_an_earlier_runs_classifier_is_the_teacher_without_any_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trained = count_training(monkeypatch)
    real = make_dataset(per_class=6, size=8)
    train, val = real.split("train"), real.split("val")
    student = fit_classifier(train, val, TINY_TEACHER, seed=5).model
    checkpoint = tmp_path / "pretrained" / "fer2013-30min.pt"
    save_classifier(checkpoint, student, TINY_TEACHER, real.classes, train.images.shape[1:])
    config = CalibrateConfig(teacher=TINY_TEACHER, ensemble_size=3, teacher_checkpoints=[str(checkpoint)])
    teachers = load_or_train_teachers(train, val, config, seed=0, cache_dir=tmp_path / "cache")
    assert trained == [] and len(teachers.models) == 1  # the checkpoints are the ensemble
    np.testing.assert_allclose(teachers.predict_proba(val.images), predict_proba(student, val.images), atol=1e-6)
    assert teachers.ensemble_val_macro_f1 == macro_f1(val.labels, predict_proba(student, val.images).argmax(axis=1))

    fewer_classes = replace(train, classes=train.classes[:6], labels=np.minimum(train.labels, 5))
    with pytest.raises(DataError, match=r"fer2013-30min\.pt: a classifier of classes"):
        load_or_train_teachers(fewer_classes, val, config, seed=0, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=r"missing\.pt"):
        load_or_train_teachers(
            train, val, config.model_copy(update={"teacher_checkpoints": [str(tmp_path / "missing.pt")]}), 0, tmp_path
        )
    with pytest.raises(ValueError, match="each checkpoint once"):
        CalibrateConfig(teacher_checkpoints=["a.pt", "a.pt"])


def frechet_by_nuclear_norm(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance computed another way than fersynth's: with S_a = AᵀA and S_b = BᵀB (A, B the centred
    features over sqrt(n - 1)), Tr((S_a S_b)^½) is the nuclear norm of A Bᵀ, so no matrix square root is taken."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    centred_a = (a - a.mean(axis=0)) / np.sqrt(len(a) - 1)
    centred_b = (b - b.mean(axis=0)) / np.sqrt(len(b) - 1)
    means = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(
        means + np.sum(centred_a**2) + np.sum(centred_b**2) - 2 * np.linalg.norm(centred_a @ centred_b.T, "nuc")
    )


def test_calibrate_outputs_and_metrics(tmp_path: Path) -> None:
    real, synthetic = make_dataset(per_class=6, size=8), synthetic_rows(14)
    config = CalibrateConfig(threshold=0.0, ensemble_size=3, teacher=TINY_TEACHER)
    result = calibrate(synthetic, real, config, 0, tmp_path)
    train, val = real.split("train"), real.split("val")
    teachers = load_or_train_teachers(train, val, config, 0, tmp_path)  # cache hit: the teachers calibrate used
    # Threshold 0 keeps exactly the images whose mean teacher score is highest for the class they were made as.
    agreed = teachers.predict_proba(synthetic.images).argmax(axis=1) == synthetic.intended
    kept = result.dataset
    assert 0 < agreed.sum() < 14
    assert kept.ids.tolist() == synthetic.ids[agreed].tolist()
    assert result.metrics()["accepted_total"] == len(kept) == agreed.sum()
    assert set(kept.sources) == {"gan"} and (kept.labels == kept.intended).all()
    assert not np.isnan(kept.confidence).any()
    assert result.metrics()["generated_total"] == 14 and result.metrics()["generated_angry"] == 2
    # The ensemble's figure: macro-F1 of the argmax of the teachers' mean softmax on real val (seed 0 gives
    # three whose mean scores unlike any one of them).
    val_predicted = np.mean([predict_proba(model, val.images) for model in teachers.models], axis=0).argmax(axis=1)
    expected_f1 = f1_score(val.labels, val_predicted, average="macro", zero_division=0)
    assert expected_f1 not in teachers.val_macro_f1
    assert result.metrics()["teacher_val_macro_f1"] == pytest.approx(expected_f1)
    # Between the first teacher's features of real train and of the synthetic images. 64 features of 14 images:
    # most eigenvalues fersynth takes the root of are 0 but for rounding, and their roots add about 1e-5 of it.
    real_features, synthetic_features = (extract_features(teachers.models[0], s.images) for s in (train, synthetic))
    expected_fd = frechet_by_nuclear_norm(real_features, synthetic_features)
    assert expected_fd > 0.0 and result.metrics()["frechet_distance"] == pytest.approx(expected_fd, rel=1e-4)
    assert result.histogram_png.startswith(b"\x89PNG")
    assert result.metrics()["threshold_angry"] == 0.0
    recall = {key: value for key, value in result.metrics().items() if key.startswith("teacher_val_recall_")}
    assert recall == teacher_val_recall(teachers.val) and len(recall) == 7


def test_calibrate_with_vote_keeps_every_image_and_votes_with_each_teacher(tmp_path: Path) -> None:
    real, synthetic = make_dataset(per_class=6, size=8), synthetic_rows(14)
    config = CalibrateConfig(policy="vote", ensemble_class_weightings=["none", "balanced"], teacher=TINY_TEACHER)
    result = calibrate(synthetic, real, config, 0, tmp_path)
    teachers = load_or_train_teachers(real.split("train"), real.split("val"), config, 0, tmp_path)
    members = teachers.member_proba(synthetic.images)
    assert members.shape == (2, 14, 7)
    np.testing.assert_array_equal(teachers.predict_proba(synthetic.images), members.mean(axis=0))
    agreed = (members.argmax(axis=2) == synthetic.intended).all(axis=0)
    kept = result.dataset
    assert kept.ids.tolist() == synthetic.ids.tolist() and kept.soft_labels is not None
    assert 0 < agreed.sum() < 14  # seed 0: some images both teachers agree with, and some not
    np.testing.assert_array_equal(kept.soft_labels[agreed], np.eye(7, dtype=np.float32)[synthetic.intended[agreed]])
    np.testing.assert_allclose(kept.soft_labels[~agreed], members.mean(axis=0)[~agreed])
    assert (kept.labels[agreed] == synthetic.intended[agreed]).all()
    assert result.metrics()["vote_agreed_total"] == agreed.sum() and result.metrics()["accepted_total"] == 14


def test_calibrate_with_quota_keeps_the_quota_of_every_class(tmp_path: Path) -> None:
    real, synthetic = make_dataset(per_class=6, size=8), synthetic_rows(14)  # two images per class
    config = CalibrateConfig(selection="quota", quota_per_class=1, teacher=TINY_TEACHER)
    result = calibrate(synthetic, real, config, 0, tmp_path)
    assert np.bincount(result.dataset.labels, minlength=7).tolist() == [1] * 7
    assert result.metrics()["accepted_total"] == 7 and result.metrics()["classes_with_nothing_kept"] == 0


def test_calibrate_with_precision_uses_the_teachers_val_scores(tmp_path: Path) -> None:
    real, synthetic = make_dataset(per_class=6, size=8), synthetic_rows(14)
    config = CalibrateConfig(selection="precision", target_precision=0.5, confidence_floor=0.1, teacher=TINY_TEACHER)
    result = calibrate(synthetic, real, config, 0, tmp_path)
    teachers = load_or_train_teachers(real.split("train"), real.split("val"), config, 0, tmp_path)  # cache hit
    expected = precision_thresholds(teachers.val, 0.5, fallback=0.5, floor=0.1)
    assert [result.metrics()[f"threshold_{name}"] for name in real.classes] == expected.tolist()
    kept = result.dataset
    assert (kept.confidence >= expected[kept.labels]).all()


def test_empty_synthetic_input_gives_empty_output(tmp_path: Path) -> None:
    real = make_dataset(per_class=6, size=8)
    result = calibrate(synthetic_rows(0), real, CalibrateConfig(teacher=TINY_TEACHER), 0, tmp_path)
    assert len(result.dataset) == 0
    assert result.metrics()["generated_total"] == result.metrics()["accepted_total"] == 0
    assert result.metrics()["classes_with_nothing_kept"] == 0
    assert math.isnan(result.metrics()["frechet_distance"])
    assert math.isnan(result.metrics()["threshold_sad"]) and math.isnan(result.metrics()["teacher_val_recall_sad"])
    assert result.closest_pairs_png is None
    assert not any(tmp_path.iterdir())  # no teacher trained for nothing to score


def test_real_set_without_validation_split_is_an_error(tmp_path: Path) -> None:
    real = make_dataset(per_class=6, size=8)
    no_val = real.subset(real.splits != "val")
    with pytest.raises(DataError, match=r"aligned-dir: teachers need real train and val images \(found 14 and 0\)"):
        calibrate(
            synthetic_rows(7), no_val, CalibrateConfig(teacher=TINY_TEACHER), 0, tmp_path, real_name="aligned-dir"
        )


def test_synthetic_images_of_another_size_are_an_error(tmp_path: Path) -> None:
    real = make_dataset(per_class=6, size=8)
    with pytest.raises(DataError, match=r"generated-dir: images are \(16, 16, 1\)"):
        calibrate(synthetic_rows(7, size=16), real, CalibrateConfig(teacher=TINY_TEACHER), 0, tmp_path, "generated-dir")


def test_judge_grades_every_generated_image_and_the_kept_ones() -> None:
    classes = ("a", "b", "c")
    intended = np.array([0, 0, 1, 1, 2, 2])
    verdicts = [0, 1, 1, 1, 0, 0, 2]  # a: 1 of 2 recognised, b: 2 of 2, c: 0 of 2 (the 7th only for val)
    keep = np.array([True, True, False, True, True, False])
    decision = calibration.Decision(keep, intended, np.ones(6, np.float32), None, np.full(3, 0.5))
    val = replace(make_dataset(per_class=1, size=8), labels=np.array([0, 1, 1, 1, 0, 0, 2]))
    predicted, val_predicted = np.array(verdicts[:6]), np.array(verdicts)
    metrics = calibration.judge_metrics(val.labels, val_predicted, predicted, intended, decision, classes)
    assert metrics["judge_expression_accuracy"] == pytest.approx(3 / 6)
    assert [metrics[f"judge_expression_accuracy_{name}"] for name in classes] == [0.5, 1.0, 0.0]
    assert metrics["judge_kept_agreement"] == pytest.approx(2 / 4)  # kept 0 (a=a), 1 (a≠b), 3 (b=b), 4 (c≠a)


def test_judge_is_trained_once_with_a_seed_no_teacher_uses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trained = count_training(monkeypatch)
    real, synthetic = make_dataset(per_class=6, size=8), synthetic_rows(14)
    config = CalibrateConfig(threshold=0.0, ensemble_size=2, teacher=TINY_TEACHER, judge=TINY_TEACHER)
    first = calibrate(synthetic, real, config, 3, tmp_path).metrics()
    assert trained == [3, 4, 5]  # teachers 3 and 4, the judge 5
    assert len(list(tmp_path.glob("judge-*/teacher.pt"))) == 1
    again = calibrate(synthetic, real, config.model_copy(update={"threshold": 0.9}), 3, tmp_path).metrics()
    assert trained == [3, 4, 5]  # cached
    assert again["judge_expression_accuracy"] == first["judge_expression_accuracy"]
    assert (
        "judge_expression_accuracy"
        not in calibrate(synthetic, real, config.model_copy(update={"judge": None}), 3, tmp_path).metrics()
    )


def test_judge_grades_every_source_in_its_features(tmp_path: Path) -> None:
    real, synthetic = make_dataset(per_class=6, size=8), synthetic_rows(14)
    config = CalibrateConfig(threshold=0.0, teacher=TINY_TEACHER, judge=TINY_TEACHER)
    result = calibrate(synthetic, real, config, 0, tmp_path)
    metrics = result.metrics()
    assert metrics["quality_gan_images"] == 14 and metrics["quality_real_images"] == len(real.split("val"))
    assert metrics["quality_gan_images_angry"] == 2 and not math.isnan(metrics["quality_gan_kid_angry"])
    assert {"quality_gan_fd", "quality_real_memorised_share", "quality_memorisation_threshold"} <= set(metrics)
    # One source: the quality figure and judge_metrics grade the same images by the same argmax.
    assert metrics["quality_gan_expression_accuracy"] == pytest.approx(metrics["judge_expression_accuracy"])
    assert result.closest_pairs_png is not None and result.closest_pairs_png.startswith(b"\x89PNG")
    without_judge = calibrate(synthetic, real, config.model_copy(update={"judge": None}), 0, tmp_path)
    assert without_judge.closest_pairs_png is None
    assert not any(key.startswith("quality_") for key in without_judge.metrics())
