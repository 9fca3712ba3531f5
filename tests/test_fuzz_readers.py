"""Property tests of the readers that meet untrusted bytes: whatever they are given, the answer is a
DataError naming the input or a valid result (uint8 pixels of the promised shape), never another
exception. Examples are derandomized so CI sees the same ones every run.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fersynth.config import CANONICAL_CLASSES, ReadRules
from fersynth.datasets.archive import FileTree, Tally
from fersynth.datasets.imaging import decode_image
from fersynth.datasets.sources import load_source
from fersynth.errors import DataError

from .helpers import png

FUZZ = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MAX_SIDE = 32


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    return exif


def _valid_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    return {
        "png grey": png(1, (9, 7)),
        "png rgba": encoded(rgb.convert("RGBA"), "PNG"),
        "png 16-bit": encoded(Image.fromarray(rng.integers(0, 65536, (6, 6), dtype=np.uint16)), "PNG"),
        "png palette": encoded(rgb.convert("P"), "PNG", transparency=3),
        "jpeg": encoded(rgb, "JPEG", quality=80),
        "jpeg exif": encoded(rgb, "JPEG", exif=rotated_exif()),
        "gif": encoded(rgb.convert("P"), "GIF"),
        "tiff float": encoded(Image.fromarray(rng.random((5, 5), dtype=np.float32)), "TIFF"),
        "bmp": encoded(rgb, "BMP"),
        "webp": encoded(rgb, "WEBP"),
    }


VALID_IMAGES = _valid_images()


def mutated(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    """`data` with bytes overwritten at (position mod length, value) and cut to `cut` bytes if given."""
    damaged = bytearray(data)
    for position, value in edits:
        damaged[position % len(damaged)] = value
    return bytes(damaged[:cut])


EDITS = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6)


def assert_decoded_or_refused(data: bytes) -> None:
    try:
        image, (width, height) = decode_image(data, "fuzz.png", MAX_SIDE, ReadRules(), Tally())
    except DataError as error:
        assert "fuzz.png" in str(error)
        return
    assert image.mode in ("L", "RGB")
    assert 1 <= max(image.size) <= MAX_SIDE and width >= 1 and height >= 1
    pixels = np.asarray(image)
    assert pixels.dtype == np.uint8 and pixels.shape[:2] == (image.height, image.width)


@FUZZ
@given(st.binary(max_size=2048))
def test_decode_image_on_arbitrary_bytes(data: bytes) -> None:
    assert_decoded_or_refused(data)


@FUZZ
@given(st.sampled_from(sorted(VALID_IMAGES)), EDITS, st.none() | st.integers(0, 4096))
def test_decode_image_on_damaged_images(kind: str, edits: list[tuple[int, int]], cut: int | None) -> None:
    assert_decoded_or_refused(mutated(VALID_IMAGES[kind], edits, cut))


# --- CSV and legend readers -------------------------------------------------------------------------------

RULES = ReadRules(max_file_bytes=2**20)


def assert_loaded_or_refused(source: str, path: Path) -> None:
    try:
        dataset, _ = load_source(source, path, CANONICAL_CLASSES, max_side=MAX_SIDE, rules=RULES)
    except DataError as error:
        assert path.name in str(error) or str(path) in str(error)
        return
    assert dataset.images.dtype == np.uint8 and dataset.images.ndim == 4
    assert len(dataset) == len(dataset.labels) == len(dataset.ids) > 0
    assert dataset.images.shape[1] == dataset.images.shape[2] <= MAX_SIDE
    assert dataset.images.shape[3] in (1, 3)


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


PIXELS = st.lists(st.integers(-2, 300), min_size=0, max_size=20).map(lambda values: " ".join(map(str, values)))
FER_ROW = st.lists(
    st.one_of(st.sampled_from(["0", "3", "6", "9", "٣", " 4 ", ""]), st.text(max_size=4)), min_size=1, max_size=1
).flatmap(
    lambda emotion: st.tuples(
        st.just(emotion[0]),
        PIXELS | st.sampled_from([" ".join(["5"] * 16), " ".join(["9" * 25] * 4)]) | st.text(max_size=12),
        st.sampled_from(["Training", "PublicTest", "PrivateTest", "", "Dev"]) | st.text(max_size=6),
    )
)
FER_CSV = st.one_of(
    st.binary(max_size=600),
    st.lists(FER_ROW.map(list), max_size=6).map(lambda rows: csv_bytes([["emotion", "pixels", "Usage"], *rows])),
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(FER_CSV)
def test_fer2013_csv_reader_on_arbitrary_files(workspace: Path, content: bytes) -> None:
    path = workspace / "fer2013.csv"
    path.write_bytes(content)
    assert_loaded_or_refused("fer2013_csv", path)


LEGEND_IMAGES = {"a.png": png(1), "b.jpg": png(2, (12, 9)), "c.png": png(3, (5, 5), "RGB")}
LEGEND_ROW = st.tuples(
    st.sampled_from([*LEGEND_IMAGES, "missing.png", ""]) | st.text(max_size=8),
    st.sampled_from(["happy", "SADNESS", "contempt", "", "Anger"]) | st.text(max_size=8),
)
LEGEND_CSV = st.one_of(
    st.binary(max_size=400),
    st.lists(LEGEND_ROW.map(list), max_size=5).map(lambda rows: csv_bytes([["image", "emotion"], *rows])),
)


@FUZZ
@given(LEGEND_CSV)
def test_legend_reader_on_arbitrary_files(workspace: Path, content: bytes) -> None:
    root = workspace / "legend"
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, data in LEGEND_IMAGES.items():
        (root / "images" / name).write_bytes(data)
    (root / "legend.csv").write_bytes(content)
    assert_loaded_or_refused("legend", root)


# --- zip archives -----------------------------------------------------------------------------------------

ZIP_FILES = {"train/happy/a.png": png(1), "train/sad/b.png": png(2), "legend.csv": b"image,emotion\na.png,happy\n"}


def _zip_bytes(compression: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in ZIP_FILES.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))  # not now: the same bytes every run
            archive.writestr(info, content, compress_type=compression)
    return buffer.getvalue()


VALID_ZIPS = {method: _zip_bytes(method) for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA)}


@FUZZ
@given(st.sampled_from(sorted(VALID_ZIPS)), EDITS, st.none() | st.integers(0, 2048))
@example(zipfile.ZIP_DEFLATED, [(440, 64)], None)  # "zip file version 6.4": NotImplementedError from ZipFile()
def test_file_tree_on_damaged_zips(workspace: Path, method: int, edits: list[tuple[int, int]], cut: int | None) -> None:
    """Any damage is a DataError naming the zip; a member read despite it is what was written (the CRC holds)."""
    path = workspace / "fuzz.zip"
    path.write_bytes(mutated(VALID_ZIPS[method], edits, cut))
    try:
        with FileTree(path, RULES) as tree:
            contents = {name: tree.read(name) for name in tree.names}
    except DataError as error:
        assert "fuzz.zip" in str(error)
        return
    for name, content in contents.items():
        assert content == ZIP_FILES.get(name, content)
