"""Decode image files into one uint8 array of a single square size.

Sources mix sizes and colour modes (350×350 grayscale next to small RGB crops).
Every image is letterboxed: scaled so its longer side fits the square, centred,
and padded with black, so faces keep their aspect ratio. The square side is the
most common longer side in the source, capped at `max_side`, so a uniform source
(FER2013: all 48×48) passes through untouched. The array has one channel when
every image is grayscale (an RGB file whose three channels are equal counts as
grayscale), otherwise three.

Nothing is made uniform silently wrong: 16- and 32-bit and floating-point images are
scaled to 0..255 by their range (PIL's own conversion clips them), transparency is
composited onto `ReadRules.alpha_background` (it never adds a channel), and images
with a side below `ReadRules.min_side` are dropped and counted rather than blown up
into a flat face. The decoded pixels of a source are bounded by `max_total_pixels`, and those of
one image by `max_image_pixels`, checked on its header before anything is decoded. Pillow's own
warnings (corrupt EXIF, its decompression-bomb notice) become counted messages of ours.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps

from fersynth.config import ReadRules
from fersynth.datasets.archive import FileTree, Tally
from fersynth.errors import DataError
from fersynth.runtime.progress import track

log = logging.getLogger(__name__)

_UNREADABLE = (OSError, SyntaxError, ValueError)

_PILLOW = Path(Image.__file__).parent
# warnings.catch_warnings swaps process-wide state: two threads decoding at once (serve answers in a thread pool)
# would restore each other's filters and lose warnings, so a decode holds this lock while it records them.
_RECORDING = threading.Lock()


def decode_image(
    data: bytes,
    where: str,
    max_side: int,
    rules: ReadRules,
    pillow_warnings: Tally,
    box: tuple[int, int, int, int] | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode to mode L or RGB, upright, opaque on grey `rules.alpha_background`, longer side at most `max_side`;
    also return the file's (width, height).

    With `box` (left, top, right, bottom in the file's pixels) only that region is kept, and its size counts
    as the file's. A file PIL cannot decode, or whose header declares more than `rules.max_image_pixels`, is a
    DataError naming `where`: a dataset never loses images silently. Pillow's warnings are counted in
    `pillow_warnings` by reason (see `log_pillow_warnings`), not printed.
    """
    try:
        with _recorded(pillow_warnings, where):
            image = Image.open(io.BytesIO(data))
            size = image.size
            if max(size) > max_side and box is None:
                # JPEG decodes straight at a reduced scale (still >= max_side): much faster for large photos.
                image.draft("L" if image.mode == "L" else "RGB", (max_side, max_side))
            _check_image_pixels(image, size, where, rules.max_image_pixels)
            if box is not None:
                image = _crop(image, box, where)
                size = image.size
            if "exif" in image.info:  # only photos carry an orientation tag; skip the parse for the rest
                image = ImageOps.exif_transpose(image)
            image = _opaque(_eight_bit(image, where), rules.alpha_background)
            image = image.convert("L" if image.mode in ("1", "L") else "RGB")
            if max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    except Image.UnidentifiedImageError:  # its message names a BytesIO object, not the file
        raise DataError(f"{where}: not a readable image (no format PIL knows, or a damaged header)") from None
    except Image.DecompressionBombError as error:  # Pillow's own refusal, on opening, of the most extreme sizes
        raise DataError(
            f"{where}: {error} Refused before decoding (Pillow's own limit, which fetch.max_image_pixels does not lift)"
        ) from None
    except _UNREADABLE as error:
        raise DataError(f"{where}: not a readable image ({error})") from None
    return image, size


def _check_image_pixels(image: Image.Image, size: tuple[int, int], where: str, max_pixels: int) -> None:
    """Refuse an opened image before it is decoded if it would take more than `max_pixels` bytes: width × height
    × bands × bytes a band, at the size it decodes to (a JPEG's draft scale) and the header's mode."""
    mode = ImageMode.getmode(image.mode)
    decoded = image.width * image.height * len(mode.bands) * np.dtype(mode.typestr).itemsize
    if decoded > max_pixels:
        scaled = f" (decoded at {image.width:,}×{image.height:,})" if image.size != size else ""
        raise DataError(
            f"{where}: declares {size[0]:,}×{size[1]:,} pixels of mode {image.mode}{scaled}, "
            f"{decoded:,} bytes decoded (width × height × bands × bytes a band), above "
            f"fetch.max_image_pixels={max_pixels:,}; refused before decoding (raise the key if the image is genuine)"
        )


@contextmanager
def _recorded(pillow_warnings: Tally, where: str) -> Iterator[None]:
    """Count Pillow's warnings raised inside under their reason; pass any other warning on."""
    with _RECORDING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        if Path(warning.filename).is_relative_to(_PILLOW):
            pillow_warnings.add(_warning_reason(str(warning.message)), where)
        else:  # numpy's, or another thread's: not ours to count
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _warning_reason(message: str) -> str:
    """Pillow's warning without its numbers (offsets, sizes, tag ids), so the same problem counts as one reason:
    "Possibly corrupt EXIF data.  Expecting to read 12 bytes but only got 2." -> "Possibly corrupt EXIF data"."""
    return re.sub(r"\d+", "N", re.split(r"\.\s", message)[0].removesuffix("."))[:120]


