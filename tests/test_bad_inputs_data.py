"""The data-reading half of the bad-input corpus, each case through the real `fersynth fetch`.

Every input is built here (zips with zipfile, images with PIL and numpy, FIFOs, links to devices):
no binary file is committed. A refused case must exit non-zero naming the culprit without a
traceback, leave the outputs of an earlier good fetch into the same paths byte-for-byte intact, and
leave no temporary file. The inputs that used to come out silently wrong (16-bit, float, alpha, tiny
images) must now come out right, which the second half checks pixel by pixel.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from fersynth.config import CANONICAL_CLASSES
from fersynth.datasets.format import read_dataset

from .bad_inputs import (
    BOMB_MEMBER,
    assert_refused,
    bomb_workspace,
    leftovers,
    run_command,
    run_measured,
    snapshot,
    write_zip_bomb,
)
from .helpers import png, png_claiming, write_tree, write_zip

Params = dict[str, Any]
Files = Mapping[str, bytes | str]

OUTPUTS = ("fetched", "fetch.json", "near_duplicates.png")


def good_images() -> dict[str, bytes]:
    """Two train images per class and one each in val and test: the least fetch accepts, 8×8 grey."""
    layout = [("train", 0), ("train", 1), ("val", 2), ("test", 3)]
    return {
        f"{split}/{name}/{split}{k}.png": png(10 * c + k)
        for c, name in enumerate(CANONICAL_CLASSES)
        for split, k in layout
    }


def fetch_arguments(root: Path) -> list[str]:
    out, diagnostics, near_duplicates = (str(root / name) for name in OUTPUTS)
    return [
        "fetch",
        *("--out", out, "--diagnostics", diagnostics),
        *("--near-duplicates", near_duplicates, "--params", str(root / "params.yaml")),
    ]


def run_fetch(root: Path, params: Params) -> Any:
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    return run_command(fetch_arguments(root))


def fetch_params(path: Path, source: str = "imagefolder", **fetch: Any) -> Params:
    return {"fetch": {"source": source, "path": str(path), **fetch}}


# --- building bad inputs ---------------------------------------------------------------------------------


def encoded(image: Image.Image | np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def folder(raw: Path, extra: Files, **fetch: Any) -> Params:
    """The good images plus `extra` in a folder under data/raw."""
    return fetch_params(write_tree(raw / "d", {**good_images(), **extra}), **fetch)


def zipped(raw: Path, extra: Files, **fetch: Any) -> Params:
    return fetch_params(write_zip(raw / "d.zip", {**good_images(), **extra}), **fetch)


def patched_zip(raw: Path, member: str, field: int, value: int, width: int = 2, **fetch: Any) -> Params:
    """A good zip with `member`'s central-directory entry changed at byte `field` (8: flags, 10: method,
    24: inflated size): what zipfile trusts when it opens a member."""
    params = zipped(raw, {member: png(99)}, **fetch)
    path = raw / "d.zip"
    data = bytearray(path.read_bytes())
    entry = data.rindex(member.encode()) - 46  # the name's last occurrence is its central-directory entry
    assert data[entry : entry + 4] == b"PK\x01\x02"
    data[entry + field : entry + field + width] = value.to_bytes(width, "little")
    path.write_bytes(bytes(data))
    return params


def damaged_member_data(raw: Path, member: str, compression: int, damage: Callable[[bytes], bytes]) -> Params:
    """A good zip whose `member` (compressed with `compression`) has its stored bytes replaced by `damage`'s."""
    path = raw / "d.zip"
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in {**good_images(), member: png(99, (32, 32))}.items():
            archive.writestr(name, content)
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start : start + info.compress_size] = damage(bytes(data[start : start + info.compress_size]))
    path.write_bytes(bytes(data))
    return fetch_params(path)


def overwritten(keep: int) -> Callable[[bytes], bytes]:
    """Damage that keeps the first `keep` bytes of a member's stream and its length (the zip's offsets hold)."""
    return lambda data: data[:keep] + b"\xff" * (len(data) - keep)


def duplicate_member(raw: Path) -> Params:
    path = write_zip(raw / "d.zip", good_images())
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as archive:
        archive.writestr("train/happy/train0.png", png(98))
    return fetch_params(path)


