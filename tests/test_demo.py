"""The procedural demo faces: deterministic, FER2013-like class shares, every class in every split."""

from __future__ import annotations

import numpy as np
import pytest

from fersynth.config import CANONICAL_CLASSES
from fersynth.datasets.demo import FER2013_TRAIN_SHARES, DemoSizes, class_counts, generate_demo
from fersynth.datasets.format import Dataset

SMALL = DemoSizes(train=140, val=21, test=14)


@pytest.fixture(scope="module")
def demo() -> Dataset:
    return generate_demo(CANONICAL_CLASSES, seed=5, sizes=SMALL)


def test_same_seed_same_images_other_seed_other_images(demo: Dataset) -> None:
    again = generate_demo(CANONICAL_CLASSES, seed=5, sizes=SMALL)
    np.testing.assert_array_equal(again.images, demo.images)
    np.testing.assert_array_equal(again.labels, demo.labels)
    other = generate_demo(CANONICAL_CLASSES, seed=6, sizes=SMALL)
    assert not np.array_equal(other.images, demo.images)


def test_shape_ids_and_split_sizes(demo: Dataset) -> None:
    assert demo.images.shape == (175, 48, 48, 1) and demo.images.dtype == np.uint8
    assert demo.ids[0] == "demo-train-00000" and demo.ids[-1] == "demo-test-00013"
    assert len(set(demo.ids)) == len(demo)
    assert [int((demo.splits == split).sum()) for split in ("train", "val", "test")] == [140, 21, 14]


def test_every_class_including_disgust_is_in_every_split(demo: Dataset) -> None:
    for split in ("train", "val", "test"):
        counts = np.bincount(demo.labels[demo.splits == split], minlength=7)
        assert counts.min() >= 1, split


def test_class_shares_follow_fer2013_train() -> None:
    counts = class_counts(2800, CANONICAL_CLASSES)
    assert counts.sum() == 2800
    shares = counts / 2800
    for index, name in enumerate(CANONICAL_CLASSES):
        assert shares[index] == pytest.approx(FER2013_TRAIN_SHARES[name], abs=0.002), name


def test_small_splits_still_hold_every_class() -> None:
    counts = class_counts(7, CANONICAL_CLASSES)
    assert counts.sum() == 7 and counts.min() == 1


def test_images_are_not_trivial(demo: Dataset) -> None:
    """Faces vary (identity, pose, noise): no two images alike, and the classes differ on average."""
    flat = demo.images.reshape(len(demo), -1).astype(np.float32)
    assert flat.std(axis=1).min() > 5
    assert len({row.tobytes() for row in demo.images}) == len(demo)
    means = [flat[demo.labels == label].mean(axis=0) for label in range(7)]
    happy, surprise = CANONICAL_CLASSES.index("happy"), CANONICAL_CLASSES.index("surprise")
    assert np.abs(means[happy] - means[surprise]).max() > 10


def test_a_subset_of_classes_indexes_the_subset() -> None:
    demo = generate_demo(["happy", "sad"], seed=0, sizes=DemoSizes(10, 7, 7))
    assert demo.classes == ("happy", "sad")
    assert set(demo.labels.tolist()) == {0, 1}


def test_resizing_train_keeps_the_val_and_test_images(demo: Dataset) -> None:
    bigger = generate_demo(CANONICAL_CLASSES, seed=5, sizes=DemoSizes(train=150, val=SMALL.val, test=SMALL.test))
    np.testing.assert_array_equal(bigger.split("test").images, demo.split("test").images)
