"""The dataset directory passed between image stages.

A directory holds `images.npy` (uint8, N×H×W×C, memory-mappable), `manifest.csv`
(one row per image) and `preview.png` (a labelled grid); `soft_labels.npy`
(N×K float32) is present only when calibration stored probability vectors.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fersynth.errors import DataError
from fersynth.io import atomic_directory
from fersynth.preview import save_preview

IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.csv"
PREVIEW_FILE = "preview.png"
SOFT_LABELS_FILE = "soft_labels.npy"
MANIFEST_COLUMNS = ("index", "id", "label", "split", "source", "origin", "intended_label", "confidence")
SPLITS = ("train", "val", "test")
SYNTHETIC_SOURCES = ("gan", "diffusion", "edit")  # gan: GAN samples; diffusion: text-to-image; edit: edited real faces
SOURCES = ("real", "offline", *SYNTHETIC_SOURCES)
NO_LABEL = -1


@dataclass(frozen=True)
class Dataset:
    """Images plus one manifest column per field; labels index into `classes`."""

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    splits: np.ndarray  # (N,) str
    classes: tuple[str, ...]
    ids: np.ndarray  # (N,) str, unique
    sources: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) str, default "real"
    origins: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) str, default = ids
    intended: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) int64, NO_LABEL if none
    confidence: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N,) float32, nan if none
    soft_labels: np.ndarray | None = None  # (N, K) float32

    def __post_init__(self) -> None:
        count = len(self.images)
        defaults = {
            "sources": np.full(count, "real", dtype=object),
            "origins": np.asarray(self.ids, dtype=object),
            "intended": np.full(count, NO_LABEL, dtype=np.int64),
            "confidence": np.full(count, np.nan, dtype=np.float32),
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        for name in ("labels", "splits", "ids", "sources", "origins", "intended", "confidence"):
            if len(getattr(self, name)) != count:
                raise ValueError(f"Dataset.{name} has {len(getattr(self, name))} rows, images has {count}")
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, mask_or_indices: np.ndarray) -> Dataset:
        """Rows selected by a boolean mask or an index array, images copied into memory."""
        rows = np.asarray(mask_or_indices)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return replace(
            self,
            images=np.ascontiguousarray(self.images[rows]),
            labels=self.labels[rows],
            splits=self.splits[rows],
            ids=self.ids[rows],
            sources=self.sources[rows],
            origins=self.origins[rows],
            intended=self.intended[rows],
            confidence=self.confidence[rows],
            soft_labels=None if self.soft_labels is None else self.soft_labels[rows],
        )

    def split(self, name: str) -> Dataset:
        return self.subset(self.splits == name)

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Images per class, of one split or of all rows (labels only: images stay on disk)."""
        labels = self.labels if split is None else self.labels[self.splits == split]
        counts = np.bincount(labels, minlength=len(self.classes))
        return {name: int(counts[i]) for i, name in enumerate(self.classes)}


def concatenate(parts: Sequence[Dataset]) -> Dataset:
    """Stack datasets that share classes and image shape."""
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    for part in parts[1:]:
        if part.classes != first.classes or part.images.shape[1:] != first.images.shape[1:]:
            raise DataError("cannot combine datasets with different classes or image shapes")
    with_soft = [part.soft_labels is not None for part in parts]
    soft = None
    if any(with_soft):
        soft = np.concatenate([_soft_or_one_hot(part) for part in parts])
    return Dataset(
        images=np.concatenate([part.images for part in parts]),
        labels=np.concatenate([part.labels for part in parts]),
        splits=np.concatenate([part.splits for part in parts]),
        classes=first.classes,
        ids=np.concatenate([part.ids for part in parts]),
        sources=np.concatenate([part.sources for part in parts]),
        origins=np.concatenate([part.origins for part in parts]),
        intended=np.concatenate([part.intended for part in parts]),
        confidence=np.concatenate([part.confidence for part in parts]),
        soft_labels=soft,
    )