def with_special_file(raw: Path, name: str, make: Callable[[Path], None], **fetch: Any) -> Params:
    """The good folder plus `name` made by `make` (a FIFO, a symlink) rather than written."""
    params = folder(raw, {}, **fetch)
    make(raw / "d" / name)
    return params


def special_fetch_path(raw: Path, name: str, make: Callable[[Path], None], source: str = "imagefolder") -> Params:
    raw.mkdir(parents=True, exist_ok=True)
    make(raw / name)
    return fetch_params(raw / name, source)


def link_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def huge_png_header() -> bytes:
    """A PNG that claims 100,000×100,000 pixels: PIL refuses it as a decompression bomb before decoding."""
    good = encoded(np.zeros((8, 8), np.uint8))
    ihdr_at = good.index(b"IHDR")
    header = b"IHDR" + (100_000).to_bytes(4, "big") * 2 + good[ihdr_at + 12 : ihdr_at + 17]
    crc = zipfile.crc32(header).to_bytes(4, "big")
    return good[:ihdr_at] + header + crc + good[ihdr_at + 21 :]


def fer_csv(raw: Path, text: bytes, inside_zip: bool = False, header: bytes = b"emotion,pixels,Usage") -> Params:
    """A FER2013 CSV (`header` and one good 4×4 row, then `text`) as a file, or inside a zip."""
    content = header + b"\n3," + b" ".join([b"7"] * 16) + b",Training\n" + text
    raw.mkdir(parents=True, exist_ok=True)
    if inside_zip:
        return fetch_params(write_zip(raw / "fer.zip", {"fer2013.csv": content}), "fer2013_csv")
    (raw / "fer.csv").write_bytes(content)
    return fetch_params(raw / "fer.csv", "fer2013_csv")


def legend(raw: Path, text: bytes) -> Params:
    files = {f"images/{name}.png": png(c) for c, name in enumerate(CANONICAL_CLASSES)}
    return fetch_params(write_tree(raw / "legend", {**files, "legend.csv": text}), "legend")


def affectnet_box(raw: Path, box: str) -> Params:
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,expression\n"
    files = {
        "Manually_Annotated_Images/1/a.png": png(1),
        "Manually_Annotated_file_lists/training.csv": header + f"1/a.png,{box},1\n",
    }
    return fetch_params(write_tree(raw / "affectnet", files), "affectnet")


def rafdb_labels(raw: Path, text: bytes) -> Params:
    files = {"EmoLabel/list_patition_label.txt": text, "Image/aligned/train_00001_aligned.jpg": png(1)}
    return fetch_params(write_tree(raw / "rafdb", files), "rafdb")


def with_params(**sections: Any) -> Callable[[Path], Params]:
    """A good fetch with other params sections: refused while the params are read, before any data."""
    return lambda raw: {**folder(raw, {}), **sections}


def extra_test_set(name: str, **spec: Any) -> Callable[[Path], Params]:
    return with_params(evaluate={"extra_test_sets": {name: {"source": "demo", **spec}}})


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Params]  # writes the input under data/raw (the argument), returns the params
    culprits: tuple[str, ...]  # what the message must name


def case(build: Callable[[Path], Params], *culprits: str) -> Case:
    return Case(build, culprits)


MEMBER = "train/happy/bad.png"
BOMB_64_MIB = 64 * 2**20

