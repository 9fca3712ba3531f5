"""`fersynth export`: an ONNX graph fed uint8 faces, its sidecar, and its parity with PyTorch, checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fersynth.config import CANONICAL_CLASSES, ClassifierConfig, FaceAlignConfig
from fersynth.datasets.format import write_dataset
from fersynth.export import INPUT_NAME, OPSET, Parity
from fersynth.models import build_classifier
from fersynth.prediction import OnnxFaceClassifier, read_sidecar
from fersynth.training import MODEL_FILE, load_classifier, predict_proba, save_classifier

from .conftest import make_dataset, run_stage

SIZE = 16


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_dataset(make_dataset(per_class=30, size=SIZE), tmp_path / "aligned")
    config = ClassifierConfig(arch="vgg", width=4)
    torch.manual_seed(0)
    model = build_classifier(config, len(CANONICAL_CLASSES), 1, SIZE)
    (tmp_path / "model").mkdir()
    alignment = FaceAlignConfig(margin=0.4)
    save_classifier(tmp_path / "model" / MODEL_FILE, model, config, CANONICAL_CLASSES, (SIZE, SIZE, 1), alignment)
    (tmp_path / "train.json").write_text(json.dumps({"best_val_macro_f1": 0.5, "best_epoch": 3}))
    return tmp_path


def _export() -> tuple[int, str]:
    return run_stage(
        [
            "export",
            *("--model", "model", "--input", "aligned", "--train-metrics", "train.json", "--out", "export"),
            *("--metrics", "export.json", "--diagnostics", "diagnostics.json"),
        ]
    )


def test_export_agrees_with_pytorch_on_every_test_face(workdir: Path) -> None:
    code, output = _export()
    assert code == 0, output
    parity = json.loads((workdir / "diagnostics.json").read_text())
    assert parity["parity_images"] == 70  # make_dataset: every third row is a test row
    assert parity["argmax_agreement"] == 1.0 and parity["max_probability_difference_ppm"] < 100
    assert json.loads((workdir / "export.json").read_text()) == {
        "argmax_agreement": 1.0,
        "max_probability_difference": 0.0,
    }
    graph = onnx.load(workdir / "export" / "classifier.onnx")
    assert {entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")} == {OPSET}
    (face_input,) = graph.graph.input
    assert face_input.name == INPUT_NAME and face_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert face_input.type.tensor_type.shape.dim[0].dim_param  # a named (dynamic) batch axis


def test_sidecar_carries_what_predict_needs_and_where_the_model_came_from(workdir: Path) -> None:
    assert _export()[0] == 0
    sidecar = workdir / "export" / "classifier.json"
    card = read_sidecar(sidecar)
    assert card.classes == CANONICAL_CLASSES and card.image_shape == (SIZE, SIZE, 1)
    assert card.face_align.margin == 0.4
    record = json.loads(sidecar.read_text())
    assert record["train_metrics"] == {"best_val_macro_f1": 0.5, "best_epoch": 3}
    assert record["opset"] == OPSET and "uint8" in record["preprocessing"] and record["commit"]


def test_any_batch_size_gives_torch_probabilities(workdir: Path) -> None:
    assert _export()[0] == 0
    onnx_model = OnnxFaceClassifier(workdir / "export" / "classifier.onnx")
    faces = make_dataset(per_class=2, size=SIZE, seed=3).images
    expected = predict_proba(load_classifier(workdir / "model").model, faces)
    for batch in (1, 5, len(faces)):
        got = np.concatenate([onnx_model.probabilities(faces[start : start + batch]) for start in range(0, 14, batch)])
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_an_export_that_disagrees_fails_and_writes_nothing(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fersynth.export.check_parity", lambda *_: Parity(70, 0.97, 0.3))
    code, output = _export()
    assert code == 1
    assert "topclassagreeson97.00%of70faces" in output and "nothingwritten" in output
    assert not (workdir / "export").exists()
    assert [path.name for path in workdir.iterdir() if path.name.startswith(".export")] == []
