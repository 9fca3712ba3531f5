from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fersynth.datasets.format import MANIFEST_FILE, concatenate, read_dataset, write_dataset
from fersynth.errors import DataError

from .conftest import make_dataset


def test_round_trip_keeps_every_column(tmp_path: Path) -> None:
    dataset = make_dataset()
    write_dataset(dataset, tmp_path / "ds")
    loaded = read_dataset(tmp_path / "ds", dataset.classes)
    np.testing.assert_array_equal(loaded.images, dataset.images)
    np.testing.assert_array_equal(loaded.labels, dataset.labels)
    assert list(loaded.splits) == list(dataset.splits)
    assert list(loaded.origins) == list(dataset.ids)
    assert (tmp_path / "ds" / "preview.png").is_file()
    assert not list(tmp_path.glob(".ds.*"))  # no staging directory left behind


def test_unknown_label_names_the_row(tmp_path: Path) -> None:
    dataset = make_dataset()
    write_dataset(dataset, tmp_path / "ds")
    manifest = tmp_path / "ds" / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace(",angry,", ",furious,", 1))
    with pytest.raises(DataError, match=r"manifest.csv:2: label 'furious'"):
        read_dataset(tmp_path / "ds", dataset.classes)


def test_failed_write_keeps_previous_output(tmp_path: Path) -> None:
    dataset = make_dataset()
    write_dataset(dataset, tmp_path / "ds")
    broken = make_dataset()
    object.__setattr__(broken, "classes", ("only",))  # label index out of range while writing
    with pytest.raises(IndexError):
        write_dataset(broken, tmp_path / "ds")
    assert len(read_dataset(tmp_path / "ds", dataset.classes)) == len(dataset)
    assert not list(tmp_path.glob(".ds.*"))


def test_concatenate_fills_soft_labels_with_one_hot() -> None:
    hard = make_dataset(per_class=1)
    soft = make_dataset(per_class=1)
    object.__setattr__(soft, "soft_labels", np.full((len(soft), 7), 1 / 7, dtype=np.float32))
    merged = concatenate([hard, soft])
    assert merged.soft_labels is not None
    np.testing.assert_allclose(merged.soft_labels[: len(hard)].sum(axis=1), 1.0)
    assert merged.soft_labels[0, hard.labels[0]] == 1.0
