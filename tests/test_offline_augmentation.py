from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fersynth.config import AugmentOfflineConfig
from fersynth.offline_augmentation import _seed_for_image, augment_offline, build_pipeline

from .conftest import make_dataset

CONFIG = AugmentOfflineConfig(variants_per_image=3)


def test_variants_per_training_image_keep_label_and_origin() -> None:
    dataset = make_dataset(per_class=3, size=32)
    train = dataset.split("train")
    augmented = augment_offline(dataset, CONFIG, seed=0).dataset
    assert len(augmented) == 3 * len(train)
    assert augmented.images.shape[1:] == dataset.images.shape[1:]
    assert augmented.classes == dataset.classes
    assert set(augmented.sources) == {"offline"} and set(augmented.splits) == {"train"}
    np.testing.assert_array_equal(augmented.labels, np.repeat(train.labels, 3))
    assert list(augmented.origins) == [origin for origin in train.origins for _ in range(3)]
    assert list(augmented.ids[:3]) == [f"{train.ids[0]}~aug{k}" for k in range(3)]
    assert len(set(augmented.ids)) == len(augmented)
    assert not np.array_equal(augmented.images[0], train.images[0])  # actually transformed


def test_only_training_images_are_augmented() -> None:
    dataset = make_dataset(per_class=3, size=32)
    augmented = augment_offline(dataset, CONFIG, seed=0).dataset
    held_out = set(dataset.ids[dataset.splits != "train"])
    assert held_out and not held_out & set(augmented.origins)
    assert set(augmented.origins) == set(dataset.ids[dataset.splits == "train"])


def test_origin_of_a_derived_image_is_its_real_ancestor() -> None:
    dataset = make_dataset(per_class=1, size=32)
    dataset = replace(dataset, origins=np.array([f"real{i}" for i in range(len(dataset))], dtype=object))
    augmented = augment_offline(dataset, AugmentOfflineConfig(variants_per_image=1), seed=0).dataset
    assert set(augmented.origins) == set(dataset.origins[dataset.splits == "train"])


@pytest.mark.parametrize("channels", [1, 3])
def test_same_seed_same_bytes_other_seed_other_images(channels: int) -> None:
    dataset = make_dataset(per_class=2, size=24, channels=channels)
    first = augment_offline(dataset, CONFIG, seed=7).dataset
    assert first.images.shape[1:] == (24, 24, channels)
    assert first.images.tobytes() == augment_offline(dataset, CONFIG, seed=7).dataset.images.tobytes()
    assert first.images.tobytes() != augment_offline(dataset, CONFIG, seed=8).dataset.images.tobytes()


def test_zero_variants_gives_empty_dataset_of_the_same_shape() -> None:
    dataset = make_dataset(per_class=2, size=24, channels=3)
    augmented = augment_offline(dataset, AugmentOfflineConfig(variants_per_image=0), seed=0).dataset
    assert len(augmented) == 0
    assert augmented.images.shape == (0, 24, 24, 3) and augmented.classes == dataset.classes


def test_metrics_count_training_images_and_variants_per_class() -> None:
    dataset = make_dataset(per_class=3, size=16)
    metrics = augment_offline(dataset, AugmentOfflineConfig(variants_per_image=2), seed=0).metrics()
    train_count = int((dataset.splits == "train").sum())
    assert metrics["variants_per_image"] == 2 and metrics["train_images"] == train_count
    assert metrics["variants_written"] == 2 * train_count == sum(metrics[f"count_train_{c}"] for c in dataset.classes)
    assert metrics["count_train_angry"] == 2 * int(((dataset.splits == "train") & (dataset.labels == 0)).sum())
    empty = augment_offline(dataset, AugmentOfflineConfig(variants_per_image=0), seed=0)
    assert empty.metrics()["train_images"] == train_count and empty.metrics()["variants_written"] == 0


def test_zoom_and_stretch_draw_their_own_scales() -> None:
    """All steps share one stream per image; `A.Compose(seed=...)` gave each step its own copy of one stream,
    so the stretch's horizontal scale repeated the zoom."""
    pipeline = build_pipeline(AugmentOfflineConfig())
    import albumentations as A  # build_pipeline turned its update check off

    tracked = A.Compose(pipeline.transforms, save_applied_params=True)
    for index in range(3):
        _seed_for_image(tracked, seed=0, index=index)
        (_, zoom), (_, stretch), *_ = tracked(image=np.zeros((24, 24, 1), dtype=np.uint8))["applied_transforms"]
        assert zoom["scale"]["x"] != stretch["scale"]["x"]
