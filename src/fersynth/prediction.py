"""Classify the faces in anyone's photos with a trained classifier: a fersynth checkpoint or its ONNX export.

Every face in a photo is found (MTCNN), then rotated, cropped and resized as the model's training faces
were (the margin, size and channels the model carries), and classified. With `detector="none"` each image
is taken as one pre-cropped face. The model's own metadata decides all of this, never params.yaml, so a
model copied elsewhere keeps working.

    import fersynth
    from PIL import Image
    import numpy as np

    photo = np.asarray(Image.open("group.jpg").convert("RGB"))
    for face in fersynth.predict([photo], "models/classifier"):
        print(face.box, face.label, f"{face.confidence:.2f}")

An ONNX model (`fersynth export`'s `classifier.onnx`, with its `classifier.json` beside it) runs on
onnxruntime; with `detector="none"` torch is then never imported.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from fersynth.config import FaceAlignConfig
from fersynth.errors import DataError
from fersynth.faces import align_face, centre_square, convert_channels, detect_every_face, resize_square

if TYPE_CHECKING:
    from fersynth.training import LoadedClassifier

log = logging.getLogger(__name__)

Detector = Literal["mtcnn", "none"]
ONNX_SUFFIX = ".onnx"
SIDECAR_SUFFIX = ".json"  # classifier.onnx -> classifier.json
SIDECAR_FORMAT = "fersynth-onnx-classifier/1"
BOX_COLOUR = (255, 200, 0)  # RGB amber: visible on skin, grey photos and dark backgrounds


@dataclass(frozen=True)
class ModelCard:
    """What a caller must do to a face before the model sees it, and what the model's outputs mean."""

    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) of the faces it was trained on
    face_align: FaceAlignConfig  # margin and confidence to align new faces with; detector: how training faces were


class FaceClassifier(Protocol):
    card: ModelCard

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """(N, K) float32 class probabilities of uint8 (N, H, W, C) faces of the card's shape."""
        ...


@dataclass(frozen=True)
class FacePrediction:
    """One face: where it is in its image and what the model makes of it."""

    image: int  # index of the image among those given to `predict`
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the image's pixels (the whole image: no detector)
    detection_confidence: float  # the detector's score; nan without a detector
    probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def top(self, count: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)[:count]


@dataclass(frozen=True)
class FoundFace:
    """A face ready for the model, and where it came from."""

    pixels: np.ndarray  # (H, W, C) uint8, aligned as the training faces were
    box: tuple[float, float, float, float]
    detection_confidence: float


def predict(
    images: np.ndarray | Sequence[np.ndarray],
    model: FaceClassifier | str | Path = "models/classifier",
    *,
    detector: Detector = "mtcnn",
    max_faces: int = 0,
) -> list[FacePrediction]:
    """Every face of every image (H×W×C uint8, RGB or grey), largest first within an image; `max_faces` (0 = all)
    caps the faces per image. `model` is a loaded classifier, a checkpoint (file or folder) or an ONNX file."""
    classifier = model if not isinstance(model, str | Path) else load_face_classifier(Path(model))
    predictions: list[FacePrediction] = []
    for index, image in enumerate(_as_image_list(images)):
        predictions += classify_faces(classifier, find_faces(image, classifier.card, detector, max_faces), index)
    return predictions


def find_faces(image: np.ndarray, card: ModelCard, detector: Detector, max_faces: int = 0) -> list[FoundFace]:
    """The faces of one image at the model's size and channels: every detected one, or the image itself."""
    side, _, channels = card.image_shape  # square faces
    if detector == "none":
        face = convert_channels(resize_square(centre_square(image), side), channels)
        return [FoundFace(face, (0.0, 0.0, float(image.shape[1]), float(image.shape[0])), math.nan)]
    alignment = card.face_align
    detections = detect_every_face(image, alignment.min_confidence, alignment.detection_size)
    return [
        FoundFace(
            convert_channels(align_face(image, detection, alignment.margin, side), channels),
            _box(detection.box),
            detection.confidence,
        )
        for detection in detections[: max_faces or None]
    ]


