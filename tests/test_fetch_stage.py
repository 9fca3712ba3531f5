"""`fersynth fetch` end to end on the demo source and a tiny legend folder, plus the checks fetch_dataset adds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from fersynth.config import CANONICAL_CLASSES, FetchConfig
from fersynth.datasets.fetch import fetch_dataset
from fersynth.datasets.format import read_dataset
from fersynth.errors import DataError

from .conftest import run_stage
from .helpers import kdef_files, png, write_tree

SMALL_DEMO = {"source": "demo", "demo_train": 70, "demo_val": 14, "demo_test": 14}


def invoke(root: Path, params: dict[str, Any]) -> tuple[int, str]:
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return run_stage(
        [
            "fetch",
            *("--out", str(root / "fetched"), "--diagnostics", str(root / "fetch.json")),
            *("--near-duplicates", str(root / "near_duplicates.png")),
            *("--params", str(root / "params.yaml")),
        ]
    )


def test_fetch_demo_writes_dataset_and_flat_metrics(tmp_path: Path) -> None:
    code, output = invoke(tmp_path, {"common": {"seed": 1}, "fetch": SMALL_DEMO})
    assert code == 0, output
    dataset = read_dataset(tmp_path / "fetched", CANONICAL_CLASSES)
    assert dataset.images.shape == (98, 48, 48, 1)
    assert (tmp_path / "fetched" / "preview.png").is_file()
    metrics = json.loads((tmp_path / "fetch.json").read_text())
    assert (metrics["total_train"], metrics["total_val"], metrics["total_test"]) == (70, 14, 14)
    assert metrics["count_train_disgust"] >= 1 and metrics["count_test_disgust"] >= 1
    assert metrics["dropped_total"] == 0
    assert (metrics["image_height"], metrics["image_width"], metrics["channels"]) == (48, 48, 1)
    assert "happy" in output  # the class-count table
    # The audit reports and leaves the data alone unless fetch.drop_train_near_duplicates is set.
    assert (metrics["near_duplicate_distance"], metrics["dropped_train_near_duplicates"]) == (4, 0)
    assert metrics["near_duplicates_val_in_train"] == metrics["near_duplicates_test_in_train"] == 0
    # None within the threshold, so the picture shows the closest pairs beyond it (4 a row), not a placeholder.
    assert Image.open(tmp_path / "near_duplicates.png").width == 4 * (2 * 96 + 2 + 8)


def test_fetch_can_drop_train_near_duplicates(tmp_path: Path) -> None:
    """Drawn demo faces share one layout, so pHash calls a few of them near-identical: enough to see the drop."""
    fetch = {**SMALL_DEMO, "near_duplicate_distance": 6, "drop_train_near_duplicates": True}
    code, output = invoke(tmp_path, {"common": {"seed": 1}, "fetch": fetch})
    assert code == 0, output
    metrics = json.loads((tmp_path / "fetch.json").read_text())
    dropped = metrics["dropped_train_near_duplicates"]
    assert dropped == metrics["near_duplicate_train_images"] > 0
    assert metrics["total_train"] == 70 - dropped
    assert len(read_dataset(tmp_path / "fetched", CANONICAL_CLASSES)) == 98 - dropped


def test_fetch_legend_reports_dropped_labels_and_carves_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # as under DVC: paths in params are relative to the repo root
    rows = [f"{name}{k}.png,{name.upper()}" for name in CANONICAL_CLASSES for k in range(5)] + ["x.png,contempt"]
    files = {f"images/{row.split(',')[0]}": png(i) for i, row in enumerate(rows)}
    files["legend.csv"] = "user.id,image,emotion\n" + "\n".join(f"u,{row}" for row in rows) + "\n"
    write_tree(tmp_path / "data" / "raw" / "photos", files)
    fetch = {"source": "legend", "path": "data/raw/photos", "val_fraction": 0.2, "test_fraction": 0.2}
    code, output = invoke(tmp_path, {"fetch": fetch})
    assert code == 0, output
    metrics = json.loads((tmp_path / "fetch.json").read_text())
    assert metrics["dropped_contempt"] == 1 and metrics["dropped_total"] == 1
    assert (metrics["total_train"], metrics["total_val"], metrics["total_test"]) == (21, 7, 7)


def test_fetch_refuses_a_dataset_outside_data_raw(tmp_path: Path) -> None:
    """DVC sees a dataset change only inside data/raw (a dep of fetch); elsewhere it would go unnoticed."""
    write_tree(tmp_path / "elsewhere", {"happy/a.png": png(1)})
    code, output = invoke(tmp_path, {"fetch": {"source": "imagefolder", "path": "../elsewhere"}})
    assert code == 1
    assert "fetch.path:../elsewhereisoutsidedata/raw/" in output
    assert f"dvcimport-url{tmp_path.parent / 'elsewhere'}data/raw/elsewhere" in output
    assert not (tmp_path / "fetched").exists()


def test_a_missing_source_path_fails_naming_it(tmp_path: Path) -> None:
    code, output = invoke(tmp_path, {"fetch": {"source": "fer2013", "path": str(tmp_path / "nope.zip")}})
    assert code != 0
    assert "nope.zip" in output
    assert not (tmp_path / "fetched").exists() and not (tmp_path / "fetch.json").exists()


def test_a_mistyped_params_key_fails_naming_it(tmp_path: Path) -> None:
    code, output = invoke(tmp_path, {"fetch": {**SMALL_DEMO, "val_fractoin": 0.1}})
    assert code != 0
    assert "fetch.val_fractoin" in output


def test_no_val_or_test_split_and_zero_fractions_is_an_error(tmp_path: Path) -> None:
    files = {f"{name}/{k}.png": png(i * 3 + k) for i, name in enumerate(CANONICAL_CLASSES) for k in range(3)}
    config = FetchConfig(
        source="imagefolder", path=str(write_tree(tmp_path / "d", files)), val_fraction=0.0, test_fraction=0.0
    )
    with pytest.raises(DataError, match=r"no val split and fetch\.val_fraction is 0.*no test split"):
        fetch_dataset(config, CANONICAL_CLASSES, seed=0)


def test_a_class_without_training_images_is_an_error_naming_it(tmp_path: Path) -> None:
    files = {f"train/{name}/{k}.png": png(i * 3 + k) for i, name in enumerate(CANONICAL_CLASSES[:-1]) for k in range(3)}
    files["test/surprise/t.png"] = png(100)
    config = FetchConfig(source="imagefolder", path=str(write_tree(tmp_path / "d", files)))
    with pytest.raises(DataError, match=r"no training images for class\(es\) \['surprise'\]"):
        fetch_dataset(config, CANONICAL_CLASSES, seed=0)


def test_fetch_kdef_keeps_chosen_angles_and_carves_by_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path / "data" / "raw" / "kdef", kdef_files(people=10))
    fetch = {"source": "kdef", "path": "data/raw/kdef", "kdef_angles": ["S", "HL"], "test_fraction": 0.2}
    code, output = invoke(tmp_path, {"fetch": fetch})
    assert code == 0, output
    metrics = json.loads((tmp_path / "fetch.json").read_text())
    # 10 people x 7 expressions x 2 angles; val and test are whole people (14 images each).
    assert (metrics["total_train"], metrics["total_val"], metrics["total_test"]) == (98, 14, 28)
    assert metrics["dropped_total"] == 0
