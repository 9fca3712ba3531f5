"""fit_classifier, prediction, features and the checkpoint round trip, on tiny learnable data."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fersynth.config import ClassifierConfig, FaceAlignConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import DataError, ParamsError
from fersynth.models import ClassifierHead, build_classifier
from fersynth.runtime.device import training_precision
from fersynth.runtime.seeding import seed_everything
from fersynth.training import (
    EpochRecord,
    FitResult,
    _Budget,
    _evaluate_epoch,
    extract_features,
    fit_classifier,
    load_classifier,
    predict_proba,
    save_classifier,
)

from .conftest import RecordingLive, make_dataset

LINEAR = ClassifierConfig(arch="linear", epochs=20, batch_size=8, lr=0.05, scheduler="none")
CHANCE = 1 / 7


@pytest.fixture(scope="module")
def splits() -> tuple[Dataset, Dataset]:
    """Classes differ in brightness; 80 training and 40 validation images of 12×12."""
    dataset = make_dataset(per_class=20, size=12)
    return dataset.subset(dataset.splits != "val"), dataset.split("val")


def test_fit_learns_above_chance_and_logs_each_epoch(splits: tuple[Dataset, Dataset]) -> None:
    train, val = splits
    live = RecordingLive()
    result = fit_classifier(train, val, LINEAR, seed=0, live=live)  # type: ignore[arg-type]
    assert result.best_val_macro_f1 > 2 * CHANCE
    assert result.best_val_macro_f1 > result.history[0].val_macro_f1
    assert result.best_val_macro_f1 == max(record.val_macro_f1 for record in result.history)
    assert result.history[result.best_epoch - 1].val_macro_f1 == result.best_val_macro_f1
    assert not result.model.training
    assert len(live.steps) == LINEAR.epochs + 1 and live.steps[-1] == {}
    assert set(live.steps[0]) == {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"}
    # The returned model holds the best epoch's weights.
    best_predictions = predict_proba(result.model, val.images).argmax(axis=1)
    assert np.mean(best_predictions == val.labels) == pytest.approx(result.best_val_accuracy)


def test_fit_is_deterministic_for_a_seed(splits: tuple[Dataset, Dataset]) -> None:
    train, val = splits
    config = LINEAR.model_copy(update={"epochs": 3})
    first, second = (fit_classifier(train, val, config, seed=3) for _ in range(2))
    assert first.history == second.history
    np.testing.assert_array_equal(predict_proba(first.model, val.images), predict_proba(second.model, val.images))
    other = fit_classifier(train, val, config, seed=4)
    assert other.history != first.history


def test_one_hot_soft_labels_match_hard_labels_and_wrong_ones_do_not(splits: tuple[Dataset, Dataset]) -> None:
    train, val = splits
    config = LINEAR.model_copy(update={"epochs": 3, "label_smoothing": 0.1})
    hard = fit_classifier(train, val, config, seed=0)
    one_hot = np.eye(len(train.classes), dtype=np.float32)[train.labels]
    soft = fit_classifier(replace(train, soft_labels=one_hot), val, config, seed=0)
    for a, b in zip(hard.history, soft.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    shifted = np.roll(one_hot, 1, axis=1) * 0.7 + 0.3 / len(train.classes)
    wrong = fit_classifier(replace(train, soft_labels=shifted), val, config, seed=0)
    assert wrong.history[-1].train_loss != pytest.approx(hard.history[-1].train_loss, rel=1e-2)


def test_balanced_class_weighting_changes_nothing_on_balanced_data(splits: tuple[Dataset, Dataset]) -> None:
    _, val = splits
    train = make_dataset(per_class=12, size=12)  # every image trains: 12 per class
    plain = fit_classifier(train, val, LINEAR.model_copy(update={"epochs": 3}), seed=0)
    balanced = fit_classifier(
        train, val, LINEAR.model_copy(update={"epochs": 3, "class_weighting": "balanced"}), seed=0
    )
    for a, b in zip(plain.history, balanced.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)


@pytest.mark.parametrize("soft", [False, True])
def test_balanced_class_weighting_raises_a_rare_class(splits: tuple[Dataset, Dataset], soft: bool) -> None:
    train, val = splits
    rare = train.classes.index("disgust")
    keep = (train.labels != rare) | (np.cumsum(train.labels == rare) == 1)  # one disgust image among ~80
    imbalanced = train.subset(keep)
    if soft:
        imbalanced = replace(imbalanced, soft_labels=np.eye(len(train.classes), dtype=np.float32)[imbalanced.labels])
    config = LINEAR.model_copy(update={"epochs": 5, "lr": 0.01})
    rare_share = {
        weighting: predict_proba(
            fit_classifier(imbalanced, val, config.model_copy(update={"class_weighting": weighting}), seed=0).model,
            val.images[val.labels == rare],
        )[:, rare].mean()
        for weighting in ("none", "balanced")
    }
    assert rare_share["balanced"] > 2 * rare_share["none"]


def test_vgg_with_sgd_and_step_schedule_trains() -> None:
    dataset = make_dataset(per_class=3, size=16)
    train, val = dataset.subset(dataset.splits != "val"), dataset.split("val")
    config = ClassifierConfig(
        arch="vgg", width=4, epochs=2, batch_size=4, optimizer="sgd", lr=0.1, scheduler="step", step_size=1, gamma=0.5
    )
    result = fit_classifier(train, val, config, seed=0)
    assert [record.lr for record in result.history] == pytest.approx([0.1, 0.05])
    assert all(np.isfinite(record.train_loss) for record in result.history)


def test_fit_rejects_mismatched_data(splits: tuple[Dataset, Dataset]) -> None:
    train, _ = splits
    other_size = make_dataset(per_class=2, size=16)
    with pytest.raises(DataError, match="differ"):
        fit_classifier(train, other_size, LINEAR, seed=0)


def test_predictions_and_features(splits: tuple[Dataset, Dataset]) -> None:
    train, val = splits
    model = fit_classifier(train, val, LINEAR.model_copy(update={"epochs": 1}), seed=0).model
    probabilities = predict_proba(model, val.images, batch_size=7)
    assert probabilities.shape == (len(val), 7) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, predict_proba(model, val.images, batch_size=256), rtol=1e-5)
    assert extract_features(model, val.images, batch_size=7).shape == (len(val), 12 * 12)
    assert predict_proba(model, val.images[:0]).shape == (0, 7)


def test_save_load_round_trip(tmp_path: Path) -> None:
    config = ClassifierConfig(arch="vgg", width=4, epochs=1, batch_size=16)
    dataset = make_dataset(per_class=2, size=16)
    model = fit_classifier(dataset, dataset, config, seed=0).model
    alignment = FaceAlignConfig(detector="mtcnn", margin=0.4)
    save_classifier(tmp_path / "model.pt", model, config, dataset.classes, (16, 16, 1), alignment)
    loaded = load_classifier(tmp_path)  # the directory holding model.pt works too
    assert loaded.classes == dataset.classes and loaded.image_shape == (16, 16, 1) and loaded.config == config
    assert loaded.face_align == alignment
    assert not loaded.model.training
    np.testing.assert_array_equal(predict_proba(model, dataset.images), predict_proba(loaded.model, dataset.images))


def test_load_reports_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent"):
        load_classifier(tmp_path / "absent")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(DataError, match=r"foreign\.pt"):
        load_classifier(foreign)


@pytest.mark.parametrize("arch", ["linear", "vgg"])
def test_a_diverging_fit_stops_naming_the_epoch_and_the_learning_rate(arch: str) -> None:
    dataset = make_dataset(per_class=2, size=16)
    config = ClassifierConfig(arch=arch, width=4, epochs=3, batch_size=4, lr=1.0e30, scheduler="none")
    with pytest.raises(ParamsError, match=r"train\.lr 1e\+30: training diverged, .* in epoch 1; lower train\.lr"):
        fit_classifier(dataset, dataset, config, seed=0)


def test_a_checkpoint_with_a_nan_weight_is_refused_by_name(tmp_path: Path) -> None:
    config = ClassifierConfig(arch="linear", epochs=1)
    model = build_classifier(config, num_classes=7, in_channels=1, image_size=16)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    save_classifier(tmp_path / "model.pt", model, config, make_dataset(per_class=1, size=16).classes, (16, 16, 1))
    with pytest.raises(DataError, match=r"model\.pt: weight head\.weight holds NaN or infinite values"):
        load_classifier(tmp_path)


LEVERS = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "random_erasing": 0.5, "channels_last": True}


def test_fit_with_mixing_erasing_and_channels_last_learns_and_repeats(splits: tuple[Dataset, Dataset]) -> None:
    train, val = splits
    config = LINEAR.model_copy(update=LEVERS)
    first, second = (fit_classifier(train, val, config, seed=0) for _ in range(2))
    assert first.history == second.history
    assert first.best_val_macro_f1 > 2 * CHANCE
    plain = fit_classifier(train, val, LINEAR, seed=0)
    assert [record.train_loss for record in plain.history] != [record.train_loss for record in first.history]


def test_cpu_bf16_trains_in_mixed_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fersynth.runtime.device.cpu_computes_bf16", lambda: True)  # emulated, slowly, where it is not
    dataset = make_dataset(per_class=3, size=16)
    train, val = dataset.subset(dataset.splits != "val"), dataset.split("val")
    vgg = ClassifierConfig(arch="vgg", width=4, epochs=2, batch_size=4, cpu_bf16=True, channels_last=True)
    result = fit_classifier(train, val, vgg, seed=0)
    assert result.precision == "bf16-amp"
    assert all(np.isfinite(record.train_loss) for record in result.history)
    assert next(result.model.parameters()).dtype == torch.float32  # autocast computes in bf16, weights stay fp32


def test_cpu_bf16_falls_back_to_fp32_where_the_cpu_has_no_bf16(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("fersynth.runtime.device.cpu_computes_bf16", lambda: False)
    assert training_precision(torch.device("cpu"), cpu_bf16=True).name == "fp32"
    assert "has no bf16 units" in caplog.text and "training in fp32" in caplog.text
    assert training_precision(torch.device("cpu"), cpu_bf16=False).name == "fp32"


@pytest.mark.parametrize(
    ("scheduler", "factors"),
    [("cosine", [1 / 3, 2 / 3, 1.0, 0.5]), ("none", [1 / 3, 2 / 3, 1.0, 1.0])],
)
def test_warmup_rises_linearly_then_follows_the_scheduler(
    splits: tuple[Dataset, Dataset], scheduler: str, factors: list[float]
) -> None:
    train, val = splits
    config = LINEAR.model_copy(update={"epochs": 4, "warmup_epochs": 2, "scheduler": scheduler})
    result = fit_classifier(train, val, config, seed=0)
    assert [record.lr for record in result.history] == pytest.approx([LINEAR.lr * factor for factor in factors])


def test_test_time_augmentation_averages_the_views(splits: tuple[Dataset, Dataset]) -> None:
    train, val = splits
    model = fit_classifier(train, val, LINEAR.model_copy(update={"epochs": 2}), seed=0).model
    plain, mirrored = predict_proba(model, val.images), predict_proba(model, val.images[:, :, ::-1].copy())
    np.testing.assert_allclose(predict_proba(model, val.images, tta="flip"), (plain + mirrored) / 2, rtol=1e-5)
    ten_views = predict_proba(model, val.images, tta="flip_shifts")
    assert ten_views.shape == plain.shape
    np.testing.assert_allclose(ten_views.sum(axis=1), 1.0, rtol=1e-5)


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [weight.detach().clone() for weight in module.parameters()]


def test_head_only_epochs_hold_the_body_then_release_it(caplog: pytest.LogCaptureFixture) -> None:
    dataset = make_dataset(per_class=3, size=16)
    train, val = dataset.subset(dataset.splits != "val"), dataset.split("val")
    config = ClassifierConfig(arch="vgg", width=4, epochs=2, batch_size=4, head_only_epochs=2)
    seed_everything(0)
    initial = build_classifier(config, len(train.classes), 1, 16)
    probe = fit_classifier(train, val, config, seed=0).model  # phase 1 only: a linear probe on a fixed body
    assert all(torch.equal(a, b) for a, b in zip(_weights(initial.body), _weights(probe.body), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(initial.head), _weights(probe.head), strict=True))
    assert all(weight.requires_grad for weight in probe.parameters())

    with caplog.at_level(logging.INFO, logger="fersynth.training"):
        tuned = fit_classifier(train, val, config.model_copy(update={"epochs": 3, "head_only_epochs": 1}), seed=0)
    assert caplog.text.index("head alone (phase 1)") < caplog.text.index("body trains too (phase 2)")
    if tuned.best_epoch > 1:
        assert not all(
            torch.equal(a, b) for a, b in zip(_weights(initial.body), _weights(tuned.model.body), strict=True)
        )


class SteppingClock:
    """Stands in for time.perf_counter: every reading is `step` seconds after the last, so a time budget ends
    after a known amount of work, however fast this machine is."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_without_a_time_budget_the_epochs_decide(splits: tuple[Dataset, Dataset]) -> None:
    train, val = splits
    result = fit_classifier(train, val, LINEAR.model_copy(update={"epochs": 2}), seed=0)
    assert result.epochs_reached == 2 and not result.stopped_by_budget


