"""Near-duplicate audit across splits (pHash) on images the tests draw: which copies it finds, counts, drop, picture."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from fersynth.config import FetchConfig
from fersynth.datasets.fetch import fetch_dataset
from fersynth.datasets.format import Dataset
from fersynth.datasets.near_duplicates import (
    drop_train_near_duplicates,
    find_near_duplicates,
    perceptual_hashes,
    shifted,
)
from fersynth.errors import DataError
from fersynth.preview import png_bytes

from .helpers import write_tree

CLASSES = ("happy", "sad")
SIDE = 48


def texture(seed: int, side: int = SIDE) -> np.ndarray:
    """A (side, side, 1) stand-in for a face: smooth random shading with detail at every scale pHash reads.

    Different seeds hash 16+ bits apart; pure noise would not do (its low frequencies are too weak to be stable).
    """
    grid = np.random.default_rng(seed).integers(30, 226, (10, 10), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((side, side), Image.Resampling.BICUBIC))[..., None]


def recropped(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same picture cropped twice, one pixel apart both ways (new content at two edges)."""
    large = texture(seed, SIDE + 1)
    return large[:SIDE, :SIDE], large[1:, 1:]


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))[..., None]


def brighter(image: np.ndarray, offset: int = 25) -> np.ndarray:
    return np.clip(image.astype(np.int16) + offset, 0, 255).astype(np.uint8)


def grey_png(image: np.ndarray) -> bytes:
    return png_bytes(Image.fromarray(image[..., 0]))


def audit_dataset() -> Dataset:
    """Train: six pictures. Val: a re-crop, a JPEG and a brighter copy of three. Test: an exact copy and a stranger."""
    original, moved = recropped(1)
    train = [original, texture(2), texture(3), texture(4), texture(5), texture(6)]
    val = [moved, jpeg(texture(2)), brighter(texture(3))]
    test = [texture(4).copy(), texture(7)]
    splits = ["train"] * len(train) + ["val"] * len(val) + ["test"] * len(test)
    labels = [0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0]  # the JPEG copy (row 7) of a happy face (row 1) is labelled sad
    return Dataset(
        images=np.stack(train + val + test),
        labels=np.array(labels, dtype=np.int64),
        splits=np.array(splits, dtype=object),
        classes=CLASSES,
        ids=np.array([f"{split}{row}" for row, split in enumerate(splits)], dtype=object),
    )


def test_hashes_are_imagehash_phash_for_grey_and_colour_images() -> None:
    grey = np.stack([texture(seed) for seed in range(3)])
    colour = np.concatenate([grey, np.roll(grey, 5, axis=1), grey[:, ::-1]], axis=3)
    for images in (grey, colour):
        expected = [str(imagehash.phash(Image.fromarray(image.squeeze()))) for image in images]
        assert [f"{value:016x}" for value in perceptual_hashes(images)] == expected
    assert perceptual_hashes(grey[:0]).shape == (0,)


def test_shifted_moves_content_and_repeats_the_edge() -> None:
    images = np.arange(9, dtype=np.uint8).reshape(1, 3, 3, 1)
    assert shifted(images, 1, 0)[0, :, :, 0].tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5]]
    assert shifted(images, 0, -1)[0, :, :, 0].tolist() == [[1, 2, 2], [4, 5, 5], [7, 8, 8]]


