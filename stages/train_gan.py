"""Train the class-conditional GAN on the real train split (resumable); save the generator, loss curves and samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from dvclive import Live

from fersynth.datasets.format import read_dataset
from fersynth.gan.generator import GENERATOR_FILE
from fersynth.gan.training import train_gan
from fersynth.io import atomic_directory, atomic_write_bytes
from stages._common import DiagnosticsOption, ParamsOption, read_params, stage_command, write_stage_metrics


@stage_command
def command(
    input_dir: Annotated[Path, typer.Option("--input", help="Aligned dataset; only its train split trains the GAN.")],
    offline: Annotated[
        Path, typer.Option("--offline", help="Offline-augmented variants, read only when train_gan.use_offline.")
    ],
    out: Annotated[Path, typer.Option("--out", help=f"Directory for {GENERATOR_FILE} (EMA weights).")],
    checkpoints: Annotated[
        Path,
        typer.Option("--checkpoints", help="Resumable training state; a rerun with the same params continues it."),
    ],
    diagnostics: DiagnosticsOption,
    live: Annotated[Path, typer.Option("--live", help="dvclive directory for per-epoch loss curves.")],
    samples: Annotated[Path, typer.Option("--samples", help="PNG sample grid: one row per class, fixed noise.")],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    config, classes, seed = params.train_gan, params.common.classes, params.common.seed
    real = read_dataset(input_dir, classes)
    variants = read_dataset(offline, classes) if config.use_offline else None
    # dvcyaml=None and save_dvc_exp=False: DVC's own dvc.yaml declares these plots; dvclive must not edit it.
    with Live(dir=str(live), save_dvc_exp=False, dvcyaml=None, report=None) as live_log:
        result = train_gan(real, config, seed, checkpoints, live_log, offline=variants)
    with atomic_directory(out) as staging:
        result.generator.save(staging / GENERATOR_FILE)
    atomic_write_bytes(samples, result.generator.sample_grid(seed))
    write_stage_metrics("train-gan", result.metrics(), diagnostics, record_environment=True)
