"""`fersynth evaluate`: test-split and cross-dataset metrics plus confusion rows; bad input fails cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fersynth.config import CANONICAL_CLASSES, ClassifierConfig
from fersynth.datasets.format import write_dataset
from fersynth.gradcam import CELL_INCHES, DPI, FACES_PER_CLASS
from fersynth.models import build_classifier
from fersynth.training import MODEL_FILE, save_classifier

from .conftest import make_dataset, run_stage

TEST_IMAGES = 7  # make_dataset(per_class=3): every third row is a test row


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Aligned 16×16 data, an (untrained) linear classifier for it, and a tiny image-folder test set."""
    monkeypatch.chdir(tmp_path)
    write_dataset(make_dataset(per_class=3, size=16), tmp_path / "aligned")
    config = ClassifierConfig(arch="linear")
    torch.manual_seed(0)
    model = build_classifier(config, len(CANONICAL_CLASSES), 1, 16)
    (tmp_path / "model").mkdir()
    save_classifier(tmp_path / "model" / MODEL_FILE, model, config, CANONICAL_CLASSES, (16, 16, 1))
    rng = np.random.default_rng(0)
    for name in ("happy", "sad"):
        (tmp_path / "data" / "raw" / "faces" / name).mkdir(parents=True)
        for index in range(2):
            pixels = rng.integers(0, 256, size=(24, 24), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / "raw" / "faces" / name / f"{index}.png")
    _write_params(tmp_path, {})
    return tmp_path


def _write_params(
    workdir: Path, extra_sets: dict[str, dict[str, str]], image_size: int = 16, tta: str = "none"
) -> None:
    evaluate = {"batch_size": 4, "extra_test_sets": extra_sets, "tta": tta}
    params = {"common": {"image_size": image_size}, "evaluate": evaluate}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def _evaluate(*overrides: str) -> tuple[int, str]:
    arguments = [
        "evaluate",
        "--model",
        "model",
        "--input",
        "aligned",
        "--diagnostics",
        "evaluate.json",
        "--metrics",
        "headline.json",
    ]
    arguments += ["--confusion", "confusion", "--gradcam", "plots/gradcam.png", "--params", "params.yaml", *overrides]
    return run_stage(arguments)


def test_evaluate_scores_the_test_split(workdir: Path) -> None:
    code, output = _evaluate()
    assert code == 0, output
    metrics = json.loads((workdir / "evaluate.json").read_text())
    assert metrics["images"] == TEST_IMAGES
    assert {"accuracy", "balanced_accuracy", "macro_f1", "f1_angry", "recall_surprise"} <= set(metrics)
    assert sum(metrics[f"support_{name}"] for name in CANONICAL_CLASSES) == TEST_IMAGES
    rows = json.loads((workdir / "confusion" / "test.json").read_text())
    assert len(rows) == TEST_IMAGES and set(rows[0]) == {"actual", "predicted"}
    hits = sum(row["actual"] == row["predicted"] for row in rows)
    assert metrics["accuracy"] == pytest.approx(hits / TEST_IMAGES, abs=1e-4)
    with Image.open(workdir / "plots" / "gradcam.png") as grid:  # a row per class, FACES_PER_CLASS columns
        width, height = CELL_INCHES[0] * FACES_PER_CLASS, CELL_INCHES[1] * len(CANONICAL_CLASSES)
        assert grid.size == (round(width * DPI), round(height * DPI))


def test_evaluate_scores_extra_test_sets(workdir: Path) -> None:
    _write_params(workdir, {"faces": {"source": "imagefolder", "path": "data/raw/faces", "split": "all"}})
    code, output = _evaluate()
    assert code == 0, output
    metrics = json.loads((workdir / "evaluate.json").read_text())
    assert metrics["images"] == TEST_IMAGES
    assert metrics["faces"]["images"] == 4
    assert metrics["faces"]["support_happy"] == 2 and metrics["faces"]["support_angry"] == 0
    assert sorted(path.name for path in (workdir / "confusion").iterdir()) == ["faces.json", "test.json"]
    headline = json.loads((workdir / "headline.json").read_text())
    assert headline["faces"] == {key: metrics["faces"][key] for key in headline["faces"]}
    assert set(headline["faces"]) == {"accuracy", "balanced_accuracy", "macro_f1"} | {
        f"recall_{name}" for name in CANONICAL_CLASSES
    }


def test_evaluate_with_test_time_augmentation_scores_the_mean_of_the_views(workdir: Path) -> None:
    scores = {}
    for tta in ("none", "flip_shifts"):
        _write_params(workdir, {}, tta=tta)
        code, output = _evaluate()
        assert code == 0, output
        scores[tta] = json.loads((workdir / "confusion" / "test.json").read_text())
    assert len(scores["flip_shifts"]) == TEST_IMAGES
    assert scores["flip_shifts"] != scores["none"]  # an untrained model: the ten views' mean moves its guesses
    _write_params(workdir, {}, tta="crops")
    code, output = _evaluate()
    assert code != 0 and "evaluate.tta" in output


def test_evaluate_names_a_missing_model(workdir: Path) -> None:
    code, output = _evaluate("--model", "untrained")
    assert code != 0
    assert "untrained" in output
    assert not (workdir / "evaluate.json").exists() and not (workdir / "confusion").exists()
    assert not (workdir / "plots" / "gradcam.png").exists()


def test_evaluate_rejects_a_model_of_another_image_size(workdir: Path) -> None:
    _write_params(workdir, {}, image_size=48)
    code, output = _evaluate()
    assert code != 0
    assert "model" in output and "image_size" in output


def test_evaluate_rejects_an_extra_set_named_test(workdir: Path) -> None:
    _write_params(workdir, {"test": {"source": "imagefolder", "path": "faces"}})
    code, output = _evaluate()
    assert code != 0
    assert "evaluate.extra_test_sets.test" in output
