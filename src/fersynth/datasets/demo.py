"""The built-in demo dataset: procedurally drawn 48×48 grayscale faces.

This is a demo for running the whole pipeline offline in minutes, NOT a benchmark:
accuracies on it say nothing about real facial expression recognition.

Each face is drawn at 4× (192×192) with PIL and box-downsampled to 48×48. The
expression is carried by geometry (brow height and slant, eye openness, mouth
curvature, openness and width, nose wrinkles and a raised lip corner for disgust),
scaled by a random intensity so weak expressions drift towards neutral and classes
overlap. Everything else is nuisance: identity (face shape, skin and background
tone, hair, eye spacing, glasses), pose (rotation, shift, scale), a lighting
gradient, occluders (a bar or a hand-like blob) and pixel noise. A linear model on
pixels does poorly on it while a small CNN learns it well. Class shares follow
FER2013's training set in every split (disgust rare but present), and the same
seed always draws the same images.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from fersynth.datasets.format import Dataset
from fersynth.runtime.progress import track

log = logging.getLogger(__name__)

SIZE = 48
SCALE = 4  # drawn at 4× then box-downsampled: anti-aliased strokes at PIL's drawing speed
CANVAS = SIZE * SCALE

# Class shares of FER2013's training split (28,709 images).
FER2013_TRAIN_SHARES: dict[str, float] = {
    "angry": 0.139,
    "disgust": 0.015,
    "fear": 0.143,
    "happy": 0.251,
    "neutral": 0.173,
    "sad": 0.168,
    "surprise": 0.110,
}


# One face's parameters as plain Python numbers (flags and choices as 0/1/2).
Face = dict[str, float]


@dataclass(frozen=True)
class DemoSizes:
    train: int = 2800
    val: int = 600
    test: int = 600


@dataclass(frozen=True)
class Expression:
    """Feature geometry at full intensity, in canvas pixels (192-px face space) unless noted."""

    brow_raise: float  # up is positive
    brow_slant: float  # inner ends up (sad, fear) positive, down (angry) negative
    eye_open: float  # eye height as a multiple of the neutral eye
    mouth_curve: float  # corners up (smile) positive
    mouth_open: float
    mouth_width: float
    wrinkle: float  # probability of nose wrinkles and a raised upper-lip corner


EXPRESSIONS: dict[str, Expression] = {
    "neutral": Expression(0.0, 0.0, 1.0, 0.0, 0.0, 36.0, 0.0),
    "angry": Expression(-7.0, -9.0, 0.75, -4.0, 1.0, 30.0, 0.25),
    "disgust": Expression(-5.0, -4.0, 0.6, -6.0, 4.0, 34.0, 0.9),
    "fear": Expression(8.0, 7.0, 1.35, -4.0, 8.0, 44.0, 0.0),
    "happy": Expression(1.0, 0.0, 0.6, 11.0, 5.0, 48.0, 0.0),
    "sad": Expression(3.0, 9.0, 0.8, -9.0, 0.0, 34.0, 0.0),
    "surprise": Expression(12.0, 2.0, 1.5, 0.0, 18.0, 24.0, 0.0),
}

# Per-image spread around the class geometry (same units); large enough that classes overlap.
GEOMETRY_SPREAD = Expression(3.0, 3.0, 0.12, 2.5, 2.5, 4.0, 0.0)


def class_counts(total: int, classes: Sequence[str]) -> np.ndarray:
    """Split `total` by FER2013's shares (largest remainders); every class gets at least one image."""
    shares = np.array([FER2013_TRAIN_SHARES[name] for name in classes])
    wanted = total * shares / shares.sum()
    counts = np.floor(wanted).astype(np.int64)
    for index in np.argsort(-(wanted - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    for index in np.flatnonzero(counts == 0):  # rare classes (disgust) must exist in small splits too
        counts[index] += 1
        counts[np.argmax(counts)] -= 1
    return counts


def generate_demo(classes: Sequence[str], seed: int, sizes: DemoSizes) -> Dataset:
    """Draw the demo splits; labels index `classes` (any subset of the canonical seven)."""
    started = time.perf_counter()
    parts = []
    for stream, (split, total) in enumerate((("train", sizes.train), ("val", sizes.val), ("test", sizes.test))):
        rng = np.random.default_rng((seed, stream))  # one stream per split: resizing train keeps val/test
        counts = class_counts(total, classes)
        labels = rng.permutation(np.repeat(np.arange(len(classes)), counts))
        faces = sample_faces([classes[label] for label in labels], rng)
        images = np.stack([draw_face(faces, i) for i in track(range(total), f"drawing demo {split}", total=total)])
        parts.append((split, labels, add_lighting_and_noise(images, rng)))
    log.info("drew %d demo faces in %.1f s", sum(len(labels) for _, labels, _ in parts), time.perf_counter() - started)
    return Dataset(
        images=np.concatenate([images for _, _, images in parts])[..., None],
        labels=np.concatenate([labels for _, labels, _ in parts]).astype(np.int64),
        splits=np.concatenate([np.full(len(labels), split, dtype=object) for split, labels, _ in parts]),
        classes=tuple(classes),
        ids=np.array([f"demo-{split}-{i:05d}" for split, labels, _ in parts for i in range(len(labels))], dtype=object),
    )


def sample_faces(names: Sequence[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every random quantity of every face, drawn up front (vectorized) so drawing is a pure function."""
    count = len(names)
    neutral = EXPRESSIONS["neutral"]
    # Weak expressions sit between neutral and the full expression: the main source of class overlap.
    intensity = rng.uniform(0.5, 1.0, count)
    faces: dict[str, np.ndarray] = {}
    for field in ("brow_raise", "brow_slant", "eye_open", "mouth_curve", "mouth_open", "mouth_width"):
        full = np.array([getattr(EXPRESSIONS[name], field) for name in names])
        base = getattr(neutral, field)
        spread = getattr(GEOMETRY_SPREAD, field)
        faces[field] = base + intensity * (full - base) + rng.normal(0.0, spread, count)
    faces["mouth_open"] = np.maximum(faces["mouth_open"], 0.0)
    faces["wrinkle"] = rng.random(count) < np.array([EXPRESSIONS[name].wrinkle for name in names])
    faces["lip_side"] = rng.choice([-1.0, 1.0], count)
    # Identity.
    faces["face_width"] = rng.uniform(100, 132, count)
    faces["face_height"] = rng.uniform(130, 165, count)
    faces["skin"] = rng.uniform(95, 215, count)
    faces["background"] = rng.uniform(20, 235, count)
    faces["hair"] = rng.integers(0, 3, count)  # none, short, long
    faces["hair_tone"] = rng.uniform(10, 90, count)
    faces["eye_gap"] = rng.uniform(20, 28, count)
    faces["eye_y"] = rng.uniform(-18, -8, count)
    faces["mouth_y"] = rng.uniform(34, 44, count)
    faces["glasses"] = rng.random(count) < 0.12
    # Pose.
    faces["angle"] = rng.normal(0.0, 5.0, count)
    faces["shift_x"] = rng.normal(0.0, 5.0, count)
    faces["shift_y"] = rng.normal(0.0, 5.0, count)
    faces["zoom"] = rng.uniform(0.9, 1.1, count)
    # Occlusion: 0 none, 1 bar, 2 hand-like blob.
    faces["occluder"] = rng.choice(3, count, p=[0.7, 0.15, 0.15])
    faces["occluder_x"] = rng.uniform(20, CANVAS - 20, count)
    faces["occluder_y"] = rng.uniform(20, CANVAS - 20, count)
    faces["occluder_angle"] = rng.uniform(0, math.pi, count)
    faces["occluder_tone"] = rng.uniform(0, 255, count)
    return faces


def draw_face(faces: dict[str, np.ndarray], index: int) -> np.ndarray:
    """Render face `index` at 4×, apply its pose and occluder, return 48×48 uint8."""
    face: Face = {name: values[index].item() for name, values in faces.items()}
    canvas = Image.new("L", (CANVAS, CANVAS), int(face["background"]))
    draw = ImageDraw.Draw(canvas)
    centre_x, centre_y = CANVAS / 2, CANVAS / 2 + 6
    _draw_head(draw, face, centre_x, centre_y)
    _draw_brows_and_eyes(draw, face, centre_x, centre_y)
    _draw_nose(draw, face, centre_x, centre_y)
    _draw_mouth(draw, face, centre_x, centre_y + face["mouth_y"])
    canvas = _apply_pose(canvas, face)
    _draw_occluder(ImageDraw.Draw(canvas), face)
    return np.asarray(canvas.reduce(SCALE))


def _draw_head(draw: ImageDraw.ImageDraw, face: Face, x: float, y: float) -> None:
    half_w, half_h = face["face_width"] / 2, face["face_height"] / 2
    hair = int(face["hair_tone"])
    if face["hair"] == 2:  # long hair: a dark shape behind the head
        draw.ellipse((x - half_w - 14, y - half_h - 12, x + half_w + 14, y + half_h + 30), fill=hair)
    draw.ellipse((x - half_w, y - half_h, x + half_w, y + half_h), fill=int(face["skin"]))
    if face["hair"] >= 1:  # a fringe over the forehead
        draw.chord((x - half_w, y - half_h - 6, x + half_w, y - half_h + 56), 180, 360, fill=hair)


def _draw_brows_and_eyes(draw: ImageDraw.ImageDraw, face: Face, x: float, y: float) -> None:
    dark = int(face["skin"] * 0.35)
    eye_y = y + face["eye_y"]
    eye_height = 7.0 * max(face["eye_open"], 0.15)
    brow_y = eye_y - 17 - face["brow_raise"]
    for side in (-1, 1):
        eye_x = x + side * face["eye_gap"]
        draw.ellipse((eye_x - 11, eye_y - eye_height, eye_x + 11, eye_y + eye_height), fill=235)
        pupil = min(6.0, eye_height)
        draw.ellipse((eye_x - 6, eye_y - pupil, eye_x + 6, eye_y + pupil), fill=25)
        inner, outer = eye_x - side * 12, eye_x + side * 14
        # Slant moves the inner end up and the outer end a little down (and the reverse for anger).
        draw.line((inner, brow_y - face["brow_slant"], outer, brow_y + 0.3 * face["brow_slant"]), fill=dark, width=6)
        if face["glasses"]:
            draw.ellipse((eye_x - 16, eye_y - 13, eye_x + 16, eye_y + 13), outline=20, width=3)
    if face["glasses"]:
        draw.line((x - face["eye_gap"] + 16, eye_y, x + face["eye_gap"] - 16, eye_y), fill=20, width=3)


def _draw_nose(draw: ImageDraw.ImageDraw, face: Face, x: float, y: float) -> None:
    shade = int(face["skin"] * 0.6)
    draw.line((x, y - 6, x - 4, y + 18, x + 3, y + 20), fill=shade, width=3)
    if face["wrinkle"]:  # disgust: wrinkles across the bridge of the nose
        for offset in (-2, 4, 10):
            draw.line(
                (x - 10, y + offset, x - 3, y + offset - 3, x + 3, y + offset - 3, x + 10, y + offset),
                fill=shade,
                width=3,
            )


def _draw_mouth(draw: ImageDraw.ImageDraw, face: Face, x: float, y: float) -> None:
    half_width = max(face["mouth_width"], 12.0) / 2
    curve, opening = face["mouth_curve"], face["mouth_open"]
    # A raised upper-lip corner on one side (disgust's asymmetric sneer).
    sneer = 7.0 * face["lip_side"] if face["wrinkle"] else 0.0
    steps = np.linspace(-1.0, 1.0, 13)
    upper = [
        (x + t * half_width, y - curve * t * t - opening * 0.35 * (1 - t * t) - sneer * max(t, 0) * t) for t in steps
    ]
    lower = [(x + t * half_width, y - curve * t * t + opening * (1 - t * t)) for t in steps]
    if opening > 2.5:
        draw.polygon([*upper, *reversed(lower)], fill=20)
        if curve > 4:  # a smile shows teeth
            draw.line(upper, fill=220, width=4)
    lip = int(face["skin"] * 0.45)
    draw.line(upper, fill=lip, width=4, joint="curve")
    draw.line(lower, fill=lip, width=3 if opening > 2.5 else 4, joint="curve")


def _apply_pose(canvas: Image.Image, face: Face) -> Image.Image:
    """Rotate, zoom and shift in one affine resampling; nearest is enough (and 8× faster) before the 4× box filter."""
    angle, inverse_zoom = math.radians(face["angle"]), 1.0 / face["zoom"]
    a, b = math.cos(angle) * inverse_zoom, math.sin(angle) * inverse_zoom
    d, e = -b, a
    centre = CANVAS / 2
    out_x, out_y = centre + face["shift_x"], centre + face["shift_y"]
    matrix = (a, b, centre - a * out_x - b * out_y, d, e, centre - d * out_x - e * out_y)
    return canvas.transform(
        (CANVAS, CANVAS), Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST, fillcolor=int(face["background"])
    )


def _draw_occluder(draw: ImageDraw.ImageDraw, face: Face) -> None:
    x, y, tone = face["occluder_x"], face["occluder_y"], int(face["occluder_tone"])
    if face["occluder"] == 1:  # a bar (a strap, a pen, a shadow)
        dx, dy = 90 * math.cos(face["occluder_angle"]), 90 * math.sin(face["occluder_angle"])
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=tone, width=14)
    elif face["occluder"] == 2:  # a hand-like blob: palm plus fingers
        draw.ellipse((x - 26, y - 22, x + 26, y + 22), fill=tone)
        for finger in range(4):
            fx = x - 21 + 14 * finger
            draw.rounded_rectangle((fx - 5, y - 52, fx + 5, y - 8), radius=5, fill=tone)


def add_lighting_and_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A linear lighting gradient in a random direction, contrast jitter and Gaussian noise, vectorized."""
    count = len(images)
    coords = np.linspace(-1.0, 1.0, SIZE)
    direction = rng.uniform(0, 2 * math.pi, count)[:, None, None]
    gradient = np.cos(direction) * coords[None, None, :] + np.sin(direction) * coords[None, :, None]
    strength = rng.uniform(0.0, 0.45, count)[:, None, None]
    contrast = rng.uniform(0.7, 1.2, count)[:, None, None]
    noise = rng.normal(0.0, 1.0, images.shape) * rng.uniform(2.0, 12.0, count)[:, None, None]
    lit = (images.astype(np.float32) - 128.0) * contrast + 128.0
    lit = lit * (1.0 + strength * gradient) + noise
    return np.clip(np.rint(lit), 0, 255).astype(np.uint8)
