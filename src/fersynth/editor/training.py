"""Training the expression editor (StarGAN losses, GANimation attention mask, GANmut-style intensities).

Each step draws a class-balanced batch of real train faces, a target expression other than each face's own and an
intensity in [intensity_min, intensity_max]. D learns hinge real/fake plus the real faces' expressions; G learns to
fool D, to make D read the conditioned expression mix, to give the face back when edited back to its source
expression (cycle) and to keep its attention mask sparse. Everything random comes from the seed: the same seed
gives the same weights on the same machine.

G's edits only start once D reads expressions: until then the cycle loss pulls G toward the identity (mask → 0).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dvclive import Live

from fersynth.config import TrainEditorConfig
from fersynth.datasets.format import Dataset
from fersynth.editor.editor import ExpressionEditor
from fersynth.editor.models import (
    EditorArchitecture,
    EditorDiscriminator,
    EditorGenerator,
    condition_vectors,
    parameter_count,
)
from fersynth.errors import DataError
from fersynth.runtime.device import default_device, step_optimizer, training_precision
from fersynth.runtime.progress import progress_bar
from fersynth.runtime.seeding import seed_everything

log = logging.getLogger(__name__)

LOSS_NAMES = ("d_adv", "d_cls", "g_adv", "g_cls", "g_rec", "mask_mean")
EPOCH_NAMES = (*LOSS_NAMES, "d_real_class_accuracy")
METRIC_DECIMALS = 4
SHOWN = ("d_adv", "d_cls", "g_cls", "g_rec")  # beside the progress bar

StepHook = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class EditorTrainingResult:
    editor: ExpressionEditor
    history: tuple[dict[str, float], ...] = ()  # one entry per epoch: EPOCH_NAMES → epoch means
    epochs: int = 0
    steps_per_epoch: int = 0
    batch_size: int = 0
    train_images: int = 0
    generator_parameters: int = 0
    training_seconds: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"

    def metrics(self) -> dict[str, Any]:
        """Flat, JSON-able: run size, where it ran, and the last epoch's mean losses (None when no epoch ran)."""
        last = self.history[-1] if self.history else {}
        values: dict[str, Any] = {
            "epochs": self.epochs,
            "steps": self.epochs * self.steps_per_epoch,
            "images_seen": self.epochs * self.steps_per_epoch * self.batch_size,
            "train_images": self.train_images,
            "generator_parameters": self.generator_parameters,
            "training_seconds": round(self.training_seconds, 1),
            "device": self.device,
            "precision": self.precision,
        }
        return values | {name: _rounded(last.get(name)) for name in EPOCH_NAMES}


def train_editor(
    real: Dataset,
    config: TrainEditorConfig,
    seed: int,
    live: Live | None = None,
    device: torch.device | None = None,
) -> EditorTrainingResult:
    """Train an editor on the real faces of `real`'s train split (never val/test, never synthetic or offline rows).

    `device` defaults to a GPU when there is one (mixed precision there); `live` gets one step of curves per epoch.
    """
    seed_everything(seed)  # the networks' initial weights and spectral-norm vectors come from the global RNG
    device = device or default_device()
    train = editor_training_faces(real, config.batch_size)
    arch = editor_architecture(train, config)
    trainer = EditorTrainer(arch, config, train, seed, device)
    steps = trainer.steps_per_epoch
    log.info(
        "training the expression editor on %d real train faces (%s), %d epoch(s) of %d steps, on %s (%s)",
        len(train),
        ", ".join(f"{name} {count}" for name, count in train.class_counts().items()),
        config.epochs,
        steps,
        device,
        trainer.precision.name,
    )
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    with progress_bar() as bar:
        for epoch in range(1, config.epochs + 1):
            task = bar.add_task(f"train editor {epoch}/{config.epochs}", total=steps, status="")

            def show(losses: dict[str, float], task: Any = task) -> None:
                bar.update(task, advance=1, status=" ".join(f"{key} {value:.3f}" for key, value in losses.items()))

            entry = trainer.train_epoch(show)
            history.append(entry)
            summary = ", ".join(f"{name} {value:.3f}" for name, value in entry.items())
            log.info("editor epoch %d/%d: %s", epoch, config.epochs, summary)
            if live is not None:
                log_epoch(live, entry)
    seconds = time.perf_counter() - started
    return EditorTrainingResult(
        editor=trainer.exported_editor(train.classes),
        history=tuple(history),
        epochs=config.epochs,
        steps_per_epoch=steps,
        batch_size=config.batch_size,
        train_images=len(train),
        generator_parameters=parameter_count(trainer.generator),
        training_seconds=seconds,
        device=str(device),
        precision=trainer.precision.name,
    )


