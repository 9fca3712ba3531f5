"""Train the expression classifier on the merged set; the val split of the real data picks the checkpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fersynth.distributed import needs_torchrun, relaunch_under_torchrun, training_process
from fersynth.io import atomic_directory
from fersynth.training import MODEL_FILE, save_classifier, train_from_directories
from stages._common import (
    FOLDER_OUTPUT,
    WORKING_FILE_OUTPUT,
    WORKING_FOLDER_OUTPUT,
    DiagnosticsOption,
    MetricsOption,
    ParamsOption,
    execution_settings,
    read_params,
    stage_command,
    write_stage_metrics,
)


@stage_command
def command(
    train: Annotated[
        Path, typer.Option("--train", help="Training images (merge output); every row is used, whatever its split.")
    ],
    val: Annotated[
        Path, typer.Option("--val", help="Real aligned images; the epoch with the best val-split macro-F1 is kept.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help=f"Directory for the trained classifier ({MODEL_FILE})."), FOLDER_OUTPUT
    ],
    metrics: MetricsOption,
    diagnostics: DiagnosticsOption,
    live: Annotated[
        Path,
        typer.Option("--live", help="dvclive directory for per-epoch loss, val metrics and lr curves."),
        WORKING_FOLDER_OUTPUT,
    ],
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Resume file: saved every epoch; a killed run with the same params continues."),
        WORKING_FILE_OUTPUT,
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    settings = execution_settings()
    if needs_torchrun(settings.processes, os.environ):
        raise typer.Exit(relaunch_under_torchrun(settings.processes, sys.argv[1:]))
    seed = params.train.seed_or(params.common.seed)
    with training_process(settings.device, os.environ) as placement:
        run = train_from_directories(
            train, val, params.common.classes, params.train, seed, live, placement.device, resume
        )
    if not placement.main:
        return
    with atomic_directory(out) as staging:
        save_classifier(
            staging / MODEL_FILE, run.fit.model, params.train, run.classes, run.image_shape, params.face_align
        )
    write_stage_metrics("train", run.metrics(), diagnostics, metrics, record_environment=True)
