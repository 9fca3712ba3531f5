"""Synthesize faces per class up to generate.target through the backend(s) generate.backend names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.generation import synthesize, write_grids
from stages._common import (
    FOLDER_OUTPUT,
    DiagnosticsOption,
    ParamsOption,
    read_params,
    stage_command,
    write_stage_metrics,
)


@stage_command
def command(
    generator: Annotated[Path, typer.Option("--generator", help="Directory holding generator.pt (train-gan output).")],
    editor: Annotated[Path, typer.Option("--editor", help="Directory holding editor.pt (train-editor output).")],
    reference: Annotated[
        Path,
        typer.Option(
            "--reference", help="Aligned real images: train-split counts set the targets; editing starts from them."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory for the generated dataset."), FOLDER_OUTPUT],
    diagnostics: DiagnosticsOption,
    grids: Annotated[
        Path,
        typer.Option("--grids", help="Folder for one sample grid per synthetic source (<source>.png)."),
        FOLDER_OUTPUT,
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    real = read_dataset(reference, params.common.classes)
    generated = synthesize(real, params.generate, params.face_align, generator, editor, params.common.seed)
    write_dataset(
        generated.dataset, out, preview_title=f"generated ({params.generate.backend}, {params.generate.target})"
    )
    write_grids(generated.dataset, grids)
    write_stage_metrics("generate", generated.metrics(), diagnostics)
