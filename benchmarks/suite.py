"""fersynth's benchmark suite: every throughput figure in one command, one Markdown table.

    .venv/bin/python benchmarks/suite.py [--quick] [--only NAME ...] [--out BENCHMARKS.md] [--threads N]

Each benchmark calls the library code a stage runs (configs are their pydantic defaults plus the
overrides named in the row) and gives one or more rows: the median of its repeats, their min–max,
what was run, and the command that reproduces that row alone. The table goes to `--out` under a
header naming the machine and each run, and is printed. `--quick` shrinks every size to a smoke test
and skips the fresh-clone `dvc repro` (about 4 minutes). `--only` runs the named benchmarks (that one
included) and, where `--out` exists, replaces just their rows in it.

Training rows time `fit_classifier` beside the model-only limit: the same model doing forward,
backward and optimizer step on a batch already in memory, in the same process, alternating with the
fit's epochs, so both see the same machine load. A ratio below 0.90 means the data path (batching,
augmentation, conversion, validation, per-epoch bookkeeping) costs more than a tenth of training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import numpy as np
import torch
import torch.nn.functional as F

from fersynth.config import (
    CANONICAL_CLASSES,
    AugmentOfflineConfig,
    ClassifierConfig,
    EvaluateConfig,
    FaceAlignConfig,
    FetchConfig,
    GenerateConfig,
    TrainGanConfig,
)
from fersynth.datasets.format import Dataset
from fersynth.datasets.sources import load_source
from fersynth.export import export_onnx
from fersynth.faces import align_dataset
from fersynth.gan.generator import GanGenerator
from fersynth.gan.training import UnitTrainer, architecture, training_units
from fersynth.media import read_inputs
from fersynth.models import Classifier, build_classifier, count_parameters, parameter_groups
from fersynth.offline_augmentation import augment_offline
from fersynth.prediction import (
    FaceClassifier,
    ModelCard,
    OnnxFaceClassifier,
    TorchFaceClassifier,
    classify_faces,
    find_faces,
    load_face_classifier,
    sidecar_record,
)
from fersynth.runtime.device import default_device, training_precision
from fersynth.stage_metrics import run_environment

# _to_input: the bare model's batch must be laid out as fit_classifier's are (see BareModel)
from fersynth.training import MODEL_FILE, _to_input, fit_classifier, load_classifier, predict_proba, save_classifier

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FERSYNTH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
WILD_PHOTOS = "facial_expressions_dev.zip"  # 155 in-the-wild photos, legend layout (see ../shared/DESIGN.md)
SUITE_COMMAND = ".venv/bin/python benchmarks/suite.py"
RATIO_FLOOR = 0.90
FER2013_TRAIN_IMAGES = 28_709
IMAGE_SIZE = 48  # common.image_size's default
# A token validation split: fit_classifier's per-epoch work (a val pass, copying the best weights, the
# scheduler) stays inside the timed epoch without the val pass, an inference cost timed apart, dominating it.
VAL_IMAGES = 16


@dataclass(frozen=True)
class Scale:
    """How much work each benchmark does: the full run's sizes or the smoke test's."""

    quick: bool
    repeats: int  # timed repeats, after an untimed warm-up
    train_epochs: int  # timed epochs, each paired with a model-only round: load swings, so more than repeats
    photos: int | None  # in-the-wild photos to align; None: all of them
    augment_images: int
    train_batch_size: int
    train_batches: int | None  # batches per epoch; None: each architecture's own count
    gan_steps: int  # per timed repeat
    generate_per_class: int
    inference_images: int | None  # None: each architecture's own count

    def batches(self, case: ModelCase) -> int:
        return self.train_batches or case.train_batches

    def inference_count(self, case: ModelCase) -> int:
        return self.inference_images or case.inference_images


FULL = Scale(False, 3, 5, None, 2000, 64, None, 25, 256, None)
QUICK = Scale(True, 1, 1, 4, 32, 8, 2, 2, 8, 16)


@dataclass(frozen=True)
class Row:
    name: str
    figure: float
    unit: str
    low: float
    high: float
    samples: str  # what the spread is over, e.g. "3 epochs"
    details: str
    benchmark: str  # the --only name that reruns it

    @classmethod
    def skipped(cls, name: str, benchmark: str, reason: str) -> Row:
        return cls(name, math.nan, "", math.nan, math.nan, "", f"skipped: {reason}", benchmark)

    def markdown(self) -> str:
        command = f"`{SUITE_COMMAND} --only {self.benchmark}`"
        if math.isnan(self.figure):
            return f"| {self.name} | – | – | {self.details} | {command} |"
        spread = f"{_shown(self.low)}–{_shown(self.high)} ({self.samples})"
        return f"| {self.name} | {_shown(self.figure)} {self.unit} | {spread} | {self.details} | {command} |"


def _shown(value: float) -> str:
    """Three significant digits, without an exponent for large figures."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def summary_row(name: str, benchmark: str, values: Sequence[float], unit: str, sample: str, details: str) -> Row:
    """The median of `values` with their min–max, over `len(values)` of `sample` (a noun: "repeat", "epoch")."""
    return Row(name, median(values), unit, min(values), max(values), counted(values, sample), details, benchmark)


