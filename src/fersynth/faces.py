"""Face detection and eye alignment: photos in, level and centred square face crops out.

`align_dataset` is the one entry point: the face-align stage calls it on the fetched data
and the evaluate stage on cross-dataset test sets, so it depends on no stage or path.
With `detector: none` (pre-cropped data such as FER2013) images are only resized and
converted to the wanted channels. With `detector: mtcnn` each image goes through
facenet-pytorch's MTCNN (weights ship inside the wheel, run on the CPU), is rotated so the
eye line is horizontal, cropped to a square around the face and resized.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from fersynth.config import FaceAlignConfig
from fersynth.datasets.format import SPLITS, Dataset
from fersynth.errors import DataError
from fersynth.runtime.parallel import Chunk, map_chunks

if TYPE_CHECKING:
    from facenet_pytorch import MTCNN

log = logging.getLogger(__name__)

Outcome = Literal["aligned", "fallback", "dropped", "resized"]
OUTCOMES: tuple[Outcome, ...] = ("aligned", "fallback", "dropped", "resized")
OUTCOMES_FILE = "face_align.csv"
# facenet-pytorch's metadata pins torch<2.3, so it cannot be a dependency of fersynth; it runs on ours.
MTCNN_MISSING = (
    "face_align.detector: mtcnn needs facenet-pytorch, installed apart from fersynth because its metadata "
    "pins an old torch: run `pip install --no-deps facenet-pytorch==2.6.0` (make setup does), "
    "or set face_align.detector: none for pre-cropped faces"
)
OUTCOMES_COLUMNS = ("id", "outcome", "confidence", "angle")
MIN_FACE_SIZE = 20  # pixels; MTCNN's default, small enough for 48-pixel face crops


@dataclass(frozen=True)
class FaceOutcome:
    """What happened to one input image; confidence is nan where no detector ran or found nothing."""

    id: str
    split: str
    outcome: Outcome
    confidence: float = math.nan
    angle: float = 0.0  # degrees the image was rotated to level the eyes


@dataclass(frozen=True)
class AlignResult:
    """The aligned dataset (dropped images removed) and one outcome per input image, in input order."""

    dataset: Dataset
    outcomes: list[FaceOutcome]

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Images per outcome, over all splits or one."""
        chosen = [item.outcome for item in self.outcomes if split is None or item.split == split]
        return {outcome: chosen.count(outcome) for outcome in OUTCOMES}

    def metrics(self) -> dict[str, int | float]:
        """Flat counts overall and per split; detection_rate = share aligned on a detected face (0 for none)."""
        metrics: dict[str, int | float] = {}
        for split in (None, *SPLITS):
            suffix = "" if split is None else f"_{split}"
            counts = self.counts(split)
            total = sum(counts.values())
            metrics.update({f"{outcome}{suffix}": count for outcome, count in counts.items()})
            metrics[f"total{suffix}"] = total
            metrics[f"detection_rate{suffix}"] = counts["aligned"] / total if total else 0.0
        return metrics

    def outcomes_csv(self) -> bytes:
        """The per-image report (id,outcome,confidence,angle) stored beside the aligned dataset."""
        stream = io.StringIO()
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(OUTCOMES_COLUMNS)
        for item in self.outcomes:
            confidence = "" if math.isnan(item.confidence) else f"{item.confidence:.4f}"
            writer.writerow([item.id, item.outcome, confidence, f"{item.angle:.2f}"])
        return stream.getvalue().encode()


@dataclass(frozen=True)
class Detection:
    """One face: its box (x1, y1, x2, y2), the eyes as they appear left and right in the image, and a score."""

    box: np.ndarray
    left_eye: np.ndarray
    right_eye: np.ndarray
    confidence: float


def align_dataset(
    dataset: Dataset, config: FaceAlignConfig, image_size: int, channels: int, *, workers: int = 1
) -> AlignResult:
    """Bring every image to `image_size`² × `channels`, aligning faces when a detector is configured.

    `workers` processes share the detector's work, with identical results for any count. Resizing alone
    (detector none) stays in this process: it costs less per image than sending the image to a worker.
    """
    if config.detector == "none":
        images = resize_images(dataset.images, image_size, channels)
        rows = zip(dataset.ids, dataset.splits, strict=True)
        outcomes = [FaceOutcome(str(image_id), str(split), "resized") for image_id, split in rows]
        return AlignResult(replace(dataset, images=images), outcomes)
    return _align_with_mtcnn(dataset, config, image_size, channels, workers)


