"""Train an expression classifier, score images with it, and save/load it as one checkpoint file.

Used by the train stage and by calibrate's teachers. Images arrive as uint8 (N, H, W, C) arrays,
possibly memory-mapped: they are read batch by batch, never converted whole.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dvclive import Live
from rich.progress import Progress, TaskID

from fersynth.checkpointing import load_checkpoint, restore_rng, save_checkpoint, training_fingerprint
from fersynth.config import ClassifierConfig, FaceAlignConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import DataError, ParamsError
from fersynth.metrics import macro_f1
from fersynth.models import Classifier, build_classifier, count_parameters, parameter_groups
from fersynth.online_augmentation import BatchMix, TestTimeAugmentation, augment_batch, draw_mix, tta_views
from fersynth.runtime.device import Precision, default_device, step_optimizer, training_precision
from fersynth.runtime.distributed import (
    check_shards,
    computed_on_main_process,
    data_parallel,
    is_main_process,
    log_weights_digest,
    seed_torch_per_rank,
    shard,
    shard_weight,
    sum_over_processes,
    world_size,
)
from fersynth.runtime.progress import progress_bar
from fersynth.runtime.seeding import seed_everything
from fersynth.runtime.torch_files import MISFIT, describe, load_fersynth_file, save_torch_file

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    lr: float  # of the head, during this epoch


@dataclass(frozen=True)
class FitResult:
    model: Classifier  # best weights loaded, in eval mode
    best_epoch: int
    best_val_macro_f1: float
    best_val_accuracy: float
    history: list[EpochRecord]
    epoch_seconds: list[float]  # wall time of each epoch (training, validation, bookkeeping): not repeatable
    epochs_reached: float  # epochs trained, the last one counted by its share of batches when a budget cut it short
    stopped_by_budget: bool  # config.time_budget_minutes (or images_budget) ran out before config.epochs did
    # config.early_stopping_patience epochs passed without a better val macro-F1 before config.epochs did (then
    # stopped_by_budget is False: early stopping is what ended it, even when the budget ran out too)
    stopped_early: bool
    device: str  # where it trained, e.g. "cpu" or "cuda:0" (rank 0's)
    precision: str  # "fp32", "bf16-amp" or "fp16-amp" (fersynth.runtime.device.Precision)
    processes: int  # DistributedDataParallel ranks that trained it together


@dataclass(frozen=True)
class LoadedClassifier:
    model: Classifier  # in eval mode
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) of the images it was trained on
    config: ClassifierConfig
    # How its training faces were aligned (margin, detector): what `predict` repeats on new photos.
    # None in checkpoints saved before it was recorded, and for teachers (their data is aligned the same way).
    face_align: FaceAlignConfig | None = None

    def face_align_or_default(self) -> FaceAlignConfig:
        """The recorded alignment, or the defaults for a checkpoint that records none."""
        return self.face_align or FaceAlignConfig()


@dataclass(frozen=True)
class TrainingRun:
    """A trained classifier plus what the train stage reports about it."""

    fit: FitResult
    config: ClassifierConfig
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    train_images: int
    val_images: int

    def save(self, path: Path, face_align: FaceAlignConfig) -> None:
        """The checkpoint `load_classifier` reads, with the alignment its training faces had (what predict repeats)."""
        save_classifier(path, self.fit.model, self.config, self.classes, self.image_shape, face_align)

    def metrics(self) -> dict[str, Any]:
        return {
            "best_epoch": self.fit.best_epoch,
            "best_val_macro_f1": self.fit.best_val_macro_f1,
            "best_val_accuracy": self.fit.best_val_accuracy,
            "epochs": len(self.fit.history),
            "epochs_reached": round(self.fit.epochs_reached, 2),
            "stopped_by_budget": self.fit.stopped_by_budget,
            **({"stopped_early": self.fit.stopped_early} if self.config.early_stopping_patience else {}),
            "training_seconds": round(sum(self.fit.epoch_seconds), 1),
            "epoch_seconds": [round(seconds, 1) for seconds in self.fit.epoch_seconds],
            "train_images": self.train_images,
            "val_images": self.val_images,
            "parameters": count_parameters(self.fit.model),
            "device": self.fit.device,
            "precision": self.fit.precision,
            "processes": self.fit.processes,
        }


def train_classifier(
    train: Dataset,
    real: Dataset,
    config: ClassifierConfig,
    seed: int,
    *,
    live: Live | None = None,
    device: torch.device | None = None,
    resume: Path | None = None,
    names: tuple[str, str] = ("training set", "real set"),
) -> TrainingRun:
    """Train on every row of `train` and select the checkpoint on the val split of `real`.

    `names` (of `train` and `real`) label them in error messages; `live`, `device` and `resume`: see
    `fit_classifier` (in a process group, pass `live` on rank 0 only).
    """
    train_name, real_name = names
    val = real.split("val")
    if len(train) < 2:
        raise DataError(f"{train_name}: {len(train)} images; need at least two to train on")
    if len(val) == 0:
        raise DataError(f"{real_name}: no rows with split 'val' to select the checkpoint on")
    if train.images.shape[1:] != val.images.shape[1:]:
        raise DataError(
            f"{train_name} holds {_shape_text(train)} images but {real_name} holds {_shape_text(val)}; "
            "were they aligned with the same common.image_size and common.channels?"
        )
    fit = fit_classifier(train, val, config, seed, live=live, device=device, resume=resume)
    return TrainingRun(
        fit=fit,
        config=config,
        classes=train.classes,
        image_shape=_image_shape(train),
        train_images=len(train),
        val_images=len(val),
    )


def fit_classifier(
    train: Dataset,
    val: Dataset,
    config: ClassifierConfig,
    seed: int,
    live: Live | None = None,
    description: str = "train",
    device: torch.device | None = None,
    params_key: str = "train",
    resume: Path | None = None,
) -> FitResult:
    """Train from scratch (or from resnet18 weights) and keep the epoch with the best val macro-F1.

    Targets are `train.soft_labels` when present (soft-target cross-entropy), else the hard labels.
    Same data, config and seed give the same weights on the same CPU, unless `config.time_budget_minutes` makes
    the wall clock decide when training stops and how the learning rate anneals. `device` defaults to a GPU when
    there is one; there, training runs in mixed precision.

    In a process group (fersynth.runtime.distributed) every rank draws the same batches and trains on its shard
    of each; rank 0 alone evaluates, so pass `live` on rank 0 only.

    An epoch that ends with a non-finite loss or weight raises a ParamsError naming `params_key`'s learning rate:
    training diverged, and going on would only save a model that predicts one class.

    With `resume` (a file), every finished epoch is checkpointed there (weights, optimizer, scheduler, scaler,
    RNG states, history, best so far, and the budget's minutes already spent), and a run that finds a checkpoint
    of this exact config, seed and data continues after its last epoch: a killed run loses at most the epoch it
    was in, and in one process ends with the weights an uninterrupted run would have.

    `config.early_stopping_patience` ends the run once that many epochs have passed without a better val macro-F1
    (judged from the history, so a resumed run stops where the uninterrupted one would).
    """
    _check_compatible(train, val)
    batches = _batches(np.arange(len(train)), config.batch_size)
    check_shards(min(len(batch) for batch in batches), f"train.batch_size {config.batch_size}")
    device = device or default_device()
    fit = _start_fit(train, config, seed, device)
    fingerprint = _resume_fingerprint(train, val, config, seed) if resume is not None else ""
    progress = _Progress() if resume is None else _resumed(resume, fingerprint, fit, seed, live)
    logger.info(
        "%s: %s, %d parameters, %d train / %d val images on %s (%s, %d process(es))",
        description,
        config.arch,
        count_parameters(fit.model),
        len(train),
        len(val),
        device,
        fit.training.precision.name,
        world_size(),
    )
    first_epoch = progress.epochs_done + 1
    with progress_bar() as bar:
        for epoch in range(first_epoch, config.epochs + 1):
            if fit.budget.out_of_time() or _patience_ran_out(progress, config):
                break
            if config.head_only_epochs and epoch in (first_epoch, config.head_only_epochs + 1):
                _enter_phase(fit, epoch, config, description)
            title = f"{description} {epoch}/{fit.budget.epochs_text(config.epochs)}"
            task = bar.add_task(title, total=len(batches), status="")
            record, seconds, reached = _fit_epoch(fit, train, val, config, epoch, bar, task, description, params_key)
            progress.add(record, seconds, reached, fit.model)
            _log_epoch(live, record)
            fit.budget.end_of_epoch(epoch)
            if resume is not None and is_main_process():
                _save_progress(resume, fingerprint, progress, fit)
    return _best_of(fit, progress, config, description, device)


@dataclass
class _Fit:
    """One fit's moving parts: the model and what updates it, what steps and bounds its rate, its batch stream,
    and its targets."""

    model: Classifier
    training: _Training
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    budget: _Budget
    rng: np.random.Generator  # the batch order and augmentation draws
    body_weights: list[torch.nn.Parameter]  # held fixed in phase 1 of two-phase fine-tuning
    targets: torch.Tensor
    class_weights: torch.Tensor | None


def _start_fit(train: Dataset, config: ClassifierConfig, seed: int, device: torch.device) -> _Fit:
    """A fresh model, optimizer, schedule and budget, seeded: what epoch 1 starts from."""
    rng = seed_everything(seed)
    height, _, channels = _image_shape(train)
    model = build_classifier(config, len(train.classes), channels, height).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, config)
    body_weights = _two_phase_body(model, config)
    training = _Training(data_parallel(model, device), optimizer, training_precision(device, config.cpu_bf16))
    seed_torch_per_rank(seed)
    budget = _Budget(config)
    scheduler = None if budget.active else _make_scheduler(optimizer, config)
    budget.prepare(optimizer)
    targets = _training_targets(train).to(device)
    class_weights = (
        _balanced_class_weights(targets, len(train.classes)) if config.class_weighting == "balanced" else None
    )
    return _Fit(model, training, scheduler, budget, rng, body_weights, targets, class_weights)


def _resumed(resume: Path, fingerprint: str, fit: _Fit, seed: int, live: Live | None) -> _Progress:
    """The progress `resume` holds for this exact run, loaded into `fit` (none: a fresh start), its epochs
    replayed to `live` so the curves show the whole run, not only what this process trains."""
    progress = _restored_progress(resume, fingerprint, fit) or _Progress()
    if progress.epochs_done:
        seed_torch_per_rank(seed + progress.epochs_done)  # ranks but 0 draw on from a stream of their own
    for record in progress.history:
        _log_epoch(live, record)
    return progress


def _enter_phase(fit: _Fit, epoch: int, config: ClassifierConfig, description: str) -> None:
    """Phase 1 holds the body's weights and batch-norm statistics; phase 2 releases them and, as it starts,
    scales every rate by phase_two_lr_factor (a run resumed later finds them scaled in its saved optimizer and
    scheduler)."""
    phase_two = epoch > config.head_only_epochs
    _set_trainable(fit.body_weights, phase_two)
    fit.model.hold_body_statistics(not phase_two)
    if epoch == config.head_only_epochs + 1:
        _scale_rates(fit.training.optimizer, fit.scheduler, config.phase_two_lr_factor)
    logger.info("%s: %s", description, "body trains too (phase 2)" if phase_two else "head alone (phase 1)")


def _scale_rates(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None, factor: float
) -> None:
    """Every group's rate and the rates schedules start from (`initial_lr`, what a budget anneals; a scheduler's
    `base_lrs`, what cosine restarts from after warm-up) × `factor`: the schedule goes on from the scaled rate."""
    if factor == 1.0:
        return
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    for part in [scheduler, *getattr(scheduler, "_schedulers", [])]:  # SequentialLR's own schedulers
        if hasattr(part, "base_lrs"):
            part.base_lrs = [rate * factor for rate in part.base_lrs]


def _patience_ran_out(progress: _Progress, config: ClassifierConfig) -> bool:
    """Early stopping: the last early_stopping_patience epochs brought no better val macro-F1 than the best's.
    Derived from the history alone, so a resumed run decides as the uninterrupted one."""
    patience = config.early_stopping_patience
    return bool(patience) and progress.best is not None and progress.epochs_done - progress.best.epoch >= patience


def _fit_epoch(
    fit: _Fit,
    train: Dataset,
    val: Dataset,
    config: ClassifierConfig,
    epoch: int,
    bar: Progress,
    task: TaskID,
    description: str,
    params_key: str,
) -> tuple[EpochRecord, float, float]:
    """Train one epoch (or what the budget leaves of it), validate, step the schedule: the epoch's record, its
    seconds, and the epochs reached so far (fractional when the budget ended it early)."""
    started = time.perf_counter()
    done = _train_epoch(
        fit.training,
        train.images,
        fit.targets,
        fit.class_weights,
        config,
        fit.rng,
        on_batch=lambda loss: bar.update(task, advance=1, status=f"loss {loss:.3f}"),
        stop_after_batch=partial(fit.budget.step, fit.training.optimizer, epoch),
    )
    _stop_if_diverged(done.loss, fit.model, epoch, config, params_key)
    lr = fit.training.optimizer.param_groups[-1]["lr"]
    validation_started = time.perf_counter()
    # Rank 0 alone evaluates, and the others take its record: their batch-norm statistics are not the
    # ones rank 0 saves, so their own scores could pick another best epoch (and other final weights).
    record = computed_on_main_process(partial(_evaluate_epoch, fit.model, val, epoch, done.loss, lr, config))
    fit.budget.validation_seconds = time.perf_counter() - validation_started
    elapsed = time.perf_counter() - started
    bar.update(task, status=f"loss {done.loss:.3f}  val macro-F1 {record.val_macro_f1:.3f}")
    logger.info("%s epoch %d: %.1f s, %.0f train images/s", description, epoch, elapsed, len(train) / elapsed)
    if isinstance(fit.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        fit.scheduler.step(record.val_macro_f1)
    elif fit.scheduler is not None:
        fit.scheduler.step()
    return record, elapsed, epoch - 1 + done.share


def _best_of(
    fit: _Fit, progress: _Progress, config: ClassifierConfig, description: str, device: torch.device
) -> FitResult:
    """The model at its best val epoch, in eval mode and trainable as a whole, with the run's record."""
    best = progress.best
    assert best is not None  # epochs >= 1, and a budget is first checked after a batch
    _set_trainable(fit.body_weights, True)  # a run that ended in phase 1 returns a model like any other
    fit.model.hold_body_statistics(False)
    stopped_early = _patience_ran_out(progress, config) and progress.epochs_done < config.epochs
    fit.model.load_state_dict(progress.best_state)
    fit.model.eval()
    logger.info("%s: best val macro-F1 %.4f at epoch %d", description, best.val_macro_f1, best.epoch)
    log_weights_digest([fit.model])
    return FitResult(
        fit.model,
        best.epoch,
        best.val_macro_f1,
        best.val_accuracy,
        progress.history,
        progress.epoch_seconds,
        epochs_reached=progress.epochs_reached,
        stopped_by_budget=not stopped_early and progress.epochs_reached < config.epochs,
        stopped_early=stopped_early,
        device=str(device),
        precision=fit.training.precision.name,
        processes=world_size(),
    )