def editor_training_faces(real: Dataset, batch_size: int) -> Dataset:
    """The rows with split 'train' and source 'real', checked: two expressions at least and a batch's worth of faces."""
    train = real.subset((real.splits == "train") & (real.sources == "real"))
    counts = train.class_counts()
    present = [name for name, count in counts.items() if count]
    if len(present) < 2:
        raise DataError(
            "the expression editor needs real train faces of at least 2 classes to learn edits between them; "
            f"found {', '.join(f'{name} {count}' for name, count in counts.items())} "
            f"(rows with split 'train' and source 'real', of {len(real)} rows)"
        )
    if len(train) < batch_size:
        raise DataError(
            f"the expression editor trains on batches of {batch_size} real train faces but found only {len(train)}; "
            "lower train_editor.batch_size or add training faces"
        )
    missing = [name for name, count in counts.items() if not count]
    if missing:
        log.warning("no real train faces of %s: edits toward them stay untrained", ", ".join(missing))
    return train


def editor_architecture(train: Dataset, config: TrainEditorConfig) -> EditorArchitecture:
    """Image shape from the data, class count from its classes, widths and depth from the config."""
    _, height, width, channels = train.images.shape
    try:
        return EditorArchitecture(
            height=height,
            width=width,
            channels=channels,
            num_classes=len(train.classes),
            base_channels=config.base_channels,
            residual_blocks=config.residual_blocks,
        )
    except ValueError as error:
        raise DataError(str(error)) from None