def resize_images(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize a stack of (square) images and convert their channels; a plain copy when nothing changes.

    Non-square images lose the sides of their longer axis rather than being squashed.
    """
    if images.shape[1:] == (size, size, channels):
        return np.array(images)
    resized = np.empty((len(images), size, size, channels), dtype=np.uint8)
    for index, image in enumerate(images):
        resized[index] = convert_channels(resize_square(centre_square(np.asarray(image)), size), channels)
    return resized


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an H×W×C image to size×size: area averaging when shrinking (no aliasing), bicubic when growing."""
    if image.shape[:2] == (size, size):
        return image
    shrinking = image.shape[0] > size
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return _keep_channel_axis(resized, image.shape[2])


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale ↔ RGB for an H×W×C image (RGB → gray with the ITU-R 601 luma weights)."""
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an image: the fallback when no face was found."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def eye_angle(left_eye: Sequence[float], right_eye: Sequence[float]) -> float:
    """Angle in degrees of the eye line against the horizontal (image y axis points down).

    Positive when the eye on the image's right sits lower; rotating the image counter-clockwise
    by this angle (cv2's sign convention) levels the eyes.
    """
    return math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))


def alignment_matrix(detection: Detection, margin: float, output_side: int) -> np.ndarray:
    """2×3 affine map from the photo to an output_side² crop with level eyes and the face centred.

    The photo is rotated about the eye midpoint; the crop is a square of side max(box w, h) × (1 + margin)
    centred on the rotated box centre, i.e. margin/2 of the box size is added on every side.
    """
    angle = eye_angle(detection.left_eye, detection.right_eye)
    eye_mid = (detection.left_eye + detection.right_eye) / 2
    rotation = cv2.getRotationMatrix2D((float(eye_mid[0]), float(eye_mid[1])), angle, 1.0)
    x1, y1, x2, y2 = detection.box
    centre = rotation @ np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    scale = output_side / side
    matrix = rotation * scale
    matrix[:, 2] = (rotation[:, 2] - (centre - side / 2)) * scale
    return matrix


def align_face(image: np.ndarray, detection: Detection, margin: float, size: int) -> np.ndarray:
    """Rotate, crop and resize one face.

    Parts of the crop outside the photo are padded black, as letterboxing does: on tight face photos
    repeating or mirroring the edge instead smears long streaks or second chins into the crop.
    """
    x1, y1, x2, y2 = detection.box
    # Warp at the crop's own resolution, then shrink with area averaging: warpAffine alone would alias.
    crop_side = max(size, math.ceil(max(x2 - x1, y2 - y1) * (1 + margin)))
    matrix = alignment_matrix(detection, margin, crop_side)
    crop = cv2.warpAffine(
        image, matrix, (crop_side, crop_side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return resize_square(_keep_channel_axis(crop, image.shape[2]), size)


def detect_faces(images: np.ndarray, min_confidence: float, detection_size: int = 0) -> list[Detection | None]:
    """Detect faces in a batch of same-size H×W×C uint8 images; one pick per image, in input coordinates.

    Images larger than `detection_size` (0 = never) are shrunk for detection only: on portrait photos
    this is several times faster at an equal detection rate. The pick is the largest face scoring at
    least `min_confidence`; when none does, the most confident face (the caller treats its score
    below the threshold as no face), or None.
    """
    return [_pick_face(faces, min_confidence) if faces else None for faces in _every_detection(images, detection_size)]


def detect_every_face(image: np.ndarray, min_confidence: float, detection_size: int = 0) -> list[Detection]:
    """Every face in one H×W×C uint8 image scoring at least `min_confidence`, largest first."""
    (faces,) = _every_detection(image[None], detection_size)
    confident = [face for face in faces if face.confidence >= min_confidence]
    return sorted(confident, key=_area, reverse=True)


def _every_detection(images: np.ndarray, detection_size: int) -> list[list[Detection]]:
    """MTCNN's faces (with landmarks) in each image of a batch, in input coordinates."""
    rgb = np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images
    shrink = max(rgb.shape[1:3]) / detection_size if detection_size else 1.0
    if shrink > 1:
        small_size = (round(rgb.shape[2] / shrink), round(rgb.shape[1] / shrink))  # cv2 wants (width, height)
        rgb = np.stack([cv2.resize(image, small_size, interpolation=cv2.INTER_AREA) for image in rgb])
    detector = _mtcnn()
    with _one_torch_thread():
        boxes, probabilities, landmarks = detector.detect(np.ascontiguousarray(rgb), landmarks=True)
    faces = [
        _detections(image_boxes, image_probabilities, image_landmarks)
        for image_boxes, image_probabilities, image_landmarks in zip(boxes, probabilities, landmarks, strict=True)
    ]
    if shrink <= 1:
        return faces
    return [[_scaled(face, shrink) for face in image_faces] for image_faces in faces]


def _detections(boxes: np.ndarray | None, probabilities: np.ndarray, landmarks: np.ndarray | None) -> list[Detection]:
    if boxes is None or landmarks is None:
        return []
    faces = []
    for box, score, points in zip(boxes, probabilities, landmarks, strict=True):
        eyes = np.asarray(points[:2], dtype=np.float64)  # landmarks: eyes, nose, mouth corners as (x, y)
        faces.append(Detection(np.asarray(box, dtype=np.float64), eyes[0], eyes[1], float(score)))
    return faces


def _area(detection: Detection) -> float:
    x1, y1, x2, y2 = detection.box
    return float((x2 - x1) * (y2 - y1))


def _scaled(detection: Detection, factor: float) -> Detection:
    return replace(
        detection,
        box=detection.box * factor,
        left_eye=detection.left_eye * factor,
        right_eye=detection.right_eye * factor,
    )


def _pick_face(faces: Sequence[Detection], min_confidence: float) -> Detection:
    """The largest face scoring at least `min_confidence`, else the most confident one."""
    confident = [face for face in faces if face.confidence >= min_confidence]
    if confident:
        return max(confident, key=_area)
    return max(faces, key=lambda face: face.confidence)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """MTCNN's boxes, and so the aligned pixels, change with torch's thread count (seen on the dev photos):
    one thread gives the same faces under any `threads` setting, in this process or a worker."""
    import torch  # loaded already: MTCNN runs on it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def _mtcnn() -> MTCNN:
    """MTCNN on the CPU, loaded once per process (the evaluate stage aligns several test sets)."""
    try:  # imported lazily: loading it costs time that detector none never needs
        from facenet_pytorch import MTCNN
    except ImportError:
        raise DataError(MTCNN_MISSING) from None
    return MTCNN(keep_all=False, select_largest=True, min_face_size=MIN_FACE_SIZE, device="cpu").eval()


def _align_with_mtcnn(
    dataset: Dataset, config: FaceAlignConfig, image_size: int, channels: int, workers: int
) -> AlignResult:
    started = time.perf_counter()
    align = partial(_align_batch, config=config, image_size=image_size, channels=channels)
    # One chunk per detector batch: each batch holds the same images whatever the worker count, and batch
    # composition nudges MTCNN's boxes (float32 batched NMS), so any other cut would change the output.
    batches = map_chunks(
        align,
        dataset.images,
        config.batch_size,
        workers,
        "face-align (mtcnn)",
        status=_aligned_so_far,
        preload=["facenet_pytorch"],  # 1.5 s to import, once in the fork server instead of in every worker
    )
    elapsed = time.perf_counter() - started
    count = len(dataset)
    log.info("face-align: %d images in %.1f s (%.1f images/s)", count, elapsed, count / max(elapsed, 1e-9))
    found = [item for batch in batches for item in batch.found]
    outcomes = [
        FaceOutcome(str(image_id), str(split), *image_found)
        for image_id, split, image_found in zip(dataset.ids, dataset.splits, found, strict=True)
    ]
    no_images = np.zeros((0, image_size, image_size, channels), dtype=np.uint8)  # the shape, for no batches
    images = np.concatenate([no_images, *(batch.images for batch in batches)])
    kept = np.array([item.outcome != "dropped" for item in outcomes], dtype=bool)
    aligned = replace(dataset, images=images)
    return AlignResult(aligned if kept.all() else aligned.subset(kept), outcomes)


@dataclass(frozen=True)
class _AlignedBatch:
    """One detector batch at the output size (black where dropped) and (outcome, confidence, angle) per image."""

    images: np.ndarray
    found: list[tuple[Outcome, float, float]]
    aligned: int  # images aligned on a face, for the progress bar


def _align_batch(chunk: Chunk[np.ndarray], config: FaceAlignConfig, image_size: int, channels: int) -> _AlignedBatch:
    """Detect and align one batch: a worker's task, the detector loaded once per process."""
    batch = np.asarray(chunk.items)
    images = np.zeros((len(batch), image_size, image_size, channels), dtype=np.uint8)
    found: list[tuple[Outcome, float, float]] = []
    for offset, detection in enumerate(detect_faces(batch, config.min_confidence, config.detection_size)):
        face, outcome, angle = _align_or_fall_back(batch[offset], detection, config, image_size)
        if face is not None:
            images[offset] = convert_channels(face, channels)
        found.append((outcome, math.nan if detection is None else detection.confidence, angle))
    return _AlignedBatch(images, found, aligned=sum(outcome == "aligned" for outcome, _, _ in found))


def _aligned_so_far(batches: Sequence[_AlignedBatch]) -> str:
    return f"{sum(batch.aligned for batch in batches)} aligned"


def _align_or_fall_back(
    image: np.ndarray, detection: Detection | None, config: FaceAlignConfig, size: int
) -> tuple[np.ndarray | None, Outcome, float]:
    """(face, outcome, angle): the aligned face, else the fallback crop or None (dropped) below min_confidence."""
    if detection is not None and detection.confidence >= config.min_confidence:
        angle = eye_angle(detection.left_eye, detection.right_eye)
        return align_face(image, detection, config.margin, size), "aligned", angle
    if config.on_no_face == "drop":
        return None, "dropped", 0.0
    return resize_square(centre_square(image), size), "fallback", 0.0


def _keep_channel_axis(image: np.ndarray, channels: int) -> np.ndarray:
    """cv2 returns H×W for one-channel input; put the channel axis back."""
    return image[:, :, None] if image.ndim == 2 and channels == 1 else image
