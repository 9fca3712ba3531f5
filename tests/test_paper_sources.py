"""The papers' datasets (RAF-DB, KDEF, JAFFE, CK+, AffectNet) on tiny layouts built here, folder and zip."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersynth.config import CANONICAL_CLASSES, ExtraTestSet
from fersynth.datasets.format import Dataset
from fersynth.datasets.papers import (
    AFFECTNET_CODES,
    CKPLUS_CODES,
    JAFFE_CODES,
    KDEF_CODES,
    RAFDB_CODES,
    PaperOptions,
)
from fersynth.datasets.sources import load_source
from fersynth.errors import DataError

from .helpers import Files, as_folder_or_zip, kdef_files, labels_by_id, png, write_tree

CLASSES = CANONICAL_CLASSES


def counts(dataset: Dataset, split: str | None = None) -> dict[str, int]:
    rows = dataset.labels if split is None else dataset.labels[dataset.splits == split]
    return dict(Counter(dataset.classes[label] for label in rows))


# --- RAF-DB -------------------------------------------------------------------------------------------


def rafdb_files() -> Files:
    """Two train and one test image per code, aligned crops; test_0008 only as an original photo."""
    lines, files = [], {}
    for code in RAFDB_CODES:
        for k in range(3):
            split = "train" if k < 2 else "test"
            stem = f"{split}_{int(code) * 10 + k:05d}"
            lines.append(f"{stem}.jpg {code}")
            files[f"basic/Image/aligned/{stem}_aligned.jpg"] = png(int(code) * 10 + k)
    lines.append("test_00099.jpg 7")
    files["basic/Image/original/test_00099.jpg"] = png(99, (20, 16))
    files["basic/EmoLabel/list_patition_label.txt"] = "\n".join(lines) + "\n"
    return files


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_rafdb_maps_codes_and_takes_the_split_from_the_name(tmp_path: Path, kind: str) -> None:
    dataset, report = load_source("rafdb", as_folder_or_zip(tmp_path, rafdb_files(), kind), CLASSES)
    labels = labels_by_id(dataset)
    assert {code: labels[f"train_{int(code) * 10:05d}"] for code in RAFDB_CODES} == RAFDB_CODES
    assert counts(dataset, "train") == dict.fromkeys(CLASSES, 2)
    assert counts(dataset, "test") == {**dict.fromkeys(CLASSES, 1), "neutral": 2}
    assert report.source_splits == ("train", "test") and not report.dropped
    assert labels["test_00099"] == "neutral"  # the original photo stands in for a missing aligned crop


def test_rafdb_carves_val_and_drops_unselected_classes(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "d", rafdb_files())
    dataset, report = load_source("rafdb", path, ["happy", "sad"], val_fraction=0.25)
    assert counts(dataset, "val") == {"happy": 1} or counts(dataset, "val") == {"sad": 1}
    assert report.dropped == {"surprise": 3, "fear": 3, "disgust": 3, "angry": 3, "neutral": 4}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.update({"basic/EmoLabel/list_patition_label.txt": "train_00010.jpg 8\n"}), r"label '8'"),
        (lambda f: f.pop("basic/Image/aligned/train_00011_aligned.jpg"), r"train_00011\.jpg' .*not found"),
    ],
)
def test_rafdb_errors_name_the_line(tmp_path: Path, edit: Callable[[Files], object], message: str) -> None:
    files = rafdb_files()
    edit(files)
    with pytest.raises(DataError, match=rf"list_patition_label\.txt:\d+: .*{message}"):
        load_source("rafdb", write_tree(tmp_path / "d", files), CLASSES)


# --- KDEF -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_kdef_keeps_straight_views_and_maps_every_code(tmp_path: Path, kind: str) -> None:
    dataset, report = load_source("kdef", as_folder_or_zip(tmp_path, kdef_files(), kind), CLASSES)
    assert counts(dataset) == dict.fromkeys(CLASSES, 4)
    assert {code: labels_by_id(dataset)[f"AF01{code}S"] for code in KDEF_CODES} == KDEF_CODES
    assert report.source_splits == () and not report.dropped


def test_kdef_angles_choose_the_views(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "d", kdef_files())
    dataset, _ = load_source("kdef", path, CLASSES, options=PaperOptions(kdef_angles=("HL", "HR")))
    assert counts(dataset) == dict.fromkeys(CLASSES, 8)
    assert {str(i)[-2:] for i in dataset.ids} == {"HL", "HR"}


def test_kdef_carves_whole_people(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "d", kdef_files(people=10))
    dataset, _ = load_source("kdef", path, CLASSES, seed=1, val_fraction=0.1, test_fraction=0.2)
    people = {split: {str(i)[1:4] for i in dataset.ids[dataset.splits == split]} for split in ("train", "val", "test")}
    assert (len(people["train"]), len(people["val"]), len(people["test"])) == (7, 1, 2)
    assert not (people["train"] & people["val"]) and not (people["train"] & people["test"])


def test_kdef_unknown_code_names_the_file(tmp_path: Path) -> None:
    files = {**kdef_files(1), "KDEF/AF01/AF01XXS.JPG": png(500)}
    with pytest.raises(DataError, match=r"AF01XXS\.JPG: expression 'XX'"):
        load_source("kdef", write_tree(tmp_path / "d", files), CLASSES)


# --- JAFFE ------------------------------------------------------------------------------------------------


def jaffe_files() -> Files:
    files, seed = {}, 0
    for poser in ("KA", "KL", "KM"):
        for code in JAFFE_CODES:
            for index in (1, 2):
                seed += 1
                files[f"jaffe/{poser}.{code}{index}.{seed}.tiff"] = png(seed)
    files["jaffe/README"] = "not an image"
    return files


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_jaffe_maps_every_code(tmp_path: Path, kind: str) -> None:
    dataset, report = load_source("jaffe", as_folder_or_zip(tmp_path, jaffe_files(), kind), CLASSES)
    assert counts(dataset) == dict.fromkeys(CLASSES, 6)
    labels = labels_by_id(dataset)
    assert {code: next(v for k, v in labels.items() if k.startswith(f"KA.{code}1.")) for code in JAFFE_CODES} == (
        JAFFE_CODES
    )
    assert not report.dropped


def test_jaffe_odd_name_is_an_error_naming_it(tmp_path: Path) -> None:
    files = {**jaffe_files(), "jaffe/KA.XX1.99.tiff": png(99)}
    with pytest.raises(DataError, match=r"KA\.XX1\.99\.tiff: expression 'XX'"):
        load_source("jaffe", write_tree(tmp_path / "d", files), CLASSES)


# --- CK+ -----------------------------------------------------------------------------------------------


def ckplus_files() -> Files:
    """One 3-frame sequence per code 1..7 (subjects S001..S007), plus an unlabelled sequence."""
    files: Files = {}
    for code in range(1, 8):
        subject = f"S{code:03d}"
        for frame in range(1, 4):
            files[f"CK+/cohn-kanade-images/{subject}/001/{subject}_001_{frame:08d}.png"] = png(code * 10 + frame)
        files[f"CK+/Emotion/{subject}/001/{subject}_001_00000003_emotion.txt"] = f"   {code:.7e}\n"
    files["CK+/cohn-kanade-images/S001/002/S001_002_00000001.png"] = png(900)
    return files


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_ckplus_labels_peak_frames_and_adds_first_frames_as_neutral(tmp_path: Path, kind: str) -> None:
    dataset, report = load_source("ckplus", as_folder_or_zip(tmp_path, ckplus_files(), kind), CLASSES)
    labels = labels_by_id(dataset)
    peaks = {code: labels.get(f"S{int(code):03d}_001_00000003") for code in CKPLUS_CODES if code != "0"}
    assert peaks == {code: (None if name == "contempt" else name) for code, name in CKPLUS_CODES.items() if code != "0"}
    assert all(labels[f"S{code:03d}_001_00000001"] == "neutral" for code in range(1, 8))
    assert not any(i.endswith("00000002") for i in labels) and "S001_002_00000001" not in labels
    assert report.dropped == {"contempt": 1}


def test_ckplus_without_first_frames_has_no_neutral(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "d", ckplus_files())
    dataset, _ = load_source("ckplus", path, CLASSES, options=PaperOptions(ckplus_neutral_first_frame=False))
    assert len(dataset) == 6 and "neutral" not in counts(dataset)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.update({"CK+/Emotion/S001/001/S001_001_00000003_emotion.txt": "9.0\n"}), "emotion '9'"),
        (lambda f: f.pop("CK+/cohn-kanade-images/S001/001/S001_001_00000003.png"), "not found"),
    ],
)
def test_ckplus_errors_name_the_emotion_file(tmp_path: Path, edit: Callable[[Files], object], message: str) -> None:
    files = ckplus_files()
    edit(files)
    with pytest.raises(DataError, match=rf"S001_001_00000003_emotion\.txt: .*{message}"):
        load_source("ckplus", write_tree(tmp_path / "d", files), CLASSES)


# --- AffectNet ------------------------------------------------------------------------------------------

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def framed(seed: int) -> bytes:
    """A 30×20 grey photo with a white 10×10 face at (12, 4): the crop must hold only white."""
    pixels = np.full((20, 30), 60 + seed % 50, np.uint8)
    pixels[4:14, 12:22] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def affectnet_files() -> Files:
    files: Files = {}
    for csv_name, per_code in (("training.csv", 2), ("validation.csv", 1)):
        rows = [AFFECTNET_HEADER]
        for code in AFFECTNET_CODES:
            for k in range(per_code):
                path = f"{code}/{csv_name[0]}{k}.png"
                rows.append(f'{path},12,4,10,10,"1;2;3",{code},0.1,-0.2')
                files[f"AffectNet/Manually_Annotated_Images/{path}"] = framed(int(code) * 7 + k)
        files[f"AffectNet/Manually_Annotated_file_lists/{csv_name}"] = "\n".join(rows) + "\n"
    return files


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_affectnet_keeps_seven_codes_drops_the_rest_and_crops_the_face(tmp_path: Path, kind: str) -> None:
    dataset, report = load_source("affectnet", as_folder_or_zip(tmp_path, affectnet_files(), kind), CLASSES)
    assert counts(dataset, "train") == dict.fromkeys(CLASSES, 2)
    assert counts(dataset, "test") == dict.fromkeys(CLASSES, 1)
    labels = labels_by_id(dataset)
    assert {code: labels[f"{code}/t0"] for code in map(str, range(7))} == {
        code: AFFECTNET_CODES[code] for code in map(str, range(7))
    }
    assert report.dropped == {"contempt": 3, "none": 3, "uncertain": 3, "no_face": 3}
    assert dataset.images.shape == (21, 10, 10, 1) and dataset.images.min() == 255


def test_affectnet_missing_image_names_the_line(tmp_path: Path) -> None:
    files = affectnet_files()
    del files["AffectNet/Manually_Annotated_Images/3/v0.png"]
    with pytest.raises(DataError, match=r"validation\.csv:5: image '3/v0\.png' not found"):
        load_source("affectnet", write_tree(tmp_path / "d", files), CLASSES)


def test_affectnet_unknown_expression_names_the_line(tmp_path: Path) -> None:
    files = affectnet_files()
    files["AffectNet/Manually_Annotated_file_lists/validation.csv"] += "0/v0.png,1,1,2,2,,12,0,0\n"
    with pytest.raises(DataError, match=r"validation\.csv:13: expression '12'"):
        load_source("affectnet", write_tree(tmp_path / "d", files), CLASSES)


def test_paper_sources_are_valid_extra_test_sets() -> None:
    spec = ExtraTestSet(source="kdef", path="data/raw/kdef", kdef_angles=["S", "FL"])
    assert spec.kdef_angles == ["S", "FL"] and spec.ckplus_neutral_first_frame
    with pytest.raises(ValueError, match="kdef_angles"):
        ExtraTestSet(source="kdef", path="x", kdef_angles=["UP"])