def test_a_time_budget_stops_training_and_anneals_to_zero_as_it_runs_out(
    splits: tuple[Dataset, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = splits
    clock = SteppingClock(step=1.0)
    monkeypatch.setattr("fersynth.training.time.perf_counter", clock)
    config = LINEAR.model_copy(update={"epochs": 100, "scheduler": "cosine", "time_budget_minutes": 1.0})
    result = fit_classifier(train, val, config, seed=0)
    assert result.stopped_by_budget
    assert 2 < result.epochs_reached < 6 and result.epochs_reached != int(result.epochs_reached)  # cut mid-epoch
    assert len(result.history) == int(result.epochs_reached) + 1
    assert sum(result.epoch_seconds) <= 60.0
    rates = [record.lr for record in result.history]
    assert rates == sorted(rates, reverse=True) and rates[0] < LINEAR.lr
    assert rates[-1] < 0.02 * LINEAR.lr  # the cosine reached (nearly) zero when the budget ran out
    assert result.best_val_macro_f1 > 2 * CHANCE


def test_a_time_budget_keeps_warmup_epochs_then_anneals_the_rest(
    splits: tuple[Dataset, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = splits
    monkeypatch.setattr("fersynth.training.time.perf_counter", SteppingClock(step=1.0))
    config = LINEAR.model_copy(
        update={"epochs": 100, "warmup_epochs": 2, "scheduler": "cosine", "time_budget_minutes": 2.0}
    )
    rates = [record.lr for record in fit_classifier(train, val, config, seed=0).history]
    # Warm-up epochs end at 1/3 and 2/3 of the rate (their last batch already sets the next epoch's rate,
    # epoch 3's full rate at the start of the main phase); then the cosine falls to zero.
    assert rates[0] == pytest.approx(LINEAR.lr / 3)
    assert rates[2] > rates[-1] and rates[-1] < 0.02 * LINEAR.lr


def test_a_budget_too_small_for_one_epoch_still_trains_a_batch(
    splits: tuple[Dataset, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = splits  # 12 batches an epoch
    monkeypatch.setattr("fersynth.training.time.perf_counter", SteppingClock(step=60.0))
    config = LINEAR.model_copy(update={"time_budget_minutes": 0.5})
    result = fit_classifier(train, val, config, seed=0)
    assert result.epochs_reached == pytest.approx(1 / 12) and len(result.history) == 1 and result.stopped_by_budget


class Killed(Exception):
    """Stands in for a kill arriving mid-epoch."""


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """nanoGPT-style resume: weights, optimizer, scheduler, RNGs and history come back; the epoch in progress
    is redone, so the result equals a run that was never stopped."""
    dataset = make_dataset(per_class=8, size=16)  # VGG (dropout, batch norm) needs 16 pixels for its 4 blocks
    train, val = dataset.subset(dataset.splits != "val"), dataset.split("val")
    config = ClassifierConfig(arch="vgg", width=4, epochs=3, batch_size=8, lr=3e-3)
    straight = fit_classifier(train, val, config, seed=0)

    resume = tmp_path / "resume.pt"
    with caplog.at_level(logging.INFO, logger="fersynth.training"):  # two batches into the third epoch
        resumed = _killed_and_resumed(train, val, config, resume, monkeypatch, epoch=3, batch=2)
    assert "after 2 epoch(s)" in caplog.text
    assert resumed.history == straight.history and resumed.best_epoch == straight.best_epoch
    for a, b in zip(_weights(straight.model), _weights(resumed.model), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_checkpoint_of_another_run_is_not_resumed(
    splits: tuple[Dataset, Dataset], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train, val = splits
    config = LINEAR.model_copy(update={"epochs": 1})
    resume = tmp_path / "resume.pt"
    fit_classifier(train, val, config, seed=0, resume=resume)
    assert resume.is_file()
    with caplog.at_level(logging.INFO):
        fit_classifier(train, val, config, seed=1, resume=resume)  # another seed: another run
    assert "training from scratch" in caplog.text and "resuming" not in caplog.text


def test_a_finished_budget_run_rerun_trains_nothing_more(
    splits: tuple[Dataset, Dataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget's spent minutes are part of the checkpoint: a rerun after the budget ran out ends at once."""
    train, val = splits
    monkeypatch.setattr("fersynth.training.time.perf_counter", SteppingClock(step=1.0))
    config = LINEAR.model_copy(update={"epochs": 50, "time_budget_minutes": 0.5})
    resume = tmp_path / "resume.pt"
    first = fit_classifier(train, val, config, seed=0, resume=resume)
    assert first.stopped_by_budget
    again = fit_classifier(train, val, config, seed=0, resume=resume)
    assert again.history == first.history and again.epochs_reached == first.epochs_reached


def test_an_images_budget_stops_at_that_many_images_and_repeats_exactly(splits: tuple[Dataset, Dataset]) -> None:
    """Equal cost that no machine load can change: 2.5 epochs of images, the lr annealed over them."""
    train, val = splits
    config = LINEAR.model_copy(update={"epochs": 50, "scheduler": "cosine", "images_budget": len(train) * 5 // 2})
    first = fit_classifier(train, val, config, seed=0)
    assert first.stopped_by_budget and 2.4 <= first.epochs_reached <= 2.6 and len(first.history) == 3
    assert first.history[-1].lr < 0.05 * LINEAR.lr
    again = fit_classifier(train, val, config, seed=0)
    assert again.history == first.history


def test_only_one_budget_may_be_set() -> None:
    with pytest.raises(ValueError, match="time_budget_minutes or images_budget, not both"):
        ClassifierConfig(time_budget_minutes=1.0, images_budget=100)


def _scripted_val_macro_f1(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> None:
    """Each epoch's val macro-F1 (what picks the checkpoint, stops early and steps a plateau schedule) is
    `scores[epoch - 1]`; the rest of its record is measured."""

    def scripted(model: torch.nn.Module, val: Dataset, epoch: int, *rest: object) -> EpochRecord:
        return replace(_evaluate_epoch(model, val, epoch, *rest), val_macro_f1=scores[epoch - 1])  # type: ignore[arg-type]

    monkeypatch.setattr("fersynth.training._evaluate_epoch", scripted)


def test_early_stopping_ends_after_patience_epochs_and_returns_the_best(
    splits: tuple[Dataset, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = splits
    _scripted_val_macro_f1(monkeypatch, [0.2, 0.5, 0.5, 0.4, 0.6, 0.7])  # equal is no improvement
    config = LINEAR.model_copy(update={"epochs": 6, "early_stopping_patience": 2})
    result = fit_classifier(train, val, config, seed=0)
    assert [record.epoch for record in result.history] == [1, 2, 3, 4]
    assert result.stopped_early and not result.stopped_by_budget and result.epochs_reached == 4
    assert result.best_epoch == 2 and result.best_val_macro_f1 == 0.5
    at_best = fit_classifier(train, val, config.model_copy(update={"epochs": 2}), seed=0)
    assert not at_best.stopped_early
    np.testing.assert_array_equal(predict_proba(result.model, val.images), predict_proba(at_best.model, val.images))
    patient = fit_classifier(train, val, config.model_copy(update={"early_stopping_patience": 3}), seed=0)
    assert len(patient.history) == 6 and patient.best_epoch == 6 and not patient.stopped_early


def test_a_plateau_schedule_lowers_the_rate_after_its_patience(
    splits: tuple[Dataset, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = splits
    _scripted_val_macro_f1(monkeypatch, [0.5, 0.4, 0.3, 0.6, 0.6, 0.5])
    config = LINEAR.model_copy(
        update={"epochs": 6, "scheduler": "plateau", "plateau_factor": 0.5, "plateau_patience": 1}
    )
    rates = [record.lr for record in fit_classifier(train, val, config, seed=0).history]
    # Epochs 2 and 3 bring nothing better: more than 1 bad epoch halves the rate from epoch 4 on; epoch 5's one
    # bad epoch (an equal score) is within the patience.
    assert rates == pytest.approx([0.05, 0.05, 0.05, 0.025, 0.025, 0.025])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scheduler": "plateau", "warmup_epochs": 2}, "scheduler 'plateau' takes no warm-up"),
        ({"scheduler": "plateau", "images_budget": 100}, "scheduler 'plateau' follows val macro-F1"),
        ({"phase_two_lr_factor": 0.1}, "phase_two_lr_factor has no effect without head_only_epochs"),
    ],
)
def test_schedules_that_cannot_run_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifierConfig(**changes)  # type: ignore[arg-type]


def test_a_killed_run_with_a_plateau_and_early_stopping_resumes_to_the_same_end(
    splits: tuple[Dataset, Dataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = splits
    _scripted_val_macro_f1(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1])
    config = LINEAR.model_copy(
        update={"epochs": 7, "scheduler": "plateau", "plateau_patience": 1, "early_stopping_patience": 4}
    )
    straight = fit_classifier(train, val, config, seed=0)
    assert straight.stopped_early and len(straight.history) == 5 and straight.history[-1].lr < LINEAR.lr

    resume = tmp_path / "resume.pt"
    # killed at the first batch of epoch 4: the plateau's count of bad epochs must come back too
    resumed = _killed_and_resumed(train, val, config, resume, monkeypatch, epoch=4, batch=1)
    assert resumed.history == straight.history and resumed.stopped_early
    again = fit_classifier(train, val, config, seed=0, resume=resume)  # stopped already: trains nothing more
    assert again.history == straight.history and again.stopped_early


COS_QUARTER = math.cos(math.pi / 4)


@pytest.mark.parametrize(
    ("changes", "factors"),
    [
        ({"scheduler": "none"}, [1.0, 1.0, 0.1, 0.1]),
        # The cosine anneals on from the lowered rate: c(t) × 0.1 in phase 2.
        ({"scheduler": "cosine"}, [1.0, (1 + COS_QUARTER) / 2, 0.1 * 0.5, 0.1 * (1 - COS_QUARTER) / 2]),
        # Phase 2 starts in the warm-up: the cosine after it starts from the lowered rate too.
        ({"scheduler": "cosine", "warmup_epochs": 2, "head_only_epochs": 1}, [1 / 3, 2 / 3 * 0.1, 0.1, 0.05]),
        ({"scheduler": "none", "images_budget": 4}, [1.0, 1.0, 0.1, 0.1]),  # a budget (here of 4 epochs) as well
    ],
)
def test_phase_two_scales_every_rate_once(
    splits: tuple[Dataset, Dataset], changes: dict[str, object], factors: list[float]
) -> None:
    train, val = splits
    if "images_budget" in changes:  # in epochs: the images of that many
        changes = {**changes, "images_budget": int(changes["images_budget"]) * len(train)}  # type: ignore[call-overload]
    config = LINEAR.model_copy(update={"epochs": 4, "head_only_epochs": 2, "phase_two_lr_factor": 0.1, **changes})
    rates = [record.lr for record in fit_classifier(train, val, config, seed=0).history]
    assert rates == pytest.approx([LINEAR.lr * factor for factor in factors])


def _batch_norm_statistics(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items() if "running_" in name}


def test_phase_one_holds_the_body_batch_norm_statistics_and_phase_two_updates_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset = make_dataset(per_class=3, size=16)
    train, val = dataset.subset(dataset.splits != "val"), dataset.split("val")
    _scripted_val_macro_f1(monkeypatch, [0.1, 0.2, 0.3])  # the last epoch is the best: its weights come back
    config = ClassifierConfig(arch="vgg", width=4, epochs=2, batch_size=4, head_only_epochs=2)
    seed_everything(0)
    initial = _batch_norm_statistics(build_classifier(config, len(train.classes), 1, 16))
    assert initial
    probe = fit_classifier(train, val, config, seed=0).model
    assert all(torch.equal(initial[name], value) for name, value in _batch_norm_statistics(probe).items())
    probe.train()
    assert all(module.training for module in probe.modules())  # the returned model holds nothing back

    tuned = fit_classifier(train, val, config.model_copy(update={"epochs": 3}), seed=0).model
    moved = [name for name, value in _batch_norm_statistics(tuned).items() if not torch.equal(initial[name], value)]
    assert len(moved) == len(initial)


def test_a_hidden_head_trains_saves_and_loads(splits: tuple[Dataset, Dataset], tmp_path: Path) -> None:
    train, val = splits
    config = LINEAR.model_copy(update={"epochs": 2, "head_hidden": 16, "head_dropout": 0.5})
    model = fit_classifier(train, val, config, seed=0).model
    assert isinstance(model.head, ClassifierHead) and model.head[0].out_features == 16
    assert extract_features(model, val.images).shape == (len(val), 12 * 12)
    save_classifier(tmp_path / "model.pt", model, config, train.classes, (12, 12, 1))
    loaded = load_classifier(tmp_path)
    np.testing.assert_array_equal(predict_proba(model, val.images), predict_proba(loaded.model, val.images))


def _killed_and_resumed(
    train: Dataset,
    val: Dataset,
    config: ClassifierConfig,
    resume: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    epoch: int,
    batch: int,
) -> FitResult:
    """fit_classifier killed `batch` batches into `epoch` (checkpointing to `resume`), then run again to resume."""
    real_step = _Budget.step
    steps_in_epoch = []

    def kill(self: _Budget, optimizer: torch.optim.Optimizer, at_epoch: int, images: int) -> bool:
        if at_epoch == epoch:
            steps_in_epoch.append(at_epoch)
            if len(steps_in_epoch) == batch:
                raise Killed
        return real_step(self, optimizer, at_epoch, images)

    monkeypatch.setattr(_Budget, "step", kill)
    with pytest.raises(Killed):
        fit_classifier(train, val, config, seed=0, resume=resume)
    monkeypatch.setattr(_Budget, "step", real_step)
    return fit_classifier(train, val, config, seed=0, resume=resume)