ARCHIVES: dict[str, Case] = {
    "zip bomb (ratio)": case(
        lambda raw: fetch_params(write_zip_bomb(raw / "d.zip", MEMBER, BOMB_64_MIB, good_images())),
        f"d.zip:{MEMBER}",
        "fetch.max_compression_ratio",
    ),
    "zip member above max_file_bytes": case(
        lambda raw: zipped(raw, {MEMBER: png(1, (64, 64))}, max_file_bytes=2000), f"d.zip:{MEMBER}", "max_file_bytes"
    ),
    "folder file above max_file_bytes": case(
        lambda raw: folder(raw, {MEMBER: png(1, (64, 64))}, max_file_bytes=2000), f"d/{MEMBER}", "max_file_bytes"
    ),
    "file that grows past its stat size": case(
        lambda raw: with_special_file(raw, MEMBER, link_to("/proc/self/status"), max_file_bytes=200),
        f"d/{MEMBER}",
        "max_file_bytes=200",
    ),
    "zip member larger than declared": case(
        lambda raw: patched_zip(raw, MEMBER, 24, 10, width=4), f"d.zip:{MEMBER}", "CRC"
    ),
    "bad CRC": case(
        lambda raw: damaged_member_data(raw, MEMBER, zipfile.ZIP_STORED, lambda data: data[:-1] + b"?"),
        f"d.zip:{MEMBER}",
        "CRC",
    ),
    "corrupt deflate stream": case(
        lambda raw: damaged_member_data(raw, MEMBER, zipfile.ZIP_DEFLATED, overwritten(keep=0)),
        f"d.zip:{MEMBER}",
        "damaged",
    ),
    "corrupt lzma stream": case(
        lambda raw: damaged_member_data(raw, MEMBER, zipfile.ZIP_LZMA, overwritten(keep=4)),
        f"d.zip:{MEMBER}",
        "damaged",
    ),
    "unsupported compression (deflate64)": case(
        lambda raw: patched_zip(raw, MEMBER, 10, 9), f"d.zip:{MEMBER}", "compression method"
    ),
    "encrypted member": case(lambda raw: patched_zip(raw, MEMBER, 8, 1), f"d.zip:{MEMBER}", "encrypted"),
    "duplicate member name": case(duplicate_member, "d.zip:train/happy/train0.png", "more than once"),
    "not a zip": case(
        lambda raw: fetch_params(write_tree(raw, {"d.zip": os.urandom(3000)}) / "d.zip"), "d.zip", "readable .zip"
    ),
    "zip-slip member": case(lambda raw: zipped(raw, {"../evil.png": png(1)}), "'../evil.png'"),
    "FIFO in a folder": case(lambda raw: with_special_file(raw, MEMBER, os.mkfifo), f"d/{MEMBER}", "FIFO"),
    "link to /dev/zero": case(
        lambda raw: with_special_file(raw, MEMBER, link_to("/dev/zero")), f"d/{MEMBER}", "character device"
    ),
    "dangling link": case(
        lambda raw: with_special_file(raw, MEMBER, link_to("/nonexistent/x.png")), f"d/{MEMBER}", "does not exist"
    ),
    "fetch.path is a FIFO": case(lambda raw: special_fetch_path(raw, "pipe.zip", os.mkfifo), "pipe.zip", "FIFO"),
    "CSV path links to /dev/zero": case(
        lambda raw: special_fetch_path(raw, "zero.csv", link_to("/dev/zero"), "fer2013_csv"), "zero.csv", "device"
    ),
}

IMAGES: dict[str, Case] = {
    "truncated PNG": case(lambda raw: folder(raw, {MEMBER: png(1)[:40]}), f"d/{MEMBER}", "not a readable image"),
    "random bytes as JPEG": case(
        lambda raw: zipped(raw, {"train/sad/x.jpg": os.urandom(500)}), "d.zip:train/sad/x.jpg", "not a readable"
    ),
    "PNG claiming 10^10 pixels": case(lambda raw: folder(raw, {MEMBER: huge_png_header()}), f"d/{MEMBER}"),
    "float TIFF beyond 0..1": case(
        lambda raw: folder(raw, {"train/sad/f.tif": encoded(np.full((8, 8), 2.0, np.float32), "TIFF")}),
        "d/train/sad/f.tif",
        "outside the 0..1 ",
    ),
    "negative 32-bit TIFF": case(
        lambda raw: folder(raw, {"train/sad/i.tif": encoded(np.full((8, 8), -5, np.int32), "TIFF")}),
        "d/train/sad/i.tif",
        "outside",
    ),
    "above max_total_pixels": case(
        lambda raw: folder(raw, {}, max_total_pixels=1000), "fetch.max_total_pixels=1,000", "pixels"
    ),
    "PNG declaring 13,300² RGBA": case(
        lambda raw: folder(raw, {MEMBER: png_claiming(13_300, 13_300)}),
        f"d/{MEMBER}",
        "13,300×13,300",
        "fetch.max_image_pixels=50,000,000",
    ),
    "PNG declaring 13,300² RGBA in a zip": case(
        lambda raw: zipped(raw, {MEMBER: png_claiming(13_300, 13_300)}),
        f"d.zip:{MEMBER}",
        "13,300×13,300",
        "fetch.max_image_pixels=50,000,000",
    ),
    "16-bit PNG declaring 9,400²": case(
        lambda raw: folder(raw, {MEMBER: png_claiming(9_400, 9_400, bit_depth=16, color_type=0)}),
        f"d/{MEMBER}",
        "9,400×9,400 pixels of mode I;16",
        "fetch.max_image_pixels",
    ),
    "above max_image_pixels": case(
        lambda raw: folder(raw, {}, max_image_pixels=63),
        "d/test/angry/test3.png",
        "64 bytes",
        "fetch.max_image_pixels=63",
    ),
}

