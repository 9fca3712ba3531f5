"""Offline augmentation: label-preserving variants of the training images, written once.

Only the train split is augmented, and every variant records the real image it derives from
(`origin`), so no derivative of a validation or test image can reach training.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fersynth.config import AugmentOfflineConfig
from fersynth.datasets.format import Dataset
from fersynth.runtime.parallel import Chunk, map_chunks

if TYPE_CHECKING:
    import albumentations as A

log = logging.getLogger(__name__)

VARIANT_MARK = "~aug"  # variant ids are <source id>~aug<k>
CHUNK_SIZE = 256  # training images per worker task: tens of milliseconds of work against about one to send it


def build_pipeline(config: AugmentOfflineConfig) -> A.Compose:
    """Rotation + zoom, horizontal/vertical stretch, flip, brightness/contrast; unseeded (see `_seed_for_image`).

    Zoom and stretch are two Affine steps because one Affine draws its x and y scales either
    tied (keep_ratio) or independent, not a shared zoom times a small independent stretch.
    Borders are reflected: black corners would be an artefact the classifier could learn.
    """
    # Imported here, with its PyPI update check off: on import albumentations asks the network for a newer
    # version, which pipeline runs must never do, and every `fersynth` command imports this module.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    zoom, stretch = config.zoom_limit, config.stretch_limit
    return A.Compose(
        [
            A.Affine(
                rotate=(-config.rotation_limit, config.rotation_limit),
                scale=(1 - zoom, 1 + zoom),
                keep_ratio=True,
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            ),
            A.Affine(
                scale={"x": (1 - stretch, 1 + stretch), "y": (1 - stretch, 1 + stretch)},
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            ),
            A.HorizontalFlip(p=config.flip_probability),
            A.RandomBrightnessContrast(
                brightness_limit=config.brightness_limit, contrast_limit=config.contrast_limit, p=1.0
            ),
        ]
    )


@dataclass(frozen=True)
class OfflineVariants:
    dataset: Dataset  # the variants alone (source 'offline', split 'train')
    config: AugmentOfflineConfig
    train_images: int  # training images of the input, each the origin of `config.variants_per_image` variants

    def metrics(self) -> dict[str, int]:
        """Flat, stable metric keys: variants per image, training images, variants written per class."""
        return {
            "variants_per_image": self.config.variants_per_image,
            "train_images": self.train_images,
            "variants_written": len(self.dataset),
            **{f"count_train_{name}": count for name, count in self.dataset.class_counts().items()},
        }


def augment_offline(dataset: Dataset, config: AugmentOfflineConfig, seed: int, *, workers: int = 1) -> OfflineVariants:
    """`variants_per_image` variants of every training image (source 'offline', split 'train', same label).

    Variants of one image are consecutive. Each image's variants depend only on the seed and the image's
    place among the training images, so the same dataset, config and seed give identical bytes for any
    number of `workers` processes. With 0 variants (or no training images) the result is empty but keeps
    the classes and image shape.
    """
    train = dataset.split("train")
    variants = config.variants_per_image
    count = len(train) * variants
    started = time.perf_counter()
    augment = functools.partial(_augment_chunk, config=config, seed=seed)
    chunks = map_chunks(augment, train.images, CHUNK_SIZE, workers, "augment-offline")
    elapsed = time.perf_counter() - started
    log.info("augment-offline: %d variants in %.1f s (%.0f images/s)", count, elapsed, count / max(elapsed, 1e-9))
    no_images = np.empty((0, *dataset.images.shape[1:]), dtype=np.uint8)  # the shape, for no chunks
    variants_set = Dataset(
        images=np.concatenate([no_images, *chunks]),
        labels=np.repeat(train.labels, variants),
        splits=np.full(count, "train", dtype=object),
        classes=dataset.classes,
        ids=np.array([f"{image_id}{VARIANT_MARK}{k}" for image_id in train.ids for k in range(variants)], dtype=object),
        sources=np.full(count, "offline", dtype=object),
        origins=np.repeat(train.origins, variants),
    )
    return OfflineVariants(variants_set, config, len(train))


def _augment_chunk(chunk: Chunk[np.ndarray], config: AugmentOfflineConfig, seed: int) -> np.ndarray:
    """The variants of a run of training images, in order: a worker's task."""
    pipeline = build_pipeline(config)
    variants = np.empty((len(chunk.items) * config.variants_per_image, *chunk.items.shape[1:]), dtype=np.uint8)
    for offset, image in enumerate(chunk.items):
        _seed_for_image(pipeline, seed, chunk.start + offset)
        for k in range(config.variants_per_image):
            variants[offset * config.variants_per_image + k] = _as_hwc(pipeline(image=image)["image"], image.shape)
    return variants


def _seed_for_image(pipeline: A.Compose, seed: int, index: int) -> None:
    """Draw the image's variants from generators of (seed, index) alone, whichever worker runs it.

    One numpy and one Python generator shared by every step: `A.Compose(seed=...)` would instead give each
    step its own generator with the same seed, so that, e.g., the stretch repeated the zoom's draws.
    """
    numpy_seed, python_seed = np.random.SeedSequence((seed, index)).generate_state(2, dtype=np.uint64)
    pipeline.set_random_state(np.random.default_rng(int(numpy_seed)), random.Random(int(python_seed)))


def _as_hwc(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Albumentations may return H×W for a one-channel image; give it back its channel axis."""
    return image.reshape(shape)
