"""Shared fixtures: the read-only FER data beside the checkout, small synthetic datasets, stage runs."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fersynth.config import CANONICAL_CLASSES
from fersynth.datasets.format import Dataset, write_dataset
from stages.cli import app

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FERSYNTH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def run_stage(arguments: Sequence[str]) -> tuple[int, str]:
    """Run `fersynth <arguments>` in-process: exit code and output without whitespace (rich wraps long paths)."""
    result = CliRunner().invoke(app, list(arguments))
    return result.exit_code, "".join(result.output.split())


def shared_file(name: str) -> Path:
    """Path to a file in ../shared/data; skip when absent, fail when CI requires it."""
    path = SHARED_DATA / name
    if not path.is_file():
        reason = f"{path} not found (the shared FER data lives beside the checkout)"
        if os.environ.get("FERSYNTH_REQUIRE_SHARED") == "1":
            pytest.fail(reason + "; FERSYNTH_REQUIRE_SHARED=1 makes this an error")
        pytest.skip(reason)
    return path


class RecordingLive:
    """Stands in for dvclive.Live: keeps what would be logged."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = [{}]

    def log_metric(self, name: str, value: float) -> None:
        self.steps[-1][name] = value

    def next_step(self) -> None:
        self.steps.append({})


def make_dataset(per_class: int = 6, size: int = 48, channels: int = 1, seed: int = 0) -> Dataset:
    """A tiny labelled dataset whose classes differ in mean brightness (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    classes = CANONICAL_CLASSES
    labels = np.repeat(np.arange(len(classes)), per_class)
    base = (labels * 30 + 20).astype(np.float32)[:, None, None, None]
    noise = rng.normal(0, 12, size=(len(labels), size, size, channels))
    images = np.clip(base + noise, 0, 255).astype(np.uint8)
    splits = np.array(["train", "val", "test"] * ((len(labels) + 2) // 3), dtype=object)[: len(labels)]
    ids = np.array([f"img{i:04d}" for i in range(len(labels))], dtype=object)
    return Dataset(images=images, labels=labels.astype(np.int64), splits=splits, classes=classes, ids=ids)


@pytest.fixture(autouse=True)
def _one_training_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's fersynth.local.yaml asking for more processes must not relaunch pytest's own arguments
    under torchrun from an in-process stage run; tests of that path set FERSYNTH_PROCESSES themselves."""
    monkeypatch.setenv("FERSYNTH_PROCESSES", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """Tests run tiny tensors, where a second thread only adds contention (45x slower seen under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()


@pytest.fixture
def train_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Train's inputs, aligned data (train/val/test rows) and a merged set, in a directory outside any DVC repo,
    made the working directory."""
    monkeypatch.chdir(tmp_path)
    aligned = make_dataset(per_class=6, size=16)
    write_dataset(aligned, tmp_path / "aligned")
    write_dataset(aligned.split("train"), tmp_path / "merged")
    params = {"common": {"image_size": 16}, "train": {"arch": "linear", "epochs": 2, "batch_size": 8}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path
