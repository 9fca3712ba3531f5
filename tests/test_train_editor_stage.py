"""`fersynth train-editor`: the editor, its curves, its sample grid and its metrics; nothing with 0 epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fersynth.datasets.format import write_dataset
from fersynth.editor import EDITOR_FILE, load_editor
from fersynth.editor.editor import grid_tile
from fersynth.editor.samples import grid_faces
from fersynth.preview import LABEL_WIDTH, TITLE_HEIGHT

from .conftest import make_dataset, run_stage

TINY_EDITOR = {"epochs": 1, "base_channels": 4, "residual_blocks": 1, "batch_size": 4, "images_per_epoch": 8}


def arguments(tmp_path: Path, **train_editor: object) -> list[str]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train_editor": TINY_EDITOR | train_editor}))
    return [
        "train-editor",
        "--input", str(tmp_path / "aligned"),
        "--out", str(tmp_path / "editor"),
        "--diagnostics", str(tmp_path / "train_editor.json"),
        "--live", str(tmp_path / "live"),
        "--samples", str(tmp_path / "plots" / "editor_samples.png"),
        "--params", str(params),
    ]  # fmt: skip


@pytest.fixture
def aligned(tmp_path: Path) -> Path:
    write_dataset(make_dataset(per_class=6, size=16), tmp_path / "aligned")
    return tmp_path / "aligned"


def test_trains_and_writes_the_editor_curves_grid_and_metrics(tmp_path: Path, aligned: Path) -> None:
    code, output = run_stage(arguments(tmp_path))
    assert code == 0, output
    editor = load_editor(tmp_path / "editor" / EDITOR_FILE)
    assert editor.image_shape == (16, 16, 1) and len(editor.classes) == 7
    metrics = json.loads((tmp_path / "train_editor.json").read_text())
    assert metrics["epochs"] == 1 and metrics["train_images"] == 14 and "g_rec" in metrics
    assert (tmp_path / "live" / "plots" / "metrics" / "g_rec.tsv").is_file()
    # One row per sampled face (a real train face of each class), the face itself and then one column per class.
    grid = Image.open(tmp_path / "plots" / "editor_samples.png")
    tile = 16 * grid_tile(16)
    assert grid.size == (LABEL_WIDTH + 8 * tile, TITLE_HEIGHT + 7 * tile)


def test_zero_epochs_write_no_editor_and_say_so(tmp_path: Path, aligned: Path) -> None:
    code, output = run_stage(arguments(tmp_path, epochs=0))
    assert code == 0, output
    assert [path.name for path in (tmp_path / "editor").iterdir()] == ["NO_EDITOR.txt"]
    assert (tmp_path / "live" / "metrics.json").is_file()  # DVC warns about an empty output folder
    assert Image.open(tmp_path / "plots" / "editor_samples.png").size[0] > 0
    assert json.loads((tmp_path / "train_editor.json").read_text()) == {"epochs": 0}


def test_grid_faces_take_one_face_of_each_class_in_turn() -> None:
    real = make_dataset(per_class=6, size=8)
    images, labels = grid_faces(real, rows=9)
    train_labels = real.labels[real.splits == "train"]
    assert len(images) == 9 and sorted(set(labels.tolist())) == sorted(set(train_labels.tolist()))
    assert np.bincount(labels).max() <= 2


def test_a_missing_input_names_it_and_leaves_nothing(tmp_path: Path) -> None:
    code, output = run_stage(arguments(tmp_path))
    assert code != 0 and "aligned" in output
    assert not (tmp_path / "editor").exists()
