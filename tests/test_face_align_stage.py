from __future__ import annotations

import json
from pathlib import Path

import yaml

from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.faces import OUTCOMES_FILE

from .conftest import make_dataset, run_stage


def invoke(root: Path, input_dir: Path, face_align: dict[str, object]) -> tuple[int, str]:
    params = {"common": {"image_size": 32, "channels": 3}, "face_align": face_align}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return run_stage(
        [
            "face-align",
            *("--input", str(input_dir), "--out", str(root / "aligned")),
            *("--diagnostics", str(root / "face_align.json"), "--params", str(root / "params.yaml")),
        ]
    )


def test_face_align_stage_resizes_and_reports_every_image(tmp_path: Path) -> None:
    dataset = make_dataset(per_class=2, size=48, channels=1)
    write_dataset(dataset, tmp_path / "fetched")
    code, output = invoke(tmp_path, tmp_path / "fetched", {"detector": "none"})
    assert code == 0, output
    aligned = read_dataset(tmp_path / "aligned", dataset.classes)
    assert aligned.images.shape == (len(dataset), 32, 32, 3)
    assert list(aligned.ids) == list(dataset.ids)
    report = (tmp_path / "aligned" / OUTCOMES_FILE).read_text().splitlines()
    assert report[0] == "id,outcome,confidence,angle" and len(report) == len(dataset) + 1
    assert report[1] == f"{dataset.ids[0]},resized,,0.00"
    metrics = json.loads((tmp_path / "face_align.json").read_text())
    assert metrics["resized"] == metrics["total"] == len(dataset)
    assert metrics["aligned"] == metrics["dropped"] == 0 and metrics["detection_rate"] == 0.0
    assert metrics["total_train"] == int((dataset.splits == "train").sum())


def test_face_align_stage_drops_faceless_images_with_mtcnn(tmp_path: Path) -> None:
    dataset = make_dataset(per_class=1, size=64, channels=3)
    write_dataset(dataset, tmp_path / "fetched")
    code, output = invoke(tmp_path, tmp_path / "fetched", {"detector": "mtcnn", "on_no_face": "drop"})
    assert code == 0, output
    assert len(read_dataset(tmp_path / "aligned", dataset.classes)) == 0  # an empty dataset is still valid
    metrics = json.loads((tmp_path / "face_align.json").read_text())
    assert metrics["dropped"] == len(dataset) and metrics["detection_rate"] == 0.0


def test_face_align_stage_names_a_missing_input(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    code, output = invoke(tmp_path, missing, {"detector": "none"})
    assert code == 1
    assert "".join(str(missing / "images.npy").split()) in output
    assert not (tmp_path / "aligned").exists() and not (tmp_path / "face_align.json").exists()


def test_face_align_stage_names_a_bad_param(tmp_path: Path) -> None:
    write_dataset(make_dataset(per_class=1), tmp_path / "fetched")
    code, output = invoke(tmp_path, tmp_path / "fetched", {"detector": "haar"})
    assert code == 1 and "face_align.detector" in output
    assert not (tmp_path / "aligned").exists()
