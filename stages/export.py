"""Export the classifier as ONNX (preprocessing inside, dynamic batch) with a JSON sidecar; check parity."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from fersynth.datasets.format import read_dataset
from fersynth.errors import DataError
from fersynth.export import ONNX_FILE, export_classifier
from fersynth.runtime.io import atomic_directory
from fersynth.training import load_classifier
from stages._common import FOLDER_OUTPUT, DiagnosticsOption, MetricsOption, stage_command, write_stage_metrics

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
    provenance = _provenance(model, train_metrics)
    with atomic_directory(out) as staging:
        parity = export_classifier(classifier, test.images, staging / ONNX_FILE, provenance)
    write_stage_metrics("export", parity.metrics(), diagnostics, metrics)


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
