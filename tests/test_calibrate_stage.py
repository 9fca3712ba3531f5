from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fersynth.datasets.format import IMAGES_FILE, read_dataset, write_dataset
from fersynth.preview import placeholder_png

from .conftest import make_dataset
from .helpers import CALIBRATE_PARAMS, run_calibrate, synthetic_rows, write_calibrate_inputs


def test_calibrate_stage_writes_outputs_and_reuses_teachers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_calibrate_inputs(tmp_path)
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    metrics = json.loads((tmp_path / "calibrate.json").read_text())
    classes = make_dataset().classes
    calibrated = read_dataset(tmp_path / "calibrated", classes)
    assert metrics["generated_total"] == 14 and metrics["accepted_total"] == len(calibrated)
    assert sum(metrics[f"accepted_{name}"] for name in classes) == len(calibrated)
    assert {"accepted_angry", "acceptance_rate_sad", "mean_confidence_happy", "frechet_distance"} <= set(metrics)
    # The one-epoch teacher agrees at 0.2 or more with some of the 14 images and not all: the checks below bite.
    assert 0 < len(calibrated) < 14
    assert set(calibrated.ids) <= {f"gan{n}" for n in range(14)} and set(calibrated.sources) == {"gan"}
    assert (calibrated.confidence >= 0.2).all() and (calibrated.labels == calibrated.intended).all()
    assert (tmp_path / "plots" / "confidence.png").read_bytes().startswith(b"\x89PNG")
    assert closest_pairs_size(tmp_path) == placeholder_size("no judge configured (calibrate.judge)")
    assert not any(key.startswith("quality_") for key in metrics)
    cached = sorted(path.name for path in (tmp_path / "teachers").iterdir())
    assert len(cached) == 1

    relabel_params = {
        **CALIBRATE_PARAMS,
        "calibrate": {**CALIBRATE_PARAMS["calibrate"], "policy": "relabel", "threshold": 0.9},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(relabel_params))
    with caplog.at_level(logging.INFO, logger="fersynth.calibration"):
        code, output = run_calibrate(tmp_path)
    assert code == 0, output
    assert "cache hit" in caplog.text
    assert sorted(path.name for path in (tmp_path / "teachers").iterdir()) == cached
    relabelled = json.loads((tmp_path / "calibrate.json").read_text())
    assert relabelled["accepted_total"] == 14
    assert relabelled["expression_accuracy"] == metrics["expression_accuracy"]  # same teachers, same scores


def closest_pairs_size(root: Path) -> tuple[int, int]:
    with Image.open(root / "plots" / "closest_pairs.png") as image:
        assert image.format == "PNG"
        return image.size


def placeholder_size(message: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(placeholder_png(message))).size


def test_calibrate_stage_with_a_judge_grades_every_source(tmp_path: Path) -> None:
    write_calibrate_inputs(tmp_path)
    write_calibrate_params(tmp_path, judge=CALIBRATE_PARAMS["calibrate"]["teacher"])
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    diagnostics = json.loads((tmp_path / "calibrate.json").read_text())
    headline = json.loads((tmp_path / "headline.json").read_text())
    assert diagnostics["quality_gan_images"] == 14 and diagnostics["quality_gan_images_angry"] == 2
    # Headline: the overall figures of each source and of the real reference; per class only in diagnostics.
    quality_headline = sorted(key for key in headline if key.startswith("quality_"))
    assert quality_headline == [
        f"quality_{source}_{figure}"
        for source in ("gan", "real")
        for figure in ("expression_accuracy", "fd", "kid", "memorised_share")
    ]
    assert {key: diagnostics[key] for key in quality_headline} == {key: headline[key] for key in quality_headline}
    # 14 pairs of 16 px faces drawn 6x: 4 pairs a row, 4 rows.
    assert closest_pairs_size(tmp_path) == (4 * (2 * 96 + 2 + 8), 16 + 4 * (96 + 14))


def test_calibrate_stage_with_nothing_generated(tmp_path: Path) -> None:
    write_calibrate_inputs(tmp_path, generated=0)
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    metrics = json.loads((tmp_path / "calibrate.json").read_text())
    assert metrics["generated_total"] == 0 and metrics["accepted_angry"] == 0
    assert metrics["frechet_distance"] is None
    assert len(read_dataset(tmp_path / "calibrated", make_dataset().classes)) == 0
    assert closest_pairs_size(tmp_path) == placeholder_size("no judge configured (calibrate.judge)")
    write_calibrate_params(tmp_path, judge=CALIBRATE_PARAMS["calibrate"]["teacher"])
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    assert closest_pairs_size(tmp_path) == placeholder_size("no synthetic images")


def test_calibrate_stage_names_unreadable_input(tmp_path: Path) -> None:
    write_calibrate_inputs(tmp_path)
    (tmp_path / "generated" / IMAGES_FILE).write_bytes(b"not an array")
    code, output = run_calibrate(tmp_path)
    assert code == 1
    assert "".join(str(tmp_path / "generated" / IMAGES_FILE).split()) in output
    assert not (tmp_path / "calibrated").exists() and not (tmp_path / "calibrate.json").exists()


