"""Synthesize faces per class up to a target, through pluggable synthesis backends.

`plan_counts` turns the real class counts and the `generate` params into how many images
each class gets; `split_plan` shares them between the backends that run (one, or several for
`generate.backend: hybrid`); `generate_dataset` asks each backend for its share. `oversample`
multiplies every planned count: calibration rejects some images, and the surplus lets merge
still reach its target (merge reports any class that falls short).

Backends are named in `BACKENDS`; each is built from `BackendInputs` by its factory. The
diffusion backends are imported only when used, so the GAN path never loads diffusers.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fersynth.config import EditConfig, FaceAlignConfig, GenerateConfig, SynthesisBackendName
from fersynth.datasets.format import Dataset, concatenate
from fersynth.editing import SourceFaces, check_source_classes, source_face_margin
from fersynth.editor import EDITOR_FILE, load_editor
from fersynth.errors import DataError, ParamsError
from fersynth.gan.generator import GENERATOR_FILE, load_generator
from fersynth.preview import class_grid, placeholder_png, png_bytes
from fersynth.runtime.io import atomic_directory
from fersynth.runtime.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Samples:
    """What a backend returns for one request: possibly fewer images than asked (dropped ones).

    `origins[i]` is the id of the real training image image i was made from, or "" when it was
    drawn from noise; merge's leakage guard checks every named origin.
    """

    images: np.ndarray  # (n, H, W, C) uint8 at the backend's image_shape
    origins: np.ndarray  # (n,) object

    @classmethod
    def drawn(cls, images: np.ndarray) -> Samples:
        return cls(images, np.full(len(images), "", dtype=object))


class SynthesisBackend(Protocol):
    """Anything that makes labelled faces: from noise (GAN, text-to-image) or from real faces (editing)."""

    source: str  # manifest `source` of the images it makes (one of format.SYNTHETIC_SOURCES)
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]

    def sample(self, class_index: int, count: int, seed: int) -> Samples:
        """Up to `count` images meant to show `classes[class_index]`; deterministic in `seed`.

        Fewer than `count` means the rest were dropped (e.g. no face found); the caller counts them.
        """
        ...


@dataclass(frozen=True)
class BackendInputs:
    """Everything a backend factory may need; each takes what it uses."""

    config: GenerateConfig
    align: FaceAlignConfig  # how generated photos are aligned, exactly like real ones
    generator_dir: Path  # train-gan output
    editor_dir: Path  # train-editor output
    real: Dataset  # aligned real images: editing starts from their train split
    channels: int  # of the real images the generated ones join
    image_size: int


class GanBackend:
    """The trained GAN of the train-gan stage (conditional or one generator per class).

    `truncation` > 0 samples latents from the truncated normal: more typical faces, less variety.
    """

    source = "gan"

    def __init__(self, generator_dir: Path, truncation: float = 0.0) -> None:
        self._generator = load_generator(Path(generator_dir) / GENERATOR_FILE)
        self.classes = self._generator.classes
        self.image_shape = self._generator.image_shape
        self.truncation = truncation

    def sample(self, class_index: int, count: int, seed: int) -> Samples:
        return Samples.drawn(self._generator.sample(class_index, count, seed, self.truncation))


def _gan(inputs: BackendInputs) -> SynthesisBackend:
    backend = GanBackend(inputs.generator_dir, inputs.config.truncation)
    check_reference_shape(backend, inputs.real.images.shape[1:], inputs.generator_dir)
    return backend


class EditorBackend:
    """The expression editor of the train-editor stage: real train faces of `generate.edit.source_classes` moved
    toward each class at an intensity drawn per image from the edit range, then put back onto their source
    (LAB colour transfer and a feathered blend, fersynth.editing). Each image's origin is its source face."""

    source = "editor"

    def __init__(self, editor_dir: Path, real: Dataset, edit: EditConfig, face_margin: float) -> None:
        self._editor = load_editor(Path(editor_dir) / EDITOR_FILE)
        self.classes = self._editor.classes
        self.image_shape = self._editor.image_shape
        self.edit = edit
        height, _, channels = self.image_shape
        self.sources = SourceFaces(real, edit, height, channels, face_margin)

    def sample(self, class_index: int, count: int, seed: int) -> Samples:
        picks = self.sources.pick(class_index, count, seed)
        if not len(picks):
            return Samples.drawn(np.zeros((0, *self.image_shape), dtype=np.uint8))
        # Its own stream: the intensities do not shift which faces `pick` draws.
        intensities = np.random.default_rng([seed, 1]).uniform(
            self.edit.intensity_min, self.edit.intensity_max, len(picks)
        )
        faces, labels = self.sources.pool.images[picks], self.sources.pool.labels[picks]
        edits = self._editor.edit(faces, labels, class_index, intensities.astype(np.float32))
        return Samples(self.sources.onto_sources(edits, picks), self.sources.origins(picks))


