"""The bad-input corpus, pipeline half: params, artefacts between stages, checkpoints, output paths, runs
that collide or were interrupted.

Every case builds its bad input itself (no binary blobs) and runs one `fersynth` command in-process.
A refused case checks through tests/bad_inputs.py that the command names the culprit, shows no
traceback, keeps an earlier run's outputs byte for byte and leaves no temporary file. A recoverable
case (a damaged resume checkpoint or cache entry, what a killed run left behind) checks that the
run says what it set aside and ends as a clean run would.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from fersynth.config import CANONICAL_CLASSES, ClassifierConfig
from fersynth.datasets.format import IMAGES_FILE, MANIFEST_COLUMNS, MANIFEST_FILE, SOFT_LABELS_FILE, write_dataset
from fersynth.errors import ParamsError
from fersynth.gan.generator import GENERATOR_FILE
from fersynth.gan.training import CHECKPOINT_FILE
from fersynth.models import build_classifier
from fersynth.training import MODEL_FILE, save_classifier

from .bad_inputs import alias_bomb, assert_refused, leftovers, run_command, run_measured, snapshot
from .conftest import make_dataset
from .helpers import run_calibrate, write_calibrate_inputs

Corruption = Callable[[Path], str]  # damages a file or dataset directory; returns the culprit the error must name
TINY_AUGMENT = {"augment_offline": {"variants_per_image": 1}}
TINY_GAN = {"train_gan": {"epochs": 2, "base_channels": 8, "batch_size": 8, "latent_dim": 16}}


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# ---------------------------------------------------------------- augment-offline: cheapest stage reading a dataset


def augment_arguments(
    root: Path, params: Path | None = None, out: Path | None = None, diagnostics: Path | None = None
) -> list[str]:
    return [
        "augment-offline",
        *("--input", str(root / "aligned"), "--out", str(out or root / "offline")),
        *("--diagnostics", str(diagnostics or root / "augment.json"), "--params", str(params or root / "params.yaml")),
    ]


@pytest.fixture
def augmented(tmp_path: Path) -> Path:
    """Aligned data and the outputs of a good augment-offline run on it: what a failed rerun must not touch."""
    write_dataset(make_dataset(per_class=3, size=16), tmp_path / "aligned")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_AUGMENT))
    outcome = run_command(augment_arguments(tmp_path))
    assert outcome.exit_code == 0, outcome.output
    return tmp_path


def assert_augment_refused(root: Path, params: Path | None, *culprits: str) -> None:
    before = snapshot(root / "offline", root / "augment.json")
    assert_refused(run_command(augment_arguments(root, params)), *culprits)
    assert snapshot(root / "offline", root / "augment.json") == before
    assert leftovers(root) == []


# ---------------------------------------------------------------- params


def write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def write_yaml(content: Any) -> Callable[[Path], None]:
    return lambda path: path.write_text(yaml.safe_dump(content))


PARAMS_CASES = [
    pytest.param(lambda path: None, "params file not found", id="missing-file"),
    pytest.param(write_bytes(b"train: [1, 2\n"), "not valid YAML", id="not-yaml"),
    pytest.param(write_bytes(b"- train\n- merge\n"), "expected a mapping", id="list-not-mapping"),
    pytest.param(write_bytes(b"train:\n  arch: \xff\xfe\n"), "params.yaml:2", id="not-utf8"),
    pytest.param(write_yaml({"train": {"epochs": 0}}), "train.epochs", id="train-epochs-zero"),
    pytest.param(write_yaml({"train_gan": {"batch_size": 1}}), "train_gan.batch_size", id="gan-batch-size-one"),
    pytest.param(write_yaml({"calibrate": {"threshold": 1.5}}), "calibrate.threshold", id="threshold-above-one"),
    pytest.param(write_yaml({"augment_offline": {"variants_per_image": -1}}), "variants_per_image", id="negative"),
    pytest.param(write_yaml({"merge": {"polcy": "all"}}), "merge.polcy", id="unknown-key"),
    # What reading the file may cost is bounded by its size (config.BoundedLoader), and every number has a range.
    pytest.param(write_bytes(alias_bomb(9)), "params.yaml:5: this value holds 66,430 values", id="alias-bomb"),
    pytest.param(write_bytes(b"train: &a {arch: [*a]}\n"), "params.yaml:1: nested deeper", id="alias-of-itself"),
    pytest.param(write_bytes(b"train: " + b"[" * 20_000 + b"]" * 20_000), "nested deeper than 64", id="deep-nesting"),
    pytest.param(
        write_bytes(b"train:\n  lr: 1.0e-3\n  lr: 1.0e-2\n"), "params.yaml:3: key 'lr' given twice", id="duplicate-key"
    ),
    pytest.param(write_bytes(b"# " + b"x" * 2**16), "larger than 64 KiB", id="oversized"),
    pytest.param(write_bytes(b"train: {epochs: 0x" + b"f" * 300 + b"}"), "params.yaml:1: integer", id="huge-integer"),
    pytest.param(write_bytes(b"train: {arch: 2001-13-45}"), "cannot read '2001-13-45'", id="impossible-date"),
    pytest.param(write_bytes(b"train: {lr: .inf}"), "train.lr: Input should be a finite number", id="lr-infinite"),
    pytest.param(write_bytes(b"train_gan: {lr_generator: .nan}"), "train_gan.lr_generator", id="lr-nan"),
    pytest.param(write_yaml({"train": {"epochs": 10**24}}), "train.epochs: Input should be less", id="epochs-huge"),
    pytest.param(write_yaml({"merge": {"per_class": 10**9}}), "merge.per_class", id="count-huge"),
]


@pytest.mark.parametrize(("write", "culprit"), PARAMS_CASES)
def test_bad_params_file_is_refused_by_name(augmented: Path, write: Callable[[Path], None], culprit: str) -> None:
    params = augmented / "bad_params.yaml"
    write(params)
    assert_augment_refused(augmented, params, str(params), culprit)


def test_an_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """Nine levels of nine aliases in 523 bytes. Before config.BoundedLoader, eight levels took 16 s and 930 MiB to
    refuse (the message quoted the whole expanded value), and nine ran past 60 s and 2.7 GB."""
    (tmp_path / "params.yaml").write_bytes(alias_bomb(9))
    started = time.perf_counter()
    measured = run_measured(augment_arguments(tmp_path), cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert measured.exit_code == 1 and "Traceback" not in measured.output, measured.output
    assert "params.yaml:5:" in "".join(measured.output.split())
    assert measured.peak_mib < 200, f"peak {measured.peak_mib:.0f} MiB"
    assert seconds < 20, f"{seconds:.1f} s, interpreter start included"


# ---------------------------------------------------------------- artefacts between stages


def manifest_rows(directory: Path) -> list[list[str]]:
    with open(directory / MANIFEST_FILE, newline="") as stream:
        return list(csv.reader(stream))


def write_manifest_rows(directory: Path, rows: list[list[str]]) -> None:
    with open(directory / MANIFEST_FILE, "w", newline="") as stream:
        csv.writer(stream).writerows(rows)


def set_field(line: int, column: str, value: str) -> Corruption:
    """Set one manifest field; `line` counts as an editor does (the header is line 1)."""

    def corrupt(directory: Path) -> str:
        rows = manifest_rows(directory)
        rows[line - 1][MANIFEST_COLUMNS.index(column)] = value
        write_manifest_rows(directory, rows)
        return f"{directory / MANIFEST_FILE}:{line}"

    return corrupt


def copy_field(line: int, column: str, from_line: int) -> Corruption:
    def corrupt(directory: Path) -> str:
        value = manifest_rows(directory)[from_line - 1][MANIFEST_COLUMNS.index(column)]
        return set_field(line, column, value)(directory)

    return corrupt


def reshape_row(line: int, change: Callable[[list[str]], list[str]]) -> Corruption:
    def corrupt(directory: Path) -> str:
        rows = manifest_rows(directory)
        rows[line - 1] = change(rows[line - 1])
        write_manifest_rows(directory, rows)
        return f"{directory / MANIFEST_FILE}:{line}"

    return corrupt


def drop_last_row(directory: Path) -> str:
    write_manifest_rows(directory, manifest_rows(directory)[:-1])
    return str(directory / MANIFEST_FILE)


def latin1_in_line_3(directory: Path) -> str:
    lines = (directory / MANIFEST_FILE).read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"img", b"im\xe9", 1)
    (directory / MANIFEST_FILE).write_bytes(b"\n".join(lines))
    return f"{directory / MANIFEST_FILE}:3"


def save_images(change: Callable[[np.ndarray], np.ndarray]) -> Corruption:
    def corrupt(directory: Path) -> str:
        path = directory / IMAGES_FILE
        np.save(path, change(np.load(path)), allow_pickle=True)
        return str(path)

    return corrupt


def rewrite_file(name: str, change: Callable[[bytes], bytes]) -> Corruption:
    def corrupt(directory: Path) -> str:
        path = directory / name
        path.write_bytes(change(path.read_bytes()))
        return str(path)

    return corrupt


def save_soft_labels(make: Callable[[int, int], np.ndarray]) -> Corruption:
    def corrupt(directory: Path) -> str:
        rows = len(manifest_rows(directory)) - 1
        np.save(directory / SOFT_LABELS_FILE, make(rows, len(CANONICAL_CLASSES)))
        return str(directory / SOFT_LABELS_FILE)

    return corrupt


def uniform_but(row: int, value: float) -> Callable[[int, int], np.ndarray]:
    def make(rows: int, classes: int) -> np.ndarray:
        soft = np.full((rows, classes), 1 / classes, dtype=np.float32)
        soft[row] = value
        return soft

    return make


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


ARTEFACT_CASES = [
    pytest.param(save_images(lambda images: images.astype(np.float32)), id="images-float32"),
    pytest.param(save_images(lambda images: images[..., 0]), id="images-3d"),
    pytest.param(save_images(lambda images: np.array([images[0], "face"], dtype=object)), id="images-pickled-objects"),
    pytest.param(rewrite_file(IMAGES_FILE, half), id="images-truncated"),
    pytest.param(rewrite_file(IMAGES_FILE, lambda data: b""), id="images-empty-file"),
    pytest.param(rewrite_file(IMAGES_FILE, lambda data: b"not an array\n"), id="images-not-npy"),
    pytest.param(drop_last_row, id="manifest-row-missing"),
    pytest.param(latin1_in_line_3, id="manifest-not-utf8"),
    pytest.param(set_field(2, "split", "training"), id="split-unknown"),
    pytest.param(set_field(3, "source", "synthetic"), id="source-unknown"),
    pytest.param(set_field(2, "confidence", "high"), id="confidence-not-a-number"),
    pytest.param(set_field(4, "confidence", "1.5"), id="confidence-above-one"),
    pytest.param(set_field(2, "confidence", "nan"), id="confidence-nan"),
    pytest.param(set_field(2, "index", "first"), id="index-not-integer"),
    pytest.param(copy_field(3, "index", from_line=2), id="index-repeated"),
    pytest.param(copy_field(5, "id", from_line=2), id="id-repeated"),
    pytest.param(set_field(2, "id", ""), id="id-empty"),
    pytest.param(set_field(6, "label", ""), id="label-empty"),
    pytest.param(set_field(2, "intended_label", "furious"), id="intended-label-unknown"),
    pytest.param(reshape_row(3, lambda row: row[:-2]), id="row-fields-missing"),
    pytest.param(reshape_row(3, lambda row: [*row, "surplus"]), id="row-field-surplus"),
    pytest.param(save_soft_labels(lambda rows, classes: np.full((rows, classes + 1), 0.1)), id="soft-labels-shape"),
    pytest.param(save_soft_labels(lambda rows, classes: np.ones((rows, classes), np.int64)), id="soft-labels-int"),
    pytest.param(save_soft_labels(uniform_but(row=4, value=np.nan)), id="soft-labels-nan"),
    pytest.param(save_soft_labels(uniform_but(row=2, value=-0.5)), id="soft-labels-negative"),
]


@pytest.mark.parametrize("corrupt", ARTEFACT_CASES)
def test_damaged_dataset_directory_is_refused_by_name(augmented: Path, corrupt: Corruption) -> None:
    culprit = corrupt(augmented / "aligned")
    assert_augment_refused(augmented, None, culprit)


# ---------------------------------------------------------------- checkpoints and weights files


def foreign_pickle(path: Path) -> None:
    """A pickle, but of an object and no weights: torch's weights-only loader refuses it."""
    path.write_bytes(pickle.dumps(argparse.Namespace(weights=[1.0, 2.0])))


