"""Dataset sources: read a FER dataset from a folder or a .zip into a `Dataset`.

Layouts (the dataset root is found inside the folder/zip, e.g. under a single top folder):
- `fer2013`: the Kaggle layout `train/<class>/*.jpg` and `test/<class>/*.jpg`. In test,
  `PublicTest_*` files become the `val` split and `PrivateTest_*` the `test` split
  (the standard protocol); an optional `val/` folder is also read. Ids are file stems.
- `fer2013_csv`: the original `emotion,pixels,Usage` CSV (a .csv file, or a folder/zip
  holding one); emotion codes 0..6 are Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral
  and Usage Training/PublicTest/PrivateTest gives train/val/test.
- `legend`: `legend.csv` (columns include `image` and `emotion`) beside or above an
  `images/` folder; images may differ in size and colour (see `imaging`).
- `imagefolder`: `<class>/*.{jpg,png,...}`, optionally under `train/`, `val/`, `test/`.
- `demo`: procedurally drawn faces (`fersynth.datasets.demo`).
- `rafdb`, `kdef`, `jaffe`, `ckplus`, `affectnet`: the papers' datasets in their published layouts
  (`fersynth.datasets.papers`); their members name the person shown, so carving moves whole people.

Label names go through `LabelMapper` (unknown names such as `contempt` are dropped and
counted), and so are images smaller than `ReadRules.min_side`. A source without a val or
test split gets one carved from train when the matching fraction is above zero. Every file
is read within `ReadRules` (see `archive` and `imaging`); a file of a folder or zip that is not
read is counted under its reason (`archive.SKIP_REASONS`) and warned about once per reason.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from PIL import Image

from fersynth.config import FetchSource, ReadRules
from fersynth.datasets.archive import SKIP_REASONS, FileTree, open_regular_file
from fersynth.datasets.demo import DemoSizes, generate_demo
from fersynth.datasets.duplicates import DuplicateReport, find_identical_images, unique_ids
from fersynth.datasets.folds import KFold, assign_test_fold
from fersynth.datasets.format import SPLITS, Dataset
from fersynth.datasets.imaging import check_pixel_budget, letterbox, load_images, warn_too_small
from fersynth.datasets.labels import FER2013_CSV_EMOTIONS, LabelMapper, normalize_label
from fersynth.datasets.members import LAYOUTS, images_by_file_name
from fersynth.datasets.members import Member as _Member
from fersynth.datasets.papers import PaperOptions  # importing papers registers its layouts too
from fersynth.datasets.splits import carve_splits
from fersynth.datasets.tables import csv_table
from fersynth.errors import DataError
from fersynth.runtime.progress import track

log = logging.getLogger(__name__)

# Folder names (normalized) that mean a split rather than a class.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
FER2013_TEST_PREFIXES: dict[str, str] = {"publictest": "val", "privatetest": "test"}
CSV_USAGE_SPLITS: dict[str, str] = {"training": "train", "publictest": "val", "privatetest": "test"}
_PIXEL_TEXT = re.compile(r"[0-9\s]*", re.ASCII)  # digits and spaces only: int() would take '٣', '+3' or '1_0'


@dataclass(frozen=True)
class SourceReport:
    """What loading a source found besides the images: drops, repeats, and which splits it had."""

    source: str
    path: str
    source_splits: tuple[str, ...]  # splits the source itself defines (others were carved or are absent)
    dropped: dict[str, int]  # normalized raw label -> images dropped
    too_small: int  # images dropped as smaller than ReadRules.min_side
    duplicate_ids: int
    duplicates: DuplicateReport
    skipped: dict[str, int] = field(default_factory=dict)  # files of the folder or zip not read, by SKIP_REASONS key


@dataclass(frozen=True)
class _Loaded:
    images: np.ndarray
    ids: list[str]
    labels: list[int]
    splits: list[str | None]
    groups: list[str | None]
    too_small: int
    skipped: dict[str, int] = field(default_factory=dict)


def load_source(
    source: FetchSource,
    path: str | Path,
    classes: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    max_side: int = 256,
    *,
    seed: int = 0,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    demo_sizes: DemoSizes | None = None,
    options: PaperOptions | None = None,
    rules: ReadRules | None = None,
    k_fold: KFold | None = None,
) -> tuple[Dataset, SourceReport]:
    """Load one dataset; images without a split are `train`, and missing val/test are carved if fractions > 0.

    Every image is `source` "real"; labels index `classes`. The evaluate stage calls this for
    cross-dataset test sets (fractions 0: a source without splits is all `train`, i.e. "all").
    Files are read within `rules` (default: the params' defaults). With `k_fold` the source's own
    splits are dropped: its test fold is the test split, and val is carved from the rest.
    """
    mapper = LabelMapper(classes, aliases)
    if source == "demo":
        dataset = generate_demo(classes, seed, demo_sizes or DemoSizes())
        if k_fold is not None:
            dataset = _k_fold_splits(dataset, k_fold, seed, val_fraction, groups=None)
        report = SourceReport(source, "", SPLITS, {}, 0, 0, find_identical_images(dataset))
        return dataset, report
    started = time.perf_counter()
    rules = rules or ReadRules()
    loaded = _read(source, Path(path), mapper, _Decoding(max_side, rules), options or PaperOptions())
    log.info("read %d images from %s in %.1f s", len(loaded.ids), path, time.perf_counter() - started)
    if not loaded.ids:
        too_small = f" ({loaded.too_small} smaller than fetch.min_side={rules.min_side})" if loaded.too_small else ""
        raise DataError(f"{path}: no images of the classes {list(classes)} found for source {source!r}{too_small}")
    ids, duplicate_ids = unique_ids(loaded.ids)
    source_splits = tuple(split for split in SPLITS if split in loaded.splits)
    dataset = Dataset(
        images=loaded.images,
        labels=np.array(loaded.labels, dtype=np.int64),
        splits=np.array([split or "train" for split in loaded.splits], dtype=object),
        classes=tuple(classes),
        ids=np.array(ids, dtype=object),
    )
    groups = None if None in loaded.groups else np.array(loaded.groups, dtype=object)
    missing = {"val": val_fraction, "test": test_fraction}
    to_carve = {split: fraction for split, fraction in missing.items() if split not in source_splits and fraction > 0}
    if k_fold is not None:
        dataset, source_splits = _k_fold_splits(dataset, k_fold, seed, val_fraction, groups), ()
    elif to_carve:
        dataset = carve_splits(dataset, to_carve, seed, groups)
    if mapper.dropped:
        log.warning(
            "dropped %d images with labels outside %s: %s",
            sum(mapper.dropped.values()),
            list(classes),
            dict(mapper.dropped),
        )
    report = SourceReport(
        source=source,
        path=str(path),
        source_splits=source_splits,
        dropped=dict(sorted(mapper.dropped.items())),
        too_small=loaded.too_small,
        duplicate_ids=duplicate_ids,
        duplicates=find_identical_images(dataset),
        skipped=loaded.skipped,
    )
    return dataset, report


def _k_fold_splits(
    dataset: Dataset, k_fold: KFold, seed: int, val_fraction: float, groups: np.ndarray | None
) -> Dataset:
    """The test fold as test, val carved (by person when known) from the other folds."""
    dataset = assign_test_fold(dataset, k_fold.folds, k_fold.fold, seed, groups)
    if val_fraction > 0:
        dataset = carve_splits(dataset, {"val": val_fraction}, seed, groups)
    return dataset


@dataclass(frozen=True)
class _Decoding:
    max_side: int
    rules: ReadRules


def _read(source: FetchSource, path: Path, mapper: LabelMapper, decoding: _Decoding, options: PaperOptions) -> _Loaded:
    if source == "fer2013_csv":
        if path.suffix.lower() == ".csv" and not path.is_dir():
            with open_regular_file(path, decoding.rules) as stream:
                return _read_fer2013_csv(stream, str(path), mapper, decoding)
        with FileTree(path, decoding.rules) as tree:
            name = _single_csv(tree)
            with tree.open(name) as stream:
                loaded = _read_fer2013_csv(stream, tree.where(name), mapper, decoding)
            return replace(loaded, skipped=_skipped_files(tree, source))
    with FileTree(path, decoding.rules) as tree:
        loaded = _decode(tree, LAYOUTS[source](tree, mapper, options), decoding)
        return replace(loaded, skipped=_skipped_files(tree, source))


def _skipped_files(tree: FileTree, source: FetchSource) -> dict[str, int]:
    """The tree's files no one read, by reason, each reason warned about once with its count and an example."""
    skipped = tree.skipped()
    for reason, count in skipped.counts.items():
        text, example = SKIP_REASONS[reason], skipped.examples[reason]
        log.warning("%s (fetch.source %s): skipped %d %s; e.g. %s", tree.path, source, count, text, example)
    return dict(skipped.counts)


def _decode(tree: FileTree, members: Iterable[_Member], decoding: _Decoding) -> _Loaded:
    listed = list(members)
    boxes = [member.box for member in listed]
    names = [member.name for member in listed]
    images = load_images(tree, names, decoding.max_side, decoding.rules, boxes if any(boxes) else None)
    kept = [member for member, keep in zip(listed, images.kept, strict=True) if keep]
    return _Loaded(
        images=images.pixels,
        ids=[member.id for member in kept],
        labels=[member.label for member in kept],
        splits=[member.split for member in kept],
        groups=[member.group for member in kept],
        too_small=len(listed) - len(kept),
    )


# --- folder layouts -------------------------------------------------------------------------------


@LAYOUTS.register("fer2013")
def _fer2013_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[_Member]:
    root = tree.shallowest_folder(lambda folder: "train" in _normalized(tree.child_folders(folder)))
    if root is None:
        raise DataError(
            f"{tree.path}: no train/ folder found; the fer2013 source expects the Kaggle layout "
            "train/<class>/*.jpg and test/<class>/*.jpg"
        )
    for member in _split_folder_members(tree, root, mapper):
        prefix = member.id.split("_")[0].lower()
        if member.split == "test" and prefix in FER2013_TEST_PREFIXES:
            member = _Member(member.name, member.id, member.label, FER2013_TEST_PREFIXES[prefix])
        yield member


@LAYOUTS.register("imagefolder")
def _imagefolder_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[_Member]:
    split_root = tree.shallowest_folder(
        lambda folder: bool(_normalized(tree.child_folders(folder)) & SPLIT_FOLDERS.keys())
    )
    if split_root is not None:
        root, members = split_root, _split_folder_members(tree, split_root, mapper)
    else:
        root = _single_top_folder(tree, mapper)
        members = _class_folder_members(tree, root, mapper, split=None)
    for member in members:
        # Class folders may reuse file names: the id keeps the folders below the root to stay unique.
        yield _Member(member.name, _relative_stem(member.name, root), member.label, member.split)


def _split_folder_members(tree: FileTree, root: str, mapper: LabelMapper) -> Iterable[_Member]:
    """`root/<split>/<class>/<image>`; folders that are no split are reported and skipped."""
    for folder in sorted(tree.child_folders(root)):
        split = SPLIT_FOLDERS.get(normalize_label(folder))
        if split is None:
            log.warning(
                "%s: ignoring folder %r (not one of the split folders %s)", tree.path, folder, sorted(SPLIT_FOLDERS)
            )
            continue
        yield from _class_folder_members(tree, _join(root, folder), mapper, split)


def _class_folder_members(tree: FileTree, folder: str, mapper: LabelMapper, split: str | None) -> Iterable[_Member]:
    """`folder/<class>/<image>` (any depth below the class folder); images with no class folder are reported."""
    unlabelled = 0
    for name in tree.images(folder):
        parts = PurePosixPath(name[len(folder) + 1 :] if folder else name).parts
        if len(parts) < 2:
            unlabelled += 1
            continue
        label = mapper.index(parts[0])
        if label is not None:
            yield _Member(name, PurePosixPath(name).stem, label, split)
    if unlabelled:
        log.warning("%s: skipped %d images directly in %r (no class folder)", tree.path, unlabelled, folder or "/")


def _single_top_folder(tree: FileTree, mapper: LabelMapper) -> str:
    """Descend through lone wrapper folders (`dataset/`, `dataset/images/`) to the class folders."""
    root = ""
    while True:
        children = tree.child_folders(root)
        has_files = any(name.rpartition("/")[0] == root for name in tree.names)
        if len(children) != 1 or has_files:
            return root
        (child,) = children
        if mapper.canonical(child) is not None:  # a single class folder is a class, not a wrapper
            return root
        root = _join(root, child)


@LAYOUTS.register("legend")
def _legend_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[_Member]:
    legend = _shallowest_file(tree, "legend.csv")
    by_file_name = images_by_file_name(tree)
    with tree.open(legend) as stream:
        header, rows = csv_table(stream, tree.where(legend))
        columns = _find_columns(header, ("image", "emotion"), tree.where(legend))
        for line, row in rows:
            image = (row[columns["image"]] or "").strip()
            member = _legend_image(image, by_file_name, f"{tree.where(legend)}:{line}")
            label = mapper.index(row[columns["emotion"]] or "")
            if label is not None:
                yield _Member(member, PurePosixPath(member).stem, label, None)


def _legend_image(image: str, by_file_name: Mapping[str, list[str]], where: str) -> str:
    """The member a legend row names: found by file name anywhere, an `images/` folder winning ties."""
    candidates = [name for name in by_file_name.get(PurePosixPath(image).name, []) if name.endswith(image)]
    if len(candidates) > 1:
        candidates = [name for name in candidates if "images" in PurePosixPath(name).parts[:-1]] or candidates
    if not candidates:
        raise DataError(f"{where}: image {image!r} not found in the images folder")
    if len(candidates) > 1:
        raise DataError(f"{where}: image {image!r} is ambiguous: {candidates[:3]}")
    return candidates[0]


# --- FER2013 CSV ------------------------------------------------------------------------------------


def _single_csv(tree: FileTree) -> str:
    candidates = [name for name in tree.names if name.lower().endswith(".csv")]
    if len(candidates) > 1:
        named = [name for name in candidates if PurePosixPath(name).name.lower() == "fer2013.csv"]
        candidates = named or candidates
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(candidates)
        raise DataError(f"{tree.path}: expected one FER2013 .csv file (emotion,pixels,Usage), found {found}")
    return candidates[0]


def _read_fer2013_csv(stream: IO[bytes], where: str, mapper: LabelMapper, decoding: _Decoding) -> _Loaded:
    header, rows = csv_table(stream, where)
    columns = _find_columns(header, ("emotion", "pixels"), where)
    usage_column = _find_columns(header, ("usage",), where, required=False).get("usage")
    pixels: list[np.ndarray] = []
    ids: list[str] = []
    labels: list[int] = []
    splits: list[str | None] = []
    too_small: list[str] = []
    row_size = 0  # pixels of the first kept row, before any downscaling: every row must match it
    for line, row in track(rows, f"parsing {Path(where).name}"):
        at = f"{where}:{line}"
        label = mapper.index(_csv_emotion(row[columns["emotion"]] or "", at))
        if label is None:
            continue
        square = _csv_pixels(row[columns["pixels"]] or "", at)
        if len(square) < decoding.rules.min_side:
            too_small.append(at)
            continue
        row_size = row_size or square.size
        if square.size != row_size:
            raise DataError(f"{at}: {square.size} pixels, earlier rows have {row_size}")
        pixels.append(_fit(square, decoding.max_side))
        check_pixel_budget(len(pixels) * pixels[-1].size, decoding.rules, f"{where}: the first {len(pixels)} rows")
        ids.append(f"row{line - 2:05d}")
        labels.append(label)
        splits.append(_csv_split(row[usage_column] or "", at) if usage_column else None)
    warn_too_small(too_small, decoding.rules)
    images = np.stack(pixels)[..., None] if pixels else np.zeros((0, 1, 1, 1), np.uint8)
    return _Loaded(images, ids, labels, splits, groups=[None] * len(ids), too_small=len(too_small))


def _csv_emotion(value: str, where: str) -> str:
    code = value.strip()
    # isdigit alone accepts '٣' or '²': int() reads the first as 3 and fails on the second.
    if not (code.isascii() and code.isdigit() and int(code) < len(FER2013_CSV_EMOTIONS)):
        raise DataError(f"{where}: emotion {value!r} is not a FER2013 code 0..{len(FER2013_CSV_EMOTIONS) - 1}")
    return FER2013_CSV_EMOTIONS[int(code)]


def _csv_pixels(value: str, where: str) -> np.ndarray:
    """A row's pixels as a square uint8 image at its own size."""
    if not _PIXEL_TEXT.fullmatch(value):
        raise DataError(f"{where}: pixels must be space-separated integers 0..255")
    try:
        flat = np.array(value.split(), dtype=np.int64)
    except OverflowError:  # digits past 2**63
        raise DataError(f"{where}: pixels must be integers 0..255, one is far larger") from None
    side = math.isqrt(flat.size)
    if flat.size == 0 or side * side != flat.size:
        raise DataError(f"{where}: pixels must be a square image of values 0..255, got {flat.size} values")
    if flat.max() > 255:
        raise DataError(f"{where}: pixels must be values 0..255, found {flat.max()}")
    return flat.reshape(side, side).astype(np.uint8)


def _fit(square: np.ndarray, max_side: int) -> np.ndarray:
    return square if len(square) <= max_side else np.asarray(letterbox(Image.fromarray(square), max_side))


def _csv_split(value: str, where: str) -> str:
    split = CSV_USAGE_SPLITS.get(normalize_label(value).replace("_", ""))
    if split is None:
        raise DataError(f"{where}: Usage {value!r} is not Training, PublicTest or PrivateTest")
    return split


# --- helpers --------------------------------------------------------------------------------------


def _find_columns(
    fieldnames: Sequence[str] | None, wanted: Sequence[str], where: str, required: bool = True
) -> dict[str, str]:
    """Wanted column -> the header's spelling of it (case and spaces ignored)."""
    header = {normalize_label(name): name for name in fieldnames or ()}
    missing = [name for name in wanted if name not in header]
    if missing and required:
        raise DataError(f"{where}: missing column(s) {missing}; the header has {list(fieldnames or ())}")
    return {name: header[name] for name in wanted if name in header}


def _shallowest_file(tree: FileTree, file_name: str) -> str:
    matches = sorted(
        (name for name in tree.names if PurePosixPath(name).name.lower() == file_name), key=lambda n: (n.count("/"), n)
    )
    if not matches:
        raise DataError(f"{tree.path}: no {file_name} found (the legend source expects legend.csv and images/)")
    return matches[0]


def _normalized(names: Iterable[str]) -> set[str]:
    return {normalize_label(name) for name in names}


def _relative_stem(name: str, root: str) -> str:
    relative = PurePosixPath(name[len(root) + 1 :] if root else name)
    return str(relative.with_suffix(""))


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name
