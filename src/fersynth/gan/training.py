"""GAN training: one conditional GAN, or one unconditional GAN per class trained in turn.

Each GAN to train is a `TrainingUnit`. The loop checkpoints every `checkpoint_every` epochs
(weights, optimisers, EMA, sampler and global RNG states), so an interrupted run resumes where it
stopped and ends with the same weights as an uninterrupted one.

In a process group (fersynth.runtime.distributed) G and D train under DistributedDataParallel: every rank draws
the same real batches, noise and augmentations as one process would and trains on its shard of each
batch; rank 0 alone writes checkpoints, which resume in one process or several alike.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dvclive import Live
from torch import nn

from fersynth.checkpointing import load_checkpoint, restore_rng, save_checkpoint, training_fingerprint
from fersynth.config import TrainGanConfig
from fersynth.datasets.format import Dataset, concatenate
from fersynth.errors import DataError
from fersynth.gan.augment import diff_augment
from fersynth.gan.generator import GanGenerator
from fersynth.gan.models import (
    GanArchitecture,
    GanGeneratorNetwork,
    build_discriminator,
    build_generator,
    upsampling_steps,
)
from fersynth.registry import Registry
from fersynth.runtime.device import default_device, step_optimizer, training_precision
from fersynth.runtime.distributed import (
    check_shards,
    data_parallel,
    is_main_process,
    log_weights_digest,
    shard,
    shard_weight,
    sum_over_processes,
    world_size,
)
from fersynth.runtime.progress import progress_bar
from fersynth.runtime.seeding import seed_everything
from fersynth.runtime.torch_files import MISFIT, describe

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "fersynth-gan-checkpoint/1"
# Settings that change how often we save, not what is trained: a new value still resumes.
NOT_FINGERPRINTED = {"checkpoint_every"}

LOSS_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")
BN_RECALIBRATION_BATCHES = 16
BN_RECALIBRATION_BATCH_SIZE = 64
EMA_WARMUP = 10  # EMA decay ramps as (1+t)/(10+t): short demo runs would otherwise sample near-initial weights

EpochHook = Callable[[str, int], None]  # (unit name, epochs completed in that unit)
StepHook = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class TrainingUnit:
    """One GAN to train: every class (conditional) or a single class (per_class mode)."""

    name: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64; None trains an unconditional GAN
    images_per_epoch: int
    balanced: bool  # draw real batches with equal class probabilities

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.images_per_epoch // batch_size)


@dataclass
class GanResult:
    generator: GanGenerator
    history: list[dict[str, Any]]  # one entry per epoch: unit, epoch, d_loss, g_loss, d_real, d_fake
    epochs: int
    images_seen: int
    batch_size: int
    train_images: int
    device: str  # where it trained, e.g. "cpu" or "cuda:0" (rank 0's)
    precision: str  # "fp32", "bf16-amp" or "fp16-amp" (fersynth.runtime.device.Precision)
    processes: int  # DistributedDataParallel ranks that trained it together
    resumed_epochs: int = 0  # epochs restored from the checkpoint instead of trained in this run

    def metrics(self) -> dict[str, float | int | str]:
        """Flat metrics: run size, where it ran, and the final epoch's losses (per class in per_class mode)."""
        values: dict[str, float | int | str] = {
            "epochs": self.epochs,
            "steps": self.images_seen // self.batch_size,
            "images_seen": self.images_seen,
            "train_images": self.train_images,
            "device": self.device,
            "precision": self.precision,
            "processes": self.processes,
        }
        last_epoch_of_unit = {entry["unit"]: entry for entry in self.history}
        for unit, entry in last_epoch_of_unit.items():
            suffix = "" if self.generator.mode == "conditional" else f"_{unit}"
            values |= {f"{name}{suffix}": entry[name] for name in LOSS_NAMES}
        return values


@dataclass
class RunState:
    """Progress over all units; with the current unit's trainer it is what a checkpoint holds."""

    checkpoint_dir: Path
    fingerprint: str
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, torch.Tensor]] = field(default_factory=list)  # exported generators of done units
    images_seen: int = 0

    def save(self, unit_index: int, trainer: UnitTrainer) -> None:
        state = {"unit": unit_index, "trainer": trainer.state_dict(), "history": self.history}
        progress = {"finished": self.finished, "images_seen": self.images_seen}
        save_checkpoint(self.checkpoint_dir / CHECKPOINT_FILE, CHECKPOINT_FORMAT, self.fingerprint, state | progress)


