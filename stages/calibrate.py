"""Score synthetic faces with teachers trained on real images; keep, relabel or soft-label them (calibrate.policy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.calibration import calibrate_directories
from fersynth.datasets.format import write_dataset
from fersynth.io import atomic_write_bytes, write_json
from stages._common import ParamsOption, read_params, stage_command


@stage_command
def command(
    input_dir: Annotated[Path, typer.Option("--input", help="Synthetic images to calibrate (generate output).")] = Path(
        "data/generated"
    ),
    real: Annotated[
        Path, typer.Option("--real", help="Aligned real images; their train/val splits train the teachers.")
    ] = Path("data/aligned"),
    out: Annotated[Path, typer.Option("--out", help="Directory for the kept, calibrated synthetic images.")] = Path(
        "data/calibrated"
    ),
    teachers: Annotated[
        Path,
        typer.Option("--teachers", help="Teacher cache: one directory per trained teacher, reused when unchanged."),
    ] = Path("models/teachers"),
    metrics: Annotated[
        Path, typer.Option("--metrics", help="Flat JSON: per-class acceptance, expression accuracy, teacher F1.")
    ] = Path("metrics/calibrate.json"),
    histogram: Annotated[
        Path, typer.Option("--histogram", help="PNG: teacher confidence per intended class, threshold marked.")
    ] = Path("metrics/plots/calibrate_confidence.png"),
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    result = calibrate_directories(
        input_dir, real, teachers, params.calibrate, params.common.classes, params.common.seed
    )
    write_dataset(result.dataset, out, preview_title=f"calibrated ({params.calibrate.policy})")
    write_json(metrics, result.metrics)
    atomic_write_bytes(histogram, result.histogram_png)