def predict_proba(
    model: Classifier, images: np.ndarray, batch_size: int = 256, tta: TestTimeAugmentation = "none"
) -> np.ndarray:
    """(N, K) float32 class probabilities of uint8 (N, H, W, C) images; with `tta`, their mean over its views."""
    probabilities = [
        torch.softmax(_map_batches(model, model.forward, view, batch_size, model.head.out_features), dim=1)
        for view in tta_views(images, tta)
    ]
    return torch.stack(probabilities).mean(dim=0).numpy().astype(np.float32)


def extract_features(model: Classifier, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, D) float32 penultimate-layer features, e.g. for a Fréchet distance in a FER feature space."""
    return _map_batches(model, model.features, images, batch_size, model.head.in_features).numpy().astype(np.float32)


def save_classifier(
    path: Path,
    model: Classifier,
    config: ClassifierConfig,
    classes: Sequence[str],
    image_shape: Sequence[int],
    face_align: FaceAlignConfig | None = None,
) -> None:
    """One file: weights plus plain-data metadata, so loading needs no pickled objects."""
    checkpoint = {
        "face_align": None if face_align is None else face_align.model_dump(),
        "format": CHECKPOINT_FORMAT,
        "state_dict": {name: value.detach().cpu() for name, value in model.state_dict().items()},
        "config": config.model_dump(),
        "classes": list(classes),
        "image_shape": [int(side) for side in image_shape],
    }
    save_torch_file(path, checkpoint)


def load_classifier(path: Path) -> LoadedClassifier:
    """Rebuild a classifier saved by `save_classifier`; `path` is the file or a directory holding model.pt."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    what = "classifier checkpoint"
    loaded = load_fersynth_file(file, what, what, CHECKPOINT_FORMAT, "train", _rebuild_classifier)
    broken = _first_non_finite(loaded.model.state_dict())
    if broken is not None:
        raise DataError(
            f"{file}: weight {broken} holds NaN or infinite values; the training that saved it diverged "
            "(retrain with a lower learning rate)"
        )
    loaded.model.to(default_device()).eval()
    return loaded


