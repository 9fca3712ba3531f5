"""The options `fersynth predict` and `fersynth serve` share: which trained model to use, and how faces are found."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.prediction import Detector

ModelOption = Annotated[Path, typer.Option("--model", help="A fersynth checkpoint (model.pt or its folder).")]
OnnxOption = Annotated[
    Path | None,
    typer.Option("--onnx", help="An exported classifier.onnx (its .json beside it) on onnxruntime, not --model."),
]
DetectorOption = Annotated[
    Detector,
    typer.Option("--detector", help="mtcnn: every face in an image; none: each image is one face crop."),
]
DEFAULT_MODEL = Path("models/classifier")


def chosen_model(model: Path, onnx: Path | None) -> Path:
    """--onnx when given (onnxruntime), else --model (torch)."""
    return onnx if onnx is not None else model