FER_LINE = "fer.csv:3"
LABELS_AND_LAYOUTS: dict[str, Case] = {
    "legend.csv in Latin-1": case(
        lambda raw: legend(raw, b"image,emotion\nangry.png,angry\nsad.png,triste \xe9\n"), "legend.csv:3", "UTF-8"
    ),
    "legend.csv empty": case(lambda raw: legend(raw, b""), "legend.csv", "missing column"),
    "FER2013 CSV in Latin-1": case(lambda raw: fer_csv(raw, b"\xe9,1 2,Training\n"), FER_LINE, "UTF-8"),
    "FER2013 CSV in a zip, Latin-1": case(
        lambda raw: fer_csv(raw, b"\xe9,1 2,Training\n", inside_zip=True), "fer.zip:fer2013.csv:3", "UTF-8"
    ),
    "pixel past int64": case(lambda raw: fer_csv(raw, b"3," + b"9" * 30 + b",Training\n"), FER_LINE, "0..255"),
    "pixel 256": case(lambda raw: fer_csv(raw, b"3," + b" ".join([b"256"] * 16) + b",Training\n"), FER_LINE),
    "Arabic-Indic digit emotion": case(lambda raw: fer_csv(raw, "٣,1 2 3 4,Training\n".encode()), FER_LINE, "emotion"),
    "superscript digit emotion": case(lambda raw: fer_csv(raw, "²,1 2 3 4,Training\n".encode()), FER_LINE, "emotion"),
    "pixel count not square": case(lambda raw: fer_csv(raw, b"3,1 2 3,Training\n"), FER_LINE, "square"),
    "rows of two sizes": case(lambda raw: fer_csv(raw, b"3," + b"1 " * 24 + b"1,Training\n"), FER_LINE, "25"),
    "missing pixels column": case(
        lambda raw: fetch_params(
            write_tree(raw, {"fer.csv": "emotion,Usage\n3,Training\n"}) / "fer.csv", "fer2013_csv"
        ),
        "fer.csv",
        "pixels",
    ),
    "CSV field past csv's limit": case(
        lambda raw: fer_csv(raw, b"3," + b"1 " * 80_000 + b"1,Training\n"), FER_LINE, "field larger"
    ),
    "AffectNet box of infinity": case(lambda raw: affectnet_box(raw, "0,0,inf,10"), "training.csv:2", "face box"),
    "RAF-DB labels in Latin-1": case(
        lambda raw: rafdb_labels(raw, b"train_00001.jpg 4\ntrain_\xe9.jpg 5\n"), "list_patition_label.txt:2", "UTF-8"
    ),
}

PARAMS: dict[str, Case] = {
    "extra test set name with newline": case(extra_test_set("a\nb"), "'evaluate.extra_test_sets.a\\nb'"),
    "extra test set name with space": case(extra_test_set("my set"), "'evaluate.extra_test_sets.my set'"),
    "extra test set name with separator": case(extra_test_set("../x"), "'evaluate.extra_test_sets.../x'"),
    "extra test set name with leading dot": case(extra_test_set(".hidden"), "'evaluate.extra_test_sets..hidden'"),
    "extra test set named test": case(extra_test_set("test"), "'evaluate.extra_test_sets.test'"),
    "extra test set seed negative": case(extra_test_set("kdef", seed=-5), "evaluate.extra_test_sets.kdef.seed"),
    "common.seed negative": case(with_params(common={"seed": -1}), "common.seed"),
    "common.seed past 31 bits": case(with_params(common={"seed": 2**31}), "common.seed"),
    "train.seed past 32 bits": case(with_params(train={"seed": 2**40}), "train.seed"),
    "fetch.min_side 0": case(lambda raw: folder(raw, {}, min_side=0), "fetch.min_side"),
    "fetch.alpha_background 300": case(lambda raw: folder(raw, {}, alpha_background=300), "fetch.alpha_background"),
    "fetch.max_compression_ratio below 1": case(
        lambda raw: folder(raw, {}, max_compression_ratio=0.5), "fetch.max_compression_ratio"
    ),
    "fetch.max_image_pixels 0": case(lambda raw: folder(raw, {}, max_image_pixels=0), "fetch.max_image_pixels"),
    "fetch.max_image_pixels past 10^9": case(
        lambda raw: folder(raw, {}, max_image_pixels=10**9 + 1), "fetch.max_image_pixels"
    ),
}

