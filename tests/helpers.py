"""Helpers that several test modules share, so that no test module imports another (fixtures are in conftest.py).

Image files and the trees and zips that hold them, the KDEF layout, synthetic GAN rows, a calibrate stage run on
tiny inputs, and a stand-in for MTCNN.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from fersynth.config import CANONICAL_CLASSES, ClassifierConfig, FaceAlignConfig
from fersynth.datasets.format import Dataset, write_dataset
from fersynth.datasets.papers import KDEF_ANGLES, KDEF_CODES
from fersynth.models import build_classifier
from fersynth.training import save_classifier

from .conftest import make_dataset, run_stage

Files = dict[str, bytes | str]


# --- image files ------------------------------------------------------------------------------------------


def png(seed: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    """A small lossless image whose pixels depend on `seed` (distinct seeds: distinct images)."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int, bit_depth: int = 8, color_type: int = 6) -> bytes:
    """A PNG whose header declares width × height (colour type 6: RGBA, 0: grey) over a few bytes of pixel data:
    refused on its header it costs nothing, decoded it would cost the full size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    pixels = zlib.compress(bytes(1 + width * 4))  # one row of zeros: the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def encoded(pixels: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def write_tree(root: Path, files: Mapping[str, bytes | str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def write_zip(path: Path, files: Mapping[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def as_folder_or_zip(tmp_path: Path, files: Mapping[str, bytes | str], kind: str) -> Path:
    return write_tree(tmp_path / "data", files) if kind == "folder" else write_zip(tmp_path / "data.zip", files)


def kdef_files(people: int = 4) -> Files:
    """Every person (session A, female and male) in every expression and angle."""
    files, seed = {}, 0
    for number in range(1, people + 1):
        gender = "F" if number % 2 else "M"
        for code in KDEF_CODES:
            for angle in KDEF_ANGLES:
                seed += 1
                folder = f"A{gender}{number:02d}"
                files[f"KDEF/{folder}/{folder}{code}{angle}.JPG"] = png(seed)
    return files


def labels_by_id(dataset: Dataset) -> dict[str, str]:
    return {str(id_): dataset.classes[label] for id_, label in zip(dataset.ids, dataset.labels, strict=True)}


# --- synthetic rows and calibrate -------------------------------------------------------------------------


def synthetic_rows(count: int, size: int = 8, seed: int = 5) -> Dataset:
    """`count` GAN images cycling through the seven classes, made like conftest's data."""
    source = make_dataset(per_class=count // 7 + 1, size=size, seed=seed)
    picked = source.subset(np.argsort(np.arange(len(source)) % (count // 7 + 1), kind="stable")[:count])
    return replace(
        picked,
        ids=np.array([f"gan{n}" for n in range(count)], dtype=object),
        splits=np.full(count, "train", dtype=object),
        sources=np.full(count, "gan", dtype=object),
        origins=np.full(count, "", dtype=object),
        intended=picked.labels.copy(),
    )


CALIBRATE_PARAMS = {
    "common": {"seed": 0, "image_size": 16},
    "calibrate": {
        "policy": "filter",
        "threshold": 0.2,
        "teacher": {"arch": "linear", "epochs": 1, "batch_size": 8, "flip_augment": False, "shift_augment": 0},
    },
}


def write_calibrate_inputs(root: Path, generated: int = 14) -> None:
    write_dataset(make_dataset(per_class=6, size=16), root / "aligned")
    write_dataset(synthetic_rows(generated, size=16), root / "generated")
    (root / "params.yaml").write_text(yaml.safe_dump(CALIBRATE_PARAMS))


def run_calibrate(root: Path) -> tuple[int, str]:
    return run_stage(
        [
            "calibrate",
            *("--input", str(root / "generated"), "--real", str(root / "aligned")),
            *("--out", str(root / "calibrated"), "--teachers", str(root / "teachers")),
            *(
                "--diagnostics",
                str(root / "calibrate.json"),
                "--metrics",
                str(root / "headline.json"),
                "--histogram",
                str(root / "plots" / "confidence.png"),
                "--closest-pairs",
                str(root / "plots" / "closest_pairs.png"),
            ),
            *("--params", str(root / "params.yaml")),
        ]
    )


# --- face detection ---------------------------------------------------------------------------------------


class TwoFacesWhereBright:
    """Stands in for MTCNN: two faces in a photo whose top-left pixel is bright, none otherwise."""

    def detect(self, images: np.ndarray, landmarks: bool) -> tuple[list, list, list]:
        results: tuple[list, list, list] = ([], [], [])
        for image in images:
            if image[0, 0, 0] < 128:
                found = (None, [None], None)
            else:
                boxes = np.array([[2, 2, 12, 12], [20, 20, 50, 50], [0, 0, 4, 4]], dtype=np.float32)
                points = np.tile(np.array([[5.0, 5], [9, 5], [7, 7], [5, 10], [9, 10]]), (3, 1, 1))
                found = (boxes, np.array([0.95, 0.9, 0.5]), points)  # the third is below min_confidence 0.8
            for column, value in zip(results, found, strict=True):
                column.append(value)
        return results


def save_tiny_face_classifier(path: Path, size: int = 16) -> Path:
    """An untrained VGG for size×size grey faces, saved with a face alignment (margin 0.3, confidence 0.8)
    as train saves one: what predict and serve read. Labels mean nothing; structure is what tests check."""
    config = ClassifierConfig(arch="vgg", width=4)
    torch.manual_seed(0)
    model = build_classifier(config, len(CANONICAL_CLASSES), 1, size)
    alignment = FaceAlignConfig(detector="mtcnn", margin=0.3, min_confidence=0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(path, model, config, CANONICAL_CLASSES, (size, size, 1), alignment)
    return path