def log_pillow_warnings(pillow_warnings: Tally) -> None:
    """One warning per reason Pillow gave, with its count and the first file it concerned."""
    for reason, count in pillow_warnings.counts.items():
        log.warning("Pillow warned about %d image(s): %s; e.g. %s", count, reason, pillow_warnings.examples[reason])


def _eight_bit(image: Image.Image, where: str) -> Image.Image:
    """Grey images deeper than 8 bits as mode L, scaled by their range where PIL's convert would clip.

    16-bit samples (I;16*, and I from a PGM, which PIL scales to 0..65535) are divided by 257, an integer TIFF's
    by the range of its BitsPerSample; floating point (F) must lie in 0..1, the one scale it has by convention.
    Values outside the range are an error, not clipped. A 16-bit transparency key becomes an alpha channel,
    as it would for an 8-bit image.
    """
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image)
    top = 1 if image.mode == "F" else 2 ** _integer_bits(image) - 1
    if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= top):
        raise DataError(
            f"{where}: mode {image.mode} pixels span {values.min()}..{values.max()}, outside the 0..{top:,} "
            "their depth allows; refusing to guess their scale"
        )
    gray = Image.fromarray(np.rint(values.astype(np.float32) * (255 / top)).astype(np.uint8), "L")
    key = image.info.get("transparency")
    if isinstance(key, int):
        gray.putalpha(Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), "L"))
    return gray


def _integer_bits(image: Image.Image) -> int:
    """Bits a sample of an I;16* or I image may use: a TIFF says (BitsPerSample); PIL reads the rest as 16."""
    if image.mode == "I" and hasattr(image, "tag_v2"):
        return int(image.tag_v2.get(258, (32,))[0])
    return 16


def _opaque(image: Image.Image, background: int) -> Image.Image:
    """Transparent pixels composited onto grey `background`; whether the result is grey is gray_or_rgb's call."""
    if not image.has_transparency_data:
        return image
    flat = Image.new("RGBA", image.size, (background, background, background, 255))
    flat.alpha_composite(image.convert("RGBA"))
    return flat.convert("RGB")


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


@dataclass(frozen=True)
class LoadedImages:
    pixels: np.ndarray  # (N, S, S, C) uint8: the kept images only
    kept: list[bool]  # per requested name: False where the image was smaller than min_side


def load_images(
    tree: FileTree,
    names: Sequence[str],
    max_side: int,
    rules: ReadRules,
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
) -> LoadedImages:
    """Decode the named members (each cropped to its box, if given) into (N, S, S, C) uint8 with the rules above.

    One pass over the files; images are kept at most `max_side` big until the common side is known.
    """
    crops = boxes if boxes is not None else [None] * len(names)
    decoded: list[tuple[Image.Image, int]] = []
    kept: list[bool] = []
    decoded_pixels = 0
    pillow_warnings = Tally()
    for name, box in track(zip(names, crops, strict=True), f"decoding {tree.path.name}", total=len(names)):
        image, size = decode_image(tree.read(name), tree.where(name), max_side, rules, pillow_warnings, box)
        kept.append(min(size) >= rules.min_side)
        if kept[-1]:
            decoded_pixels += image.width * image.height
            check_pixel_budget(decoded_pixels, rules, f"{tree.path}: the first {len(decoded) + 1} images")
            decoded.append((image, max(size)))
    warn_too_small([tree.where(name) for name, keep in zip(names, kept, strict=True) if not keep], rules)
    log_pillow_warnings(pillow_warnings)
    if not decoded:
        return LoadedImages(np.zeros((0, 1, 1, 1), dtype=np.uint8), kept)
    side = common_side([original_side for _, original_side in decoded], max_side)
    check_pixel_budget(len(decoded) * side * side, rules, f"{tree.path}: {len(decoded)} images of {side}×{side}")
    pixels = stack_pixels([gray_or_rgb(np.asarray(letterbox(image, side))) for image, _ in decoded])
    return LoadedImages(pixels, kept)


def check_pixel_budget(pixels: int, rules: ReadRules, what: str) -> None:
    """Refuse a source before its images outgrow memory: `what` (a count of images) holds `pixels` pixels."""
    if pixels > rules.max_total_pixels:
        raise DataError(
            f"{what} are {pixels:,} pixels, above fetch.max_total_pixels={rules.max_total_pixels:,}; "
            "raise it if this machine has the memory (a byte a pixel and channel)"
        )


def warn_too_small(where: Sequence[str], rules: ReadRules) -> None:
    """One warning for every image dropped as smaller than min_side, naming the first."""
    if where:
        log.warning(
            "dropped %d images with a side below fetch.min_side=%d pixels (counted in dropped_too_small), e.g. %s",
            len(where),
            rules.min_side,
            where[0],
        )


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
