"""train and train-gan in several processes: torchrun ranks under DDP (gloo on the CPU), rank 0 alone writing.

The end-to-end tests run the real `fersynth` command, which relaunches itself under torchrun when
FERSYNTH_PROCESSES asks for more than one process; the rest checks the helpers, and that one process
never touches torch.distributed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

from fersynth.config import ClassifierConfig, TrainGanConfig
from fersynth.datasets.format import Dataset, write_dataset
from fersynth.errors import ParamsError
from fersynth.gan.generator import load_generator
from fersynth.gan.training import train_gan
from fersynth.runtime import distributed
from fersynth.runtime.device import resolve_device, training_precision
from fersynth.runtime.distributed import Launch, needs_torchrun, shard, shard_weight, torchrun_launch
from fersynth.training import fit_classifier, load_classifier

from .conftest import make_dataset, run_stage

FERSYNTH = Path(sys.executable).parent / "fersynth"
DIGEST = re.compile(r"rank(\d+)/(\d+):weightssha256([0-9a-f]{64})")
TORCHRUN_ENVIRONMENT = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}


def files_below(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def run_in_two_processes(folder: Path, arguments: list[str]) -> str:
    """Run `fersynth <arguments>` in `folder` with two training processes; its output without whitespace."""
    environment = os.environ | {"FERSYNTH_PROCESSES": "2", "FERSYNTH_THREADS": "1", "FERSYNTH_DEVICE": "cpu"}
    completed = subprocess.run(
        [str(FERSYNTH), *arguments], cwd=folder, env=environment, capture_output=True, text=True, timeout=600
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return "".join(output.split())  # rich wraps long log lines


def rank_digests(output: str) -> dict[int, str]:
    """Each rank's logged weight digest, once per rank of two."""
    found = [(int(rank), int(size), digest) for rank, size, digest in DIGEST.findall(output)]
    assert sorted((rank, size) for rank, size, _ in found) == [(0, 2), (1, 2)], output
    return {rank: digest for rank, _, digest in found}


# ---------------------------------------------------------------- train