CORPUS = {**ARCHIVES, **IMAGES, **LABELS_AND_LAYOUTS, **PARAMS}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outputs of one good fetch, copied under every case: a failed run must leave them as they are."""
    root = tmp_path_factory.mktemp("good")
    outcome = run_fetch(root, fetch_params(write_tree(root / "data" / "raw" / "good", good_images())))
    assert outcome.exit_code == 0, outcome.output
    return root


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs, /dev/zero and /proc/self/status")
@pytest.mark.parametrize("case", CORPUS.values(), ids=CORPUS.keys())
def test_a_bad_input_is_refused_by_name_and_loses_nothing(case: Case, good_run: Path, tmp_path: Path) -> None:
    shutil.copytree(good_run, tmp_path, dirs_exist_ok=True)
    outputs = [tmp_path / name for name in OUTPUTS]
    before = snapshot(*outputs)
    outcome = run_fetch(tmp_path, case.build(tmp_path / "data" / "raw"))
    assert_refused(outcome, *case.culprits)
    assert snapshot(*outputs) == before
    assert leftovers(tmp_path) == []


# --- inputs that used to come out silently wrong -------------------------------------------------------------


def grey_with_alpha(mode: str) -> Image.Image:
    """8×8 grey 200, the right half fully transparent."""
    alpha = np.zeros((8, 8), np.uint8)
    alpha[:, :4] = 255
    grey = np.full((8, 8), 200, np.uint8)
    planes = [grey, alpha] if mode == "LA" else [grey, grey, grey, alpha]
    return Image.fromarray(np.stack(planes, axis=-1), mode)


def palette_with_transparency() -> bytes:
    indexes = np.zeros((8, 8), np.uint8)
    indexes[:, :4] = 1
    image = Image.fromarray(indexes, "P")
    image.putpalette([0, 0, 0, 200, 200, 200] + [0] * 762)
    return encoded(image, transparency=0)


def pgm_16_bit(value: int) -> bytes:
    return b"P5\n8 8\n65535\n" + np.full((8, 8), value, ">u2").tobytes()


HALF_TRANSPARENT = np.array([[200] * 4 + [0] * 4] * 8)  # grey 200 on the left, the black background on the right


@dataclass(frozen=True)
class Decoded:
    file: bytes
    expected: np.ndarray | int  # the 8×8 pixels the image must come out as (one channel)
    fetch: Mapping[str, Any] | None = None


DECODED: dict[str, Decoded] = {
    "16-bit PNG scaled, not clipped": Decoded(encoded(np.full((8, 8), 4000, np.uint16)), round(4000 / 257)),
    "16-bit TIFF scaled": Decoded(encoded(np.full((8, 8), 65535, np.uint16), "TIFF"), 255),
    "16-bit PGM scaled": Decoded(pgm_16_bit(32896), 128),
    "float TIFF in 0..1 scaled": Decoded(encoded(np.full((8, 8), 0.25, np.float32), "TIFF"), 64),
    "grey LA stays grey, composited": Decoded(encoded(grey_with_alpha("LA")), HALF_TRANSPARENT),
    "grey RGBA stays grey, composited": Decoded(encoded(grey_with_alpha("RGBA")), HALF_TRANSPARENT),
    "palette transparency composited": Decoded(palette_with_transparency(), HALF_TRANSPARENT),
    "alpha onto the stated background": Decoded(
        encoded(grey_with_alpha("LA")), np.where(HALF_TRANSPARENT == 0, 128, 200), {"alpha_background": 128}
    ),
}


@pytest.mark.parametrize("decoded", DECODED.values(), ids=DECODED.keys())
def test_deep_and_transparent_images_come_out_right(decoded: Decoded, tmp_path: Path) -> None:
    params = folder(tmp_path / "data" / "raw", {"train/happy/special.png": decoded.file}, **(decoded.fetch or {}))
    outcome = run_fetch(tmp_path, params)
    assert outcome.exit_code == 0 and outcome.escaped is None, outcome.output
    dataset = read_dataset(tmp_path / "fetched", CANONICAL_CLASSES)
    assert dataset.images.shape[1:] == (8, 8, 1)  # neither depth nor alpha added a channel
    special = dataset.images[list(dataset.ids).index("train/happy/special"), ..., 0]
    np.testing.assert_array_equal(special, np.broadcast_to(decoded.expected, (8, 8)))


def test_a_tiny_image_is_dropped_counted_and_named(tmp_path: Path) -> None:
    params = folder(tmp_path / "data" / "raw", {"train/happy/tiny.png": png(5, (2, 3))})
    outcome = run_fetch(tmp_path, params)
    assert outcome.exit_code == 0, outcome.output
    assert "fetch.min_side=4" in outcome.output and "train/happy/tiny.png" in outcome.output
    metrics = json.loads((tmp_path / "fetch.json").read_text())
    assert metrics["dropped_too_small"] == 1 and metrics["dropped_total"] == 1
    assert "train/happy/tiny" not in set(read_dataset(tmp_path / "fetched", CANONICAL_CLASSES).ids)


def test_files_not_read_are_counted_and_named(tmp_path: Path) -> None:
    """A .jfif is read (it is a JPEG); a symlinked folder, a hidden file and a file of no image's extension are
    each warned about once, naming an example, and counted in the diagnostics."""
    raw = tmp_path / "data" / "raw"
    elsewhere = write_tree(raw / "elsewhere", {"x.png": png(90)})
    jfif = encoded(np.full((8, 8), 77, np.uint8), "JPEG")
    params = folder(raw, {"train/happy/web.jfif": jfif, "train/.DS_Store": b"junk", "README.md": "# faces"})
    (raw / "d" / "train" / "sad" / "more").symlink_to(elsewhere)
    outcome = run_fetch(tmp_path, params)
    assert outcome.exit_code == 0, outcome.output
    for named in ("symlinkedfolders", "train/sad/more", "hiddenfiles", "train/.DS_Store", "README.md"):
        assert named in outcome.output
    metrics = json.loads((tmp_path / "fetch.json").read_text())
    skipped = {key: value for key, value in metrics.items() if key.startswith("skipped_")}
    assert skipped == {
        "skipped_hidden": 1,
        "skipped_symlinked_folder": 1,
        "skipped_unknown_extension": 1,
        "skipped_unused_image": 0,
    }
    assert "train/happy/web" in set(read_dataset(tmp_path / "fetched", CANONICAL_CLASSES).ids)


def test_links_to_regular_files_read_as_those_files(tmp_path: Path) -> None:
    """DVC checks data out as links into its cache: a link to a regular file, folder member or the zip itself,
    is that file."""
    cache = write_tree(tmp_path / ".dvc" / "cache", {"ab/cdef": png(77), "01/2345": b""})
    write_zip(cache / "01" / "2345", good_images())
    raw = tmp_path / "data" / "raw"
    linked_member = folder(raw, {})
    (raw / "d" / "train" / "happy" / "linked.png").symlink_to(cache / "ab" / "cdef")
    (raw / "linked.zip").symlink_to(cache / "01" / "2345")
    for params, member_count in ((linked_member, len(good_images()) + 1), (fetch_params(raw / "linked.zip"), 28)):
        outcome = run_fetch(tmp_path, params)
        assert outcome.exit_code == 0, outcome.output
        assert len(read_dataset(tmp_path / "fetched", CANONICAL_CLASSES)) == member_count


# --- bounded memory ------------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_zip_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """1 GiB of zeros packed into about 1 MB: the code before ReadRules read it whole (2.1 GiB peak)."""
    measured = run_measured(bomb_workspace(tmp_path, 2**30), cwd=tmp_path)
    assert measured.exit_code == 1, measured.output
    assert f"bomb.zip:{BOMB_MEMBER}" in "".join(measured.output.split())
    assert "Traceback" not in measured.output
    assert measured.peak_mib < 600, f"peak {measured.peak_mib:.0f} MiB"