def truncate(path: Path) -> None:
    path.write_bytes(half(path.read_bytes()))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def edit_payload(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Load a torch file, change its content in place, save it again: readable, but of the wrong make."""

    def damage(path: Path) -> None:
        payload = torch.load(path, weights_only=True)
        change(payload)
        torch.save(payload, path)

    return damage


def rename_keys(state: dict[str, Any]) -> None:
    for key in list(state):
        state[f"renamed.{key}"] = state.pop(key)


def shrink_first_tensor(state: dict[str, Any]) -> None:
    first = next(iter(state))
    state[first] = torch.zeros(1)


def assert_damage_refused(
    arguments: list[str], file: Path, damage: Callable[[Path], None], outputs: Sequence[Path]
) -> None:
    """A good run, then `damage(file)`: the rerun is refused naming `file` and the good run's outputs stay."""
    first = run_command(arguments)
    assert first.exit_code == 0, first.output
    earlier = snapshot(*outputs)
    damage(file)
    assert_refused(run_command(arguments), str(file))
    assert snapshot(*outputs) == earlier
    assert all(leftovers(output.parent) == [] for output in outputs)


FILE_DAMAGE = [
    pytest.param(foreign_pickle, id="pickle-not-weights"),
    pytest.param(truncate, id="truncated"),
    pytest.param(empty, id="empty"),
]


def gan_arguments(root: Path) -> list[str]:
    return [
        "train-gan",
        *("--input", str(root / "aligned"), "--offline", str(root / "offline")),
        *("--out", str(root / "gan"), "--checkpoints", str(root / "checkpoints")),
        *("--diagnostics", str(root / "train_gan.json"), "--live", str(root / "live")),
        *("--samples", str(root / "samples.png"), "--params", str(root / "params.yaml")),
    ]


@pytest.fixture(scope="module")
def trained_gan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny GAN run (outputs, checkpoint, curves); each case works on a copy."""
    root = tmp_path_factory.mktemp("gan")
    write_dataset(make_dataset(per_class=4, size=16), root / "aligned")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_GAN))
    outcome = run_command(gan_arguments(root))
    assert outcome.exit_code == 0, outcome.output
    return root


@pytest.fixture
def gan_copy(trained_gan: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained_gan, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    "damage",
    [
        *FILE_DAMAGE,
        pytest.param(edit_payload(lambda payload: rename_keys(payload["trainer"]["generator"])), id="wrong-keys"),
        pytest.param(
            edit_payload(lambda payload: shrink_first_tensor(payload["trainer"]["discriminator"])), id="wrong-shape"
        ),
        pytest.param(edit_payload(lambda payload: payload.update(history="lost")), id="history-not-a-list"),
        pytest.param(edit_payload(lambda payload: payload.update(format="other")), id="foreign-format"),
    ],
)
def test_damaged_gan_resume_checkpoint_is_reported_and_training_restarts(
    gan_copy: Path, damage: Callable[[Path], None]
) -> None:
    checkpoint = gan_copy / "checkpoints" / CHECKPOINT_FILE
    clean_metrics = json.loads((gan_copy / "train_gan.json").read_text())
    damage(checkpoint)
    outcome = run_command(gan_arguments(gan_copy))
    assert outcome.exit_code == 0 and outcome.escaped is None, outcome.output
    assert "".join(f"{checkpoint}:".split()) in outcome.output and "trainingfromscratch" in outcome.output
    # From scratch after setting the checkpoint aside is the same run as one that never had it.
    assert json.loads((gan_copy / "train_gan.json").read_text()) == clean_metrics
    assert torch.load(checkpoint, weights_only=True)["history"]  # replaced by a good one
    assert leftovers(gan_copy) == []


def generate_arguments(root: Path) -> list[str]:
    return [
        "generate",
        *("--generator", str(root / "gan"), "--editor", str(root / "editor"), "--reference", str(root / "aligned")),
        *("--out", str(root / "generated"), "--diagnostics", str(root / "generate.json")),
        *("--grids", str(root / "grids"), "--params", str(root / "params.yaml")),
    ]


@pytest.mark.parametrize(
    "damage",
    [
        *FILE_DAMAGE,
        pytest.param(edit_payload(lambda payload: rename_keys(payload["state_dicts"][0])), id="wrong-keys"),
        pytest.param(edit_payload(lambda payload: shrink_first_tensor(payload["state_dicts"][0])), id="wrong-shape"),
        pytest.param(edit_payload(lambda payload: payload.update(mode="diffusion")), id="unknown-mode"),
        pytest.param(edit_payload(lambda payload: payload.pop("architecture")), id="architecture-missing"),
    ],
)
def test_damaged_exported_generator_is_refused_by_name(gan_copy: Path, damage: Callable[[Path], None]) -> None:
    (gan_copy / "params.yaml").write_text(yaml.safe_dump({"generate": {"target": "counts", "counts": {"sad": 2}}}))
    outputs = (gan_copy / "generated", gan_copy / "generate.json", gan_copy / "grids")
    assert_damage_refused(generate_arguments(gan_copy), gan_copy / "gan" / GENERATOR_FILE, damage, outputs)


def evaluate_arguments(root: Path) -> list[str]:
    return [
        "evaluate",
        *("--model", str(root / "model"), "--input", str(root / "aligned")),
        *("--diagnostics", str(root / "evaluate.json"), "--metrics", str(root / "headline.json")),
        *("--confusion", str(root / "confusion"), "--gradcam", str(root / "gradcam.png")),
        *("--params", str(root / "params.yaml")),
    ]


@pytest.mark.parametrize(
    "damage",
    [
        *FILE_DAMAGE,
        pytest.param(edit_payload(lambda payload: rename_keys(payload["state_dict"])), id="wrong-keys"),
        pytest.param(edit_payload(lambda payload: payload.update(image_shape=[16, 16])), id="image-shape-short"),
        pytest.param(edit_payload(lambda payload: payload.pop("format")), id="foreign-format"),
        # What a diverged training saved before train stopped on it: evaluate would report chance as a result.
        pytest.param(edit_payload(lambda payload: payload["state_dict"]["head.weight"].fill_(math.nan)), id="nan"),
    ],
)
def test_damaged_classifier_is_refused_by_evaluate(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    write_dataset(make_dataset(per_class=3, size=16), tmp_path / "aligned")
    config = ClassifierConfig(arch="linear")
    model = build_classifier(config, len(CANONICAL_CLASSES), 1, 16)
    save_classifier(tmp_path / "model" / MODEL_FILE, model, config, CANONICAL_CLASSES, (16, 16, 1))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"common": {"image_size": 16}}))
    outputs = (tmp_path / "evaluate.json", tmp_path / "headline.json", tmp_path / "confusion", tmp_path / "gradcam.png")
    assert_damage_refused(evaluate_arguments(tmp_path), tmp_path / "model" / MODEL_FILE, damage, outputs)


def test_damaged_cached_teacher_is_reported_and_trained_again(tmp_path: Path) -> None:
    write_calibrate_inputs(tmp_path)
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    clean_metrics = json.loads((tmp_path / "calibrate.json").read_text())
    [teacher] = (tmp_path / "teachers").glob("teacher-*/teacher.pt")
    foreign_pickle(teacher)
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    assert "".join(str(teacher).split()) in output and "trainingitagain" in output
    assert json.loads((tmp_path / "calibrate.json").read_text()) == clean_metrics


def train_arguments(root: Path) -> list[str]:
    return [
        "train",
        *("--train", str(root / "merged"), "--val", str(root / "aligned"), "--out", str(root / "model")),
        *("--diagnostics", str(root / "train.json"), "--metrics", str(root / "headline.json")),
        *("--live", str(root / "live"), "--params", str(root / "params.yaml")),
    ]


def write_train_inputs(root: Path, **train: Any) -> None:
    aligned = make_dataset(per_class=3, size=16)
    write_dataset(aligned, root / "aligned")
    write_dataset(aligned.split("train"), root / "merged")
    params = {"common": {"image_size": 16}, "train": {"arch": "linear", "epochs": 2, "batch_size": 8} | train}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_pretrained_weights_that_are_no_weights_are_refused_by_name(tmp_path: Path) -> None:
    weights = tmp_path / "models" / "pretrained" / "resnet18.pth"  # inside the folder dvc.yaml tracks
    weights.parent.mkdir(parents=True)
    foreign_pickle(weights)
    write_train_inputs(tmp_path, arch="resnet18", weights_path=str(weights), epochs=1)
    assert_refused(run_command(train_arguments(tmp_path)), str(weights), "tensors and plain data")
    assert not (tmp_path / "model").exists() and leftovers(tmp_path) == []


def test_a_diverging_training_is_stopped_and_the_earlier_model_kept(tmp_path: Path) -> None:
    """train.lr 1e30 drove every weight to NaN and train exited 0; evaluate then reported chance accuracy."""
    write_train_inputs(tmp_path)
    assert run_command(train_arguments(tmp_path)).exit_code == 0
    outputs = (tmp_path / "model", tmp_path / "train.json", tmp_path / "headline.json")
    earlier = snapshot(*outputs)
    write_train_inputs(tmp_path, lr=1.0e30)
    assert_refused(run_command(train_arguments(tmp_path)), "train.lr 1e+30", "in epoch 1", "lower train.lr")
    assert snapshot(*outputs) == earlier
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- output paths


def existing_file(path: Path) -> None:
    path.write_bytes(b"someone's file")


def existing_folder(path: Path) -> None:
    path.mkdir()
    (path / "kept.txt").write_bytes(b"someone's folder")


OUTPUT_PATH_CASES = [
    # Was a NotADirectoryError traceback, with a `.afile.<random>.tmp/` of the whole dataset left behind.
    pytest.param(existing_file, {"out": "afile"}, ["--out", "afile: exists and is a file"], id="out-is-a-file"),
    # Was an IsADirectoryError after --out had been replaced.
    pytest.param(
        existing_folder, {"diagnostics": "afile"}, ["--diagnostics", "afile: is a folder"], id="diagnostics-is-a-folder"
    ),
    pytest.param(existing_file, {"out": "afile/offline"}, ["afile is a file, so nothing"], id="out-parent-is-a-file"),
    pytest.param(
        existing_file, {"diagnostics": "afile/a/b.json"}, ["afile is a file, so nothing"], id="diagnostics-under-a-file"
    ),
    pytest.param(
        existing_file,
        {"out": "same", "diagnostics": "same"},
        ["--out and --diagnostics both name"],
        id="one-path-twice",
    ),
]


@pytest.mark.parametrize(("make", "given", "culprits"), OUTPUT_PATH_CASES)
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(
    augmented: Path, make: Callable[[Path], None], given: dict[str, str], culprits: list[str]
) -> None:
    make(augmented / "afile")
    paths = {name: augmented / path for name, path in given.items()}
    before = snapshot(augmented / "offline", augmented / "augment.json", augmented / "afile")
    (augmented / "params.yaml").write_text("augment_offline: {variants_per_image: -1}\n")  # never read
    outcome = run_command(augment_arguments(augmented, **paths))
    assert_refused(outcome, *culprits)
    assert "variants_per_image" not in outcome.output  # refused before the stage's work began
    assert snapshot(augmented / "offline", augmented / "augment.json", augmented / "afile") == before
    assert leftovers(augmented) == [] and not list(augmented.rglob(".*.lock"))


def test_fetch_refuses_a_near_duplicates_folder_before_writing_its_dataset(tmp_path: Path) -> None:
    """The issue's case: an IsADirectoryError came after --out was replaced, leaving the outputs inconsistent."""
    for path in (tmp_path / "fetched", tmp_path / "near"):
        existing_folder(path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fetch": {"source": "demo"}}))
    before = snapshot(tmp_path)
    outputs = ["--out", str(tmp_path / "fetched"), "--diagnostics", str(tmp_path / "fetch.json")]
    outcome = run_command(["fetch", *outputs, "--near-duplicates", str(tmp_path / "near")])
    assert_refused(outcome, f"--near-duplicates {tmp_path / 'near'}: is a folder")
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a chmod 555 folder all the same")
def test_a_read_only_output_folder_is_refused_before_any_work(augmented: Path) -> None:
    (augmented / "shelf").mkdir(mode=0o555)
    outcome = run_command(augment_arguments(augmented, out=augmented / "shelf" / "offline"))
    assert_refused(outcome, "--out", f"{augmented / 'shelf'} is not writable")


def refuse_under(monkeypatch: pytest.MonkeyPatch, name: str, root: Path, error: int) -> None:
    """Make os.<name> fail with `error` on paths under `root`: a filesystem turned read-only, or full, mid-run."""
    real = getattr(os, name)

    def refusing(path: Any, *arguments: Any, **options: Any) -> Any:
        if Path(os.fsdecode(path)).is_relative_to(root):
            raise OSError(error, os.strerror(error), os.fsdecode(path))
        return real(path, *arguments, **options)

    monkeypatch.setattr(os, name, refusing)


def test_a_folder_that_turns_read_only_is_one_line_naming_the_output(
    augmented: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(augmented / "offline", augmented / "augment.json")
    refuse_under(monkeypatch, "mkdir", augmented, errno.EROFS)  # where --out stages its new folder
    outcome = run_command(augment_arguments(augmented))
    assert_refused(outcome, f"{augmented / 'offline'}: cannot be written: Read-only file system")
    assert snapshot(augmented / "offline", augmented / "augment.json") == before
    assert leftovers(augmented) == []


def test_a_disk_full_at_the_last_output_replaces_none_of_them(augmented: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset is staged complete before the diagnostics' write fails: neither may land (fersynth.runtime.io)."""
    before = snapshot(augmented / "offline", augmented / "augment.json")
    (augmented / "params.yaml").write_text(yaml.safe_dump({"augment_offline": {"variants_per_image": 2}}))  # new bytes
    real_fdopen = os.fdopen

    def fdopen(descriptor: int, *arguments: Any, **options: Any) -> Any:
        stream = real_fdopen(descriptor, *arguments, **options)
        if Path(os.readlink(f"/proc/self/fd/{descriptor}")).name.startswith(".augment.json."):
            stream.write = full_disk
        return stream

    def full_disk(data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", fdopen)
    outcome = run_command(augment_arguments(augmented))
    assert_refused(outcome, f"{augmented / 'augment.json'}: cannot be written: No space left on device")
    assert snapshot(augmented / "offline", augmented / "augment.json") == before
    assert leftovers(augmented) == []


# ---------------------------------------------------------------- concurrent runs

# What a live augment-offline run holds: the lock of its --out, and the folder it is staging.
LIVE_RUN = (
    "import sys, time; from pathlib import Path; from fersynth.runtime.io import lock_outputs\n"
    "out = Path(sys.argv[1])\n"
    "with lock_outputs([out]):\n"
    "    (out.parent / f'.{out.name}.l1ve0000.tmp').mkdir()\n"
    "    print('writing', flush=True); time.sleep(120)\n"
)


def test_a_second_run_on_the_same_outputs_is_refused_and_clears_nothing_of_the_first(augmented: Path) -> None:
    """Two runs started together: each cleared the other's staging, and one crashed on FileNotFoundError."""
    first = subprocess.Popen([sys.executable, "-c", LIVE_RUN, str(augmented / "offline")], stdout=subprocess.PIPE)
    try:
        assert first.stdout is not None and first.stdout.readline() == b"writing\n"
        before = snapshot(augmented / "offline", augmented / "augment.json")
        outcome = run_command(augment_arguments(augmented))
        assert_refused(outcome, f"{augmented / 'offline'}: another run (process {first.pid}) is writing it")
        assert (augmented / ".offline.l1ve0000.tmp").is_dir()  # the first run's staging is its own
        assert snapshot(augmented / "offline", augmented / "augment.json") == before
    finally:
        first.kill()
        first.wait()
    # Killed, it leaves its lock file and staging; neither stops the next run, which clears the staging.
    assert (augmented / ".offline.lock").is_file()
    outcome = run_command(augment_arguments(augmented))
    assert outcome.exit_code == 0, outcome.output
    assert leftovers(augmented) == [] and not list(augmented.rglob(".*.lock"))


# ---------------------------------------------------------------- interrupted runs


def test_stale_temporary_outputs_of_the_stage_are_removed_and_no_others(augmented: Path) -> None:
    """A run killed mid-write leaves `.<output>.<random>.tmp`; the next run of that stage clears its own."""
    stale_dir = augmented / ".offline.k1ll3d00.tmp"
    (stale_dir / "images.npy").parent.mkdir()
    (stale_dir / "images.npy").write_bytes(b"half a write")
    stale_file = augmented / ".augment.json.x7_q2m9a.tmp"
    stale_file.write_text('{"half"')
    foreign = [augmented / ".offline.json.k1ll3d00.tmp", augmented / ".other.k1ll3d00.tmp", augmented / ".offline.tmp"]
    for path in foreign:
        path.write_text("not this stage's")
    outcome = run_command(augment_arguments(augmented))
    assert outcome.exit_code == 0, outcome.output
    assert not stale_dir.exists() and not stale_file.exists()
    assert all(path.is_file() for path in foreign)
    assert "".join(f"{stale_dir}: removing a temporary output".split()) in outcome.output


def test_stale_temporary_outputs_are_removed_on_start_even_when_the_run_then_fails(augmented: Path) -> None:
    stale = augmented / ".offline.k1ll3d00.tmp"
    stale.mkdir()
    (augmented / "params.yaml").write_text("augment_offline: {variants_per_image: -1}\n")
    assert_refused(run_command(augment_arguments(augmented)), "augment_offline.variants_per_image")
    assert not stale.exists()


def test_stale_staging_in_the_teacher_cache_is_removed(tmp_path: Path) -> None:
    """The cache folder is calibrate's own: a killed run's half-written entry goes even when its key is never reused."""
    write_calibrate_inputs(tmp_path)
    stale = tmp_path / "teachers" / ".teacher-0123456789abcdef.k1ll3d00.tmp"
    stale.mkdir(parents=True)
    (stale / "teacher.pt").write_bytes(b"half a write")
    code, output = run_calibrate(tmp_path)
    assert code == 0, output
    assert not stale.exists() and leftovers(tmp_path) == []


def curve_files(live: Path) -> dict[str, list[str]]:
    return {path.name: path.read_text().splitlines() for path in sorted((live / "plots" / "metrics").glob("*.tsv"))}


def test_stale_curves_are_cleared_even_when_dvclive_is_told_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_train_inputs(tmp_path)
    rows = tmp_path / "live" / "plots" / "metrics"
    rows.mkdir(parents=True)
    (rows / "train_loss.tsv").write_text("step\ttrain_loss\n" + "".join(f"{step}\t9.0\n" for step in range(7)))
    (rows / "old_metric.tsv").write_text("step\told_metric\n0\t1.0\n")
    (tmp_path / "live" / "metrics.json").write_text('{"step": 6')  # cut short by the kill
    monkeypatch.setenv("DVCLIVE_RESUME", "true")
    outcome = run_command(train_arguments(tmp_path))
    assert outcome.exit_code == 0, outcome.output
    curves = curve_files(tmp_path / "live")
    assert "old_metric.tsv" not in curves
    assert [line.split("\t")[0] for line in curves["train_loss.tsv"]] == ["step", "0", "1"]


def test_gan_curves_end_at_the_resumed_checkpoint(gan_copy: Path) -> None:
    """A run killed after logging epochs its checkpoint does not hold: the rerun's curves are the clean run's."""
    clean = curve_files(gan_copy / "live")
    for path in (gan_copy / "live" / "plots" / "metrics").glob("*.tsv"):
        path.write_text(path.read_text() + "2\t0.5\n3\t0.25\n")
    outcome = run_command(gan_arguments(gan_copy))
    assert outcome.exit_code == 0, outcome.output
    assert "resuming" in outcome.output
    assert curve_files(gan_copy / "live") == clean


def test_outputs_get_the_permissions_the_umask_gives(augmented: Path) -> None:
    umask = current_umask()
    assert (augmented / "augment.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (augmented / "offline").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (augmented / "offline" / IMAGES_FILE).stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_writes_follow_another_umask(tmp_path: Path) -> None:
    """In a fresh process, since the umask is read once at import."""
    script = (
        "import os, sys; from pathlib import Path; os.umask(0o027)\n"
        "from fersynth.runtime.io import atomic_directory, atomic_write_bytes\n"
        "root = Path(sys.argv[1]); atomic_write_bytes(root / 'file', b'x')\n"
        "with atomic_directory(root / 'folder') as staging: (staging / 'inner').write_bytes(b'y')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    assert (tmp_path / "file").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "folder" / "inner").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    ("option", "environment"),
    [pytest.param(["--debug"], {}, id="option"), pytest.param([], {"FERSYNTH_DEBUG": "1"}, id="environment")],
)
def test_debug_shows_the_traceback_of_an_input_error(
    augmented: Path, monkeypatch: pytest.MonkeyPatch, option: list[str], environment: dict[str, str]
) -> None:
    missing = augmented / "missing.yaml"
    assert_refused(run_command(augment_arguments(augmented, missing)), str(missing))  # no traceback by default
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    outcome = run_command([*option, *augment_arguments(augmented, missing)])
    assert isinstance(outcome.escaped, ParamsError) and str(missing) in str(outcome.escaped)
    assert outcome.exit_code == 1
