"""Detect, align (eyes level), crop and resize faces; record each image's outcome (face_align.*)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.faces import OUTCOMES_FILE, align_dataset
from fersynth.io import write_json
from stages._common import ParamsOption, read_params, stage_command


@stage_command
def command(
    input_dir: Annotated[
        Path, typer.Option("--input", help="Dataset directory to align (fetch output: images.npy + manifest.csv).")
    ] = Path("data/fetched"),
    out: Annotated[
        Path,
        typer.Option("--out", help=f"Directory for the aligned dataset, with the per-image report {OUTCOMES_FILE}."),
    ] = Path("data/aligned"),
    metrics: Annotated[
        Path,
        typer.Option("--metrics", help="Flat JSON: images per outcome and detection rate, overall and per split."),
    ] = Path("metrics/face_align.json"),
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    dataset = read_dataset(input_dir, params.common.classes)
    config = params.face_align
    result = align_dataset(dataset, config, params.common.image_size, params.common.channels)
    title = f"aligned (detector {config.detector}, {params.common.image_size}px)"
    write_dataset(result.dataset, out, preview_title=title, extra_files={OUTCOMES_FILE: result.outcomes_csv()})
    write_json(metrics, result.metrics())
