"""Photos and videos as `predict` reads them: files, folders, zips and video files, one frame at a time.

Nothing here stops on a bad input: an unreadable file, a damaged zip or a video that will not open is a
`Frame` whose `error` says why, so a caller reports it beside the rest. Videos are decoded frame by frame
(every `every`-th kept), so memory stays one frame whatever the video's length.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fersynth.config import ReadRules
from fersynth.datasets.archive import IMAGE_SUFFIXES, Tally
from fersynth.datasets.imaging import decode_image, log_pillow_warnings
from fersynth.errors import DataError

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg"})
MAX_SIDE = 2048  # photos are shrunk to this longer side on decoding: faces stay large, memory stays small
MAX_FILE_BYTES = 64 * 2**20  # a photo (or zip member) above this is refused rather than read
# fetch's default bounds, fetch.max_image_pixels among them: a photo declaring more pixels is refused undecoded.
READ_RULES = ReadRules()


@dataclass(frozen=True)
class Frame:
    """One photo, or one kept frame of a video; `pixels` is None when it could not be read (see `error`)."""

    source: str  # the file, or `archive.zip/member`
    pixels: np.ndarray | None  # H×W×C uint8, RGB or grey
    frame: int | None = None  # index in its video
    time: float | None = None  # seconds into its video (None where the video states no frame rate)
    error: str = ""


def read_inputs(paths: Sequence[Path], every: int = 1) -> Iterator[Frame]:
    """Every photo and video frame under `paths`, in the order given (folders and zips sorted by name).

    Pillow's warnings are logged once per reason when the last frame has been read.
    """
    pillow_warnings = Tally()
    for path in paths:
        if path.is_dir():
            for file in sorted(item for item in path.rglob("*") if item.is_file()):
                if file.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                    yield from _read_file(file, every, pillow_warnings)
        elif not path.exists():
            yield Frame(str(path), None, error="no such file or folder")
        else:
            yield from _read_file(path, every, pillow_warnings)
    log_pillow_warnings(pillow_warnings)


def _read_file(path: Path, every: int, pillow_warnings: Tally) -> Iterator[Frame]:
    suffix = path.suffix.lower()
    if suffix == ".zip":
        yield from _read_zip(path, pillow_warnings)
    elif suffix in VIDEO_SUFFIXES:
        yield from video_frames(path, every)
    else:
        try:
            data = _bounded_read(path)
        except OSError as error:
            yield Frame(str(path), None, error=f"unreadable ({error.strerror or error})")
            return
        yield decode_photo(data, str(path), pillow_warnings)


def _bounded_read(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
    return path.read_bytes()


def decode_photo(data: bytes, source: str, pillow_warnings: Tally | None = None) -> Frame:
    """A photo's bytes as an upright RGB or grey frame, or a frame saying why it cannot be read.

    Pillow's warnings are counted in `pillow_warnings`, or logged at once without one.
    """
    counted = Tally() if pillow_warnings is None else pillow_warnings
    try:
        image, _ = decode_image(data, source, MAX_SIDE, READ_RULES, counted)
    except DataError as error:
        return Frame(source, None, error=str(error).removeprefix(f"{source}: "))
    if pillow_warnings is None:
        log_pillow_warnings(counted)
    pixels = np.asarray(image)
    return Frame(source, pixels[:, :, None] if pixels.ndim == 2 else pixels)


def _read_zip(path: Path, pillow_warnings: Tally) -> Iterator[Frame]:
    """The zip's photos, read member by member without extracting (so `../` names cannot escape anywhere)."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        yield Frame(str(path), None, error=f"not a readable zip ({error})")
        return
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        for info in sorted(members, key=lambda member: member.filename):
            source = f"{path}/{info.filename}"
            if Path(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if info.file_size > MAX_FILE_BYTES:
                yield Frame(source, None, error=f"larger than {MAX_FILE_BYTES // 2**20} MiB")
                continue
            try:
                data = archive.read(info)
            except (OSError, zipfile.BadZipFile, EOFError) as error:
                yield Frame(source, None, error=f"unreadable zip member ({error})")
                continue
            yield decode_photo(data, source, pillow_warnings)


def video_frames(path: Path, every: int = 1) -> Iterator[Frame]:
    """Every `every`-th frame of a video (RGB), with its index and time; one frame in memory at a time."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        yield Frame(str(path), None, error="not a readable video")
        return
    try:
        rate = capture.get(cv2.CAP_PROP_FPS)
        index = 0
        while True:
            # grab() skips a frame without converting it: the frames between samples cost no colour conversion
            if not capture.grab():
                break
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if ok:
                    time = round(index / rate, 3) if rate > 0 else None
                    yield Frame(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index, time)
            index += 1
        if index == 0:
            yield Frame(str(path), None, error="a video without a readable frame")
    finally:
        capture.release()


def safe_file_name(source: str, frame: int | None) -> str:
    """A flat file name for an annotated copy of `source` (zip members and folders hold `/` and `..`)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._") or "image"
    return f"{stem}.png" if frame is None else f"{stem}_f{frame:06d}.png"