def _first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of `state` holding a NaN or an infinity; None if all are finite."""
    floats = {name: tensor for name, tensor in state.items() if tensor.is_floating_point()}
    finite = torch.stack([torch.isfinite(tensor).all() for tensor in floats.values()]).tolist()  # one device sync
    return next((name for name, ok in zip(floats, finite, strict=True) if not ok), None)


def _stop_if_diverged(loss: float, model: Classifier, epoch: int, config: ClassifierConfig, params_key: str) -> None:
    """Checked once an epoch, on what every rank agrees on (the loss summed over ranks, the synchronised weights),
    so all ranks stop together; per batch would sync a GPU once more per step for no earlier answer that matters."""
    broken = _first_non_finite(model.state_dict())
    if math.isfinite(loss) and broken is None:
        return
    what = f"the training loss became {loss:g}" if not math.isfinite(loss) else f"weight {broken} became non-finite"
    raise ParamsError(
        f"{params_key}.lr {config.lr:g}: training diverged, {what} in epoch {epoch}; lower {params_key}.lr"
    )


def _rebuild_classifier(checkpoint: dict[str, Any]) -> LoadedClassifier:
    config = ClassifierConfig.model_validate(checkpoint["config"])
    classes = tuple(str(name) for name in checkpoint["classes"])
    height, width, channels = (int(side) for side in checkpoint["image_shape"])
    # The checkpoint holds every weight: do not reload (or require) the transfer-learning file.
    architecture = config.model_copy(update={"weights_path": "", "freeze_blocks": 0})
    model = build_classifier(architecture, len(classes), channels, height)
    model.load_state_dict(checkpoint["state_dict"])
    alignment = checkpoint.get("face_align")
    face_align = None if alignment is None else FaceAlignConfig.model_validate(alignment)
    return LoadedClassifier(model, classes, (height, width, channels), config, face_align)


def _check_compatible(train: Dataset, val: Dataset) -> None:
    if len(train) < 2 or len(val) == 0:
        raise DataError(f"need at least two training and one validation image (got {len(train)} and {len(val)})")
    if train.classes != val.classes or train.images.shape[1:] != val.images.shape[1:]:
        raise DataError(
            f"training ({_shape_text(train)}, {len(train.classes)} classes) and validation "
            f"({_shape_text(val)}, {len(val.classes)} classes) data differ"
        )


def _image_shape(dataset: Dataset) -> tuple[int, int, int]:
    height, width, channels = dataset.images.shape[1:]
    return int(height), int(width), int(channels)


def _shape_text(dataset: Dataset) -> str:
    return "x".join(str(side) for side in dataset.images.shape[1:])


def _make_optimizer(model: Classifier, config: ClassifierConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _two_phase_body(model: Classifier, config: ClassifierConfig) -> list[torch.nn.Parameter]:
    """The body weights phase 1 of two-phase fine-tuning holds fixed (none without it); the optimizer has them
    from the start, so phase 2 needs no new one. Weights frozen for good (freeze_blocks) are not among them."""
    if not config.head_only_epochs:
        return []
    if world_size() > 1:
        # DistributedDataParallel expects a gradient for every weight it was given, at every step.
        raise ParamsError("train.head_only_epochs: two-phase fine-tuning trains in one process (set processes to 1)")
    return [weight for weight in model.body.parameters() if weight.requires_grad]


def _set_trainable(weights: list[torch.nn.Parameter], trainable: bool) -> None:
    for weight in weights:
        weight.requires_grad_(trainable)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: ClassifierConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per epoch: `warmup_epochs` of linear warm-up (from lr / (warmup + 1)), then `scheduler`;
    plateau (no warm-up: params refuse one) is stepped with the epoch's val macro-F1."""
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
        )
    warmup = min(config.warmup_epochs, config.epochs - 1)
    main: torch.optim.lr_scheduler.LRScheduler | None = None
    if config.scheduler == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs - warmup)
    elif config.scheduler == "step":
        main = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if warmup <= 0:
        return main
    rising = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    if main is None:
        return rising
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [rising, main], milestones=[warmup])


