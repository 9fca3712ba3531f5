"""The real data beside the checkout: FER2013 (Kaggle layout zip) and the legend-layout dev photos."""

from __future__ import annotations

import pytest

from fersynth.config import CANONICAL_CLASSES, FetchConfig
from fersynth.datasets.fetch import fetch_dataset, split_class_counts
from fersynth.datasets.sources import load_source

from .conftest import shared_file


@pytest.mark.slow
@pytest.mark.shared
def test_fer2013_zip_gives_the_standard_protocol_splits() -> None:
    config = FetchConfig(source="fer2013", path=str(shared_file("fer2013.zip")))
    result = fetch_dataset(config, CANONICAL_CLASSES, seed=0)
    dataset = result.dataset
    assert dataset.images.shape == (35887, 48, 48, 1)
    counts = split_class_counts(dataset)
    assert {split: sum(per_class.values()) for split, per_class in counts.items()} == {
        "train": 28709,
        "val": 3589,
        "test": 3589,
    }
    assert counts["train"]["happy"] == 7215 and counts["train"]["disgust"] == 436
    assert all(count > 0 for per_class in counts.values() for count in per_class.values())
    assert len(set(dataset.ids)) == len(dataset)
    metrics = result.metrics()
    assert metrics["dropped_total"] == 0
    assert metrics["duplicate_ids"] == 2  # two Training_* names occur in two class folders each
    assert metrics["identical_images"] > 0 and metrics["conflicting_duplicates"] > 0  # FER2013's known repeats
    # pHash (distance 4, one-pixel shifts) finds every val/test image with a pixel-identical train copy, and
    # about as many again whose train copy differs (re-encoded, re-cropped): 1,159 of 7,178 in all.
    near = {split: metrics[f"near_duplicates_{split}_in_train"] for split in ("val", "test")}
    not_identical = {split: metrics[f"near_duplicates_{split}_in_train_not_identical"] for split in ("val", "test")}
    assert (near, not_identical) == ({"val": 574, "test": 585}, {"val": 294, "test": 297})
    assert sum(near.values()) - sum(not_identical.values()) == metrics["cross_split_duplicates"] == 568


@pytest.mark.slow
@pytest.mark.shared
def test_legend_dev_photos_drop_contempt_and_keep_the_rest() -> None:
    dataset, report = load_source("legend", shared_file("facial_expressions_dev.zip"), CANONICAL_CLASSES)
    assert report.dropped == {"contempt": 1}
    assert len(dataset) == 154
    assert dataset.images.shape[1:] == (256, 256, 3)  # most are 350×350 -> capped at max_side; some are colour
    assert set(dataset.splits) == {"train"}  # no splits in the source, none carved without fractions
    counts = dataset.class_counts()
    assert counts["angry"] == 25 and counts["sad"] == 25 and counts["fear"] == 4
