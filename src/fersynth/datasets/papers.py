"""The datasets the FER papers report on, read in their published layouts (folder or zip alike).

- `rafdb`: RAF-DB basic. `EmoLabel/list_patition_label.txt` lines `train_00001.jpg 5`, images in
  `Image/aligned/train_00001_aligned.jpg` (preferred) or `Image/original/train_00001.jpg`; codes 1..7;
  the name prefix gives the train/test split (no val: it is carved).
- `kdef`: `AF01/AF01ANS.JPG`: session, gender, identity, expression (AF AN DI HA NE SA SU) and angle
  (FL HL S HR FR); only the angles in `kdef_angles` are kept. No splits: carved by identity.
- `jaffe`: `KA.AN1.39.tiff`: poser, expression (AN DI FE HA NE SA SU) and index, picture number.
  No splits: carved by poser.
- `ckplus`: `Emotion/S005/001/S005_001_00000011_emotion.txt` (a float code 0..7) labels the peak frame
  `cohn-kanade-images/S005/001/S005_001_00000011.png`; sequences without one are unlabelled. With
  `ckplus_neutral_first_frame` the first frame of each labelled sequence is a neutral image. Contempt
  (code 2) is dropped and counted. No splits: carved by subject.
- `affectnet`: `training.csv` (train) and `validation.csv` (test: AffectNet's test set is not public)
  with `subDirectory_filePath`, the face box and `expression`; codes 0..6 are kept, 7..10 (contempt,
  none, uncertain, no-face) dropped and counted; images under `Manually_Annotated_Images/`, cropped to
  the face box. No val: it is carved.

Every parser yields `Member`s; unknown codes and missing images are errors naming the file (and line).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from fersynth.datasets.archive import FileTree
from fersynth.datasets.labels import LabelMapper, normalize_label
from fersynth.datasets.members import LAYOUTS, Box, Member, coded_name, images_by_file_name
from fersynth.datasets.tables import csv_table, utf8_lines
from fersynth.errors import DataError

log = logging.getLogger(__name__)

KDEF_ANGLES: tuple[str, ...] = ("FL", "HL", "S", "HR", "FR")

RAFDB_CODES: dict[str, str] = {
    "1": "surprise",
    "2": "fear",
    "3": "disgust",
    "4": "happy",
    "5": "sad",
    "6": "angry",
    "7": "neutral",
}
# KDEF and JAFFE share most two-letter codes; KDEF writes fear as AF (afraid), JAFFE as FE.
KDEF_CODES: dict[str, str] = {
    "AF": "fear",
    "AN": "angry",
    "DI": "disgust",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sad",
    "SU": "surprise",
}
JAFFE_CODES: dict[str, str] = {**{k: v for k, v in KDEF_CODES.items() if k != "AF"}, "FE": "fear"}
CKPLUS_CODES: dict[str, str] = {
    "0": "neutral",
    "1": "angry",
    "2": "contempt",
    "3": "disgust",
    "4": "fear",
    "5": "happy",
    "6": "sad",
    "7": "surprise",
}
AFFECTNET_CODES: dict[str, str] = {
    "0": "neutral",
    "1": "happy",
    "2": "sad",
    "3": "surprise",
    "4": "fear",
    "5": "disgust",
    "6": "angry",
    "7": "contempt",
    "8": "none",
    "9": "uncertain",
    "10": "no_face",
}
AFFECTNET_FILES: dict[str, str] = {"training.csv": "train", "validation.csv": "test"}
AFFECTNET_COLUMNS: tuple[str, ...] = ("subdirectory_filepath", "face_x", "face_y", "face_width", "face_height")

_KDEF_NAME = re.compile(r"^([AB])([FM])(\d{2})([A-Z]{2})([A-Z]{1,2})$")
_JAFFE_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d+)\.(\d+)$")


@dataclass(frozen=True)
class PaperOptions:
    """Choices of the paper datasets that change which images a source yields."""

    kdef_angles: tuple[str, ...] = ("S",)
    ckplus_neutral_first_frame: bool = True


# --- RAF-DB ---------------------------------------------------------------------------------------------


@LAYOUTS.register("rafdb")
def rafdb_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[Member]:
    labels = _single_file(tree, "list_patition_label.txt", "RAF-DB basic (EmoLabel/list_patition_label.txt)")
    by_file_name = images_by_file_name(tree)
    for line, fields in _text_lines(tree, labels):
        where = f"{tree.where(labels)}:{line}"
        if len(fields) != 2:
            raise DataError(f"{where}: expected '<image> <label 1..7>', got {' '.join(fields)!r}")
        image, code = fields
        label = mapper.index(coded_name(code, RAFDB_CODES, where, "label"))
        member = _rafdb_image(image, by_file_name, where)  # checked for dropped rows too: the list is the index
        if label is not None:
            stem = PurePosixPath(image).stem
            yield Member(member, stem, label, _rafdb_split(stem, where))


def _rafdb_image(image: str, by_file_name: Mapping[str, list[str]], where: str) -> str:
    """The aligned 100×100 crop when present (what the papers train on), else the original photo."""
    stem, suffix = PurePosixPath(image).stem, PurePosixPath(image).suffix
    for candidate in (f"{stem}_aligned{suffix}", image):
        found = by_file_name.get(candidate, [])
        if len(found) > 1:
            raise DataError(f"{where}: image {candidate!r} is ambiguous: {found[:3]}")
        if found:
            return found[0]
    raise DataError(f"{where}: image {image!r} (or {stem}_aligned{suffix}) not found")


def _rafdb_split(stem: str, where: str) -> str:
    prefix = stem.split("_")[0].lower()
    if prefix not in ("train", "test"):
        raise DataError(f"{where}: image {stem!r} starts with neither train_ nor test_")
    return prefix


# --- KDEF and JAFFE: the label is in the file name -----------------------------------------------------------


@LAYOUTS.register("kdef")
def kdef_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[Member]:
    angles = options.kdef_angles
    skipped: Counter[str] = Counter()
    for name in tree.images():
        match = _KDEF_NAME.match(PurePosixPath(name).stem.upper())
        if match is None:
            raise DataError(f"{tree.where(name)}: not a KDEF name like AF01ANS.JPG (session, gender, id, code, angle)")
        _, gender, number, code, angle = match.groups()
        coded_name(angle, {a: a for a in KDEF_ANGLES}, tree.where(name), "angle")
        if angle not in angles:
            skipped[angle] += 1  # a view left out on purpose, not a dropped label
            continue
        label = mapper.index(coded_name(code, KDEF_CODES, tree.where(name), "expression"))
        if label is not None:
            # Sessions A and B show the same person: the identity is gender + number.
            yield Member(name, PurePosixPath(name).stem, label, None, group=f"{gender}{number}")
    if skipped:
        log.info(
            "%s: left out %d KDEF images of angles %s (fetch.kdef_angles)",
            tree.path,
            sum(skipped.values()),
            dict(skipped),
        )


@LAYOUTS.register("jaffe")
def jaffe_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[Member]:
    for name in tree.images():
        match = _JAFFE_NAME.match(PurePosixPath(name).stem.upper())
        if match is None:
            raise DataError(f"{tree.where(name)}: not a JAFFE name like KA.AN1.39.tiff (poser, code+index, number)")
        poser, code, _, _ = match.groups()
        label = mapper.index(coded_name(code, JAFFE_CODES, tree.where(name), "expression"))
        if label is not None:
            yield Member(name, PurePosixPath(name).stem, label, None, group=poser)


# --- CK+ ------------------------------------------------------------------------------------------------


@LAYOUTS.register("ckplus")
def ckplus_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[Member]:
    neutral_first_frame = options.ckplus_neutral_first_frame
    emotion_files = [name for name in tree.names if name.endswith("_emotion.txt")]
    if not emotion_files:
        raise DataError(
            f"{tree.path}: no *_emotion.txt files (the ckplus source expects Emotion/ beside cohn-kanade-images/)"
        )
    by_file_name = images_by_file_name(tree)
    for emotion_file in emotion_files:
        where = tree.where(emotion_file)
        stem = PurePosixPath(emotion_file).name.removesuffix("_emotion.txt")
        peak = _ckplus_peak(stem, by_file_name, where)
        subject = stem.split("_")[0]
        label = mapper.index(coded_name(_ckplus_code(tree, emotion_file), CKPLUS_CODES, where, "emotion"))
        if label is not None:
            yield Member(peak, stem, label, None, group=subject)
        if neutral_first_frame:
            first = tree.images(PurePosixPath(peak).parent.as_posix())[0]
            neutral = mapper.index("neutral")
            if first != peak and neutral is not None:
                yield Member(first, PurePosixPath(first).stem, neutral, None, group=subject)


def _ckplus_peak(stem: str, by_file_name: Mapping[str, list[str]], where: str) -> str:
    found = [name for suffix in (".png", ".jpg") for name in by_file_name.get(stem + suffix, [])]
    if len(found) != 1:
        problem = "not found" if not found else f"ambiguous: {found[:3]}"
        raise DataError(f"{where}: the labelled frame {stem}.png is {problem}")
    return found[0]


def _ckplus_code(tree: FileTree, name: str) -> str:
    """`   3.0000000e+00` -> `3`; anything but one whole number is an error naming the file."""
    text = tree.read(name).decode("ascii", errors="replace").strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{tree.where(name)}: expected one emotion code 0..7, got {text[:40]!r}") from None
    return str(int(value)) if value.is_integer() else text


# --- AffectNet ------------------------------------------------------------------------------------------


@LAYOUTS.register("affectnet")
def affectnet_members(tree: FileTree, mapper: LabelMapper, options: PaperOptions) -> Iterable[Member]:
    csv_files = [name for name in tree.names if PurePosixPath(name).name.lower() in AFFECTNET_FILES]
    if not csv_files:
        raise DataError(f"{tree.path}: no training.csv or validation.csv (the affectnet source's annotation files)")
    root = tree.shallowest_folder(lambda folder: PurePosixPath(folder).name == "Manually_Annotated_Images")
    if root is None:
        raise DataError(f"{tree.path}: no Manually_Annotated_Images/ folder")
    names = set(tree.names)
    for csv_file in csv_files:
        yield from _affectnet_rows(tree, csv_file, root, names, mapper)


def _affectnet_rows(tree: FileTree, csv_file: str, root: str, names: set[str], mapper: LabelMapper) -> Iterable[Member]:
    split = AFFECTNET_FILES[PurePosixPath(csv_file).name.lower()]
    with tree.open(csv_file) as stream:
        columns, rows = csv_table(stream, tree.where(csv_file))
        header = {normalize_label(column): column for column in columns}
        missing = [column for column in (*AFFECTNET_COLUMNS, "expression") if column not in header]
        if missing:
            raise DataError(f"{tree.where(csv_file)}: missing column(s) {missing}; the header has {columns}")
        for line, row in rows:
            where = f"{tree.where(csv_file)}:{line}"
            label = mapper.index(coded_name(row[header["expression"]] or "", AFFECTNET_CODES, where, "expression"))
            if label is None:
                continue
            path = (row[header["subdirectory_filepath"]] or "").strip()
            member = f"{root}/{path}"
            if member not in names:
                raise DataError(f"{where}: image {path!r} not found under {root}/")
            box = _affectnet_box([row[header[column]] or "" for column in AFFECTNET_COLUMNS[1:]], where)
            yield Member(member, str(PurePosixPath(path).with_suffix("")), label, split, box=box)


def _affectnet_box(values: Sequence[str], where: str) -> Box:
    try:
        x, y, width, height = (int(float(value)) for value in values)
    except (ValueError, OverflowError):  # not a number, NaN, or infinite
        raise DataError(f"{where}: face box {list(values)} is not four numbers") from None
    if x < 0 or y < 0 or width <= 0 or height <= 0:
        raise DataError(f"{where}: face box {list(values)} must have x, y >= 0 and a positive size")
    return (x, y, x + width, y + height)


# --- helpers --------------------------------------------------------------------------------------------


def _single_file(tree: FileTree, file_name: str, what: str) -> str:
    matches = [name for name in tree.names if PurePosixPath(name).name.lower() == file_name.lower()]
    if len(matches) != 1:
        found = "none" if not matches else ", ".join(matches[:3])
        raise DataError(f"{tree.path}: expected one {file_name} for {what}, found {found}")
    return matches[0]


def _text_lines(tree: FileTree, name: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of each non-blank line."""
    with tree.open(name) as stream:
        for line, text in enumerate(utf8_lines(stream, tree.where(name)), start=1):
            if text.strip():
                yield line, text.split()
