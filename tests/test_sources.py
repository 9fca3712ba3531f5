"""Label mapping, every file source (folder and zip), splits carving and duplicate reporting, on tiny fixtures."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersynth.config import CANONICAL_CLASSES
from fersynth.datasets.format import Dataset
from fersynth.datasets.imaging import letterbox
from fersynth.datasets.labels import FER2013_CSV_EMOTIONS, LabelMapper
from fersynth.datasets.sources import load_source
from fersynth.datasets.splits import carve_splits, stratified_quotas
from fersynth.errors import DataError

from .helpers import as_folder_or_zip, labels_by_id, png, write_tree, write_zip

CLASSES = CANONICAL_CLASSES


def fer2013_files() -> dict[str, bytes | str]:
    """The Kaggle layout under a top folder: 2 train images per class, a contempt folder, mixed test names."""
    files: dict[str, bytes | str] = {}
    seed = 0
    for name in CLASSES:
        for _ in range(2):
            seed += 1
            files[f"FER2013/train/{name}/Training_{seed}.jpg"] = png(seed)
        seed += 1
        files[f"FER2013/test/{name}/PublicTest_{seed}.jpg"] = png(seed)
        seed += 1
        files[f"FER2013/test/{name}/PrivateTest_{seed}.jpg"] = png(seed)
    files["FER2013/train/Contempt/Training_999.jpg"] = png(999)
    files["__MACOSX/FER2013/._junk.jpg"] = b"not an image"
    return files


# --- labels -----------------------------------------------------------------------------------------


def test_label_names_in_any_case_and_spacing_map_to_canonical_classes() -> None:
    mapper = LabelMapper(CLASSES)
    expected = {
        "ANGER": "angry",
        " mad ": "angry",
        "Disgusted": "disgust",
        "scared": "fear",
        "HAPPINESS": "happy",
        "joy": "happy",
        "Neutrality": "neutral",
        "sadness": "sad",
        "Surprised": "surprise",
    }
    for raw, canonical in expected.items():
        assert mapper.index(raw) == CLASSES.index(canonical), raw
    assert not mapper.dropped


def test_unmapped_and_unselected_labels_are_dropped_and_counted() -> None:
    mapper = LabelMapper(["happy", "sad"], aliases={"Furious": "angry", "grin": "happy"})
    assert mapper.index("contempt") is None
    assert mapper.index(" Contempt") is None
    assert mapper.index("angry") is None  # a canonical class the run leaves out
    assert mapper.index("furious") is None  # an alias to a class the run leaves out
    assert mapper.index("GRIN") == 0
    assert dict(mapper.dropped) == {"contempt": 2, "angry": 1, "furious": 1}


def test_alias_to_an_unknown_class_is_an_error_naming_it() -> None:
    with pytest.raises(DataError, match="furios"):
        LabelMapper(CLASSES, aliases={"furious": "furios"})


def test_fer2013_csv_codes_are_not_alphabetical() -> None:
    assert FER2013_CSV_EMOTIONS[4] == "sad" and FER2013_CSV_EMOTIONS[6] == "neutral"


# --- fer2013 folder layout --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_fer2013_layout_maps_public_test_to_val_and_private_test_to_test(tmp_path: Path, kind: str) -> None:
    path = as_folder_or_zip(tmp_path, fer2013_files(), kind)
    dataset, report = load_source("fer2013", path, CLASSES)
    splits = dict(zip(dataset.ids, dataset.splits, strict=True))
    assert sum(split == "train" for split in splits.values()) == 14
    assert all(splits[i] == "val" for i in splits if i.startswith("PublicTest_"))
    assert all(splits[i] == "test" for i in splits if i.startswith("PrivateTest_"))
    assert labels_by_id(dataset)["Training_1"] == "angry"
    assert dataset.images.shape == (28, 8, 8, 1)
    assert report.dropped == {"contempt": 1}
    assert report.source_splits == ("train", "val", "test")
    assert set(dataset.sources) == {"real"}


def test_fer2013_without_a_train_folder_says_what_it_expects(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "data", {"happy/a.png": png(1)})
    with pytest.raises(DataError, match="no train/ folder"):
        load_source("fer2013", path, CLASSES)


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere\.zip"):
        load_source("fer2013", tmp_path / "nowhere.zip", CLASSES)


# --- zip safety and corrupt files ------------------------------------------------------------------


@pytest.mark.parametrize("member", ["../evil/train/happy/a.png", "/abs/train/happy/a.png", "data/../../x.png"])
def test_zip_members_escaping_the_archive_are_rejected(tmp_path: Path, member: str) -> None:
    path = write_zip(tmp_path / "evil.zip", {"train/happy/ok.png": png(1), member: png(2)})
    with pytest.raises(DataError, match=rf"unsafe member '{member}'"):
        load_source("fer2013", path, CLASSES)


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_a_corrupt_image_is_an_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    files = {"train/happy/good.png": png(1), "train/sad/broken.jpg": png(2)[:30]}
    path = as_folder_or_zip(tmp_path, files, kind)
    with pytest.raises(DataError, match=r"train/sad/broken\.jpg"):
        load_source("fer2013", path, CLASSES)


# --- duplicates ---------------------------------------------------------------------------------------


def test_repeated_names_and_identical_pixels_are_counted_not_fatal(tmp_path: Path) -> None:
    files = {
        "train/happy/Training_1.png": png(1),
        "train/sad/Training_1.png": png(2),  # same id, other image
        "train/angry/Training_3.png": png(7),
        "train/fear/Training_4.png": png(7),  # same pixels, other label
        "train/fear/Training_5.png": png(7),
        "test/happy/PrivateTest_6.png": png(1),  # a copy of a train image in test
    }
    dataset, report = load_source("fer2013", write_tree(tmp_path / "d", files), CLASSES)
    assert len(set(dataset.ids)) == len(dataset) == 6
    assert {"Training_1", "Training_1~2"} <= set(dataset.ids)
    assert report.duplicate_ids == 1
    assert report.duplicates.identical_images == 3  # two copies of png(7), one of png(1)
    assert report.duplicates.conflicting_duplicates == 1  # angry vs fear
    assert report.duplicates.cross_split_duplicates == 1


# --- FER2013 CSV --------------------------------------------------------------------------------------


def fer2013_csv(rows: list[tuple[str, str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["emotion", "pixels", "Usage"])
    writer.writerows(rows)
    return out.getvalue()


def pixels(value: int, side: int = 4) -> str:
    return " ".join([str(value)] * side * side)


def test_fer2013_csv_maps_codes_and_usage(tmp_path: Path) -> None:
    rows = [("4", pixels(10), "Training"), ("6", pixels(20), "PublicTest"), ("0", pixels(30), "PrivateTest")]
    path = tmp_path / "fer2013.csv"
    path.write_text(fer2013_csv(rows))
    dataset, _ = load_source("fer2013_csv", path, CLASSES)
    assert [dataset.classes[label] for label in dataset.labels] == ["sad", "neutral", "angry"]
    assert list(dataset.splits) == ["train", "val", "test"]
    assert dataset.images.shape == (3, 4, 4, 1)
    assert dataset.images[1].max() == 20


def test_fer2013_csv_inside_a_zip_drops_classes_left_out(tmp_path: Path) -> None:
    rows = [("1", pixels(10), "Training"), ("3", pixels(20), "Training")]
    path = write_zip(tmp_path / "fer.zip", {"fer2013/fer2013.csv": fer2013_csv(rows)})
    dataset, report = load_source("fer2013_csv", path, ["happy", "sad"])
    assert len(dataset) == 1 and report.dropped == {"disgust": 1}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("9", pixels(1), "Training"), "emotion '9'"),
        (("-1", pixels(1), "Training"), "emotion '-1'"),
        (("1", "1 2 3", "Training"), "pixels must be a square"),
        (("1", pixels(1), "Dev"), "Usage 'Dev'"),
    ],
)
def test_fer2013_csv_bad_rows_name_the_line(tmp_path: Path, row: tuple[str, str, str], message: str) -> None:
    path = tmp_path / "fer2013.csv"
    path.write_text(fer2013_csv([("3", pixels(5), "Training"), row]))
    with pytest.raises(DataError, match=rf"fer2013\.csv:3: {message}"):
        load_source("fer2013_csv", path, CLASSES)


# --- legend ------------------------------------------------------------------------------------------


def legend_files(rgb_name: str = "c.jpg", rgb_gray: bool = False) -> dict[str, bytes | str]:
    color = np.zeros((10, 6, 3), dtype=np.uint8)
    color[..., 0] = 200  # red: truly colour unless rgb_gray
    if rgb_gray:
        color[...] = 90
    buffer = io.BytesIO()
    Image.fromarray(color).save(buffer, "PNG")
    legend = "user.id,image,emotion\nu1,a.jpg,HAPPINESS\nu2,b.jpg,sadness\nu3,c.jpg,Anger\nu4,d.jpg,contempt\n"
    return {
        "facial_expressions/legend.csv": legend,
        "facial_expressions/images/a.jpg": png(1, (12, 12)),
        "facial_expressions/images/b.jpg": png(2, (12, 12)),
        f"facial_expressions/images/{rgb_name}": buffer.getvalue(),
        "facial_expressions/images/d.jpg": png(4, (12, 12)),
    }


def test_legend_letterboxes_to_the_common_side_and_keeps_colour(tmp_path: Path) -> None:
    dataset, report = load_source("legend", write_zip(tmp_path / "fe.zip", legend_files()), CLASSES)
    assert dataset.images.shape == (3, 12, 12, 3)  # 12 = most common side; one colour image -> 3 channels
    assert report.dropped == {"contempt": 1}
    assert labels_by_id(dataset) == {"a": "happy", "b": "sad", "c": "angry"}
    colour = dataset.images[list(dataset.ids).index("c")]
    assert colour[:, :2].max() == 0 and colour[:, 3:9, 0].min() == 200  # 6×10 scaled to 7×12... centred, black bars


def test_legend_rgb_with_equal_channels_counts_as_gray_and_max_side_caps(tmp_path: Path) -> None:
    path = write_tree(tmp_path / "d", legend_files(rgb_gray=True))
    dataset, _ = load_source("legend", path, CLASSES, max_side=10)
    assert dataset.images.shape == (3, 10, 10, 1)


def test_legend_original_repo_layout_and_aliases(tmp_path: Path) -> None:
    files = {name.replace("facial_expressions/legend.csv", "data/legend.csv"): v for name, v in legend_files().items()}
    files = {name.replace("facial_expressions/", ""): v for name, v in files.items()}
    dataset, report = load_source("legend", write_tree(tmp_path / "repo", files), CLASSES, {"contempt": "disgust"})
    assert len(dataset) == 4 and not report.dropped


def test_legend_row_with_a_missing_image_names_it(tmp_path: Path) -> None:
    files = legend_files()
    del files["facial_expressions/images/b.jpg"]
    with pytest.raises(DataError, match=r"legend\.csv:3: image 'b\.jpg' not found"):
        load_source("legend", write_tree(tmp_path / "d", files), CLASSES)


def test_legend_without_an_emotion_column_names_the_columns(tmp_path: Path) -> None:
    files = {"legend.csv": "image,label\na.jpg,happy\n", "images/a.jpg": png(1)}
    with pytest.raises(DataError, match="missing column"):
        load_source("legend", write_tree(tmp_path / "d", files), CLASSES)


# --- imagefolder ------------------------------------------------------------------------------------


def test_imagefolder_flat_classes_under_a_wrapper_folder_with_carving(tmp_path: Path) -> None:
    files = {f"photos/{name}/img{k}.png": png(i * 10 + k) for i, name in enumerate(CLASSES) for k in range(10)}
    dataset, report = load_source(
        "imagefolder", write_tree(tmp_path / "d", files), CLASSES, seed=3, val_fraction=0.2, test_fraction=0.1
    )
    assert report.source_splits == ()
    counts = {split: int((dataset.splits == split).sum()) for split in ("train", "val", "test")}
    assert counts == {"train": 49, "val": 14, "test": 7}
    assert "happy/img3" in set(dataset.ids)


def test_imagefolder_split_folders_become_splits(tmp_path: Path) -> None:
    files = {"train/happy/a.png": png(1), "train/sad/b.png": png(2), "Validation/happy/c.png": png(3)}
    dataset, report = load_source("imagefolder", write_tree(tmp_path / "d", files), CLASSES)
    assert dict(zip(dataset.ids, dataset.splits, strict=True)) == {
        "train/happy/a": "train",
        "train/sad/b": "train",
        "Validation/happy/c": "val",
    }
    assert report.source_splits == ("train", "val")


def test_imagefolder_single_class_folder_is_not_mistaken_for_a_wrapper(tmp_path: Path) -> None:
    dataset, _ = load_source("imagefolder", write_tree(tmp_path / "d", {"happy/a.png": png(1)}), CLASSES)
    assert labels_by_id(dataset) == {"happy/a": "happy"}


# --- imaging and splits -----------------------------------------------------------------------------


def test_letterbox_keeps_aspect_and_pads_black() -> None:
    tall = Image.new("L", (10, 20), 255)
    boxed = np.asarray(letterbox(tall, 8))
    assert boxed.shape == (8, 8)
    assert boxed[:, 0].max() == 0 and boxed[:, -1].max() == 0 and boxed[:, 3:5].min() == 255


def test_stratified_quotas_hit_the_total_and_keep_one_per_class() -> None:
    quotas = stratified_quotas(np.array([4, 4, 4, 1, 100]), 0.1)
    assert quotas.sum() == round(113 * 0.1)
    assert quotas[3] == 0 and quotas[4] == 10


def test_carving_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(3), [100, 50, 20])
    dataset = Dataset(
        images=np.zeros((170, 2, 2, 1), np.uint8),
        labels=labels,
        splits=np.full(170, "train", dtype=object),
        classes=("angry", "happy", "sad"),
        ids=np.array([f"i{k}" for k in range(170)], dtype=object),
    )
    carved = carve_splits(dataset, {"val": 0.1, "test": 0.2}, seed=1)
    for split, fraction in (("val", 0.1), ("test", 0.2)):
        per_class = np.bincount(labels[carved.splits == split], minlength=3)
        assert list(per_class) == [round(100 * fraction), round(50 * fraction), round(20 * fraction)]
    again = carve_splits(dataset, {"val": 0.1, "test": 0.2}, seed=1)
    other = carve_splits(dataset, {"val": 0.1, "test": 0.2}, seed=2)
    assert list(again.splits) == list(carved.splits)
    assert list(other.splits) != list(carved.splits)
