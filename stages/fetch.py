"""Bring a dataset in (demo, FER2013 folder/zip/CSV, legend CSV, ImageFolder) with fixed train/val/test splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.fetch import class_count_table, fetch_dataset
from fersynth.datasets.format import write_dataset
from fersynth.runtime.io import atomic_write_bytes
from stages._common import (
    FILE_OUTPUT,
    FOLDER_OUTPUT,
    DiagnosticsOption,
    ParamsOption,
    error_console,
    read_params,
    stage_command,
    write_stage_metrics,
)


@stage_command
def command(
    out: Annotated[
        Path, typer.Option(help="Dataset directory to write (images.npy, manifest.csv, preview.png)."), FOLDER_OUTPUT
    ],
    diagnostics: DiagnosticsOption,
    near_duplicates: Annotated[
        Path,
        typer.Option(
            "--near-duplicates", help="PNG: val/test images beside near-identical train images (pHash distance)."
        ),
        FILE_OUTPUT,
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    result = fetch_dataset(params.fetch, params.common.classes, params.common.seed)
    error_console.print(class_count_table(result.dataset))
    write_dataset(result.dataset, out, preview_title=f"fetch: {params.fetch.source}")
    write_stage_metrics("fetch", result.metrics(), diagnostics)
    atomic_write_bytes(near_duplicates, result.near_duplicates.sheet_png)