def test_recropped_jpeg_and_brighter_copies_are_found_and_a_stranger_is_not() -> None:
    report = find_near_duplicates(audit_dataset(), max_distance=4)
    found = sorted(zip(report.pairs.evaluation_rows.tolist(), report.pairs.train_rows.tolist(), strict=True))
    assert found == [(6, 0), (7, 1), (8, 2), (9, 3)]  # test row 10 (the stranger) matches nothing
    assert report.pairs.identical.tolist() == [False, False, False, True]
    counts = {key: value for key, value in report.metrics.items() if key != "near_duplicate_examples"}
    assert counts == {
        "near_duplicate_shift": 1,
        "near_duplicate_distance": 4,
        "near_duplicates_val_in_train": 3,
        "near_duplicates_val_in_train_not_identical": 3,
        "near_duplicates_test_in_train": 1,  # the exact copy counts with the near ones ...
        "near_duplicates_test_in_train_not_identical": 0,  # ... and not without them (duplicates.py reports it)
        "near_duplicate_pairs": 4,
        "near_duplicate_pairs_not_identical": 3,
        "near_duplicate_pairs_label_conflict": 1,
        "near_duplicate_train_images": 4,
    }
    near = report.pairs.select(~report.pairs.identical)
    assert sorted(report.metrics["near_duplicate_examples"]) == [
        f"val{row} ~ train{match} (d={distance})"
        for row, match, distance in zip(near.evaluation_rows, near.train_rows, near.distances, strict=True)
    ]


def test_the_one_pixel_recrop_needs_the_shifted_hashes() -> None:
    """Without shifts pHash reads the re-crop as a different picture: the reason for fetch.near_duplicate_shift."""
    original, moved = recropped(1)
    plain = np.bitwise_count(np.bitwise_xor(*perceptual_hashes(np.stack([original, moved]))))
    assert plain > 4
    report = find_near_duplicates(audit_dataset(), max_distance=4, shift=0)
    assert 6 not in report.pairs.evaluation_rows


def test_the_picture_shows_distinct_pairs_within_and_the_nearest_beyond() -> None:
    report = find_near_duplicates(audit_dataset(), max_distance=4)
    sheet = Image.open(io.BytesIO(report.sheet_png))
    # three near copies plus the stranger's nearest train image; the exact copy is left out: 4 pairs in one row
    assert sheet.size == (4 * (2 * 96 + 2 + 8), 16 + 96 + 14)


def test_drop_removes_exactly_the_matched_train_rows() -> None:
    dataset = audit_dataset()
    kept, dropped = drop_train_near_duplicates(dataset, find_near_duplicates(dataset, max_distance=4))
    assert dropped == 4
    assert kept.ids.tolist() == ["train4", "train5", "val6", "val7", "val8", "test9", "test10"]


def test_fetch_drops_only_when_asked_and_counts_it(tmp_path: Path) -> None:
    dataset = audit_dataset()
    files = {
        f"{split}/{CLASSES[label]}/{name}.png": grey_png(image)
        for image, label, split, name in zip(dataset.images, dataset.labels, dataset.splits, dataset.ids, strict=True)
    }
    root = write_tree(tmp_path / "d", files)
    for drop, train_ids in ((False, {f"train{row}" for row in range(6)}), (True, {"train4", "train5"})):
        config = FetchConfig(source="imagefolder", path=str(root), drop_train_near_duplicates=drop)
        result = fetch_dataset(config, CLASSES, seed=0)
        kept = result.dataset.ids[result.dataset.splits == "train"]
        assert {name.rsplit("/", 1)[-1] for name in kept} == train_ids  # imagefolder ids are relative paths
        metrics = result.metrics()
        assert metrics["dropped_train_near_duplicates"] == (4 if drop else 0)
        assert metrics["total_train"] == len(train_ids)
        assert metrics["near_duplicate_train_images"] == 4  # the audit describes the data as loaded


def test_an_empty_class_after_the_drop_is_an_error(tmp_path: Path) -> None:
    """The only sad train image is a copy of a val image: dropping it leaves sad untrainable, which fetch refuses."""
    layout = (("happy", "train", 1), ("sad", "train", 2), ("sad", "val", 2), ("happy", "test", 3))
    files = {f"{split}/{name}/{split}{seed}.png": grey_png(texture(seed)) for name, split, seed in layout}
    root = write_tree(tmp_path / "d", files)
    config = FetchConfig(source="imagefolder", path=str(root), drop_train_near_duplicates=True)
    with pytest.raises(DataError, match=r"drop_train_near_duplicates: no training images for class\(es\) \['sad'\]"):
        fetch_dataset(config, CLASSES, seed=0)