def test_calibrate_stage_names_mismatched_image_size(tmp_path: Path) -> None:
    write_calibrate_inputs(tmp_path)
    write_dataset(synthetic_rows(7, size=8), tmp_path / "generated")
    code, output = run_calibrate(tmp_path)
    assert code == 1
    assert "".join(f"{tmp_path / 'generated'}: images are (8, 8, 1)".split()) in output
    assert np.load(tmp_path / "aligned" / IMAGES_FILE).shape[1] == 16  # inputs untouched


def write_calibrate_params(root: Path, **calibrate: object) -> None:
    (root / "params.yaml").write_text(
        yaml.safe_dump({**CALIBRATE_PARAMS, "calibrate": {**CALIBRATE_PARAMS["calibrate"], **calibrate}})
    )


def test_calibrate_stage_quota_keeps_one_per_class_and_prints_the_table(tmp_path: Path) -> None:
    write_calibrate_inputs(tmp_path)  # two images generated per class
    write_calibrate_params(tmp_path, selection="quota", quota_per_class=1)
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    metrics = json.loads((tmp_path / "calibrate.json").read_text())
    classes = make_dataset().classes
    assert [metrics[f"accepted_{name}"] for name in classes] == [1] * 7
    assert metrics["classes_with_nothing_kept"] == 0
    assert len(read_dataset(tmp_path / "calibrated", classes)) == 7
    for name in classes:  # class, generated, kept, acceptance (the output has no whitespace)
        assert f"│{name}│2│1│50.0%│" in output
    assert "│total│14│7│50.0%│" in output


def test_calibrate_stage_warns_of_classes_that_kept_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_calibrate_inputs(tmp_path)
    write_calibrate_params(tmp_path, threshold=1.0)  # no softmax of a one-epoch teacher reaches 1
    with caplog.at_level(logging.WARNING, logger="fersynth.calibration"):
        code, output = run_calibrate(tmp_path)
    assert code == 0, output
    metrics = json.loads((tmp_path / "calibrate.json").read_text())
    assert metrics["accepted_total"] == 0 and metrics["classes_with_nothing_kept"] == 7
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warned) == 7
    assert warned[1].startswith("none of the 2 images generated as disgust was kept: the teachers gave them at most ")
    assert "│disgust│2│0│0.0%│" in output


def test_teachers_trained_ahead_are_the_ones_calibrate_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """benchmarks/train_teachers.py (run on another machine, its cache copied in) spares calibrate the training."""
    write_calibrate_inputs(tmp_path)
    judge = {"arch": "linear", "epochs": 1, "batch_size": 8}
    params = {**CALIBRATE_PARAMS, "calibrate": {**CALIBRATE_PARAMS["calibrate"], "ensemble_size": 2, "judge": judge}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_teachers.py"
    arguments = ["--params", "params.yaml", "--real", "aligned", "--cache", "teachers"]
    done = subprocess.run([sys.executable, str(script), *arguments], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    trained_ahead = sorted(path.name for path in (tmp_path / "teachers").iterdir())
    assert len(trained_ahead) == 3 and sum(name.startswith("judge-") for name in trained_ahead) == 1

    with caplog.at_level(logging.INFO, logger="fersynth.calibration"):
        code, output = run_calibrate(tmp_path)
    assert code == 0, output
    assert caplog.text.count("cache hit") == 3 and "not cached" not in caplog.text
    assert sorted(path.name for path in (tmp_path / "teachers").iterdir()) == trained_ahead


def test_nothing_generated_trains_no_teacher_but_makes_the_declared_cache_folder(tmp_path: Path) -> None:
    """A real-only run in a workspace that lacks HEAD's outputs (a fresh clone's queue) must still give DVC
    every declared output, the teacher cache included."""
    write_calibrate_inputs(tmp_path, generated=0)
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    assert (tmp_path / "teachers").is_dir() and not any((tmp_path / "teachers").iterdir())
    assert json.loads((tmp_path / "calibrate.json").read_text())["accepted_total"] == 0


def test_calibrate_stage_vote_keeps_every_image_with_soft_labels(tmp_path: Path) -> None:
    """SynFER's vote: every image kept, one-hot where both teachers agree with the intended class, else their mean."""
    write_calibrate_inputs(tmp_path)
    write_calibrate_params(tmp_path, policy="vote", ensemble_class_weightings=["none", "balanced"])
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    metrics = json.loads((tmp_path / "calibrate.json").read_text())
    classes = make_dataset().classes
    calibrated = read_dataset(tmp_path / "calibrated", classes)
    assert metrics["accepted_total"] == len(calibrated) == 14 and calibrated.soft_labels is not None
    one_hot = np.eye(len(classes), dtype=np.float32)[calibrated.intended]
    kept_intended = (calibrated.soft_labels == one_hot).all(axis=1)
    assert 0 < kept_intended.sum() == metrics["vote_agreed_total"] < 14  # seed 0: two images both teachers agree with
    assert (calibrated.labels[kept_intended] == calibrated.intended[kept_intended]).all()
    np.testing.assert_allclose(calibrated.soft_labels.sum(axis=1), 1.0, rtol=1e-5)
    assert "vote_agreed_total" not in json.loads((tmp_path / "headline.json").read_text())  # a diagnostic