def train_arguments(out: str) -> list[str]:
    return [
        "train", "--train", "merged", "--val", "aligned", "--out", out, "--diagnostics", f"{out}.json",
        "--metrics", f"{out}_headline.json", "--live", f"{out}_live", "--params", "params.yaml",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("train_workdir")
def test_train_in_two_processes_agrees_and_only_rank_0_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERSYNTH_DEVICE", "cpu")  # gloo's ranks, and the one process they are held against
    inputs = files_below(tmp_path)
    output = run_in_two_processes(tmp_path, train_arguments("model"))

    digests = rank_digests(output)
    assert digests[0] == digests[1]
    live_rows = {f"model_live/plots/metrics/{name}.tsv" for name in ("train_loss", "val_loss", "val_accuracy")}
    live_rows |= {f"model_live/plots/metrics/{name}.tsv" for name in ("val_macro_f1", "lr")}
    written = {"model/model.pt", "model.json", "model_headline.json", "model_live/metrics.json", *live_rows}
    assert files_below(tmp_path) - inputs == written  # nothing twice, nothing from rank 1
    diagnostics = json.loads((tmp_path / "model.json").read_text())
    assert diagnostics["processes"] == 2 and diagnostics["precision"] == "fp32" and diagnostics["device"] == "cpu"
    assert diagnostics["environment"]["execution"]["processes"] == 2

    # The linear model has no batch norm or dropout: the shards' weighted gradients average to one process's.
    assert run_stage(train_arguments("alone"))[0] == 0
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert alone["processes"] == 1 and alone["best_epoch"] == diagnostics["best_epoch"]
    two, one = (load_classifier(tmp_path / out).model.state_dict() for out in ("model", "alone"))
    assert all(torch.allclose(two[name], one[name], atol=1e-5) for name in one)


# ---------------------------------------------------------------- train-gan


def gan_arguments() -> list[str]:
    return [
        "train-gan", "--input", "aligned", "--offline", "offline", "--out", "gan", "--checkpoints", "checkpoints",
        "--diagnostics", "train_gan.json", "--live", "live", "--samples", "plots/samples.png",
        "--params", "params.yaml",
    ]  # fmt: skip


@pytest.mark.slow
def test_train_gan_in_two_processes_agrees_and_resumes_in_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERSYNTH_DEVICE", "cpu")  # the resumed run exports on the device the ranks trained on
    write_dataset(make_dataset(per_class=6, size=16), tmp_path / "aligned")
    gan = {"epochs": 2, "base_channels": 8, "batch_size": 8, "latent_dim": 16}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train_gan": gan}))
    inputs = files_below(tmp_path)
    output = run_in_two_processes(tmp_path, gan_arguments())

    digests = rank_digests(output)
    assert digests[0] == digests[1]
    curves = {f"live/plots/metrics/{name}.tsv" for name in ("d_loss", "g_loss", "d_real", "d_fake")}
    written = {"gan/generator.pt", "checkpoints/checkpoint.pt", "train_gan.json", "plots/samples.png"}
    assert files_below(tmp_path) - inputs == written | curves | {"live/metrics.json"}
    metrics = json.loads((tmp_path / "train_gan.json").read_text())
    assert metrics["processes"] == 2 and metrics["precision"] == "fp32" and metrics["steps"] == 2
    assert metrics["environment"]["execution"]["processes"] == 2

    # One process resumes rank 0's checkpoint: nothing left to train, the same generator exported.
    two_processes = load_generator(tmp_path / "gan" / "generator.pt")
    code, resumed_output = run_stage(gan_arguments())
    assert code == 0, resumed_output
    resumed = load_generator(tmp_path / "gan" / "generator.pt")
    pairs = zip(two_processes.networks[0].state_dict().values(), resumed.networks[0].state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert json.loads((tmp_path / "train_gan.json").read_text())["processes"] == 1


# ---------------------------------------------------------------- one process


def test_one_process_never_starts_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("one process must not join a process group")

    monkeypatch.setattr(dist, "init_process_group", refuse)
    data = make_dataset(per_class=6, size=16)
    train, val = data.split("train"), data.split("val")
    config = ClassifierConfig(arch="vgg", width=4, epochs=2, batch_size=4)
    first, second = (fit_classifier(train, val, config, seed=2, device=torch.device("cpu")) for _ in range(2))
    assert not dist.is_initialized()
    assert first.processes == 1 and first.precision == "fp32" and first.device == "cpu"
    pairs = zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.usefixtures("train_workdir")
def test_one_process_stage_runs_in_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("one process must not start torchrun")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setenv("FERSYNTH_PROCESSES", "1")
    code, output = run_stage(train_arguments("model"))
    assert code == 0, output
    assert json.loads((tmp_path / "model.json").read_text())["processes"] == 1


# ---------------------------------------------------------------- helpers


def test_torchrun_launch_needs_all_three_variables() -> None:
    assert torchrun_launch(TORCHRUN_ENVIRONMENT) == Launch(rank=1, world_size=2, local_rank=1)
    assert torchrun_launch({"RANK": "0", "WORLD_SIZE": "2"}) is None
    assert needs_torchrun(2, {}) and not needs_torchrun(1, {}) and not needs_torchrun(2, TORCHRUN_ENVIRONMENT)


@pytest.mark.parametrize("count", [2, 7, 8, 64])
def test_shards_cover_a_batch_in_rank_order(count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ranks = 3 if count >= 3 else 2
    monkeypatch.setattr(distributed, "world_size", lambda: ranks)
    parts, weights = [], []
    for rank in range(ranks):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        parts.append(shard(count))
        weights.append(shard_weight(count))
    assert [index for part in parts for index in range(count)[part]] == list(range(count))
    assert max(len(range(count)[part]) for part in parts) - min(len(range(count)[part]) for part in parts) <= 1
    assert sum(weights) == pytest.approx(ranks)


def test_alone_the_shard_is_the_whole_batch() -> None:
    assert shard(5) == slice(0, 5) and shard_weight(5) == 1.0


def test_batches_too_small_to_share_are_refused(
    tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    train, val = tiny_dataset.split("train"), tiny_dataset.split("val")
    with pytest.raises(ParamsError, match=r"train\.batch_size 6 makes batches of 4 images, too few for 4 processes"):
        fit_classifier(train, val, ClassifierConfig(arch="linear", epochs=1, batch_size=6), seed=0)
    with pytest.raises(ParamsError, match=r"train_gan\.batch_size 6 makes batches of 6 images, too few for 4"):
        train_gan(tiny_dataset, TrainGanConfig(batch_size=6), seed=0, checkpoint_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_devices_and_precision_on_the_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    precision = training_precision(torch.device("cpu"))
    assert precision.name == "fp32" and not precision.grad_scaler().is_enabled()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_asking_for_a_gpu_without_one_names_the_setting() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ParamsError, match="'cuda:1': torch sees no CUDA GPU"):
        resolve_device("cuda:1")
