"""Export the classifier as ONNX (preprocessing inside, dynamic batch) with a JSON sidecar; check parity."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from fersynth.datasets.format import read_dataset
from fersynth.errors import DataError
from fersynth.export import OPSET, PREPROCESSING, Parity, check_parity, export_onnx
from fersynth.io import atomic_directory, write_json
from fersynth.prediction import SIDECAR_SUFFIX, ModelCard, OnnxFaceClassifier, sidecar_record
from fersynth.training import load_classifier
from stages._common import FOLDER_OUTPUT, DiagnosticsOption, MetricsOption, stage_command, write_stage_metrics

ONNX_FILE = "classifier.onnx"
PARITY_BATCH = 64
# Float32 graphs differ from PyTorch's kernels in the last bits; a probability further off is a wrong export.
MAX_PROBABILITY_DIFFERENCE = 1e-4
# The headline figures of the run the model came from, copied into the sidecar.
PROVENANCE_KEYS = ("best_val_macro_f1", "best_val_accuracy", "best_epoch", "epochs_reached")


@stage_command
def command(
    model: Annotated[Path, typer.Option("--model", help="Trained classifier directory (train output).")],
    input_dir: Annotated[Path, typer.Option("--input", help="Aligned real images; the test split checks parity.")],
    train_metrics: Annotated[Path, typer.Option("--train-metrics", help="metrics/train.json, for the sidecar.")],
    out: Annotated[Path, typer.Option("--out", help=f"Folder for {ONNX_FILE} and its .json sidecar."), FOLDER_OUTPUT],
    metrics: MetricsOption,
    diagnostics: DiagnosticsOption,
) -> None:
    classifier = load_classifier(model)
    test = read_dataset(input_dir, classifier.classes).split("test")
    card = ModelCard(classifier.classes, classifier.image_shape, classifier.face_align_or_default())
    with atomic_directory(out) as staging:
        onnx_path = staging / ONNX_FILE
        export_onnx(classifier, onnx_path)
        sidecar = sidecar_record(card, _provenance(model, train_metrics))
        write_json(onnx_path.with_suffix(SIDECAR_SUFFIX), sidecar | {"opset": OPSET, "preprocessing": PREPROCESSING})
        parity = check_parity(classifier, OnnxFaceClassifier(onnx_path), test.images, PARITY_BATCH)
        _require_parity(parity)
    write_stage_metrics("export", parity.metrics(), diagnostics, metrics)


def _require_parity(parity: Parity) -> None:
    if parity.argmax_agreement < 1.0 or parity.max_probability_difference > MAX_PROBABILITY_DIFFERENCE:
        raise DataError(
            f"the ONNX export disagrees with PyTorch on the test split: top class agrees on "
            f"{parity.argmax_agreement:.2%} of {parity.images} faces, probabilities differ by up to "
            f"{parity.max_probability_difference:.2g} (at most {MAX_PROBABILITY_DIFFERENCE:g} allowed); nothing written"
        )


def _provenance(model: Path, train_metrics: Path) -> dict[str, Any]:
    try:
        trained = json.loads(train_metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{train_metrics}: not readable train metrics ({error})") from None
    return {
        "source_model": str(model),
        "commit": _commit(),
        "train_metrics": {key: trained[key] for key in PROVENANCE_KEYS if key in trained},
    }


def _commit() -> str:
    """The checked-out commit the export ran at ("unknown" outside a git checkout)."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return found.stdout.strip()
