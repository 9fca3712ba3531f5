"""`fersynth train`: trains on the merged rows, writes model, metrics and dvclive curves; bad input fails cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fersynth.training import load_classifier

from .conftest import run_stage

METRIC_KEYS = {
    "device",
    "precision",
    "processes",
    "best_epoch",
    "best_val_macro_f1",
    "best_val_accuracy",
    "epochs",
    "epochs_reached",
    "stopped_by_budget",
    "training_seconds",
    "epoch_seconds",
    "train_images",
    "val_images",
    "parameters",
}


def _train(workdir: Path, *overrides: str, out: str = "model") -> tuple[int, str]:
    arguments = [
        "train",
        "--train",
        "merged",
        "--val",
        "aligned",
        "--out",
        out,
        "--diagnostics",
        f"{out}.json",
        "--metrics",
        f"{out}_headline.json",
    ]
    arguments += ["--live", f"{out}_live", "--params", "params.yaml", *overrides]
    return run_stage(arguments)


def test_train_writes_model_metrics_and_curves(train_workdir: Path) -> None:
    code, output = _train(train_workdir)
    assert code == 0, output
    loaded = load_classifier(train_workdir / "model")
    assert loaded.image_shape == (16, 16, 1) and loaded.config.arch == "linear"
    metrics = json.loads((train_workdir / "model.json").read_text())
    assert set(metrics) == METRIC_KEYS | {"environment"}
    assert metrics["environment"]["torch_threads"] == torch.get_num_threads()
    headline = json.loads((train_workdir / "model_headline.json").read_text())
    headline_keys = ("best_epoch", "best_val_macro_f1", "best_val_accuracy", "epochs_reached")
    assert headline == {key: metrics[key] for key in headline_keys}
    assert metrics["epochs_reached"] == 2 and metrics["stopped_by_budget"] is False
    assert metrics["epochs"] == 2 and metrics["train_images"] == 14 and metrics["val_images"] == 14
    assert len(metrics["epoch_seconds"]) == 2 and metrics["training_seconds"] == pytest.approx(
        sum(metrics["epoch_seconds"]), abs=0.1
    )
    assert 1 <= metrics["best_epoch"] <= 2
    curve = (train_workdir / "model_live" / "plots" / "metrics" / "val_macro_f1.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "val_macro_f1"] and len(curve) == 3
    assert not list(train_workdir.rglob("dvc.yaml")), "dvclive must not write a dvc.yaml"


def test_train_metrics_repeat_for_the_same_seed(train_workdir: Path) -> None:
    assert _train(train_workdir, out="first")[0] == 0
    assert _train(train_workdir, out="second")[0] == 0
    assert (train_workdir / "first.json").read_text() == (train_workdir / "second.json").read_text()


def test_train_names_a_missing_training_directory(train_workdir: Path) -> None:
    code, output = _train(train_workdir, "--train", "nowhere")
    assert code != 0
    assert "nowhere" in output
    assert not (train_workdir / "model").exists() and not (train_workdir / "model.json").exists()


def test_train_needs_a_val_split(train_workdir: Path) -> None:
    code, output = _train(train_workdir, "--val", "merged")
    assert code != 0
    assert "merged" in output and "val" in output
    assert not (train_workdir / "model").exists()


def _weights(path: Path) -> list[torch.Tensor]:
    return list(load_classifier(path).model.state_dict().values())


def test_train_seed_replaces_common_seed_for_the_classifier_only(train_workdir: Path) -> None:
    """`train.seed: 3` trains exactly what `common.seed: 3` would; another seed trains other weights."""
    params = yaml.safe_load((train_workdir / "params.yaml").read_text())
    runs = {"common3": ({"seed": 3}, {}), "train3": ({"seed": 0}, {"seed": 3}), "train4": ({"seed": 0}, {"seed": 4})}
    for out, (common, train) in runs.items():
        params["common"] |= common
        params["train"] |= {"seed": None} | train
        (train_workdir / "params.yaml").write_text(yaml.safe_dump(params))
        code, output = _train(train_workdir, out=out)
        assert code == 0, output
    common3, train3, train4 = (_weights(train_workdir / out) for out in runs)
    assert all(torch.equal(a, b) for a, b in zip(common3, train3, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(train3, train4, strict=True))


def test_a_rerun_with_a_resume_file_continues_and_curves_show_the_whole_run(train_workdir: Path) -> None:
    """The stage passes --resume through: a second run of the same params resumes after the last epoch and
    trains nothing more, yet its curves hold every epoch and its model equals the first run's."""
    resume = ["--resume", "state/resume.pt"]
    assert _train(train_workdir, *resume, out="first")[0] == 0
    assert (train_workdir / "state" / "resume.pt").is_file()
    assert _train(train_workdir, *resume, out="second")[0] == 0
    curve = (train_workdir / "second_live" / "plots" / "metrics" / "val_macro_f1.tsv").read_text().splitlines()
    assert len(curve) == 3  # header + both epochs, replayed from the resume file
    first, second = _weights(train_workdir / "first" / "model.pt"), _weights(train_workdir / "second" / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
