"""The trained expression editor as a file: `editor.pt` rebuilds itself from the plain data it holds."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from fersynth.editor.models import EditorArchitecture, EditorGenerator, condition_vectors
from fersynth.preview import LABEL_WIDTH, PAIR_TILE, TITLE_HEIGHT, to_rgb
from fersynth.runtime.torch_files import load_fersynth_file, save_torch_file

EDITOR_FILE = "editor.pt"
FILE_FORMAT = "fersynth-expression-editor/1"
INPUT_COLUMN_TITLE = "input"


class ExpressionEditor:
    """Edits real faces toward a target expression at a chosen intensity (0: the source expression, 1: the target)."""

    def __init__(self, network: EditorGenerator, classes: Sequence[str]) -> None:
        if len(classes) != network.arch.num_classes:
            raise ValueError(f"{len(classes)} class names for an editor of {network.arch.num_classes} classes")
        self.network = network.eval()
        self.classes = tuple(classes)
        self.image_shape: tuple[int, int, int] = network.arch.image_shape

    @classmethod
    def from_state(
        cls, arch: EditorArchitecture, classes: Sequence[str], state: dict[str, torch.Tensor]
    ) -> ExpressionEditor:
        network = EditorGenerator(arch)
        network.load_state_dict(state)
        return cls(network, classes)

    @torch.no_grad()
    def edit(
        self,
        faces: np.ndarray,
        source_labels: np.ndarray,
        target_index: int,
        intensities: np.ndarray,
        batch_size: int = 256,
    ) -> np.ndarray:
        """`faces` (uint8 (N, H, W, C) at `image_shape`) edited toward classes[target_index], uint8 alike.

        `source_labels` (N,) index `classes`; `intensities` (N,) or one value, each in [0, 1], weighs the target
        expression against the source one. Runs where the network's weights are (the CPU after `load_editor`).
        """
        faces, sources, weights = self._checked(faces, source_labels, target_index, intensities)
        device = next(self.network.parameters()).device
        edited = np.empty_like(faces)
        for start in range(0, len(faces), max(1, batch_size)):
            rows = slice(start, start + max(1, batch_size))
            images = torch.from_numpy(faces[rows]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
            source = torch.from_numpy(sources[rows]).to(device)
            target = torch.full_like(source, target_index)
            condition = condition_vectors(source, target, torch.from_numpy(weights[rows]).to(device), len(self.classes))
            output, _ = self.network(images, condition)
            edited[rows] = to_uint8(output).permute(0, 2, 3, 1).cpu().numpy()
        return edited

    def _checked(
        self, faces: np.ndarray, source_labels: np.ndarray, target_index: int, intensities: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        faces = np.asarray(faces)
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != self.image_shape:
            raise ValueError(
                f"the editor takes uint8 faces of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {faces.dtype} {faces.shape}"
            )
        count, last = len(faces), len(self.classes) - 1
        sources = np.asarray(source_labels, dtype=np.int64)
        if sources.shape != (count,):
            raise ValueError(f"{count} faces need {count} source labels, got shape {sources.shape}")
        if count and (sources.min() < 0 or sources.max() > last):
            raise ValueError(f"source labels must index the editor's classes 0..{last}")
        if not 0 <= target_index <= last:
            raise ValueError(f"target index {target_index} outside 0..{last}")
        weights = np.broadcast_to(np.asarray(intensities, dtype=np.float32), (count,)).copy()
        if count and not (np.all(weights >= 0) and np.all(weights <= 1)):
            raise ValueError("edit intensities must lie in [0, 1]")
        return np.ascontiguousarray(faces), sources, weights

    def sample_grid(self, faces: np.ndarray, source_labels: np.ndarray) -> bytes:
        """A PNG with one row per face: the face, then it edited toward each class at intensity 1 (titled columns).

        The source class is written left of each row.
        """
        faces = np.asarray(faces)
        full = np.ones(len(faces), dtype=np.float32)
        columns = [faces] + [self.edit(faces, source_labels, index, full) for index in range(len(self.classes))]
        titles = [INPUT_COLUMN_TITLE, *self.classes]
        row_labels = [self.classes[int(label)] for label in np.asarray(source_labels)]
        buffer = io.BytesIO()
        edit_grid(columns, titles, row_labels).save(buffer, format="PNG")
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        """One torch file of plain data: format, classes, image shape, architecture and weights; written atomically."""
        payload: dict[str, Any] = {
            "format": FILE_FORMAT,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "architecture": self.network.arch.as_dict(),
            "state_dict": {name: tensor.cpu() for name, tensor in self.network.state_dict().items()},
        }
        save_torch_file(path, payload)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → uint8 pixels, the inverse of the x / 127.5 − 1 the networks read."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def grid_tile(height: int) -> int:
    """Drawn pixels per image pixel: 48 px faces are drawn twice as large, like fersynth.preview's pair sheets."""
    return max(1, PAIR_TILE // height)


def edit_grid(columns: Sequence[np.ndarray], titles: Sequence[str], row_labels: Sequence[str]) -> Image.Image:
    """Column c of row r shows columns[c][r]; titles above the columns, row labels on the left."""
    count, height, width = columns[0].shape[:3]
    scale = grid_tile(height)
    cell_h, cell_w = height * scale, width * scale
    sheet = Image.new("RGB", (LABEL_WIDTH + len(columns) * cell_w, TITLE_HEIGHT + count * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(titles):
        draw.text((LABEL_WIDTH + column * cell_w + 2, 2), title, fill="black")
    for row in range(count):
        top = TITLE_HEIGHT + row * cell_h
        draw.text((4, top + cell_h // 2 - 5), row_labels[row], fill="black")
        for column, images in enumerate(columns):
            tile = Image.fromarray(to_rgb(np.asarray(images[row]))).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            sheet.paste(tile, (LABEL_WIDTH + column * cell_w, top))
    return sheet


def load_editor(path: Path) -> ExpressionEditor:
    """Rebuild a saved editor on the CPU; a missing, damaged or foreign file is a DataError naming it."""
    what, kind = "expression editor file", "expression editor"
    return load_fersynth_file(Path(path), what, kind, FILE_FORMAT, "train-editor", _rebuild)


def _rebuild(payload: dict[str, Any]) -> ExpressionEditor:
    arch = EditorArchitecture(**payload["architecture"])
    if tuple(payload["image_shape"]) != arch.image_shape:
        raise ValueError(f"image shape {payload['image_shape']} disagrees with the architecture's {arch.image_shape}")
    return ExpressionEditor.from_state(arch, [str(name) for name in payload["classes"]], payload["state_dict"])
