"""An image's decoded size is bounded from its header (fetch.max_image_pixels) before anything is decoded, in a
folder or a zip, for fetch and predict alike; Pillow's warnings become counted messages of ours."""

from __future__ import annotations

import io
import logging
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersynth.config import CANONICAL_CLASSES, ReadRules
from fersynth.datasets.archive import Tally
from fersynth.datasets.imaging import decode_image
from fersynth.datasets.sources import load_source
from fersynth.errors import DataError
from fersynth.media import decode_photo

from .helpers import as_folder_or_zip, encoded, png, png_claiming


def decode(data: bytes, max_image_pixels: int, max_side: int = 256, box: tuple[int, int, int, int] | None = None):
    return decode_image(data, "x.png", max_side, ReadRules(max_image_pixels=max_image_pixels), Tally(), box)


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_a_png_bomb_is_refused_on_its_header_naming_file_size_and_key(tmp_path: Path, kind: str) -> None:
    """The issue's bomb: 13,300² RGBA in under 1 MB. Its pixel data is cut short, so only the header can refuse
    it by the key; decoding would fail on the missing data instead (after allocating 700 MB)."""
    files = {f"happy/{index}.png": png(index) for index in range(2)} | {"sad/bomb.png": png_claiming(13_300, 13_300)}
    path = as_folder_or_zip(tmp_path, files, kind)
    with pytest.raises(DataError) as refused:
        load_source("imagefolder", path, CANONICAL_CLASSES)
    message = str(refused.value)
    assert "sad/bomb.png" in message and "13,300×13,300" in message and "RGBA" in message
    assert "707,560,000" in message and "fetch.max_image_pixels=50,000,000" in message


@pytest.mark.parametrize(
    ("pixels", "bytes_decoded"),
    [
        (np.zeros((8, 8), np.uint8), 64),
        (np.zeros((8, 8, 4), np.uint8), 256),  # every band counts
        (np.zeros((8, 8), np.uint16), 128),  # a 16-bit band counts double
    ],
    ids=["grey", "RGBA", "16-bit grey"],
)
def test_the_bound_counts_bands_and_bit_depth(pixels: np.ndarray, bytes_decoded: int) -> None:
    data = encoded(pixels)
    image, size = decode(data, max_image_pixels=bytes_decoded)
    assert size == (8, 8) and image.size == (8, 8)
    with pytest.raises(DataError, match=f"{bytes_decoded:,} bytes decoded.*fetch.max_image_pixels={bytes_decoded - 1}"):
        decode(data, max_image_pixels=bytes_decoded - 1)


def test_a_large_jpeg_counts_at_the_scale_it_decodes_to_unless_cropped() -> None:
    """2000² RGB is 12 MB in full; shrunk to a side of 256 JPEG decodes at 1/4 (500², 750 KB). A face box needs the
    file's own pixel grid, so a cropped JPEG decodes, and counts, in full."""
    data = encoded(np.full((2000, 2000, 3), 90, np.uint8), "JPEG")
    image, size = decode(data, max_image_pixels=10**6)
    assert size == (2000, 2000) and max(image.size) == 256
    with pytest.raises(DataError, match=r"2,000×2,000 pixels of mode RGB, 12,000,000 bytes"):
        decode(data, max_image_pixels=10**6, box=(0, 0, 100, 100))


def test_pillows_own_limit_is_reported_as_a_refusal_naming_the_file() -> None:
    with pytest.raises(DataError, match=r"x.png: Image size \(10000000000 pixels\).*Pillow's own limit, which"):
        decode(png_claiming(100_000, 100_000), max_image_pixels=10**9)


def corrupt_exif_jpeg() -> bytes:
    """A JPEG whose EXIF orientation tag holds two values: Pillow warns while exif_transpose reads it."""
    entry = struct.pack("<HHIHH", 0x0112, 3, 2, 1, 1)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_pillows_warnings_are_counted_once_per_reason_not_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = {f"{name}/{index}.jpg": corrupt_exif_jpeg() for name in ("happy", "sad") for index in range(3)}
    path = as_folder_or_zip(tmp_path, files, "folder")
    with warnings.catch_warnings(record=True) as escaped, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        dataset, _ = load_source("imagefolder", path, CANONICAL_CLASSES)
    assert len(dataset) == 6
    assert escaped == []
    pillow = [record.getMessage() for record in caplog.records if "Pillow warned" in record.getMessage()]
    assert pillow == [
        "Pillow warned about 6 image(s): Metadata Warning, tag N had too many entries: N, expected N; "
        f"e.g. {path / 'happy' / '0.jpg'}"
    ]


def test_predict_reads_photos_within_the_default_bound(caplog: pytest.LogCaptureFixture) -> None:
    refused = decode_photo(png_claiming(13_300, 13_300), "upload.png")
    assert refused.pixels is None and "fetch.max_image_pixels=50,000,000" in refused.error
    with warnings.catch_warnings(record=True) as escaped, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        frame = decode_photo(corrupt_exif_jpeg(), "photo.jpg")
    assert frame.pixels is not None and escaped == []
    assert "Pillow warned about 1 image(s)" in caplog.text and "photo.jpg" in caplog.text
