"""Merge real, offline-augmented and calibrated synthetic images into the training set (merge.policy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.merging import OFFLINE, REAL, SYNTHETIC, merge_training_set
from fersynth.runtime.io import write_json
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
    real: Annotated[
        Path, typer.Option("--real", help="Aligned real images (face-align output); only the train split enters.")
    ],
    offline: Annotated[Path, typer.Option("--offline", help="Offline-augmented variants of the real training images.")],
    synthetic: Annotated[Path, typer.Option("--synthetic", help="Calibrated synthetic images (calibrate output).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the merged training set."), FOLDER_OUTPUT],
    metrics: MetricsOption,
    diagnostics: DiagnosticsOption,
    counts_plot: Annotated[
        Path,
        typer.Option("--counts-plot", help="Class counts before/after as JSON rows for DVC's bar plot."),
        FILE_OUTPUT,
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    directories = {REAL: real, OFFLINE: offline, SYNTHETIC: synthetic}
    sets = {name: read_dataset(directory, params.common.classes) for name, directory in directories.items()}
    names = {name: str(directory) for name, directory in directories.items()}
    result = merge_training_set(sets[REAL], sets[OFFLINE], sets[SYNTHETIC], params.merge, params.common.seed, names)
    write_dataset(result.dataset, out, preview_title=f"merged training set ({params.merge.policy})")
    write_stage_metrics("merge", result.metrics(), diagnostics, metrics)
    write_json(counts_plot, result.counts_plot_rows())