def _soft_or_one_hot(part: Dataset) -> np.ndarray:
    if part.soft_labels is not None:
        return part.soft_labels.astype(np.float32)
    return np.eye(len(part.classes), dtype=np.float32)[part.labels]


def write_dataset(
    dataset: Dataset, directory: Path, preview_title: str = "", extra_files: Mapping[str, bytes] | None = None
) -> None:
    """Write `dataset` to `directory` atomically (a failed write leaves the old one).

    `extra_files` (name -> content) land in the same directory, e.g. a stage's per-image report.
    """
    with atomic_directory(Path(directory)) as staging:
        for name, content in (extra_files or {}).items():
            (staging / name).write_bytes(content)
        np.save(staging / IMAGES_FILE, np.ascontiguousarray(dataset.images))
        if dataset.soft_labels is not None:
            np.save(staging / SOFT_LABELS_FILE, dataset.soft_labels.astype(np.float32))
        with open(staging / MANIFEST_FILE, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(MANIFEST_COLUMNS)
            for row in range(len(dataset)):
                intended = int(dataset.intended[row])
                confidence = float(dataset.confidence[row])
                writer.writerow(
                    [
                        row,
                        dataset.ids[row],
                        dataset.classes[int(dataset.labels[row])],
                        dataset.splits[row],
                        dataset.sources[row],
                        dataset.origins[row],
                        "" if intended == NO_LABEL else dataset.classes[intended],
                        "" if np.isnan(confidence) else f"{confidence:.6f}",
                    ]
                )
        save_preview(dataset.images, dataset.labels, dataset.classes, staging / PREVIEW_FILE, title=preview_title)


def read_dataset(directory: Path, classes: Sequence[str], mmap: bool = True) -> Dataset:
    """Read a dataset directory; labels outside `classes` are an error naming the row."""
    directory = Path(directory)
    images_path, manifest_path = directory / IMAGES_FILE, directory / MANIFEST_FILE
    for required in (images_path, manifest_path):
        if not required.is_file():
            raise DataError(f"{required}: missing; is {directory} the output of an image stage?")
    try:
        images = np.load(images_path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError) as error:
        raise DataError(f"{images_path}: not a readable .npy array ({error})") from None
    class_index = {name: i for i, name in enumerate(classes)}
    columns: dict[str, list[str]] = {name: [] for name in MANIFEST_COLUMNS}
    with open(manifest_path, newline="") as stream:
        reader = csv.DictReader(stream)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise DataError(f"{manifest_path}: expected columns {','.join(MANIFEST_COLUMNS)}")
        for line_number, row in enumerate(reader, start=2):
            for label_column in ("label", "intended_label"):
                name = row[label_column]
                if name and name not in class_index:
                    raise DataError(
                        f"{manifest_path}:{line_number}: {label_column} {name!r} is not one of {list(classes)}"
                    )
            for name in MANIFEST_COLUMNS:
                columns[name].append(row[name])
    if len(columns["index"]) != len(images):
        raise DataError(f"{manifest_path}: {len(columns['index'])} rows but {images_path} holds {len(images)} images")
    soft_path = directory / SOFT_LABELS_FILE
    return Dataset(
        images=images,
        labels=np.array([class_index[name] for name in columns["label"]], dtype=np.int64),
        splits=np.array(columns["split"], dtype=object),
        classes=tuple(classes),
        ids=np.array(columns["id"], dtype=object),
        sources=np.array(columns["source"], dtype=object),
        origins=np.array(columns["origin"], dtype=object),
        intended=np.array([class_index[n] if n else NO_LABEL for n in columns["intended_label"]], dtype=np.int64),
        confidence=np.array([float(c) if c else np.nan for c in columns["confidence"]], dtype=np.float32),
        soft_labels=np.load(soft_path) if soft_path.is_file() else None,
    )
