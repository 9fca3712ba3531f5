"""The dataset directory passed between image stages.

A directory holds `images.npy` (uint8, N×H×W×C, memory-mappable), `manifest.csv`
(one row per image) and `preview.png` (a labelled grid); `soft_labels.npy`
(N×K float32) is present only when calibration stored probability vectors.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fersynth.errors import DataError
from fersynth.preview import save_preview
from fersynth.runtime.io import atomic_directory, check_free_space

IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.csv"
PREVIEW_FILE = "preview.png"
SOFT_LABELS_FILE = "soft_labels.npy"
MANIFEST_COLUMNS = ("index", "id", "label", "split", "source", "origin", "intended_label", "confidence")
SPLITS = ("train", "val", "test")
# gan: GAN samples; diffusion: text-to-image; edit: real faces edited by img2img; editor: by the trained editor
SYNTHETIC_SOURCES = ("gan", "diffusion", "edit", "editor")
EDITED_SOURCES = ("edit", "editor")  # real faces changed: each must name the real training face it came from
SOURCES = ("real", "offline", *SYNTHETIC_SOURCES)
NO_LABEL = -1
NPY_SIGNATURE = b"\x93NUMPY"


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
    check_free_space(Path(directory).parent, dataset.images.nbytes)
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
    """Read a dataset directory, checked as a whole.

    Anything `write_dataset` would not have written (images of another dtype or rank, a manifest row
    with an unknown label, split or source, a bad index or confidence, a repeated id, soft labels of
    another shape) is a DataError naming the file and, for the manifest, its line: a damaged or
    hand-edited artefact stops the stage that reads it instead of flowing on as wrong data.
    """
    directory = Path(directory)
    images_path, manifest_path = directory / IMAGES_FILE, directory / MANIFEST_FILE
    for required in (images_path, manifest_path):
        if not required.is_file():
            raise DataError(f"{required}: missing; is {directory} the output of an image stage?")
    images = _read_images(images_path, mmap)
    rows = _read_manifest(manifest_path, classes)
    if len(rows) != len(images):
        raise DataError(f"{manifest_path}: {len(rows)} rows but {images_path} holds {len(images)} images")
    column = {name: [row[name] for row in rows] for name in MANIFEST_COLUMNS}
    return Dataset(
        images=images,
        labels=np.array(column["label"], dtype=np.int64),
        splits=np.array(column["split"], dtype=object),
        classes=tuple(classes),
        ids=np.array(column["id"], dtype=object),
        sources=np.array(column["source"], dtype=object),
        origins=np.array(column["origin"], dtype=object),
        intended=np.array(column["intended_label"], dtype=np.int64),
        confidence=np.array(column["confidence"], dtype=np.float32),
        soft_labels=_read_soft_labels(directory / SOFT_LABELS_FILE, len(images), len(classes)),
    )


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """A plain .npy array (never a pickle: allow_pickle stays off), or a DataError naming the file."""
    try:
        with open(path, "rb") as stream:
            if stream.read(len(NPY_SIGNATURE)) != NPY_SIGNATURE:  # numpy would guess "pickled data" for any file
                raise DataError(f"{path}: not a .npy file (no .npy signature at its start)")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # truncated, unreadable, or an array of Python objects
        raise DataError(f"{path}: not a readable .npy array ({error})") from None


def _read_images(path: Path, mmap: bool) -> np.ndarray:
    images = _load_npy(path, mmap)
    if images.dtype != np.uint8 or images.ndim != 4 or 0 in images.shape[1:]:
        raise DataError(f"{path}: expected uint8 images (N, H, W, C), found {images.dtype} {images.shape}")
    return images


def _read_manifest(path: Path, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The manifest's rows, parsed: label and intended_label as class indexes, confidence as float (nan if empty)."""
    text = _utf8_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
        raise DataError(f"{path}: expected columns {','.join(MANIFEST_COLUMNS)}")
    class_index = {name: i for i, name in enumerate(classes)}
    rows: list[dict[str, Any]] = []
    first_line_of_id: dict[str, int] = {}
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            parsed = _parse_row(row, len(rows), class_index, where)
            if parsed["id"] in first_line_of_id:
                raise DataError(f"{where}: id {parsed['id']!r} repeats line {first_line_of_id[parsed['id']]}")
            first_line_of_id[parsed["id"]] = reader.line_num
            rows.append(parsed)
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None
    return rows


def _utf8_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x})") from None


def _parse_row(row: dict[str | None, Any], position: int, class_index: Mapping[str, int], where: str) -> dict[str, Any]:
    """One manifest row as `read_dataset` stores it; `position` is its 0-based place, which `index` must state."""
    if None in row or None in row.values():  # csv.DictReader's marks of surplus and missing fields
        raise DataError(f"{where}: expected {len(MANIFEST_COLUMNS)} fields ({','.join(MANIFEST_COLUMNS)})")
    if row["index"] != str(position):
        raise DataError(f"{where}: index {row['index']!r} should be {position} (rows are numbered 0, 1, ... in order)")
    if not row["id"]:
        raise DataError(f"{where}: empty id")
    for name, allowed in (("split", SPLITS), ("source", SOURCES)):
        if row[name] not in allowed:
            raise DataError(f"{where}: {name} {row[name]!r} is not one of {list(allowed)}")
    return row | {
        "label": _class_of(row, "label", class_index, where),
        "intended_label": _class_of(row, "intended_label", class_index, where) if row["intended_label"] else NO_LABEL,
        "confidence": _confidence(row["confidence"], where),
    }


def _class_of(row: Mapping[str, str], column: str, class_index: Mapping[str, int], where: str) -> int:
    name = row[column]
    if name not in class_index:
        raise DataError(f"{where}: {column} {name!r} is not one of {list(class_index)}")
    return class_index[name]


def _confidence(text: str, where: str) -> float:
    """A probability in [0, 1], or nan for an empty field (no calibration score)."""
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: confidence {text!r} is not a number in [0, 1] (or empty)")
    return value


def _read_soft_labels(path: Path, count: int, class_count: int) -> np.ndarray | None:
    """(N, K) float probability rows when the file exists; each row non-negative with a positive sum."""
    if not path.is_file():
        return None
    soft = _load_npy(path)
    if soft.dtype.kind != "f" or soft.shape != (count, class_count):
        raise DataError(
            f"{path}: expected float ({count}, {class_count}) probabilities, found {soft.dtype} {soft.shape}"
        )
    bad = ~np.isfinite(soft).all(axis=1) | (soft < 0).any(axis=1) | ~(soft.sum(axis=1) > 0)
    if bad.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(bad)[0])} is no probability vector (negative, nan or all 0)")
    return soft.astype(np.float32)
