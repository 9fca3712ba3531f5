"""Labelled image grids for humans: dataset previews and GAN sample sheets."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LABEL_WIDTH = 64
PAIRS_PER_ROW = 4
PAIR_TILE = 96  # pixels of a shown face side: 48 px faces are drawn twice as large
PAIR_GAP = 8  # between pairs
PAIR_SEPARATOR = 2  # between the two faces of a pair
CAPTION_HEIGHT = 14
TITLE_HEIGHT = 16


def class_grid(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], per_class: int = 10) -> Image.Image:
    """One row per class with up to `per_class` of its images, the class name on the left."""
    height, width = images.shape[1:3]
    scale = max(1, 48 // height)
    cell_h, cell_w = height * scale, width * scale
    sheet = Image.new("RGB", (LABEL_WIDTH + per_class * cell_w, len(classes) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(classes):
        draw.text((4, row * cell_h + cell_h // 2 - 5), name, fill="black")
        members = np.flatnonzero(labels == row)[:per_class]
        for column, index in enumerate(members):
            tile = Image.fromarray(to_rgb(np.asarray(images[index])))
            tile = tile.resize((cell_w, cell_h), Image.Resampling.NEAREST)
            sheet.paste(tile, (LABEL_WIDTH + column * cell_w, row * cell_h))
    return sheet


def save_preview(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path, title: str = "", per_class: int = 10
) -> None:
    sheet = class_grid(images, labels, classes, per_class)
    if title:
        titled = Image.new("RGB", (sheet.width, sheet.height + 16), "white")
        ImageDraw.Draw(titled).text((4, 2), title, fill="black")
        titled.paste(sheet, (0, 16))
        sheet = titled
    sheet.save(path)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 1|3) -> (H, W, 3)."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of `image`, for writing through a temporary path."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def placeholder_png(message: str) -> bytes:
    """A small PNG that says why there is no picture, so an output DVC declares always exists."""
    image = Image.new("RGB", (8 + 6 * len(message), 24), "white")
    ImageDraw.Draw(image).text((4, 6), message, fill="black")
    return png_bytes(image)


def pair_sheet(left: np.ndarray, right: np.ndarray, captions: Sequence[str], title: str) -> Image.Image:
    """Each left image beside its right one, captioned, PAIRS_PER_ROW pairs a row, under a title."""
    height, width = left.shape[1:3]
    scale = max(1, PAIR_TILE // height)
    tile_h, tile_w = height * scale, width * scale
    columns = max(1, min(PAIRS_PER_ROW, len(left)))
    rows = -(-len(left) // columns)
    cell_w, cell_h = 2 * tile_w + PAIR_SEPARATOR + PAIR_GAP, tile_h + CAPTION_HEIGHT
    sheet = Image.new("RGB", (columns * cell_w, TITLE_HEIGHT + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    for slot, (first, second, caption) in enumerate(zip(left, right, captions, strict=True)):
        x, y = (slot % columns) * cell_w, TITLE_HEIGHT + (slot // columns) * cell_h
        for offset, image in ((0, first), (tile_w + PAIR_SEPARATOR, second)):
            tile = Image.fromarray(to_rgb(np.asarray(image))).resize((tile_w, tile_h), Image.Resampling.NEAREST)
            sheet.paste(tile, (x + offset, y))
        draw.text((x + 2, y + tile_h + 1), caption, fill="black")
    return sheet
