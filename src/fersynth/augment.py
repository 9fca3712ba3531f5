"""Offline augmentation: label-preserving variants of the training images, written once.

Only the train split is augmented, and every variant records the real image it derives from
(`origin`), so no derivative of a validation or test image can reach training.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fersynth.config import AugmentOfflineConfig
from fersynth.datasets.format import Dataset
from fersynth.progress import progress_bar

if TYPE_CHECKING:
    import albumentations as A

log = logging.getLogger(__name__)

VARIANT_MARK = "~aug"  # variant ids are <source id>~aug<k>


def build_pipeline(config: AugmentOfflineConfig, seed: int) -> A.Compose:
    """Rotation + zoom, horizontal/vertical stretch, flip, brightness/contrast; seeded for reproducibility.

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
        ],
        seed=seed,
    )


def augment_offline(dataset: Dataset, config: AugmentOfflineConfig, seed: int) -> Dataset:
    """`variants_per_image` variants of every training image (source 'offline', split 'train', same label).

    Variants of one image are consecutive; the same dataset, config and seed give identical bytes.
    With 0 variants (or no training images) the result is empty but keeps the classes and image shape.
    """
    train = dataset.split("train")
    variants = config.variants_per_image
    count = len(train) * variants
    images = np.empty((count, *dataset.images.shape[1:]), dtype=np.uint8)
    pipeline = build_pipeline(config, seed)
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("augment-offline", total=count, status="")
        for index, image in enumerate(train.images):
            for k in range(variants):
                images[index * variants + k] = _as_hwc(pipeline(image=image)["image"], image.shape)
            bar.advance(task, variants)
    elapsed = time.perf_counter() - started
    log.info("augment-offline: %d variants in %.1f s (%.0f images/s)", count, elapsed, count / max(elapsed, 1e-9))
    return Dataset(
        images=images,
        labels=np.repeat(train.labels, variants),
        splits=np.full(count, "train", dtype=object),
        classes=dataset.classes,
        ids=np.array([f"{image_id}{VARIANT_MARK}{k}" for image_id in train.ids for k in range(variants)], dtype=object),
        sources=np.full(count, "offline", dtype=object),
        origins=np.repeat(train.origins, variants),
    )


def augment_metrics(dataset: Dataset, augmented: Dataset, config: AugmentOfflineConfig) -> dict[str, int]:
    """Flat, stable metric keys: variants per image, training images of `dataset`, variants written per class."""
    counts = augmented.class_counts()
    return {
        "variants_per_image": config.variants_per_image,
        "train_images": int(np.count_nonzero(dataset.splits == "train")),
        "variants_written": len(augmented),
        **{f"count_train_{name}": count for name, count in counts.items()},
    }


def _as_hwc(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Albumentations may return H×W for a one-channel image; give it back its channel axis."""
    return image.reshape(shape)
