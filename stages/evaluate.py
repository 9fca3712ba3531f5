"""Score the classifier on the test split and on every extra test set (evaluate.extra_test_sets); draw Grad-CAM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset
from fersynth.evaluation import evaluate_classifier, load_compatible_classifier, read_extra_test_sets, write_confusion
from fersynth.gradcam import write_gradcam_grid
from stages._common import (
    FILE_OUTPUT,
    FOLDER_OUTPUT,
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
        FOLDER_OUTPUT,
    ],
    gradcam: Annotated[
        Path,
        typer.Option("--gradcam", help="PNG of the first test faces per class under the classifier's Grad-CAM map."),
        FILE_OUTPUT,
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    common = params.common
    classifier = load_compatible_classifier(model, common.classes, common.image_size, common.channels)
    real = read_dataset(input_dir, common.classes)
    # fetch's read rules (file size, compression, pixel budget, min side, alpha) bound the extra sets too
    extra_sets = read_extra_test_sets(
        params.evaluate, common.classes, params.face_align, common.image_size, common.channels, params.fetch
    )
    evaluation = evaluate_classifier(classifier, real, extra_sets, params.evaluate, str(input_dir))
    write_confusion(evaluation, confusion)
    test = evaluation.test
    write_gradcam_grid(classifier.model, test.images, test.labels, test.classes, gradcam)
    write_stage_metrics("evaluate", evaluation.metrics(), diagnostics, metrics, record_environment=True)
