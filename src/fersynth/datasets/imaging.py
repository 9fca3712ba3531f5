"""Decode image files into one uint8 array of a single square size.

Sources mix sizes and colour modes (350×350 grayscale next to small RGB crops).
Every image is letterboxed: scaled so its longer side fits the square, centred,
and padded with black, so faces keep their aspect ratio. The square side is the
most common longer side in the source, capped at `max_side`, so a uniform source
(FER2013: all 48×48) passes through untouched. The array has one channel when
every image is grayscale (an RGB file whose three channels are equal counts as
grayscale), otherwise three.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from fersynth.datasets.archive import FileTree
from fersynth.errors import DataError
from fersynth.progress import track

_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(
    data: bytes, where: str, max_side: int, box: tuple[int, int, int, int] | None = None
) -> tuple[Image.Image, int]:
    """Decode to mode L or RGB, upright, longer side at most `max_side`; also return the file's longer side.

    With `box` (left, top, right, bottom in the file's pixels) only that region is kept, and its longer side
    counts as the file's. A file PIL cannot decode is a DataError naming `where`: a dataset never loses
    images silently.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if box is not None:
            image = _crop(image, box, where)
        original_side = max(image.size)
        mode = "L" if image.mode in _GRAY_MODES else "RGB"
        if original_side > max_side and box is None:
            # JPEG decodes straight at a reduced scale (still >= max_side): much faster for large photos.
            image.draft(mode, (max_side, max_side))
        if "exif" in image.info:  # only photos carry an orientation tag; skip the parse for the rest
            image = ImageOps.exif_transpose(image)
        image = image.convert(mode)
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    except _UNREADABLE as error:
        raise DataError(f"{where}: not a readable image ({error})") from None
    return image, original_side


def _crop(image: Image.Image, box: tuple[int, int, int, int], where: str) -> Image.Image:
    """The box, clipped to the image (annotated boxes may overhang the photo's edge by a few pixels)."""
    width, height = image.size
    clipped = (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise DataError(f"{where}: face box {box} lies outside the {width}×{height} image")
    # exif orientation is not applied to a crop: the box is given in the file's own pixel grid.
    return image.crop(clipped)


def letterbox(image: Image.Image, side: int) -> Image.Image:
    """Scale the longer side to `side` (aspect kept), centre on a black square."""
    width, height = image.size
    if width == height == side:
        return image
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new(image.mode, (side, side), 0)
    canvas.paste(resized, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


def common_side(sides: Sequence[int], max_side: int) -> int:
    """The most common longer side (ties: the larger), capped at `max_side`."""
    counts = Counter(sides)
    most_common = max(counts, key=lambda side: (counts[side], side))
    return min(most_common, max_side)


def load_images(
    tree: FileTree,
    names: Sequence[str],
    max_side: int,
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
) -> np.ndarray:
    """Decode the named members (each cropped to its box, if given) into (N, S, S, C) uint8 with the rules above.

    One pass over the files; images are kept at most `max_side` big until the common side is known.
    """
    if not names:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    crops = boxes if boxes is not None else [None] * len(names)
    decoded = [
        decode_image(tree.read(name), tree.where(name), max_side, box)
        for name, box in track(zip(names, crops, strict=True), f"decoding {tree.path.name}", total=len(names))
    ]
    side = common_side([original_side for _, original_side in decoded], max_side)
    return stack_pixels([gray_or_rgb(np.asarray(letterbox(image, side))) for image, _ in decoded])


def gray_or_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W) for grayscale content, including RGB with three equal channels; (H, W, 3) otherwise."""
    if (
        pixels.ndim == 3
        and np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 0], pixels[..., 2])
    ):
        return np.ascontiguousarray(pixels[..., 0])
    return pixels


def stack_pixels(decoded: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W) and (H, W, 3) arrays of one size -> (N, H, W, 1) if all are gray, else (N, H, W, 3)."""
    if all(pixels.ndim == 2 for pixels in decoded):
        return np.stack(decoded)[..., None]
    return np.stack([pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2) for pixels in decoded])