def rate_row(name: str, benchmark: str, rates: Sequence[float], sample: str, details: str) -> Row:
    return summary_row(name, benchmark, rates, "images/s", sample, details)


def counted(samples: Sequence[float], noun: str) -> str:
    return f"{len(samples)} {noun}{'' if len(samples) == 1 else 's'}"


def seconds_of(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def random_dataset(count: int, size: int = IMAGE_SIZE, channels: int = 1, seed: int = 0) -> Dataset:
    """Uniform noise images of the canonical classes, all in the train split: throughput ignores the content."""
    rng = np.random.default_rng(seed)
    return Dataset(
        images=rng.integers(0, 256, size=(count, size, size, channels), dtype=np.uint8),
        labels=rng.integers(0, len(CANONICAL_CLASSES), size=count).astype(np.int64),
        splits=np.full(count, "train", dtype=object),
        classes=CANONICAL_CLASSES,
        ids=np.array([f"r{seed}-{index}" for index in range(count)], dtype=object),
    )


# ---------------------------------------------------------------- decode + face-align (the fetch loader, MTCNN)


def face_rows(scale: Scale) -> list[Row]:
    photos_file = SHARED_DATA / WILD_PHOTOS
    if not photos_file.is_file():
        reason = f"{photos_file} not found (the shared data lives beside the checkout)"
        return [Row.skipped("decode + face-align (mtcnn)", "faces", reason)]
    max_side = FetchConfig(source="legend", path=str(photos_file)).max_side

    def decode() -> Dataset:
        return load_source("legend", photos_file, CANONICAL_CLASSES, max_side=max_side)[0]

    photos = decode()  # also the decode's warm-up
    decoded_count = len(photos)
    if scale.photos is not None:
        photos = photos.subset(np.arange(scale.photos))
    config = FaceAlignConfig(detector="mtcnn")
    align_dataset(photos.subset(np.arange(min(len(photos), config.batch_size))), config, IMAGE_SIZE, 1)  # loads MTCNN
    decode_seconds = [seconds_of(decode) for _ in range(scale.repeats)]
    align_seconds, aligned = [], 0
    for _ in range(scale.repeats):
        started = time.perf_counter()
        result = align_dataset(photos, config, IMAGE_SIZE, 1)
        align_seconds.append(time.perf_counter() - started)
        aligned = result.counts()["aligned"]
    decode_rates = [decoded_count / seconds for seconds in decode_seconds]
    align_rates = [len(photos) / seconds for seconds in align_seconds]
    # One image through both steps costs the sum of their per-image times.
    chain_rates = [1 / (1 / decode + 1 / align) for decode, align in zip(decode_rates, align_rates, strict=True)]
    source = f"{WILD_PHOTOS} (legend), max_side {max_side}"
    return [
        rate_row("decode (fetch loader)", "faces", decode_rates, "repeat", f"{decoded_count} photos of {source}"),
        rate_row(
            "face-align (mtcnn)",
            "faces",
            align_rates,
            "repeat",
            f"{aligned}/{len(photos)} aligned on a face; detection_size {config.detection_size}, "
            f"batch {config.batch_size}, to {IMAGE_SIZE}×{IMAGE_SIZE} gray",
        ),
        rate_row("decode + face-align", "faces", chain_rates, "repeat", "both steps per image, summed"),
    ]


# ---------------------------------------------------------------- augment-offline


def augment_rows(scale: Scale) -> list[Row]:
    images = random_dataset(scale.augment_images)
    config = AugmentOfflineConfig(variants_per_image=1)
    augment_offline(images.subset(np.arange(8)), config, seed=0)  # imports albumentations
    seconds = [seconds_of(lambda: augment_offline(images, config, seed=0)) for _ in range(scale.repeats)]
    rates = [len(images) * config.variants_per_image / value for value in seconds]
    details = f"{len(images)} images {IMAGE_SIZE}×{IMAGE_SIZE} gray, variants_per_image 1, other settings default"
    return [rate_row("augment-offline", "augment", rates, "repeat", details)]


# ---------------------------------------------------------------- classifiers: training beside the model-only limit


@dataclass(frozen=True)
class ModelCase:
    name: str
    config: ClassifierConfig
    size: int
    train_batches: int  # per epoch: enough that an epoch lasts seconds, at least 6
    inference_images: int

    def build(self) -> Classifier:
        return build_classifier(self.config, len(CANONICAL_CLASSES), 1, self.size).to(default_device())


MODEL_CASES = {
    case.name: case
    for case in (
        ModelCase("linear", ClassifierConfig(arch="linear"), IMAGE_SIZE, 60, 8192),
        ModelCase("vgg16", ClassifierConfig(arch="vgg", width=16), IMAGE_SIZE, 20, 4096),
        ModelCase("resnet18", ClassifierConfig(arch="resnet18"), IMAGE_SIZE, 8, 1024),
        ModelCase("resemotenet48", ClassifierConfig(arch="resemotenet"), IMAGE_SIZE, 6, 512),
        # ResEmoteNet's reference input size
        ModelCase("resemotenet64", ClassifierConfig(arch="resemotenet"), 64, 6, 512),
    )
}
# The demo's classifier (params.yaml's train section) and the heaviest one.
INFERENCE_CASES = ("vgg16", "resemotenet64")


class BareModel:
    """The model-only limit: forward, backward and AdamW step (fit_classifier's optimizer) on a resident batch.

    `compiled` runs the model through torch.compile (inductor); the case's `channels_last` and `cpu_bf16`
    lay it out and autocast it as fit_classifier does.
    """

    def __init__(self, case: ModelCase, batch_size: int, compiled: bool = False) -> None:
        self.model = case.build().train()
        config = case.config
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.precision = training_precision(default_device(), config.cpu_bf16)
        groups = parameter_groups(self.model, config.lr)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        device = default_device()
        # Converted as fit_classifier converts its batches: permuted from (N, H, W, C), so channels-last in
        # memory, which the CPU's convolutions run up to a third faster than a plain NCHW tensor of torch.rand.
        self.inputs = _to_input(random_dataset(batch_size, case.size).images, device)
        if config.channels_last:
            self.inputs = self.inputs.contiguous(memory_format=torch.channels_last)
        self.targets = torch.randint(0, len(CANONICAL_CLASSES), (batch_size,), device=device)

    def seconds(self, steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            with self.precision.autocast():
                loss = F.cross_entropy(self.forward(self.inputs), self.targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        loss.item()  # waits for a GPU to finish
        return time.perf_counter() - started


class AlternatingClock:
    """A dvclive stand-in: fit_classifier calls next_step() once per finished epoch.

    Each call ends one epoch's clock and, while the fit waits, runs the bare model for as many steps as an
    epoch has, timed in two halves: every timed epoch then sits between the half round before it and the
    half after it (bare, fit, bare), so both see the same machine load and a load that drifts meanwhile
    cancels. The fit's clock restarts when the call returns: an epoch's time is everything fit_classifier
    does between two calls (training, validation, copying the best weights, the scheduler). The first
    epoch and a first bare step are warm-up, untimed.
    """

    def __init__(self, bare: BareModel, steps: int) -> None:
        self.bare, self.steps = bare, steps
        self.fit_seconds: list[float] = []
        self._halves: list[tuple[float, float]] = []  # (first, second) half round after each epoch
        self._epoch_started = time.perf_counter()

    @property
    def bare_seconds(self) -> list[float]:
        """Per timed epoch, the bare model's time for an epoch's steps: the half rounds either side of it."""
        return [before[1] + after[0] for before, after in itertools.pairwise(self._halves)]

    def log_metric(self, name: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        ended = time.perf_counter()
        if self._halves:
            self.fit_seconds.append(ended - self._epoch_started)
        else:
            self.bare.seconds(1)
        first = self.steps // 2
        self._halves.append((self.bare.seconds(first), self.bare.seconds(self.steps - first)))
        self._epoch_started = time.perf_counter()


def train_rows(case: ModelCase, scale: Scale) -> list[Row]:
    batch_size, batches = scale.train_batch_size, scale.batches(case)
    train = random_dataset(batches * batch_size, case.size, seed=0)
    val = random_dataset(VAL_IMAGES, case.size, seed=1)
    clock = AlternatingClock(BareModel(case, batch_size), steps=batches)
    config = case.config.model_copy(update={"epochs": scale.train_epochs + 1, "batch_size": batch_size})
    fit = fit_classifier(train, val, config, seed=0, live=clock)  # type: ignore[arg-type]
    fit_rates = [len(train) / seconds for seconds in clock.fit_seconds]
    bare_rates = [len(train) / seconds for seconds in clock.bare_seconds]
    ratios = [fit / bare for fit, bare in zip(fit_rates, bare_rates, strict=True)]
    ratio = median(ratios)
    flag = f" **below {RATIO_FLOOR:.2f}**" if ratio < RATIO_FLOOR else ""
    details = (
        f"model-only {_shown(median(bare_rates))} images/s ({_shown(min(bare_rates))}–{_shown(max(bare_rates))}); "
        f"ratio {ratio:.2f}{flag} ({min(ratios):.2f}–{max(ratios):.2f}); {batches} batches of {batch_size} an epoch, "
        f"{count_parameters(fit.model) / 1e6:.2f}M parameters, "
        f"{_shown(FER2013_TRAIN_IMAGES / median(fit_rates))} s per FER2013 epoch"
    )
    name = f"train {_case_title(case)} (fit_classifier)"
    return [rate_row(name, f"train-{case.name}", fit_rates, "epoch", details)]


def inference_rows(case: ModelCase, scale: Scale) -> list[Row]:
    model = case.build().eval()
    images = random_dataset(scale.inference_count(case), case.size).images
    batch_size = EvaluateConfig().batch_size
    predict_proba(model, images[:batch_size], batch_size)  # warm-up
    seconds = [seconds_of(lambda: predict_proba(model, images, batch_size)) for _ in range(scale.repeats)]
    details = f"predict_proba (evaluate and calibrate's teachers) over {len(images)} images at batch {batch_size}"
    name = f"inference {_case_title(case)}"
    return [rate_row(name, f"inference-{case.name}", [len(images) / value for value in seconds], "repeat", details)]


# ---------------------------------------------------------------- CPU levers: one training step computed other ways

# The 30-minute preset's classifier size. Each lever is a ClassifierConfig setting, except torch.compile.
LEVER_CASE = ModelCase("vgg32", ClassifierConfig(arch="vgg", width=32), IMAGE_SIZE, 10, 0)
CPU_LEVERS: dict[str, tuple[dict[str, bool], bool]] = {  # name: (config settings, compiled)
    "fp32": ({}, False),
    "channels_last": ({"channels_last": True}, False),
    "cpu_bf16": ({"cpu_bf16": True}, False),
    "channels_last + cpu_bf16": ({"channels_last": True, "cpu_bf16": True}, False),
    "torch.compile": ({}, True),
}


def lever_rows(scale: Scale) -> list[Row]:
    """Model-only training steps of each lever, in rounds that visit every lever in turn (same machine load)."""
    batch_size, steps = scale.train_batch_size, scale.batches(LEVER_CASE)
    models, skipped = {}, []
    for name, (settings, compiled) in CPU_LEVERS.items():
        case = replace(LEVER_CASE, config=LEVER_CASE.config.model_copy(update=settings))
        try:
            models[name] = BareModel(case, batch_size, compiled)
            models[name].seconds(2)  # warm-up; torch.compile compiles here
        except Exception as error:  # a lever this machine cannot run is a row that says why
            skipped.append(Row.skipped(f"lever: {name}", "cpu-levers", f"{type(error).__name__}: {error}"[:200]))
            models.pop(name, None)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(scale.train_epochs):
        for name, model in models.items():
            rates[name].append(steps * batch_size / model.seconds(steps))
    rows = []
    for name, values in rates.items():
        ratios = [value / base for value, base in zip(values, rates["fp32"], strict=True)]
        details = (
            f"ratio to fp32 {median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}); {_case_title(LEVER_CASE)}, "
            f"{steps} steps of {batch_size} a round"
        )
        rows.append(rate_row(f"lever: {name}", "cpu-levers", values, "round", details))
    return rows + skipped


def _case_title(case: ModelCase) -> str:
    width = f" width {case.config.width}" if case.config.arch == "vgg" else ""
    return f"{case.config.arch}{width} {case.size}×{case.size}"


# ---------------------------------------------------------------- GAN


def gan_trainer(images: int) -> UnitTrainer:
    """The conditional GAN's trainer at train_gan's defaults (base_channels 16, latent 100, batch 64)."""
    train = random_dataset(images)
    config = TrainGanConfig()
    return UnitTrainer(architecture(train, config), config, training_units(train, config)[0], seed=0, index=0)


def gan_step_rows(scale: Scale) -> list[Row]:
    config = TrainGanConfig()
    trainer = gan_trainer(config.batch_size * scale.gan_steps)
    batches = trainer.epoch_batches()  # the sampler's real (class-balanced) index batches
    trainer.train_step(torch.from_numpy(batches[0]))  # warm-up

    def steps() -> None:
        for batch in batches:
            trainer.train_step(torch.from_numpy(batch))

    step_seconds = [seconds_of(steps) / len(batches) for _ in range(scale.repeats)]
    details = (
        f"UnitTrainer.train_step (D then G, EMA update), batch {config.batch_size}, base_channels "
        f"{config.base_channels}, latent {config.latent_dim}, {IMAGE_SIZE}×{IMAGE_SIZE} gray; "
        f"{_shown(config.batch_size / median(step_seconds))} real images/s; {len(batches)} steps a repeat"
    )
    return [summary_row("GAN training step", "gan-step", step_seconds, "s/step", "repeat", details)]


def gan_generate_rows(scale: Scale) -> list[Row]:
    trainer = gan_trainer(TrainGanConfig().batch_size)
    generator = GanGenerator("conditional", CANONICAL_CLASSES, [trainer.exported_generator()])
    count = scale.generate_per_class

    def sample_every_class() -> None:
        for index in range(len(CANONICAL_CLASSES)):
            generator.sample(index, count, seed=index)

    sample_every_class()  # warm-up
    seconds = [seconds_of(sample_every_class) for _ in range(scale.repeats)]
    images = count * len(CANONICAL_CLASSES)
    details = (
        f"GanGenerator.sample (the generate stage's GAN backend), {count} a call as generate.batch_size "
        f"{GenerateConfig().batch_size} draws, {images} images a repeat"
    )
    return [rate_row("GAN generation", "gan-generate", [images / value for value in seconds], "repeat", details)]


# ---------------------------------------------------------------- the demo pipeline in a fresh clone


def pipeline_rows(scale: Scale) -> list[Row]:
    """`dvc repro` of the committed demo in a fresh clone, then no-op reruns (benchmarks/bench_pipeline.sh's)."""
    with tempfile.TemporaryDirectory() as work:
        clone = Path(work) / "fersynth"
        subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
        try:
            full, output = _timed_repro(clone)
            noop = [_timed_repro(clone)[0] for _ in range(scale.repeats)]
        except subprocess.CalledProcessError as error:
            # Keep the rows already measured: this one says why it has no figure.
            last_words = (error.stderr or "").strip().splitlines()[-1:]
            reason = f"`dvc repro` exited {error.returncode}: {' '.join(last_words)}"
            return [Row.skipped("demo `dvc repro`, fresh clone", "dvc-repro", reason)]
    commit = _git("rev-parse", "--short", "HEAD")
    details = f"{output.count('Running stage')} stages, params.yaml and code as committed ({commit})"
    return [
        summary_row("demo `dvc repro`, fresh clone", "dvc-repro", [full], "s", "run", details),
        summary_row("no-op `dvc repro`", "dvc-repro", noop, "s", "run", "goal ≤ 2 s"),
    ]


def _timed_repro(clone: Path) -> tuple[float, str]:
    """Seconds of `dvc repro` in `clone` and its output; the stages run the clone's code with this .venv."""
    environment = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # Ahead of the editable install, which points at this working tree and its uncommitted changes.
        "PYTHONPATH": f"{clone / 'src'}{os.pathsep}{clone}",
    }
    started = time.perf_counter()
    done = subprocess.run(["dvc", "repro"], cwd=clone, env=environment, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout + done.stderr


# ---------------------------------------------------------------- the suite


@dataclass(frozen=True)
class Benchmark:
    run: Callable[[Scale], list[Row]]
    slow: bool = False  # left out of --quick unless named in --only


# ---------------------------------------------------------------- predict and the exported classifier

# The strongest recipe's classifier size: what a user would export and run on photos.
RUNTIME_CASE = ModelCase("vgg32", ClassifierConfig(arch="vgg", width=32), IMAGE_SIZE, 10, 0)
RUNTIME_BATCHES = (1, 256)


def _saved_classifier(case: ModelCase, folder: Path) -> Path:
    """The case's (untrained: throughput ignores the weights) model as a checkpoint, as train saves it."""
    path = folder / MODEL_FILE
    save_classifier(path, case.build(), case.config, CANONICAL_CLASSES, (case.size, case.size, 1), FaceAlignConfig())
    return path


def predict_rows(scale: Scale) -> list[Row]:
    """`fersynth predict`'s work per photo: read from the zip, detect every face (MTCNN), align, classify."""
    photos_file = SHARED_DATA / WILD_PHOTOS
    if not photos_file.is_file():
        return [Row.skipped("predict (photos)", "predict", f"{photos_file} not found")]
    with tempfile.TemporaryDirectory() as folder:
        classifier = load_face_classifier(_saved_classifier(RUNTIME_CASE, Path(folder)))

    def predict_all() -> tuple[int, int]:
        photos = faces = 0
        for frame in itertools.islice(read_inputs([photos_file]), scale.photos):
            assert frame.pixels is not None, frame.error
            found = find_faces(frame.pixels, classifier.card, "mtcnn")
            faces += len(classify_faces(classifier, found, 0))
            photos += 1
        return photos, faces

    predict_all()  # warm-up: loads MTCNN
    seconds, counts = [], (0, 0)
    for _ in range(scale.repeats):
        started = time.perf_counter()
        counts = predict_all()
        seconds.append(time.perf_counter() - started)
    photos, faces = counts
    details = (
        f"{photos} photos of {WILD_PHOTOS} ({faces} faces found), every face, detection_size 160, "
        f"{_case_title(RUNTIME_CASE)} on torch"
    )
    return [
        rate_row("predict (photos, end to end)", "predict", [photos / value for value in seconds], "repeat", details)
    ]


def runtime_rows(scale: Scale) -> list[Row]:
    """The classifier alone on aligned faces, PyTorch against onnxruntime, in rounds visiting each in turn."""
    with tempfile.TemporaryDirectory() as folder:
        runtimes = _runtimes(RUNTIME_CASE, Path(folder))
        count = scale.inference_count(RUNTIME_CASE) if scale.quick else 1024
        faces = random_dataset(count, RUNTIME_CASE.size).images
        sizes = {batch: min(count, SINGLE_FACES if batch == 1 else count) for batch in RUNTIME_BATCHES}
        rates: dict[tuple[str, int], list[float]] = {}
        for _ in range(scale.repeats + 1):  # the first round warms up
            for (name, runtime), batch in itertools.product(runtimes.items(), RUNTIME_BATCHES):
                elapsed = _seconds_in_batches(runtime, faces[: sizes[batch]], batch)
                rates.setdefault((name, batch), []).append(sizes[batch] / elapsed)
    title = _case_title(RUNTIME_CASE)
    return [
        rate_row(
            f"classifier {name}, batch {batch}",
            "classifier-runtimes",
            values[1:],
            "repeat",
            f"{title}, uint8 faces to probabilities (FaceClassifier.probabilities); {sizes[batch]} faces a repeat",
        )
        for (name, batch), values in rates.items()
    ]


SINGLE_FACES = 64  # faces a batch-1 repeat classifies one at a time


def _runtimes(case: ModelCase, folder: Path) -> dict[str, FaceClassifier]:
    """The case's model on torch and, exported as `fersynth export` does, on onnxruntime."""
    loaded = load_classifier(_saved_classifier(case, folder))
    export_onnx(loaded, folder / "classifier.onnx")
    card = ModelCard(loaded.classes, loaded.image_shape, FaceAlignConfig())
    (folder / "classifier.json").write_text(json.dumps(sidecar_record(card, {})))
    return {"PyTorch": TorchFaceClassifier(loaded, card), "onnxruntime": OnnxFaceClassifier(folder / "classifier.onnx")}


def _seconds_in_batches(runtime: FaceClassifier, faces: np.ndarray, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(faces), batch):
        runtime.probabilities(faces[start : start + batch])
    return time.perf_counter() - started


def _per_case(rows: Callable[[ModelCase, Scale], list[Row]], case: ModelCase) -> Benchmark:
    return Benchmark(lambda scale: rows(case, scale))


BENCHMARKS: dict[str, Benchmark] = {
    "faces": Benchmark(face_rows),
    "augment": Benchmark(augment_rows),
    **{f"train-{name}": _per_case(train_rows, case) for name, case in MODEL_CASES.items()},
    "cpu-levers": Benchmark(lever_rows),
    "gan-step": Benchmark(gan_step_rows),
    "gan-generate": Benchmark(gan_generate_rows),
    **{f"inference-{name}": _per_case(inference_rows, MODEL_CASES[name]) for name in INFERENCE_CASES},
    "predict": Benchmark(predict_rows),
    "classifier-runtimes": Benchmark(runtime_rows),
    "dvc-repro": Benchmark(pipeline_rows, slow=True),
}


def selected(only: Sequence[str] | None, quick: bool) -> list[str]:
    if only:
        return [name for name in BENCHMARKS if name in only]
    return [name for name, benchmark in BENCHMARKS.items() if not (quick and benchmark.slow)]


def title(quick: bool) -> str:
    return "# Benchmarks (quick run: tiny sizes, a smoke test, not figures to quote)" if quick else "# Benchmarks"


def machine_line() -> str:
    """What every row of one file must share; a run on another machine or torch writes a file of its own."""
    environment = run_environment()
    return (
        f"- machine: {environment['cpu']} ({os.cpu_count()} cores, {environment['cpu_capability']} kernels), "
        f"device {environment['device']}; torch {environment['torch']}, python {environment['python']}"
    )


def run_line(only: Sequence[str] | None, done: int, total: int, threads: int, started: float, load: float) -> str:
    """What ran, when, on which code, and how busy the machine was (`load` at the start): other work shares it."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " with uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else ""
    what = f"rerun of {', '.join(only)}" if only else "run of every benchmark"
    progress = f" ({done} of {total} benchmarks done so far)" if done < total else ""
    thread_source = "set by --threads" if threads else "torch's default"
    return (
        f"- {what}{progress}: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}{dirty}, "
        f"{torch.get_num_threads()} torch threads ({thread_source}), {time.perf_counter() - started:.0f} s; "
        f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )


def _git(*arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()


TABLE_HEAD = (
    "| benchmark | figure (median) | spread (min–max) | what runs | command |",
    "|---|---|---|---|---|",
)
READING = (
    "Rows are medians of repeats after an untimed warm-up. A training row is `fit_classifier` on random "
    f"{IMAGE_SIZE}×{IMAGE_SIZE} (or 64×64) images with a {VAL_IMAGES}-image val split, timed over the epochs after "
    "the first; its model-only limit is the same model stepping on a batch already in memory, timed in the same "
    "process in the half rounds either side of each of the fit's epochs; the ratio (the median over those pairs) "
    f"should stay ≥ {RATIO_FLOOR:.2f}."
)


def report(heading: str, header: Sequence[str], table_lines: Sequence[str]) -> str:
    """The file: title, header, how to read it, and the table in the suite's order."""
    ordered = sorted(table_lines, key=lambda line: list(BENCHMARKS).index(benchmark_of(line)))
    return "\n".join([heading, "", *header, "", READING, "", *TABLE_HEAD, *ordered, ""])


def benchmark_of(table_line: str) -> str:
    """The benchmark a table row came from, read off its command; "" for the table's head."""
    found = re.search(r"--only ([\w-]+)`", table_line)
    return found.group(1) if found else ""


def check_updatable(previous: str, heading: str, machine: str) -> None:
    """Rows of another machine, or a quick run's among a full run's, would make the table lie."""
    lines = previous.splitlines()
    if lines[:1] != [heading] or machine not in lines:
        raise SystemExit(f"{heading!r} on {machine[2:]!r} does not match the --out file's; give another --out")


def updated_report(previous: str, heading: str, run: str, rows: Sequence[Row]) -> str:
    """`previous` with the rows of the benchmarks rerun replaced and the rerun added to its header:
    a row's command (`--only NAME`) must not wipe the rest of the table."""
    lines = previous.splitlines()
    rerun = {row.benchmark for row in rows}
    kept = [line for line in lines if benchmark_of(line) in BENCHMARKS.keys() - rerun]
    header = [line for line in lines if line.startswith("- ")]
    return report(heading, [*header, run], [*kept, *(row.markdown() for row in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test); skips the dvc repro row")
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help=f"some of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    scale = QUICK if args.quick else FULL
    heading, machine = title(args.quick), machine_line()
    previous = args.out.read_text() if args.only and args.out.is_file() else None
    if previous is not None:
        check_updatable(previous, heading, machine)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    names = selected(args.only, args.quick)
    rows: list[Row] = []
    for done, name in enumerate(names, start=1):
        benchmark_started = time.perf_counter()
        rows += BENCHMARKS[name].run(scale)
        print(f"{name}: {time.perf_counter() - benchmark_started:.0f} s", file=sys.stderr, flush=True)
        # Written after every benchmark: a run stopped midway keeps what it finished, and says so.
        run = run_line(args.only, done, len(names), args.threads, started, load_before)
        if previous is not None:
            text = updated_report(previous, heading, run, rows)
        else:
            text = report(heading, [machine, run], [row.markdown() for row in rows])
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
