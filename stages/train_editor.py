"""Train the expression editor (generate.backend editor) on the real train faces; save it, its curves and samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset
from fersynth.editor import EDITOR_FILE, train_editor
from fersynth.editor.samples import grid_faces
from fersynth.preview import placeholder_png
from fersynth.runtime.device import resolve_device
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

NO_EDITOR_FILE = "NO_EDITOR.txt"
NO_EDITOR_TEXT = "no editor trained: train_editor.epochs is 0\n"


@stage_command
def command(
    input_dir: Annotated[
        Path, typer.Option("--input", help="Aligned dataset; only its real train faces train the editor.")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help=f"Directory for {EDITOR_FILE} (empty when train_editor.epochs is 0)."),
        FOLDER_OUTPUT,
    ],
    diagnostics: DiagnosticsOption,
    live: Annotated[
        Path, typer.Option("--live", help="dvclive directory for per-epoch loss curves."), WORKING_FOLDER_OUTPUT
    ],
    samples: Annotated[
        Path,
        typer.Option("--samples", help="PNG grid: real faces (rows) edited toward every class (columns)."),
        FILE_OUTPUT,
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    config, seed = params.train_editor, params.common.seed
    real = read_dataset(input_dir, params.common.classes)
    if config.epochs == 0:  # declared DVC outputs all the same, each saying why it holds no editor
        with atomic_directory(out) as staging:
            (staging / NO_EDITOR_FILE).write_text(NO_EDITOR_TEXT)
        with open_live(live):
            pass
        atomic_write_bytes(samples, placeholder_png(NO_EDITOR_TEXT.strip()))
        write_stage_metrics("train-editor", {"epochs": 0}, diagnostics)
        return
    # The editor trains in one process: DDP is not worth it at its size (execution `processes` is not used).
    with open_live(live) as curves:
        result = train_editor(real, config, seed, curves, device=resolve_device(execution_settings().device))
    with atomic_directory(out) as staging:
        result.editor.save(staging / EDITOR_FILE)
    atomic_write_bytes(samples, result.editor.sample_grid(*grid_faces(real)))
    write_stage_metrics("train-editor", result.metrics(), diagnostics, record_environment=True)
