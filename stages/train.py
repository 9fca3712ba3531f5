"""Train the expression classifier on the merged set; the val split of the real data picks the checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset
from fersynth.runtime.distributed import on_main_process, training_process
from fersynth.runtime.io import atomic_directory
from fersynth.runtime.live import open_live
from fersynth.training import MODEL_FILE, train_classifier
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
from stages._torchrun import launch_processes


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
    launch_processes(settings)
    classes, seed = params.common.classes, params.train.seed_or(params.common.seed)
    train_set, real = read_dataset(train, classes), read_dataset(val, classes)
    # dvclive is emptied first: a resumed run logs its restored epochs again. In a process group, rank 0 logs.
    with training_process(settings.device, os.environ) as placement, on_main_process(lambda: open_live(live)) as curves:
        run = train_classifier(
            train_set,
            real,
            params.train,
            seed,
            live=curves,
            device=placement.device,
            resume=resume,
            names=(str(train), str(val)),
        )
    if not placement.main:
        return
    with atomic_directory(out) as staging:
        run.save(staging / MODEL_FILE, params.face_align)
    write_stage_metrics("train", run.metrics(), diagnostics, metrics, record_environment=True)
