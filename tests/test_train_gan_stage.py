from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fersynth.datasets.format import write_dataset
from fersynth.gan.generator import load_generator
from stages.cli import app

from .conftest import make_dataset

runner = CliRunner()
TINY_GAN = {"epochs": 1, "base_channels": 8, "batch_size": 8, "latent_dim": 16}


def write_params(path: Path, **train_gan: object) -> Path:
    path.write_text(yaml.safe_dump({"train_gan": TINY_GAN | train_gan}))
    return path


def arguments(tmp_path: Path, params: Path) -> list[str]:
    return [
        "train-gan",
        "--input", str(tmp_path / "aligned"),
        "--offline", str(tmp_path / "offline"),
        "--out", str(tmp_path / "gan"),
        "--checkpoints", str(tmp_path / "checkpoints"),
        "--diagnostics", str(tmp_path / "train_gan.json"),
        "--live", str(tmp_path / "live"),
        "--samples", str(tmp_path / "plots" / "samples.png"),
        "--params", str(params),
    ]  # fmt: skip


@pytest.fixture
def aligned(tmp_path: Path) -> Path:
    write_dataset(make_dataset(per_class=6, size=16), tmp_path / "aligned")
    return tmp_path / "aligned"


def test_trains_and_writes_generator_curves_samples_and_metrics(tmp_path: Path, aligned: Path) -> None:
    result = runner.invoke(app, arguments(tmp_path, write_params(tmp_path / "params.yaml")))
    assert result.exit_code == 0, result.output
    generator = load_generator(tmp_path / "gan" / "generator.pt")
    assert generator.image_shape == (16, 16, 1) and len(generator.classes) == 7
    assert (tmp_path / "plots" / "samples.png").read_bytes().startswith(b"\x89PNG")
    metrics = json.loads((tmp_path / "train_gan.json").read_text())
    assert metrics["epochs"] == 1 and metrics["train_images"] == 14 and "d_loss" in metrics
    curve = (tmp_path / "live" / "plots" / "metrics" / "g_loss.tsv").read_text().splitlines()
    assert curve[0] == "step\tg_loss" and len(curve) == 2
    assert not (tmp_path / "live" / "dvc.yaml").exists()
    assert (tmp_path / "checkpoints" / "checkpoint.pt").is_file()

    # A rerun with the same params resumes from the finished checkpoint and replays the curves.
    again = runner.invoke(app, arguments(tmp_path, write_params(tmp_path / "params.yaml")))
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "train_gan.json").read_text()) == metrics
    assert (tmp_path / "live" / "plots" / "metrics" / "g_loss.tsv").read_text().splitlines() == curve


def test_offline_variants_join_only_when_asked(tmp_path: Path, aligned: Path) -> None:
    write_dataset(make_dataset(per_class=6, size=16, seed=1).split("train"), tmp_path / "offline")
    result = runner.invoke(app, arguments(tmp_path, write_params(tmp_path / "params.yaml", use_offline=True)))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "train_gan.json").read_text())["train_images"] == 28


def test_missing_input_names_the_file(tmp_path: Path) -> None:
    result = runner.invoke(app, arguments(tmp_path, write_params(tmp_path / "params.yaml")))
    assert result.exit_code == 1
    assert "".join(f"{tmp_path / 'aligned' / 'images.npy'}: missing".split()) in "".join(result.output.split())
    assert not (tmp_path / "gan").exists()


def test_bad_param_names_the_key(tmp_path: Path, aligned: Path) -> None:
    result = runner.invoke(app, arguments(tmp_path, write_params(tmp_path / "params.yaml", base_channel=8)))
    assert result.exit_code == 1
    assert "train_gan.base_channel: unknown key" in " ".join(result.output.split())
