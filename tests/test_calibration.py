from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fersynth import calibration
from fersynth.calibration import (
    apply_decision,
    calibrate,
    calibration_metrics,
    confidence_histogram_png,
    decide,
    load_or_train_teachers,
)
from fersynth.config import CalibrateConfig, ClassifierConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import DataError

from .conftest import make_dataset

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
TINY_TEACHER = ClassifierConfig(arch="linear", epochs=1, batch_size=8, flip_augment=False, shift_augment=0)


def synthetic_rows(count: int, size: int = 8, seed: int = 5) -> Dataset:
    """`count` GAN images cycling through the seven classes, made like conftest's data."""
    source = make_dataset(per_class=count // 7 + 1, size=size, seed=seed)
    picked = source.subset(np.argsort(np.arange(len(source)) % (count // 7 + 1), kind="stable")[:count])
    return replace(
        picked,
        ids=np.array([f"gan{n}" for n in range(count)], dtype=object),
        splits=np.full(count, "train", dtype=object),
        sources=np.full(count, "gan", dtype=object),
        origins=np.full(count, "", dtype=object),
        intended=picked.labels.copy(),
    )


def test_filter_keeps_exactly_confident_agreeing_images() -> None:
    decision = decide(PROBA, INTENDED, "filter", threshold=0.5)
    assert decision.keep.tolist() == [True, False, False, True, False, True]
    assert decision.labels.tolist() == INTENDED.tolist()
    np.testing.assert_allclose(decision.confidence, [0.8, 0.4, 0.1, 0.5, 0.4, 0.9])
    assert decision.soft_labels is None


def test_filter_threshold_zero_still_requires_agreement() -> None:
    assert decide(PROBA, INTENDED, "filter", threshold=0.0).keep.tolist() == [True, True, False, True, True, True]


def test_relabel_keeps_all_with_teacher_argmax() -> None:
    decision = decide(PROBA, INTENDED, "relabel", threshold=0.9)
    assert decision.keep.all()
    assert decision.labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(decision.confidence, [0.8, 0.4, 0.7, 0.5, 0.4, 0.9])


def test_soft_keeps_confident_images_with_probability_vectors() -> None:
    decision = decide(PROBA, INTENDED, "soft", threshold=0.5)
    assert decision.keep.tolist() == [True, False, True, True, False, True]
    assert decision.labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(decision.soft_labels, PROBA)
    assert decide(PROBA, INTENDED, "soft", threshold=0.0).keep.all()


def test_apply_decision_keeps_source_and_intended() -> None:
    synthetic = Dataset(
        images=np.zeros((6, 4, 4, 1), dtype=np.uint8),
        labels=INTENDED.copy(),
        splits=np.full(6, "train", dtype=object),
        classes=CLASSES,
        ids=np.array([f"g{n}" for n in range(6)], dtype=object),
        sources=np.full(6, "gan", dtype=object),
    )
    kept = apply_decision(synthetic, INTENDED, decide(PROBA, INTENDED, "soft", threshold=0.5))
    assert kept.ids.tolist() == ["g0", "g2", "g3", "g5"]
    assert kept.labels.tolist() == [0, 1, 1, 2]
    assert kept.intended.tolist() == [0, 0, 1, 2]  # g2 was meant as angry, the teachers saw happy
    assert set(kept.sources) == {"gan"}
    np.testing.assert_allclose(kept.confidence, [0.8, 0.7, 0.5, 0.9])
    assert kept.soft_labels is not None and kept.soft_labels.shape == (4, 3)


def test_metrics_on_hand_made_case() -> None:
    metrics = calibration_metrics(PROBA, INTENDED, decide(PROBA, INTENDED, "filter", 0.5), CLASSES)
    assert metrics["generated_angry"] == 3 and metrics["accepted_angry"] == 1
    assert metrics["acceptance_rate_angry"] == pytest.approx(1 / 3)
    assert metrics["mean_confidence_angry"] == pytest.approx((0.8 + 0.4 + 0.1) / 3)
    assert metrics["accepted_happy"] == 1 and metrics["acceptance_rate_happy"] == 1.0
    assert metrics["generated_sad"] == 2 and metrics["accepted_sad"] == 1
    assert metrics["generated_total"] == 6 and metrics["accepted_total"] == 3
    assert metrics["expression_accuracy"] == pytest.approx(5 / 6)


def test_relabel_metrics_count_final_labels() -> None:
    metrics = calibration_metrics(PROBA, INTENDED, decide(PROBA, INTENDED, "relabel", 0.5), CLASSES)
    assert metrics["accepted_angry"] == 3 and metrics["labelled_angry"] == 2 and metrics["labelled_happy"] == 2


def test_metrics_of_nothing_are_zero() -> None:
    empty = np.zeros((0, 3), dtype=np.float32)
    none = np.zeros(0, dtype=np.int64)
    metrics = calibration_metrics(empty, none, decide(empty, none, "filter", 0.5), CLASSES)
    assert metrics["generated_total"] == metrics["accepted_total"] == 0
    assert metrics["expression_accuracy"] == 0.0 and metrics["acceptance_rate_sad"] == 0.0


def test_histogram_is_a_png() -> None:
    decision = decide(PROBA, INTENDED, "filter", 0.5)
    png = confidence_histogram_png(PROBA[np.arange(6), INTENDED], INTENDED, decision.keep, CLASSES, 0.5)
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


def test_calibrate_outputs_and_metrics(tmp_path: Path) -> None:
    real, synthetic = make_dataset(per_class=6, size=8), synthetic_rows(14)
    result = calibrate(synthetic, real, CalibrateConfig(threshold=0.0, teacher=TINY_TEACHER), 0, tmp_path)
    kept = result.dataset
    assert len(kept) == result.metrics["accepted_total"] <= 14
    assert set(kept.sources) <= {"gan"} and (kept.labels == kept.intended).all()
    assert not np.isnan(kept.confidence).any()
    assert result.metrics["generated_total"] == 14 and result.metrics["generated_angry"] == 2
    assert 0.0 <= result.metrics["teacher_val_macro_f1"] <= 1.0
    assert result.metrics["frechet_distance"] >= 0.0
    assert result.histogram_png.startswith(b"\x89PNG")


def test_empty_synthetic_input_gives_empty_output(tmp_path: Path) -> None:
    real = make_dataset(per_class=6, size=8)
    result = calibrate(synthetic_rows(0), real, CalibrateConfig(teacher=TINY_TEACHER), 0, tmp_path)
    assert len(result.dataset) == 0
    assert result.metrics["generated_total"] == result.metrics["accepted_total"] == 0
    assert math.isnan(result.metrics["frechet_distance"])
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