class _Budget:
    """`time_budget_minutes` of wall time (training and validation alike, on rank 0's clock) or `images_budget`
    training images; every process stops after the same batch and sets the same learning rate.

    Warm-up epochs ramp the learning rate as in epoch mode; after them the scheduler runs on the share of the
    remaining budget spent, stepped after every batch: cosine reaches zero as the budget runs out. In minutes, an
    epoch stops early when the rest of the budget would not cover its validation (as long as the last one took);
    images are only counted while training.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        self.config = config
        self.in_images = config.images_budget > 0
        self.total = float(config.images_budget) if self.in_images else config.time_budget_minutes * 60.0
        self.active = self.total > 0
        self.started = time.perf_counter()
        self.main_phase_start = 0.0  # spent (seconds or images) when warm-up ended
        self.validation_seconds = 0.0
        self._spent = 0.0  # seconds at the last check, or images trained on

    def epochs_text(self, epochs: int) -> str:
        if not self.active:
            return str(epochs)
        limit = (
            f"{self.config.images_budget:,} images" if self.in_images else f"{self.config.time_budget_minutes:g} min"
        )
        return f"{epochs} (or {limit})"

    def step(self, optimizer: torch.optim.Optimizer, epoch: int, images: int) -> bool:
        """After a batch of `images` in `epoch` (from 1): set the learning rate for the next; True ends the epoch."""
        if not self.active:
            return False
        self._spent = self._spent + images if self.in_images else self._seconds()
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self._factor(epoch)
        return self.out_of_time()

    def end_of_epoch(self, epoch: int) -> None:
        if self.active:
            if not self.in_images:
                self._spent = self._seconds()
            if epoch == self.config.warmup_epochs:
                self.main_phase_start = self._spent

    def progress(self) -> dict[str, float]:
        return {
            "spent": self._spent,
            "main_phase_start": self.main_phase_start,
            "validation_seconds": self.validation_seconds,
        }

    def restore(self, progress: dict[str, float]) -> None:
        """Continue a killed run's budget: what it spent counts as spent."""
        self._spent = float(progress["spent"])
        self.main_phase_start = float(progress["main_phase_start"])
        self.validation_seconds = float(progress["validation_seconds"])
        if not self.in_images:
            self.started = time.perf_counter() - self._spent

    def out_of_time(self) -> bool:
        """Whether the budget is spent (in minutes: what is left would not cover another validation)."""
        reserve = 0.0 if self.in_images else self.validation_seconds
        return self.active and self._spent + reserve >= self.total

    def _seconds(self) -> float:
        return computed_on_main_process(lambda: time.perf_counter() - self.started)

    def _factor(self, epoch: int) -> float:
        config = self.config
        if epoch <= config.warmup_epochs:
            return epoch / (config.warmup_epochs + 1)
        if config.scheduler == "step":
            return config.gamma ** ((epoch - 1 - config.warmup_epochs) // config.step_size)
        if config.scheduler == "none":
            return 1.0
        remaining = max(self.total - self.main_phase_start, 1e-9)
        share = min(max((self._spent - self.main_phase_start) / remaining, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * share))

    def prepare(self, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            if self.active:
                group["lr"] = group["initial_lr"] * self._factor(1)


RESUME_FORMAT = "fersynth-classifier-resume/1"


@dataclass
class _Progress:
    """Where a fit stands after `epochs_done` epochs: what a resumed run continues from."""

    epochs_done: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best: EpochRecord | None = None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    epochs_reached: float = 0.0

    def add(self, record: EpochRecord, seconds: float, epochs_reached: float, model: Classifier) -> None:
        """One more finished epoch; its weights become the best state when its val macro-F1 beats the best's."""
        self.epochs_done = record.epoch
        self.history.append(record)
        self.epoch_seconds.append(seconds)
        self.epochs_reached = epochs_reached
        if self.best is None or record.val_macro_f1 > self.best.val_macro_f1:
            self.best = record
            self.best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same_tensors(saved: object, expected: dict[str, torch.Tensor]) -> bool:
    """Whether `saved` is a state dict with exactly `expected`'s names and shapes."""
    if not isinstance(saved, dict) or saved.keys() != expected.keys():
        return False
    return all(isinstance(saved[name], torch.Tensor) and saved[name].shape == expected[name].shape for name in expected)


def _resume_fingerprint(train: Dataset, val: Dataset, config: ClassifierConfig, seed: int) -> str:
    """Config, seed, training data, and the val data that chose the best epoch so far."""
    return training_fingerprint(train, config.model_dump() | {"val": training_fingerprint(val, {}, 0)}, seed)


def _save_progress(path: Path, fingerprint: str, progress: _Progress, fit: _Fit) -> None:
    assert progress.best is not None  # saved after an epoch's validation
    state = {
        "epochs_done": progress.epochs_done,
        "model": fit.model.state_dict(),
        "optimizer": fit.training.optimizer.state_dict(),
        "scheduler": None if fit.scheduler is None else fit.scheduler.state_dict(),
        "scaler": fit.training.scaler.state_dict(),
        "generator": fit.rng.bit_generator.state,
        "history": [asdict(record) for record in progress.history],
        "epoch_seconds": progress.epoch_seconds,
        "best_epoch": progress.best.epoch,
        "best_state": progress.best_state,
        "epochs_reached": progress.epochs_reached,
        "budget": fit.budget.progress(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, RESUME_FORMAT, fingerprint, state)


def _restored_progress(path: Path, fingerprint: str, fit: _Fit) -> _Progress | None:
    """The progress a checkpoint of this exact run holds, loaded into the model, optimizer and the rest; None
    (training from scratch, nothing changed) when there is none or it does not fit."""
    saved = load_checkpoint(path, RESUME_FORMAT, fingerprint)
    if saved is None:
        return None
    if not _same_tensors(saved.get("model"), fit.model.state_dict()):  # the code changed under the same params
        logger.warning("%s: its weights do not fit this model; training from scratch", path)
        return None
    try:
        history = [EpochRecord(**record) for record in saved["history"]]
        best = next(record for record in history if record.epoch == saved["best_epoch"])
        fit.model.load_state_dict(saved["model"])
        fit.training.optimizer.load_state_dict(saved["optimizer"])
        if fit.scheduler is not None:
            fit.scheduler.load_state_dict(saved["scheduler"])
        fit.training.scaler.load_state_dict(saved["scaler"])
        fit.rng.bit_generator.state = saved["generator"]
        fit.budget.restore(saved["budget"])
        restore_rng(saved["rng"])
        progress = _Progress(
            int(saved["epochs_done"]),
            history,
            [float(seconds) for seconds in saved["epoch_seconds"]],
            best,
            dict(saved["best_state"]),
            float(saved["epochs_reached"]),
        )
    except (*MISFIT, StopIteration) as error:  # the weights fit, the rest does not: a damaged or hand-made file
        raise DataError(f"{path}: a damaged checkpoint ({describe(error)}); delete it to train afresh") from None
    logger.info("resuming from %s after %d epoch(s)", path, progress.epochs_done)
    return progress


def _training_targets(train: Dataset) -> torch.Tensor:
    """Class indexes (N,), or probability rows (N, K) when the dataset carries soft labels."""
    if train.soft_labels is None:
        return torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    soft = np.asarray(train.soft_labels, dtype=np.float32)
    if soft.shape != (len(train), len(train.classes)) or not np.all(soft >= 0) or np.any(soft.sum(axis=1) <= 0):
        raise DataError(f"soft labels must be non-negative (N, {len(train.classes)}) rows, got shape {soft.shape}")
    return torch.from_numpy(soft / soft.sum(axis=1, keepdims=True))


def _balanced_class_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (k · n_class) per class, counting soft rows by their mass; absent classes weigh 0 (nothing to weigh)."""
    if targets.ndim == 1:
        counts = torch.bincount(targets, minlength=num_classes).to(torch.float32)
    else:
        counts = targets.sum(dim=0)
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float32, device=targets.device)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Near-equal batches of at most `batch_size`: never a lone image (batch norm cannot train on one)."""
    count = -(-len(order) // batch_size)
    return np.array_split(order, count)


@dataclass
class _Training:
    """What turns a batch's loss into a weight update."""

    network: torch.nn.Module  # the classifier; under DistributedDataParallel in a process group
    optimizer: torch.optim.Optimizer
    precision: Precision
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = self.precision.grad_scaler()


@dataclass(frozen=True)
class _EpochPass:
    loss: float  # mean training loss over all processes' shards
    share: float  # of the epoch's batches trained: below 1 when a time budget ended it early


def _train_epoch(
    training: _Training,
    images: np.ndarray,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None,
    config: ClassifierConfig,
    rng: np.random.Generator,
    on_batch: Callable[[float], None],
    stop_after_batch: Callable[[int], bool],
) -> _EpochPass:
    """One pass in a seeded random order, or its first batches until `stop_after_batch` says stop."""
    training.network.train()
    device = targets.device
    total_loss, seen = 0.0, 0
    batches = _batches(rng.permutation(len(images)), config.batch_size)
    trained = 0
    for batch_indices in batches:
        batch_indices = np.sort(batch_indices)  # sequential reads from a memory-mapped array; order is moot
        # Every process augments (and mixes) the whole batch, so all draw what one process would; each trains
        # on its shard.
        batch = augment_batch(
            images[batch_indices], rng, config.flip_augment, config.shift_augment, config.random_erasing
        )
        count, height, width, _ = batch.shape
        mix = draw_mix(rng, config.mixup_alpha, config.cutmix_alpha, count, height, width)
        inputs = _to_input(batch, device)
        if mix is not None:
            inputs = mix.apply(inputs)
        if config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        part = shard(count)
        batch_targets = targets[torch.from_numpy(batch_indices).to(device)]
        with training.precision.autocast():
            logits = training.network(inputs[part])
            loss = _batch_loss(logits, batch_targets, part, mix, class_weights, config.label_smoothing)
        step_optimizer(loss * shard_weight(count), training.optimizer, training.scaler)
        training.scaler.update()
        shard_size = part.stop - part.start
        total_loss += float(loss.item()) * shard_size
        seen += shard_size
        trained += 1
        on_batch(float(loss.item()))
        if stop_after_batch(count):  # the whole batch's images, the same number on every rank
            break
    total_loss, seen = sum_over_processes(total_loss, seen)
    return _EpochPass(total_loss / seen, trained / len(batches))


def _batch_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    part: slice,
    mix: BatchMix | None,
    class_weights: torch.Tensor | None,
    label_smoothing: float,
) -> torch.Tensor:
    """Cross-entropy of this process's shard `part` of a batch, against mixed targets when the batch was mixed."""
    if mix is not None:
        return mix.loss(logits, targets, part, class_weights, label_smoothing)
    return F.cross_entropy(logits, targets[part], weight=class_weights, label_smoothing=label_smoothing)


def _to_input(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1].

    For a GPU the batch is staged in pinned (page-locked) memory, which it copies from asynchronously.
    """
    staged = torch.empty(batch.shape, dtype=torch.uint8, pin_memory=device.type == "cuda")
    staged.numpy()[...] = batch
    return staged.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def _evaluate_epoch(
    model: Classifier, val: Dataset, epoch: int, train_loss: float, lr: float, config: ClassifierConfig
) -> EpochRecord:
    logits = _map_batches(model, model.forward, val.images, config.batch_size, model.head.out_features)
    labels = torch.from_numpy(np.asarray(val.labels, dtype=np.int64))
    predictions = logits.argmax(dim=1).numpy()
    return EpochRecord(
        epoch=epoch,
        train_loss=train_loss,
        val_loss=float(F.cross_entropy(logits, labels).item()),
        val_accuracy=float(np.mean(predictions == val.labels)),
        val_macro_f1=macro_f1(val.labels, predictions),
        lr=float(lr),
    )


def _map_batches(
    model: Classifier,
    function: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    batch_size: int,
    output_width: int,
) -> torch.Tensor:
    """Apply `function` in eval mode to consecutive batches; (N, output_width) on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    outputs = [torch.zeros(0, output_width)]
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            outputs.append(function(_to_input(images[start : start + batch_size], device)).float().cpu())
    return torch.cat(outputs)


def _log_epoch(live: Live | None, record: EpochRecord) -> None:
    if live is None:
        return
    for name, value in asdict(record).items():
        if name != "epoch":
            live.log_metric(name, value)
    live.next_step()