class EditorTrainer:
    """G, D, their optimisers and the seeded sampler of batches, targets and intensities."""

    def __init__(
        self, arch: EditorArchitecture, config: TrainEditorConfig, train: Dataset, seed: int, device: torch.device
    ) -> None:
        self.config, self.arch, self.device = config, arch, device
        self.precision = training_precision(device)
        self.scaler = self.precision.grad_scaler()  # one for both optimisers: updated once per step
        self.generator = EditorGenerator(arch).to(device)
        self.discriminator = EditorDiscriminator(arch).to(device)
        betas = (config.beta1, config.beta2)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_generator, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_discriminator, betas=betas)
        self.images = torch.from_numpy(np.ascontiguousarray(train.images)).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = np.asarray(train.labels, dtype=np.int64)
        self.present = np.flatnonzero(np.bincount(self.labels, minlength=arch.num_classes))
        self.sampler = np.random.default_rng(seed)
        per_epoch = config.images_per_epoch or len(self.labels)
        self.steps_per_epoch = max(1, per_epoch // config.batch_size)

    def draw_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indexes of real faces (each class present equally likely), their targets and the edits' intensities."""
        counts = np.bincount(self.labels)
        weights = 1.0 / counts[self.labels]
        size = self.config.batch_size
        indexes = self.sampler.choice(len(self.labels), size=size, p=weights / weights.sum())
        sources = self.labels[indexes]
        # Uniform among the present classes other than the source: draw from one fewer and skip the source's slot.
        draws = self.sampler.integers(0, len(self.present) - 1, size=size)
        slots = np.searchsorted(self.present, sources)
        targets = self.present[draws + (draws >= slots)]
        intensities = self.sampler.uniform(self.config.intensity_min, self.config.intensity_max, size=size)
        return indexes, targets, intensities

    def train_epoch(self, show: StepHook) -> dict[str, float]:
        """`steps_per_epoch` steps; the epoch's mean of each loss."""
        self.generator.train()
        self.discriminator.train()
        totals = dict.fromkeys(EPOCH_NAMES, 0.0)
        for _ in range(self.steps_per_epoch):
            values = self.train_step(*self.draw_batch())
            totals = {name: totals[name] + values[name] for name in EPOCH_NAMES}
            show({name: values[name] for name in SHOWN})
        return {name: total / self.steps_per_epoch for name, total in totals.items()}

    def train_step(self, indexes: np.ndarray, targets: np.ndarray, intensities: np.ndarray) -> dict[str, float]:
        """One D update, then one G update on the same edits (saves a generator pass per step); the losses."""
        rows = torch.from_numpy(indexes).to(self.device)
        real = self.images[rows].float() / 127.5 - 1
        source = torch.from_numpy(self.labels[indexes]).to(self.device)
        target = torch.from_numpy(targets).to(self.device)
        weights = torch.from_numpy(intensities).to(self.device)
        condition = condition_vectors(source, target, weights, self.arch.num_classes)
        with self.precision.autocast():
            fake, mask = self.generator(real, condition)
        values = self.discriminator_step(real, fake.detach(), source)
        values |= self.generator_step(real, fake, mask, source, condition)
        self.scaler.update()
        return values

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, source: torch.Tensor) -> dict[str, float]:
        """Hinge real/fake on patches plus the real faces' expression cross-entropy."""
        with self.precision.autocast():
            real_scores, real_logits = self.discriminator(real)
            fake_scores, _ = self.discriminator(fake)
            d_adv = F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
            d_cls = F.cross_entropy(real_logits.float(), source)
        step_optimizer(d_adv + self.config.classification_weight * d_cls, self.optimizer_d, self.scaler)
        accuracy = (real_logits.argmax(dim=1) == source).float().mean()
        return {"d_adv": d_adv.item(), "d_cls": d_cls.item(), "d_real_class_accuracy": accuracy.item()}

    def generator_step(
        self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor, source: torch.Tensor, condition: torch.Tensor
    ) -> dict[str, float]:
        """Fool D, read as the conditioned expression mix, come back when edited to the source, keep the mask small."""
        config = self.config
        self.discriminator.requires_grad_(False)  # G's loss needs gradients through D, not for D
        with self.precision.autocast():
            fake_scores, fake_logits = self.discriminator(fake)
            g_adv = -fake_scores.mean()
            g_cls = soft_cross_entropy(fake_logits.float(), condition)
            back = F.one_hot(source, self.arch.num_classes).float()
            restored, restored_mask = self.generator(fake, back)
            g_rec = F.l1_loss(restored.float(), real)
            mask_loss = (mask_penalty(mask) + mask_penalty(restored_mask)) / 2  # both edits, as GANimation
            g_loss = (
                g_adv
                + config.classification_weight * g_cls
                + config.reconstruction_weight * g_rec
                + config.mask_weight * mask_loss
            )
        step_optimizer(g_loss, self.optimizer_g, self.scaler)
        self.discriminator.requires_grad_(True)
        return {
            "g_adv": g_adv.item(),
            "g_cls": g_cls.item(),
            "g_rec": g_rec.item(),
            "mask_mean": mask.float().mean().item(),
        }

    def exported_editor(self, classes: tuple[str, ...]) -> ExpressionEditor:
        """A CPU copy of the generator (instance norm keeps no statistics: nothing to recalibrate)."""
        network = EditorGenerator(self.arch)
        network.load_state_dict({name: tensor.cpu() for name, tensor in self.generator.state_dict().items()})
        return ExpressionEditor(network, classes)


def mask_penalty(mask: torch.Tensor) -> torch.Tensor:
    """The edited share of the face: small masks edit the expression and keep the rest.

    GANimation penalises the kept share instead, against masks closing to the identity edit. On the demo at
    mask_weight 0.1 the sign made no measurable difference: the cycle loss closes the mask while D's expression
    classifier is still weak, and a faster D (lr_discriminator 4e-4 against 1e-4) is what reopened it.
    """
    return mask.float().mean()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probability vectors: the edit should read as the conditioned expression mix."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def log_epoch(live: Live, entry: dict[str, float]) -> None:
    for name in EPOCH_NAMES:
        live.log_metric(name, entry[name])
    live.next_step()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), METRIC_DECIMALS)
