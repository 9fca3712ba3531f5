"""Score the classifier on the test split and on every cross-dataset test set in evaluate.extra_test_sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.evaluation import evaluate_classifier, write_evaluation
from stages._common import ParamsOption, read_params, stage_command


@stage_command
def command(
    model: Annotated[Path, typer.Option("--model", help="Trained classifier directory (train output).")] = Path(
        "models/classifier"
    ),
    input_dir: Annotated[Path, typer.Option("--input", help="Aligned real images; their test split is scored.")] = Path(
        "data/aligned"
    ),
    metrics: Annotated[
        Path,
        typer.Option(
            "--metrics", help="Flat JSON: test-set accuracy, UAR, macro-F1, per-class scores; extra sets nested."
        ),
    ] = Path("metrics/evaluate.json"),
    confusion: Annotated[
        Path,
        typer.Option("--confusion", help="Directory of <set>.json actual/predicted rows for DVC's confusion plot."),
    ] = Path("metrics/confusion"),
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
    )
    write_evaluation(evaluation, metrics, confusion)
