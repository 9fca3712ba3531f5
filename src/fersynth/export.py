"""The classifier as ONNX, for runtimes without torch: uint8 faces in, class probabilities out.

The graph holds the whole preprocessing (NHWC uint8 -> NCHW float in [0, 1], the model's own normalisation)
and the softmax, so a caller feeds aligned faces as they are decoded. The batch axis is dynamic. Parity with
PyTorch is measured, not assumed: `check_parity` runs both on the same faces.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fersynth.errors import DataError
from fersynth.models.base import Classifier
from fersynth.prediction import SIDECAR_SUFFIX, ModelCard, OnnxFaceClassifier, sidecar_record
from fersynth.runtime.io import write_json
from fersynth.training import LoadedClassifier, predict_proba

ONNX_FILE = "classifier.onnx"
PARITY_BATCH = 64
# Float32 graphs differ from PyTorch's kernels in the last bits; a probability further off is a wrong export.
MAX_PROBABILITY_DIFFERENCE = 1e-4
# The headline figures of the run the model came from, copied into the sidecar.
OPSET = 18  # onnxruntime has run opset 18 since 1.14; the dynamo exporter's lowest well-tested one
INPUT_NAME, OUTPUT_NAME = "faces", "probabilities"
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")  # their INFO lines narrate graph passes
PREPROCESSING = (
    "input: uint8 (N, H, W, C) aligned faces; inside the graph: NCHW, divided by 255, the model's own "
    "per-channel normalisation; output: (N, K) softmax probabilities in the sidecar's class order"
)


class _FacesToProbabilities(nn.Module):
    """What `predict_proba` does around the classifier, as graph operations."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        images = faces.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return torch.softmax(self.model(images), dim=1)


@dataclass(frozen=True)
class Parity:
    """ONNX against PyTorch on the same faces."""

    images: int
    argmax_agreement: float  # share of faces whose top class is the same in both
    max_probability_difference: float  # largest |p_onnx - p_torch| over every face and class

    def metrics(self) -> dict[str, float | int]:
        return {
            "parity_images": self.images,
            "argmax_agreement": self.argmax_agreement,
            "max_probability_difference": self.max_probability_difference,
            # Metric files keep 4 decimals: in millionths the difference stays visible.
            "max_probability_difference_ppm": self.max_probability_difference * 1e6,
        }


def export_onnx(classifier: LoadedClassifier, path: Path) -> None:
    """Write the classifier (CPU, eval mode) as an ONNX graph with a dynamic batch axis."""
    model = _FacesToProbabilities(classifier.model.cpu().eval())
    height, width, channels = classifier.image_shape
    example = torch.zeros((2, height, width, channels), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():  # the exporter's notes on its own internals say nothing about this model
        warnings.simplefilter("ignore")
        for name in EXPORTER_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"faces": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise DataError("torch.onnx.export returned no program")
    program.save(str(path))


def check_parity(classifier: LoadedClassifier, onnx: OnnxFaceClassifier, faces: np.ndarray, batch: int) -> Parity:
    """Both models on the same uint8 faces, `batch` at a time."""
    expected = predict_proba(classifier.model, faces, batch)
    found = np.concatenate(
        [np.zeros((0, expected.shape[1]), np.float32)]
        + [onnx.probabilities(faces[start : start + batch]) for start in range(0, len(faces), batch)]
    )
    agreement = float(np.mean(expected.argmax(axis=1) == found.argmax(axis=1))) if len(faces) else 1.0
    difference = float(np.abs(expected - found).max()) if len(faces) else 0.0
    return Parity(len(faces), agreement, difference)


def export_classifier(
    classifier: LoadedClassifier, faces: np.ndarray, onnx_path: Path, provenance: Mapping[str, Any]
) -> Parity:
    """The export stage's work: `onnx_path` and its sidecar (the model card, `provenance`, opset, preprocessing),
    then their parity with PyTorch on `faces`; a DataError unless every top class agrees and no probability
    differs by more than MAX_PROBABILITY_DIFFERENCE (the stage then writes nothing)."""
    export_onnx(classifier, onnx_path)
    card = ModelCard(classifier.classes, classifier.image_shape, classifier.face_align_or_default())
    sidecar = sidecar_record(card, dict(provenance)) | {"opset": OPSET, "preprocessing": PREPROCESSING}
    write_json(onnx_path.with_suffix(SIDECAR_SUFFIX), sidecar)
    parity = check_parity(classifier, OnnxFaceClassifier(onnx_path), faces, PARITY_BATCH)
    if parity.argmax_agreement < 1.0 or parity.max_probability_difference > MAX_PROBABILITY_DIFFERENCE:
        raise DataError(
            f"the ONNX export disagrees with PyTorch on the test split: top class agrees on "
            f"{parity.argmax_agreement:.2%} of {parity.images} faces, probabilities differ by up to "
            f"{parity.max_probability_difference:.2g} (at most {MAX_PROBABILITY_DIFFERENCE:g} allowed); nothing written"
        )
    return parity