def _editor(inputs: BackendInputs) -> SynthesisBackend:
    check_source_classes(inputs.config.edit, inputs.real.classes)
    if not (inputs.editor_dir / EDITOR_FILE).is_file():
        raise ParamsError(
            f"generate.backend editor: {inputs.editor_dir} holds no trained editor ({EDITOR_FILE}); "
            "set train_editor.epochs above 0 (the ganmut-editing preset does)"
        )
    backend = EditorBackend(inputs.editor_dir, inputs.real, inputs.config.edit, source_face_margin(inputs.align))
    check_reference_shape(backend, inputs.real.images.shape[1:], inputs.editor_dir)
    return backend


def _lazy(module: str, factory: str) -> Callable[[BackendInputs], SynthesisBackend]:
    def build(inputs: BackendInputs) -> SynthesisBackend:
        built: SynthesisBackend = getattr(importlib.import_module(module), factory)(inputs)
        return built

    return build


BACKENDS: Mapping[SynthesisBackendName, Callable[[BackendInputs], SynthesisBackend]] = {
    "gan": _gan,
    "sd_text2img": _lazy("fersynth.diffusion.backends", "build_text_to_image"),
    "sd_img2img": _lazy("fersynth.diffusion.backends", "build_expression_edit"),
    "editor": _editor,
}


def build_backends(inputs: BackendInputs) -> dict[SynthesisBackendName, SynthesisBackend]:
    """The backends `generate.backend` names (several for hybrid), built in a fixed order."""
    return {name: BACKENDS[name](inputs) for name in inputs.config.backend_shares()}


def plan_counts(real_train_counts: Mapping[str, int], config: GenerateConfig) -> dict[str, int]:
    """Images to generate per class (already multiplied by `config.oversample`)."""
    if config.target == "balance_to_max":
        largest = max(real_train_counts.values())
        wanted = {name: largest - count for name, count in real_train_counts.items()}
    elif config.target == "per_class":
        wanted = dict.fromkeys(real_train_counts, config.per_class)
    elif config.target == "copy_real":
        wanted = dict(real_train_counts)
    else:
        unknown = sorted(set(config.counts) - set(real_train_counts))
        if unknown:
            raise ParamsError(f"generate.counts: unknown class {unknown[0]!r}; classes are {list(real_train_counts)}")
        wanted = {name: config.counts.get(name, 0) for name in real_train_counts}
    return {name: math.ceil(count * config.oversample) for name, count in wanted.items()}


def split_plan(plan: Mapping[str, int], shares: Mapping[str, float]) -> dict[str, dict[str, int]]:
    """Each backend's count per class: shares of every class's count, rounded by largest remainder.

    The counts of one class over the backends always sum to its planned count.
    """
    split: dict[str, dict[str, int]] = {backend: {} for backend in shares}
    for name, count in plan.items():
        exact = {backend: count * share for backend, share in shares.items()}
        floors = {backend: math.floor(value) for backend, value in exact.items()}
        left = count - sum(floors.values())
        by_remainder = sorted(
            shares, key=lambda backend: (-(exact[backend] - floors[backend]), list(shares).index(backend))
        )
        for backend in by_remainder[:left]:
            floors[backend] += 1
        for backend in shares:
            split[backend][name] = floors[backend]
    return split


def check_reference_shape(backend: SynthesisBackend, reference_shape: tuple[int, ...], source: Path) -> None:
    """Refuse a generator trained at another image size or channel count than the real images it joins."""
    if tuple(backend.image_shape) != tuple(reference_shape):
        made, real = ("×".join(map(str, shape)) for shape in (backend.image_shape, reference_shape))
        raise DataError(
            f"{source}: the generator makes {made} (H×W×C) images but the real images are {real}; "
            "rerun train-gan (or train-editor) after changing common.image_size or common.channels"
        )


@dataclass
class Generated:
    """The generated rows of every backend, and what each was asked for and dropped."""

    dataset: Dataset
    plan: Mapping[str, int]  # class -> images planned over all backends
    produced: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> class -> images kept
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> class -> images dropped

    def metrics(self) -> dict[str, int]:
        flat = {f"planned_{name}": count for name, count in self.plan.items()}
        flat["generated_total"] = len(self.dataset)
        for source, counts in self.produced.items():
            flat[f"generated_{source}"] = sum(counts.values())
            flat[f"dropped_{source}"] = sum(self.dropped[source].values())
            flat.update({f"generated_{source}_{name}": count for name, count in counts.items()})
        return flat


def generate_dataset(
    backends: Mapping[str, SynthesisBackend], plans: Mapping[str, Mapping[str, int]], seed: int, batch_size: int
) -> Generated:
    """Draw `plans[backend][c]` images of every class c from each backend, as one train-split dataset.

    Each backend and class has its own seed stream (seed, class index, batch; the GAN's as before,
    other backends salted by name), so changing one class's count or adding a backend leaves the
    other images unchanged.
    """
    parts, produced, dropped = [], {}, {}
    total_plan: dict[str, int] = {}
    with progress_bar() as bar:
        for name, backend in backends.items():
            plan = plans[name]
            _check_classes(backend, plan)
            task = bar.add_task(f"generating ({name})", total=sum(plan.values()), status="")
            part = _draw(backend, plan, _seed_salt(name), seed, batch_size, lambda done, t=task: bar.advance(t, done))
            parts.append(part)
            produced[backend.source] = part.class_counts()
            dropped[backend.source] = {c: plan.get(c, 0) - produced[backend.source][c] for c in backend.classes}
            for c, count in plan.items():
                total_plan[c] = total_plan.get(c, 0) + count
            _warn_drops(backend.source, dropped[backend.source], plan)
    dataset = _concatenate(parts)
    log.info("generated %d images: %s", len(dataset), ", ".join(f"{n} {c}" for c, n in total_plan.items() if n))
    return Generated(dataset, total_plan, produced, dropped)


def synthesize(
    real: Dataset, config: GenerateConfig, align: FaceAlignConfig, generator_dir: Path, editor_dir: Path, seed: int
) -> Generated:
    """The generate stage's work: plan per class from `real`'s train counts (`config.target`), split the plan among
    `config.backend`'s backends by their shares, and draw it.

    Generated faces join `real`'s images, so they take their size and channels; `generator_dir` and `editor_dir`
    (train-gan's and train-editor's outputs) are read only by a backend that uses them.
    """
    _, image_size, _, channels = real.images.shape
    inputs = BackendInputs(config, align, generator_dir, editor_dir, real, channels, image_size)
    plans = split_plan(plan_counts(real.class_counts(split="train"), config), config.backend_shares())
    return generate_dataset(build_backends(inputs), plans, seed, config.batch_size)


def _seed_salt(backend: str) -> list[int]:
    """The GAN keeps the seed stream it always had, so existing baselines do not move."""
    return [] if backend == "gan" else [int.from_bytes(backend.encode(), "little") % 2**32]


def _check_classes(backend: SynthesisBackend, plan: Mapping[str, int]) -> None:
    missing = [name for name, count in plan.items() if count and name not in backend.classes]
    if missing:
        raise DataError(f"the {backend.source} backend knows classes {list(backend.classes)}, not {missing[0]!r}")


def _draw(
    backend: SynthesisBackend,
    plan: Mapping[str, int],
    salt: list[int],
    seed: int,
    batch_size: int,
    advance: Callable[[int], None],
) -> Dataset:
    images, labels, ids, origins = [], [], [], []
    for name, count in plan.items():
        if not count:
            continue
        class_index = backend.classes.index(name)
        made = 0
        for batch, start in enumerate(range(0, count, batch_size)):
            size = min(batch_size, count - start)
            batch_seed = int(np.random.SeedSequence([seed, *salt, class_index, batch]).generate_state(1)[0])
            samples = backend.sample(class_index, size, batch_seed)
            images.append(samples.images)
            origins.extend(samples.origins)
            made += len(samples.images)
            advance(size)
        labels.extend([class_index] * made)
        ids.extend(f"{backend.source}-{name}-{number:05d}" for number in range(made))
    pixels = np.concatenate(images) if images else np.zeros((0, *backend.image_shape), dtype=np.uint8)
    label_array = np.asarray(labels, dtype=np.int64)
    id_array = np.asarray(ids, dtype=object)
    # A face drawn from noise derives from no real image: its origin is its source, as in every earlier release.
    origin_array = np.asarray([origin or backend.source for origin in origins], dtype=object)
    return Dataset(
        images=pixels,
        labels=label_array,
        splits=np.full(len(labels), "train", dtype=object),
        classes=backend.classes,
        ids=id_array,
        sources=np.full(len(labels), backend.source, dtype=object),
        origins=origin_array.reshape(len(labels)),
        intended=label_array.copy(),
    )


def _warn_drops(source: str, dropped: Mapping[str, int], plan: Mapping[str, int]) -> None:
    """The backend logged why (no face found, no source face to edit); this says how many, per class."""
    for name, count in dropped.items():
        if count:
            log.warning("%s: %d of %d planned %s images were not made", source, count, plan[name], name)


def _concatenate(parts: Sequence[Dataset]) -> Dataset:
    filled = [part for part in parts if len(part)]
    return concatenate(filled) if filled else parts[0]


def write_grids(dataset: Dataset, folder: Path, per_class: int = 10) -> list[Path]:
    """One sample grid per source (one row per class), `<folder>/<source>.png`, for a person to look at.

    The folder is replaced whole, so a source no longer generated leaves no grid. With nothing generated it
    holds a note saying so, since DVC declares it as an output.
    """
    written = []
    with atomic_directory(Path(folder)) as staging:
        if not len(dataset):
            (staging / "nothing_generated.png").write_bytes(placeholder_png("nothing generated (generate.target)"))
        for source in sorted(set(dataset.sources)):
            rows = dataset.subset(dataset.sources == source)
            grid = class_grid(rows.images, rows.labels, rows.classes, per_class)
            (staging / f"{source}.png").write_bytes(png_bytes(grid))
            written.append(Path(folder) / f"{source}.png")
    return written
