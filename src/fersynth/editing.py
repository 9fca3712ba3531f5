"""What the face-editing backends share (sd_img2img, editor): the real faces they start from, and putting each
edit back onto its source face: colour transfer in LAB space, then a feathered alpha blend.

Editing shifts colours and redraws the background; matching the edit's colour statistics to the source
(Reinhard et al. 2001) and pasting only the face region, with a soft edge, keeps the source's identity cues
outside the face and its look inside it (as GANmut's pipeline does). The pool holds only real train-split rows,
so no validation or test face (or derivative) is edited into training data; each edit's origin is its source
face's id, which merge's leakage guard checks. All images are uint8 H×W×C, C = 1 (gray) or 3 (RGB).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import cv2
import numpy as np

from fersynth.config import EditConfig, FaceAlignConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import ParamsError
from fersynth.faces import resize_images

log = logging.getLogger(__name__)

MIN_STD = 1e-6  # a flat channel has no spread to rescale: it is only shifted onto the source's mean


def lab_colour_transfer(edit: np.ndarray, source: np.ndarray) -> np.ndarray:
    """`edit` with the per-channel mean and standard deviation of `source` in CIE LAB (intensity for gray)."""
    if edit.shape[2] != source.shape[2]:
        raise ValueError(f"colour transfer needs equal channel counts, got {edit.shape} and {source.shape}")
    edit_lab, source_lab = _to_lab(edit), _to_lab(source)
    edit_mean, edit_std = edit_lab.mean(axis=(0, 1)), edit_lab.std(axis=(0, 1))
    source_mean, source_std = source_lab.mean(axis=(0, 1)), source_lab.std(axis=(0, 1))
    matched = (edit_lab - edit_mean) / np.maximum(edit_std, MIN_STD) * source_std + source_mean
    return _from_lab(matched)


def _to_lab(image: np.ndarray) -> np.ndarray:
    """float32 LAB (L 0-100, a and b about ±127) from RGB; a gray image's intensity as it is."""
    if image.shape[2] == 1:
        return image.astype(np.float32)
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # float input: no 8-bit rounding


def _from_lab(lab: np.ndarray) -> np.ndarray:
    if lab.shape[2] == 1:
        return _to_uint8(lab)
    return _to_uint8(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0)


def aligned_face_box(size: int, margin: float) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) of the face in a size² aligned crop.

    face-align crops a square of the detected box's side × (1 + margin) around its centre
    (faces.alignment_matrix), so the face is the centred 1 / (1 + margin) of the crop.
    """
    side = size / (1 + margin)
    start = (size - side) / 2
    return start, start, start + side, start + side


def feathered_mask(height: int, width: int, box: tuple[float, float, float, float], feather: float) -> np.ndarray:
    """float32 H×W weights: 1 inside the ellipse inscribed in `box`, 0 outside it, a smooth ramp between.

    The ramp is `feather` × the box size wide, ending on the ellipse, so nothing outside the box
    is touched. It is a smoothstep of the elliptical radius rather than a blurred hard mask:
    a blur's edge spills past the box and its width depends on the kernel's truncation.
    """
    x1, y1, x2, y2 = box
    rows, columns = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    radius = np.hypot((columns - (x1 + x2) / 2) / ((x2 - x1) / 2), (rows - (y1 + y2) / 2) / ((y2 - y1) / 2))
    if feather == 0:
        return (radius <= 1).astype(np.float32)
    # The radius is in half-box units, so a ramp of feather × box is 2 × feather of it.
    inside = np.clip((1 - radius) / (2 * feather), 0.0, 1.0)
    return (inside * inside * (3 - 2 * inside)).astype(np.float32)


def alpha_blend(edit: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask × edit + (1 − mask) × source, per pixel (mask H×W in [0, 1])."""
    if edit.shape != source.shape or mask.shape != edit.shape[:2]:
        raise ValueError(f"blend needs equal shapes, got edit {edit.shape}, source {source.shape}, mask {mask.shape}")
    weight = mask[:, :, None]
    return _to_uint8(weight * edit.astype(np.float32) + (1 - weight) * source.astype(np.float32))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def check_source_classes(edit: EditConfig, classes: tuple[str, ...]) -> None:
    """Refuse a source class outside `classes`, before a backend loads anything."""
    unknown = [name for name in edit.source_classes if name not in classes]
    if unknown:
        raise ParamsError(
            f"generate.edit.source_classes names {unknown[0]!r}, which is not in common.classes {list(classes)}"
        )


def source_face_margin(align: FaceAlignConfig) -> float:
    """The margin around the face box in an aligned crop; a pre-cropped face (detector none) fills its image."""
    return align.margin if align.detector != "none" else 0.0


class SourceFaces:
    """Real training faces of `edit.source_classes` at the edits' size, and how an edit goes back onto its source."""

    def __init__(self, real: Dataset, edit: EditConfig, image_size: int, channels: int, face_margin: float) -> None:
        self.edit = edit
        self.classes = real.classes
        source_labels = [real.classes.index(name) for name in edit.source_classes]
        in_pool = (real.splits == "train") & (real.sources == "real") & np.isin(real.labels, source_labels)
        pool = real.subset(in_pool)
        self.pool = replace(pool, images=resize_images(pool.images, image_size, channels))  # as the edits come out
        self.mask = feathered_mask(image_size, image_size, aligned_face_box(image_size, face_margin), edit.feather)

    def pick(self, class_index: int, count: int, seed: int) -> np.ndarray:
        """Pool rows to edit into `classes[class_index]`: faces of other classes, drawn by `seed` (none if none)."""
        candidates = np.flatnonzero(self.pool.labels != class_index)
        if not len(candidates):
            log.warning(
                "edit: no real training face of %s other than %s to edit into %s; nothing generated",
                self.edit.source_classes,
                self.classes[class_index],
                self.classes[class_index],
            )
            return candidates
        return np.random.default_rng(seed).choice(candidates, size=count, replace=count > len(candidates))

    def onto_sources(self, edits: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """Each edit colour-matched (when `edit.colour_transfer`) and blended onto the face it was made from."""
        faces = [self._onto_source(edit, source) for edit, source in zip(edits, self.pool.images[picks], strict=True)]
        return np.stack(faces) if faces else np.zeros((0, *self.pool.images.shape[1:]), dtype=np.uint8)

    def origins(self, picks: np.ndarray) -> np.ndarray:
        return self.pool.ids[picks].astype(object)

    def _onto_source(self, edit: np.ndarray, source: np.ndarray) -> np.ndarray:
        if self.edit.colour_transfer:
            edit = lab_colour_transfer(edit, source)
        return alpha_blend(edit, source, self.mask)
