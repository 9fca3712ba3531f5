"""Detect, align (eyes level), crop and resize faces; record each image's outcome (face_align.*)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.faces import OUTCOMES_FILE, align_dataset
from stages._common import (
    FOLDER_OUTPUT,
    DiagnosticsOption,
    ParamsOption,
    execution_settings,
    read_params,
    stage_command,
    write_stage_metrics,
)


@stage_command
def command(
    input_dir: Annotated[
        Path, typer.Option("--input", help="Dataset directory to align (fetch output: images.npy + manifest.csv).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help=f"Directory for the aligned dataset, with the per-image report {OUTCOMES_FILE}."),
        FOLDER_OUTPUT,
    ],
    diagnostics: DiagnosticsOption,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    dataset = read_dataset(input_dir, params.common.classes)
    config = params.face_align
    workers = execution_settings().workers
    result = align_dataset(dataset, config, params.common.image_size, params.common.channels, workers=workers)
    title = f"aligned (detector {config.detector}, {params.common.image_size}px)"
    write_dataset(result.dataset, out, preview_title=title, extra_files={OUTCOMES_FILE: result.outcomes_csv()})
    # workers is informational: an execution setting, the results are identical for any count
    write_stage_metrics("face-align", result.metrics() | {"workers": workers}, diagnostics)
