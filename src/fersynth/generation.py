"""Synthesize faces per class up to a target, through a pluggable synthesis backend.

`plan_counts` turns the real class counts and the `generate` params into how many images
each class gets; `generate_dataset` asks a backend for them. `oversample` multiplies every
planned count: calibration rejects some images, and the surplus lets merge still reach its
target (merge reports any class that falls short).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from fersynth.config import GenerateConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import DataError, ParamsError
from fersynth.gan.generator import GENERATOR_FILE, load_generator
from fersynth.progress import progress_bar

log = logging.getLogger(__name__)


class SynthesisBackend(Protocol):
    """Anything that draws labelled faces: the GAN now, diffusion pipelines later."""

    source: str  # manifest `source` of the images it makes
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]

    def sample(self, class_index: int, count: int, seed: int) -> np.ndarray:
        """`count` uint8 images (count, H, W, C) meant to show `classes[class_index]`; deterministic in `seed`."""
        ...


class GanBackend:
    """The trained GAN of the train-gan stage (conditional or one generator per class).

    `truncation` > 0 samples latents from the truncated normal: more typical faces, less variety.
    """

    source = "gan"

    def __init__(self, generator_dir: Path, truncation: float = 0.0) -> None:
        self._generator = load_generator(Path(generator_dir) / GENERATOR_FILE)
        self.classes = self._generator.classes
        self.image_shape = self._generator.image_shape
        self.truncation = truncation

    def sample(self, class_index: int, count: int, seed: int) -> np.ndarray:
        return self._generator.sample(class_index, count, seed, self.truncation)


def plan_counts(real_train_counts: Mapping[str, int], config: GenerateConfig) -> dict[str, int]:
    """Images to generate per class (already multiplied by `config.oversample`)."""
    if config.target == "balance_to_max":
        largest = max(real_train_counts.values())
        wanted = {name: largest - count for name, count in real_train_counts.items()}
    elif config.target == "per_class":
        wanted = dict.fromkeys(real_train_counts, config.per_class)
    else:
        unknown = sorted(set(config.counts) - set(real_train_counts))
        if unknown:
            raise ParamsError(f"generate.counts: unknown class {unknown[0]!r}; classes are {list(real_train_counts)}")
        wanted = {name: config.counts.get(name, 0) for name in real_train_counts}
    return {name: math.ceil(count * config.oversample) for name, count in wanted.items()}


def check_reference_shape(backend: SynthesisBackend, reference_shape: tuple[int, ...], source: Path) -> None:
    """Refuse a generator trained at another image size or channel count than the real images it joins."""
    if tuple(backend.image_shape) != tuple(reference_shape):
        made, real = ("×".join(map(str, shape)) for shape in (backend.image_shape, reference_shape))
        raise DataError(
            f"{source}: the generator makes {made} (H×W×C) images but the real images are {real}; "
            "rerun train-gan after changing common.image_size or common.channels"
        )


def generate_dataset(backend: SynthesisBackend, plan: Mapping[str, int], seed: int, batch_size: int) -> Dataset:
    """Draw `plan[c]` images of every class c as a train-split dataset with `intended` = label.

    Each class has its own seed stream (seed, class index, batch), so changing one class's count
    leaves the other classes' images unchanged.
    """
    classes = backend.classes
    missing = [name for name in plan if name not in classes]
    if missing:
        raise DataError(f"the generator knows classes {list(classes)}, not {missing[0]!r}")
    images, labels, ids = [], [], []
    with progress_bar() as bar:
        task = bar.add_task(f"generating ({backend.source})", total=sum(plan.values()), status="")
        for name, count in plan.items():
            class_index = classes.index(name)
            for batch, start in enumerate(range(0, count, batch_size)):
                size = min(batch_size, count - start)
                batch_seed = int(np.random.SeedSequence([seed, class_index, batch]).generate_state(1)[0])
                images.append(backend.sample(class_index, size, batch_seed))
                bar.advance(task, size)
            labels.extend([class_index] * count)
            ids.extend(f"{backend.source}-{name}-{number:05d}" for number in range(count))
    log.info("generated %d images: %s", len(labels), ", ".join(f"{n} {c}" for c, n in plan.items() if n))
    return _as_dataset(images, labels, ids, backend)


def _as_dataset(
    images: Sequence[np.ndarray], labels: Sequence[int], ids: Sequence[str], backend: SynthesisBackend
) -> Dataset:
    count = len(labels)
    pixels = np.concatenate(images) if images else np.zeros((0, *backend.image_shape), dtype=np.uint8)
    label_array = np.asarray(labels, dtype=np.int64)
    return Dataset(
        images=pixels,
        labels=label_array,
        splits=np.full(count, "train", dtype=object),
        classes=backend.classes,
        ids=np.asarray(ids, dtype=object),
        sources=np.full(count, backend.source, dtype=object),
        origins=np.full(count, backend.source, dtype=object),  # no real image behind a sampled face
        intended=label_array.copy(),
    )


def generate_metrics(plan: Mapping[str, int]) -> dict[str, int]:
    return {**{f"planned_{name}": count for name, count in plan.items()}, "generated_total": sum(plan.values())}
