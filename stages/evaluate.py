"""Score the classifier on the test split and on every cross-dataset test set in evaluate.extra_test_sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.evaluation import evaluate_classifier, write_confusion
from stages._common import (
    DiagnosticsOption,
    MetricsOption,
    ParamsOption,
    read_params,
    stage_command,
    write_stage_metrics,
)


@stage_command
def command(
    model: Annotated[Path, typer.Option("--model", help="Trained classifier directory (train output).")],
    input_dir: Annotated[Path, typer.Option("--input", help="Aligned real images; their test split is scored.")],
    metrics: MetricsOption,
    diagnostics: DiagnosticsOption,
    confusion: Annotated[
        Path,
        typer.Option("--confusion", help="Directory of <set>.json actual/predicted rows for DVC's confusion plot."),
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    evaluation = evaluate_classifier(
        model,
        input_dir,
        params.common.classes,
        params.common.image_size,
        params.common.channels,
        params.evaluate,
        params.face_align,
        params.fetch,  # its read rules (file size, compression, pixel budget, min side, alpha) bound extra sets too
    )
    write_confusion(evaluation, confusion)
    write_stage_metrics("evaluate", evaluation.metrics, diagnostics, metrics, record_environment=True)
