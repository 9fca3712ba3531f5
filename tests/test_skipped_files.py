"""Nothing under a dataset folder vanishes unannounced: every file is read, or counted under a reason that fetch
warns about once (with the count) and reports as `skipped_<reason>`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fersynth.config import CANONICAL_CLASSES, FetchConfig, ReadRules
from fersynth.datasets.archive import SKIP_REASONS, FileTree
from fersynth.datasets.fetch import fetch_dataset
from fersynth.datasets.sources import load_source

from .helpers import as_folder_or_zip, encoded, png, write_tree


def jpeg(value: int) -> bytes:
    return encoded(np.full((8, 8), value, np.uint8), "JPEG")


def test_jfif_and_jpe_files_are_read_as_the_jpegs_they_are(tmp_path: Path) -> None:
    files = {"happy/a.jfif": jpeg(10), "happy/b.JPE": jpeg(20), "sad/c.jpg": jpeg(30)}
    dataset, report = load_source("imagefolder", write_tree(tmp_path / "d", files), CANONICAL_CLASSES)
    assert sorted(dataset.ids) == ["happy/a", "happy/b", "sad/c"]
    assert report.skipped == {}


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_every_file_not_read_is_counted_under_its_reason(tmp_path: Path, kind: str) -> None:
    files = {
        "happy/a.png": png(1),
        "happy/.DS_Store": b"junk",
        "__MACOSX/happy/._a.png": b"junk",
        "happy/notes.txt": "taken in 2019",
        "happy/c.heic": b"an iPhone photo PIL cannot read",
        "contempt/d.png": png(2),  # a label outside the classes: counted as dropped, and as an image not used
        "e.png": png(3),  # outside any class folder
    }
    dataset, report = load_source("imagefolder", as_folder_or_zip(tmp_path, files, kind), CANONICAL_CLASSES)
    assert list(dataset.ids) == ["happy/a"]
    assert report.skipped == {"hidden": 2, "unknown_extension": 2, "unused_image": 2}
    assert report.dropped == {"contempt": 1}


def test_a_symlinked_folder_is_counted_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """DVC does not follow folder links when it hashes data/raw: images behind one could change unseen by it.
    A link back up the tree (a loop) and one to a sibling (read twice) are not followed either."""
    outside = write_tree(tmp_path / "elsewhere", {"x.png": png(5), "y.png": png(6)})
    root = write_tree(tmp_path / "d", {"happy/a.png": png(1), "sad/b.png": png(2)})
    (root / "happy" / "more").symlink_to(outside)
    (root / "sad" / "loop").symlink_to(root)
    (root / "sad" / "twice").symlink_to(root / "happy")
    with caplog.at_level(logging.WARNING):
        dataset, report = load_source("imagefolder", root, CANONICAL_CLASSES)
    assert sorted(dataset.ids) == ["happy/a", "sad/b"]
    assert report.skipped == {"symlinked_folder": 3}
    warned = [record.getMessage() for record in caplog.records if "symlinked folders" in record.getMessage()]
    assert len(warned) == 1 and "skipped 3 symlinked folders" in warned[0] and f"-> {outside}" in warned[0]


def test_a_linked_file_is_read_as_its_target(tmp_path: Path) -> None:
    """DVC checks data out as links into its cache: those are the data, wherever the cache is."""
    cache = write_tree(tmp_path / "cache", {"ab/cdef": png(7)})
    root = write_tree(tmp_path / "d", {"happy/a.png": png(1)})
    (root / "sad").mkdir()
    (root / "sad" / "b.png").symlink_to(cache / "ab" / "cdef")
    dataset, report = load_source("imagefolder", root, CANONICAL_CLASSES)
    assert sorted(dataset.ids) == ["happy/a", "sad/b"] and report.skipped == {}


def test_each_reason_is_warned_once_with_its_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = {"happy/a.png": png(1), **{f"happy/{index}.txt": "x" for index in range(4)}, "happy/.hidden": "x"}
    with caplog.at_level(logging.WARNING):
        load_source("imagefolder", write_tree(tmp_path / "d", files), CANONICAL_CLASSES)
    messages = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(messages) == 2
    assert any("skipped 4 files that are no image by their extension" in message for message in messages)
    assert any("skipped 1 hidden files" in message and "happy/.hidden" in message for message in messages)


def test_files_a_layout_reads_besides_images_are_not_skipped(tmp_path: Path) -> None:
    files = {"images/a.png": png(1), "images/b.png": png(2), "legend.csv": "image,emotion\na.png,happy\n"}
    _, report = load_source("legend", write_tree(tmp_path / "d", files), CANONICAL_CLASSES)
    assert report.skipped == {"unused_image": 1}  # b.png: no legend row names it


def test_file_tree_reports_only_what_was_not_opened(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "d", {"a.png": png(1), "b.txt": "x", ".git/config": "x"})
    with FileTree(root, ReadRules()) as tree:
        assert tree.names == ["a.png", "b.txt"]
        tree.read("b.txt")
        skipped = tree.skipped()
    assert dict(skipped.counts) == {"hidden": 1, "unused_image": 1}
    assert skipped.examples == {"hidden": str(root / ".git"), "unused_image": str(root / "a.png")}


def test_fetch_metrics_report_every_reason_even_at_zero() -> None:
    config = FetchConfig(demo_train=14, demo_val=7, demo_test=7)
    metrics = fetch_dataset(config, CANONICAL_CLASSES, seed=0).metrics()
    assert {key: value for key, value in metrics.items() if key.startswith("skipped_")} == {
        f"skipped_{reason}": 0 for reason in SKIP_REASONS
    }
