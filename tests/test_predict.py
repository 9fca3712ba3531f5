"""`fersynth predict` and `fersynth.predict`: every face of photos, folders, zips and videos; bad inputs are rows."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import fersynth
from fersynth import faces
from fersynth.config import CANONICAL_CLASSES
from fersynth.errors import DataError
from fersynth.prediction import TorchFaceClassifier, predict
from fersynth.training import MODEL_FILE, predict_proba
from stages.cli import app

from .conftest import REPO_ROOT, make_dataset
from .helpers import TwoFacesWhereBright, save_tiny_face_classifier

SIZE = 16


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """An (untrained) VGG for 16×16 grey faces that records its face alignment."""
    return save_tiny_face_classifier(tmp_path / "model" / MODEL_FILE, SIZE).parent


@pytest.fixture
def fake_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces, "_mtcnn", TwoFacesWhereBright)


def _photo(bright: bool, side: int = 64) -> np.ndarray:
    pixels = np.random.default_rng(int(bright)).integers(0, 100, size=(side, side, 3), dtype=np.uint8)
    pixels[0, 0] = 255 if bright else 0
    return pixels


def _invoke(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["predict", *arguments])
    return result.exit_code, result.output


def test_api_finds_every_confident_face_largest_first(model_dir: Path, fake_detector: None) -> None:
    found = fersynth.predict([_photo(True), _photo(False)], model_dir)
    assert [face.image for face in found] == [0, 0]  # nothing in the dark photo; 0.5 is below 0.8
    assert [face.box for face in found] == [(20.0, 20.0, 50.0, 50.0), (2.0, 2.0, 12.0, 12.0)]
    assert [face.detection_confidence for face in found] == pytest.approx([0.9, 0.95])
    for face in found:
        assert set(face.probabilities) == set(CANONICAL_CLASSES)
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert face.label == face.top(1)[0][0] and face.confidence == max(face.probabilities.values())
    assert len(predict(_photo(True), model_dir, max_faces=1)) == 1


def test_without_detector_each_image_is_one_face_scored_as_evaluate_scores_it(model_dir: Path) -> None:
    dataset = make_dataset(per_class=1, size=SIZE)
    found = predict(dataset.images, model_dir, detector="none")
    classifier = TorchFaceClassifier.load(model_dir)
    expected = predict_proba(classifier.loaded.model, dataset.images)
    got = np.array([[face.probabilities[name] for name in CANONICAL_CLASSES] for face in found])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert all(face.box == (0.0, 0.0, SIZE, SIZE) for face in found)


def test_api_refuses_arrays_that_are_no_images(model_dir: Path) -> None:
    with pytest.raises(DataError, match=r"image 1: expected H×W×C uint8"):
        predict([_photo(True), np.zeros((4, 4, 3), dtype=np.float32)], model_dir, detector="none")


def test_cli_reports_every_face_and_every_photo_without_one(
    tmp_path: Path, model_dir: Path, fake_detector: None
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_photo(True)).save(photos / "two.png")
    Image.fromarray(_photo(False)).save(photos / "none.jpg")
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as archive:
        archive.writestr("../outside/face.png", _png(_photo(True)))  # read in place, never extracted
    code, output = _invoke(str(photos), str(tmp_path / "more.zip"), "--model", str(model_dir), "--format", "json")
    assert code == 0, output
    records = json.loads(output)
    assert [(Path(record["file"]).name, record["status"]) for record in records] == [
        ("none.jpg", "no face"),
        ("two.png", "face"),
        ("two.png", "face"),
        ("face.png", "face"),
        ("face.png", "face"),
    ]
    face = records[1]
    assert face["box"] == [20.0, 20.0, 50.0, 50.0] and face["detection_confidence"] == pytest.approx(0.9)
    assert set(face["probabilities"]) == set(CANONICAL_CLASSES) and face["label"] in CANONICAL_CLASSES
    assert not (tmp_path / "outside").exists()


def test_unreadable_files_are_rows_and_make_the_exit_code_one(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(_photo(True)[:, :, :1].squeeze()).save(tmp_path / "fine.png")
    arguments = [str(tmp_path / "broken.png"), str(tmp_path / "fine.png"), str(tmp_path / "absent.jpg")]
    code, output = _invoke(*arguments, "--model", str(model_dir), "--detector", "none", "--format", "csv")
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(output)))
    assert [row["status"].split(":")[0] for row in rows] == ["unreadable", "face", "unreadable"]
    assert "no such file" in rows[2]["status"]
    assert float(rows[1]["x2"]) == 64 and rows[1]["label"] in CANONICAL_CLASSES
    assert sum(float(rows[1][f"p_{name}"]) for name in CANONICAL_CLASSES) == pytest.approx(1.0, abs=1e-3)


def test_video_gives_rows_per_sampled_frame_with_times(tmp_path: Path, model_dir: Path, fake_detector: None) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 64))
    for index in range(6):
        writer.write(cv2.cvtColor(_photo(index % 2 == 0), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "faces.json"
    annotated = tmp_path / "annotated"
    code, output = _invoke(str(video), "--model", str(model_dir), "--every", "2", "--format", "json", "--out", str(out))
    assert code == 0, output
    records = json.loads(out.read_text())
    assert sorted({(record["frame"], record["time"]) for record in records}) == [(0, 0.0), (2, 0.2), (4, 0.4)]
    assert all(record["status"] == "face" for record in records) and len(records) == 6
    code, _ = _invoke(str(video), "--model", str(model_dir), "--every", "3", "--annotate", str(annotated))
    assert code == 0
    drawn = sorted(annotated.iterdir())
    assert [path.name.rsplit("_f", 1)[1] for path in drawn] == ["000000.png", "000003.png"]
    frame = np.asarray(Image.open(drawn[0]))
    assert frame.shape == (64, 64, 3) and (frame == (255, 200, 0)).all(axis=2).any()  # a box was drawn


def test_table_lists_faces_with_top_three(tmp_path: Path, model_dir: Path) -> None:
    Image.fromarray(_photo(True)).save(tmp_path / "face.png")
    code, output = _invoke(str(tmp_path / "face.png"), "--model", str(model_dir), "--detector", "none")
    assert code == 0
    assert "face.png" in output and "top 3" in output


def test_onnx_without_detector_runs_without_torch(tmp_path: Path, model_dir: Path) -> None:
    """A runtime without torch: predict --onnx --detector none must not import it."""
    from fersynth.export import export_onnx
    from fersynth.prediction import ModelCard, sidecar_record
    from fersynth.training import load_classifier

    classifier = load_classifier(model_dir)
    export_onnx(classifier, tmp_path / "classifier.onnx")
    card = ModelCard(classifier.classes, classifier.image_shape, classifier.face_align_or_default())
    (tmp_path / "classifier.json").write_text(json.dumps(sidecar_record(card, {})))
    Image.fromarray(_photo(True)).save(tmp_path / "face.png")
    script = (
        "import sys, json; from typer.testing import CliRunner; from stages.cli import app; "
        f"result = CliRunner().invoke(app, ['predict', {str(tmp_path / 'face.png')!r}, '--onnx', "
        f"{str(tmp_path / 'classifier.onnx')!r}, '--detector', 'none', '--format', 'json']); "
        "print(json.dumps({'code': result.exit_code, 'torch': 'torch' in sys.modules, 'out': result.output}))"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, report["out"]
    assert report["torch"] is False
    (record,) = json.loads(report["out"])
    expected = predict(np.asarray(Image.open(tmp_path / "face.png")), model_dir, detector="none")[0]
    got = np.array([record["probabilities"][name] for name in CANONICAL_CLASSES])
    np.testing.assert_allclose(got, [expected.probabilities[name] for name in CANONICAL_CLASSES], atol=1e-4)


def test_onnx_without_its_sidecar_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "classifier.onnx").write_bytes(b"not onnx")
    code, output = _invoke(str(tmp_path), "--onnx", str(tmp_path / "classifier.onnx"))
    assert code == 1
    assert "classifier.json" in "".join(output.split())


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
