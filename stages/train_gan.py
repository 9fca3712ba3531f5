"""Train the class-conditional GAN on the real train split (resumable); save the generator, loss curves and samples."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset
from fersynth.gan.generator import GENERATOR_FILE
from fersynth.gan.training import train_gan
from fersynth.runtime.distributed import on_main_process, training_process
from fersynth.runtime.io import atomic_directory, atomic_write_bytes
from fersynth.runtime.live import open_live
from stages._common import (
    FILE_OUTPUT,
    FOLDER_OUTPUT,
    WORKING_FOLDER_OUTPUT,
    DiagnosticsOption,
    ParamsOption,
    execution_settings,
    read_params,
    stage_command,
    write_stage_metrics,
)
from stages._torchrun import launch_processes


@stage_command
def command(
    input_dir: Annotated[Path, typer.Option("--input", help="Aligned dataset; only its train split trains the GAN.")],
    offline: Annotated[
        Path, typer.Option("--offline", help="Offline-augmented variants, read only when train_gan.use_offline.")
    ],
    out: Annotated[Path, typer.Option("--out", help=f"Directory for {GENERATOR_FILE} (EMA weights)."), FOLDER_OUTPUT],
    checkpoints: Annotated[
        Path,
        typer.Option("--checkpoints", help="Resumable training state; a rerun with the same params continues it."),
        WORKING_FOLDER_OUTPUT,
    ],
    diagnostics: DiagnosticsOption,
    live: Annotated[
        Path, typer.Option("--live", help="dvclive directory for per-epoch loss curves."), WORKING_FOLDER_OUTPUT
    ],
    samples: Annotated[
        Path, typer.Option("--samples", help="PNG sample grid: one row per class, fixed noise."), FILE_OUTPUT
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    settings = execution_settings()
    launch_processes(settings)
    config, classes, seed = params.train_gan, params.common.classes, params.common.seed
    real = read_dataset(input_dir, classes)
    variants = read_dataset(offline, classes) if config.use_offline else None
    with training_process(settings.device, os.environ) as placement, on_main_process(lambda: open_live(live)) as curves:
        result = train_gan(real, config, seed, checkpoints, curves, offline=variants, device=placement.device)
    if not placement.main:
        return
    with atomic_directory(out) as staging:
        result.generator.save(staging / GENERATOR_FILE)
    atomic_write_bytes(samples, result.generator.sample_grid(seed))
    write_stage_metrics("train-gan", result.metrics(), diagnostics, record_environment=True)