def train_gan(
    dataset: Dataset,
    config: TrainGanConfig,
    seed: int,
    checkpoint_dir: Path,
    live: Live | None = None,
    offline: Dataset | None = None,
    on_epoch_end: EpochHook | None = None,
    device: torch.device | None = None,
) -> GanResult:
    """Train on the TRAIN split of `dataset` (plus `offline`'s train rows when `config.use_offline`).

    Resumes from `checkpoint_dir` when it holds a checkpoint of this exact config, seed and data.
    `on_epoch_end` runs after each epoch's checkpoint (tests interrupt a run through it). `device`
    defaults to a GPU when there is one; there, training runs in mixed precision. In a process group
    pass `live` on rank 0 only.
    """
    check_shards(config.batch_size, f"train_gan.batch_size {config.batch_size}")
    # Training draws from its own seeded generators; seeding the global ones too makes the RNG snapshot
    # inside each checkpoint, and so the checkpoint file DVC hashes, the same on every run.
    seed_everything(seed)
    device = device or default_device()
    train = training_images(dataset, offline if config.use_offline else None)
    units = training_units(train, config)
    arch = architecture(train, config)
    fingerprint = training_fingerprint(train, config.model_dump(exclude=NOT_FINGERPRINTED), seed)
    # Made even when nothing will train (epochs 0): DVC expects every declared output, this folder included.
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    saved = load_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE, CHECKPOINT_FORMAT, fingerprint)
    run = RunState(checkpoint_dir, fingerprint)
    unit_arch = unit_architecture(arch, config.mode)
    restored = restore_run(saved, run, units, unit_arch, config, seed, device) if saved else None
    resumed_epochs = len(run.history)
    if live is not None:
        # `live` starts empty (DVC and fersynth.runtime.live clear it): replay the restored epochs, so the curves end at
        # the checkpoint's epoch whatever a killed run had logged after it.
        for entry in run.history:
            log_epoch(live, entry, config.mode)
    total_steps = sum(unit.steps_per_epoch(config.batch_size) for unit in units) * config.epochs
    with progress_bar() as bar:
        task = bar.add_task("train GAN", total=total_steps, completed=run.images_seen // config.batch_size, status="")

        def show(losses: dict[str, float]) -> None:
            bar.update(task, advance=1, status=" ".join(f"{key} {value:.3f}" for key, value in losses.items()))

        first = len(run.finished)
        for index in range(first, len(units)):
            if index == first and restored is not None:
                trainer = restored
            else:
                trainer = UnitTrainer(unit_arch, config, units[index], seed, index, device)
            train_unit(trainer, index, run, show, live, on_epoch_end)
            run.finished.append(trainer.exported_generator().state_dict())
    generator = GanGenerator.from_states(config.mode, train.classes, unit_arch, run.finished)
    log_weights_digest(generator.networks)
    return GanResult(
        generator=generator,
        history=run.history,
        epochs=config.epochs,
        images_seen=run.images_seen,
        batch_size=config.batch_size,
        train_images=len(train),
        device=str(device),
        precision=training_precision(device).name,
        processes=world_size(),
        resumed_epochs=resumed_epochs,
    )


def restore_run(
    saved: dict[str, Any],
    run: RunState,
    units: list[TrainingUnit],
    arch: GanArchitecture,
    config: TrainGanConfig,
    seed: int,
    device: torch.device,
) -> UnitTrainer | None:
    """Fill `run` from a checkpoint of this run and return the trainer of the unit it stopped in, RNGs restored.

    A checkpoint whose content does not fit (a key missing, weights of another shape: a damaged or
    hand-edited file) is reported and None returned, `run` left empty: training starts from scratch,
    the global RNGs seeded as if no checkpoint had been there. Nothing between here and the trainer's
    first epoch draws a random number, so the restored RNG states still hold when it starts.
    """
    try:
        unit, finished = int(saved["unit"]), list(saved["finished"])
        if unit != len(finished) or unit >= len(units):
            raise ValueError(f"unit {unit} of {len(units)} after {len(finished)} finished")
        for state in finished:
            build_generator(arch).load_state_dict(state)
        history = [history_entry(entry) for entry in saved["history"]]
        trainer = UnitTrainer(arch, config, units[unit], seed, unit, device)
        trainer.load_state_dict(saved["trainer"])
        images_seen = int(saved["images_seen"])
        restore_rng(saved["rng"])
    except MISFIT as error:
        log.warning(
            "%s: does not fit this run (%s); training from scratch",
            run.checkpoint_dir / CHECKPOINT_FILE,
            describe(error),
        )
        seed_everything(seed)
        return None
    run.history, run.finished, run.images_seen = history, finished, images_seen
    log.info("resuming GAN training from %s after %d epoch(s)", run.checkpoint_dir, len(history))
    return trainer


def history_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One epoch's record as the checkpoint holds it, checked: unit, epoch and a float per loss."""
    losses = {name: float(entry[name]) for name in LOSS_NAMES}
    return {"unit": str(entry["unit"]), "epoch": int(entry["epoch"])} | losses


def train_unit(
    trainer: UnitTrainer,
    unit_index: int,
    run: RunState,
    show: StepHook,
    live: Live | None,
    on_epoch_end: EpochHook | None,
) -> None:
    """Run the remaining epochs of one unit, logging and checkpointing after each."""
    config = trainer.config
    while trainer.epoch < config.epochs:
        started = time.perf_counter()
        losses = trainer.train_epoch(show)
        run.images_seen += trainer.unit.steps_per_epoch(config.batch_size) * config.batch_size
        entry = {"unit": trainer.unit.name, "epoch": trainer.epoch} | losses
        run.history.append(entry)
        seconds = time.perf_counter() - started
        log.info(
            "GAN %s epoch %d/%d: %s (%.1f s)", entry["unit"], trainer.epoch, config.epochs, _describe(losses), seconds
        )
        if live is not None:
            log_epoch(live, entry, config.mode)
        due = trainer.epoch % config.checkpoint_every == 0 or trainer.epoch == config.epochs
        if due and is_main_process():  # every rank holds the same state; one writes it
            run.save(unit_index, trainer)
        if on_epoch_end is not None:
            on_epoch_end(trainer.unit.name, trainer.epoch)


class UnitTrainer:
    """Generator, discriminator, EMA copy and optimisers of one GAN, and its training step."""

    def __init__(
        self,
        arch: GanArchitecture,
        config: TrainGanConfig,
        unit: TrainingUnit,
        seed: int,
        index: int,
        device: torch.device | None = None,
    ) -> None:
        self.config, self.unit = config, unit
        self.unit_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        torch.manual_seed(self.unit_seed)  # same initial weights whether or not earlier units ran in this process
        self.device = device or default_device()
        self.precision = training_precision(self.device)
        self.scaler = self.precision.grad_scaler()  # one for both optimisers: updated once per step
        self.generator = build_generator(arch).to(self.device)
        self.discriminator = build_discriminator(arch).to(self.device)
        self.images = unit.images.to(self.device)
        self.labels = unit.labels.to(self.device) if unit.labels is not None else None
        self.ema = copy.deepcopy(self.generator) if config.ema_decay > 0 else None
        # What trains; the plain networks above stay what is saved, exported and averaged into the EMA.
        self.parallel_generator = data_parallel(self.generator, self.device)
        self.parallel_discriminator = data_parallel(self.discriminator, self.device)
        betas = (config.beta1, config.beta2)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_generator, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_discriminator, betas=betas)
        self.sampler = np.random.default_rng(self.unit_seed)
        self.epoch = 0
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "sampler": self.sampler.bit_generator.state,
            "epoch": self.epoch,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.sampler.bit_generator.state = state["sampler"]
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def epoch_batches(self) -> np.ndarray:
        """(steps, batch_size) indexes of real images: class-balanced draws or shuffled passes."""
        steps, batch_size = self.unit.steps_per_epoch(self.config.batch_size), self.config.batch_size
        count = len(self.unit.images)
        if self.unit.balanced and self.unit.labels is not None:
            labels = self.unit.labels.numpy()
            weights = 1.0 / np.bincount(labels)[labels]
            indexes = self.sampler.choice(count, size=steps * batch_size, p=weights / weights.sum())
        else:
            passes = math.ceil(steps * batch_size / count)
            indexes = np.concatenate([self.sampler.permutation(count) for _ in range(passes)])[: steps * batch_size]
        return indexes.reshape(steps, batch_size)

    def train_epoch(self, show: StepHook) -> dict[str, float]:
        self.parallel_generator.train()
        self.parallel_discriminator.train()
        totals = dict.fromkeys(LOSS_NAMES, 0.0)
        batches = self.epoch_batches()
        for batch in batches:
            losses = self.train_step(torch.from_numpy(batch))
            totals = {name: totals[name] + losses[name] for name in LOSS_NAMES}
            show(losses)
        self.epoch += 1
        # Each process's mean over its shards; their mean is the epoch's (exactly so when the shards are equal).
        summed = dict(zip(LOSS_NAMES, sum_over_processes(*totals.values()), strict=True))
        return {name: total / (len(batches) * world_size()) for name, total in summed.items()}

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        """One D update then one G update on the same fakes (saves a generator pass per step).

        In a process group this process trains on its shard of `batch`, with its part of the batch's noise.
        """
        count, part = len(batch), shard(len(batch))
        noise = torch.randn(count, self.generator.arch.latent_dim, device=self.device)[part]
        batch = batch[part].to(self.device)
        real = self.images[batch].float() / 127.5 - 1
        labels = self.labels[batch] if self.labels is not None else None
        with self.precision.autocast():
            fake = self.parallel_generator(noise, labels)
            # Real and fake go through D separately: its minibatch-std layer must not mix them.
            real_scores, real_logits = self.parallel_discriminator(self.augment(real, count), labels)
            fake_scores, _ = self.parallel_discriminator(self.augment(fake.detach(), count), labels)
            d_loss = GAN_LOSSES[self.config.loss].discriminator(real_scores, fake_scores)
            d_loss = d_loss + self.class_loss(real_logits, labels)
        step_optimizer(d_loss * shard_weight(count), self.optimizer_d, self.scaler)

        # G's loss needs gradients through D, not for D; the plain D, so DDP awaits no gradients for it.
        self.discriminator.requires_grad_(False)
        with self.precision.autocast():
            fake_scores_for_g, fake_logits = self.discriminator(self.augment(fake, count), labels)
            g_loss = GAN_LOSSES[self.config.loss].generator(fake_scores_for_g) + self.class_loss(fake_logits, labels)
        step_optimizer(g_loss * shard_weight(count), self.optimizer_g, self.scaler)
        self.discriminator.requires_grad_(True)
        self.scaler.update()
        self.step += 1
        self.update_ema()
        return {
            "d_loss": d_loss.item(),
            "g_loss": g_loss.item(),
            "d_real": real_scores.mean().item(),
            "d_fake": fake_scores.mean().item(),
        }

    def augment(self, images: torch.Tensor, count: int) -> torch.Tensor:
        """DiffAugment this process's shard as its rows of the whole batch of `count` images.

        The augmentations are per image: padded with zero rows for the other shards, every process draws the
        random numbers one process would, and each shard gets its own part of them.
        """
        part, rest = shard(count), images.shape[1:]
        before, after = images.new_zeros((part.start, *rest)), images.new_zeros((count - part.stop, *rest))
        return diff_augment(torch.cat([before, images, after]), self.config.diffaugment)[part]

    def class_loss(self, logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | float:
        """Weighted cross-entropy of D's auxiliary classifier (0 for unconditional GANs or weight 0)."""
        if logits is None or labels is None or self.config.class_loss_weight == 0:
            return 0.0
        return self.config.class_loss_weight * F.cross_entropy(logits, labels)

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(self.config.ema_decay, self.step / (self.step + EMA_WARMUP))
        for average, current in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
            average.lerp_(current, 1 - decay)
        for average, current in zip(self.ema.buffers(), self.generator.buffers(), strict=True):
            average.copy_(current)

    def exported_generator(self) -> GanGeneratorNetwork:
        """The generator to sample from (EMA if enabled), BatchNorm statistics recomputed for its weights.

        The running statistics were gathered with the raw generator's weights; re-estimating them
        with the exported weights ("standing statistics") keeps eval-mode samples sharp.
        """
        exported = copy.deepcopy(self.ema if self.ema is not None else self.generator)
        recalibrate_batchnorm(exported, self.unit_seed)
        return exported.cpu().eval()


@torch.no_grad()
def recalibrate_batchnorm(generator: GanGeneratorNetwork, seed: int) -> None:
    norms = [module for module in generator.modules() if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the recalibration batches
    random = torch.Generator().manual_seed(seed)
    arch = generator.arch
    device = next(generator.parameters()).device
    generator.train()
    for _ in range(BN_RECALIBRATION_BATCHES):
        noise = torch.randn(BN_RECALIBRATION_BATCH_SIZE, arch.latent_dim, generator=random)
        labels = torch.randint(0, max(arch.num_classes, 1), (BN_RECALIBRATION_BATCH_SIZE,), generator=random)
        generator(noise.to(device), labels.to(device) if arch.num_classes else None)
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()


@dataclass(frozen=True)
class GanLoss:
    """The adversarial loss pair: the discriminator's on (real, fake) scores, the generator's on fake ones."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]


GAN_LOSSES: Registry[GanLoss] = Registry("GAN loss", "train_gan.loss")


def _hinge_discriminator(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def _nonsaturating_discriminator(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()


def _hinge_generator(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def _nonsaturating_generator(fake_scores: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_scores).mean()


GAN_LOSSES.register("hinge")(GanLoss(_hinge_discriminator, _hinge_generator))
GAN_LOSSES.register("nonsaturating")(GanLoss(_nonsaturating_discriminator, _nonsaturating_generator))


def training_images(dataset: Dataset, offline: Dataset | None) -> Dataset:
    """Real train rows (never val/test), plus offline variants of train images when given."""
    parts = [dataset.split("train")] + ([offline.split("train")] if offline is not None else [])
    train = concatenate(parts)
    if len(train) == 0:
        raise DataError("no images in the 'train' split to train the GAN on")
    return train


def architecture(train: Dataset, config: TrainGanConfig) -> GanArchitecture:
    """Image size and channels come from the data, widths and latent size from the config."""
    _, height, width, channels = train.images.shape
    if height != width:
        raise DataError(f"GAN training needs square images, got {height}×{width}")
    try:
        upsampling_steps(height)
    except ValueError as error:
        raise DataError(str(error)) from None
    return GanArchitecture(
        image_size=height,
        channels=channels,
        latent_dim=config.latent_dim,
        base_channels=config.base_channels,
        num_classes=len(train.classes),
        spectral_norm=config.spectral_norm,
        name=config.arch,
    )


def training_units(train: Dataset, config: TrainGanConfig) -> list[TrainingUnit]:
    """Conditional: one unit over all images. Per class: one unit per class.

    Per-class units share the conditional run's budget: len(train) images per epoch in total,
    split equally (balanced_sampling) or by class size, so both modes cost about the same.
    """
    images = torch.from_numpy(np.ascontiguousarray(train.images)).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    if config.mode == "conditional":
        return [TrainingUnit("all", images, labels, len(train), config.balanced_sampling)]
    units = []
    for index, name in enumerate(train.classes):
        members = labels == index
        if not members.any():
            raise DataError(f"per_class GAN: class {name!r} has no training images")
        share = len(train) / len(train.classes) if config.balanced_sampling else int(members.sum())
        units.append(TrainingUnit(name, images[members], None, math.ceil(share), False))
    return units


def unit_architecture(arch: GanArchitecture, mode: str) -> GanArchitecture:
    """Per-class units are unconditional GANs: no class embedding in G or D."""
    return arch if mode == "conditional" else replace(arch, num_classes=0)


def log_epoch(live: Live, entry: dict[str, Any], mode: str) -> None:
    """One dvclive step per epoch; per-class runs prefix each curve with the class name."""
    prefix = "" if mode == "conditional" else f"{entry['unit']}/"
    for name in LOSS_NAMES:
        live.log_metric(f"{prefix}{name}", entry[name])
    live.next_step()


def _describe(losses: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in losses.items())