def classify_faces(classifier: FaceClassifier, faces: Sequence[FoundFace], image: int) -> list[FacePrediction]:
    if not faces:
        return []
    probabilities = classifier.probabilities(np.stack([face.pixels for face in faces]))
    classes = classifier.card.classes
    return [
        FacePrediction(
            image, face.box, face.detection_confidence, {name: float(p) for name, p in zip(classes, row, strict=True)}
        )
        for face, row in zip(faces, probabilities, strict=True)
    ]


def load_face_classifier(path: Path) -> FaceClassifier:
    """An ONNX file (with its JSON sidecar) on onnxruntime, else a fersynth checkpoint (file or folder) on torch."""
    if path.suffix == ONNX_SUFFIX:
        return OnnxFaceClassifier(path)
    return TorchFaceClassifier.load(path)


@dataclass(frozen=True)
class TorchFaceClassifier:
    loaded: LoadedClassifier
    card: ModelCard

    @classmethod
    def load(cls, path: Path) -> TorchFaceClassifier:
        from fersynth.training import load_classifier  # torch only for checkpoints: ONNX callers go without it

        loaded = load_classifier(path)
        if loaded.face_align is None:
            log.warning("%s records no face alignment (saved by an older fersynth): default margin assumed", path)
        card = ModelCard(loaded.classes, loaded.image_shape, loaded.face_align_or_default())
        return cls(loaded, card)

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        from fersynth.training import predict_proba

        return predict_proba(self.loaded.model, faces)


class OnnxFaceClassifier:
    """`fersynth export`'s ONNX graph: uint8 (N, H, W, C) faces in, class probabilities out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.card = read_sidecar(path.with_suffix(SIDECAR_SUFFIX))
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for missing and damaged files
            raise DataError(f"{path}: not a loadable ONNX model ({error})") from None
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run(None, {self.input_name: np.ascontiguousarray(faces, dtype=np.uint8)})
        return np.asarray(probabilities, dtype=np.float32)


def sidecar_record(card: ModelCard, extra: dict[str, object]) -> dict[str, object]:
    """The JSON written beside an ONNX file: everything `read_sidecar` needs, plus provenance in `extra`."""
    return {
        "format": SIDECAR_FORMAT,
        "classes": list(card.classes),
        "image_shape": list(card.image_shape),
        "face_align": card.face_align.model_dump(),
        **extra,
    }


def read_sidecar(path: Path) -> ModelCard:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; an ONNX classifier needs the JSON that `fersynth export` writes") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable sidecar ({error})") from None
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise DataError(f"{path}: not a fersynth ONNX sidecar (format {SIDECAR_FORMAT!r} expected)")
    try:
        height, width, channels = (int(side) for side in record["image_shape"])
        classes = tuple(str(name) for name in record["classes"])
        face_align = FaceAlignConfig.model_validate(record["face_align"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: damaged sidecar ({error})") from None
    return ModelCard(classes, (height, width, channels), face_align)


def _box(box: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(side) for side in box)
    return x1, y1, x2, y2


def _as_image_list(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One image (H×W×C, or grey H×W), a stack of them (N×H×W×C), or a list of images of any sizes."""
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
        images = [images]
    listed = [np.asarray(image) for image in images]
    for index, image in enumerate(listed):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise DataError(f"image {index}: expected H×W×C uint8 (C 1 or 3), got {image.dtype} {image.shape}")
    return [image[:, :, None] if image.ndim == 2 else image for image in listed]


def draw_faces(image: np.ndarray, predictions: Sequence[FacePrediction]) -> np.ndarray:
    """An RGB copy of `image` with each face boxed and labelled with its expression and probability."""
    import cv2

    canvas = np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image).copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 300))
    scale = thickness * 0.5
    for face in predictions:
        x1, y1, x2, y2 = (round(side) for side in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOUR, thickness)
        text = f"{face.label} {face.confidence:.2f}"
        (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(y1 - text_height - 4 * thickness, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + text_width, top + text_height + 4 * thickness), BOX_COLOUR, -1)
        origin = (x1, top + text_height + 2 * thickness)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas
