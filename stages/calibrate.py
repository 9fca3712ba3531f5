"""Score synthetic faces with teachers trained on real images; keep, relabel or soft-label them (calibrate.policy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.calibration import acceptance_table, calibrate
from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.preview import placeholder_png
from fersynth.runtime.io import atomic_write_bytes
from stages._common import (
    FILE_OUTPUT,
    FOLDER_OUTPUT,
    WORKING_FOLDER_OUTPUT,
    DiagnosticsOption,
    MetricsOption,
    ParamsOption,
    error_console,
    read_params,
    stage_command,
    write_stage_metrics,
)


@stage_command
def command(
    input_dir: Annotated[Path, typer.Option("--input", help="Synthetic images to calibrate (generate output).")],
    real: Annotated[
        Path, typer.Option("--real", help="Aligned real images; their train/val splits train the teachers.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the kept, calibrated synthetic images."), FOLDER_OUTPUT
    ],
    teachers: Annotated[
        Path,
        typer.Option("--teachers", help="Teacher cache: one directory per trained teacher, reused when unchanged."),
        WORKING_FOLDER_OUTPUT,
    ],
    metrics: MetricsOption,
    diagnostics: DiagnosticsOption,
    histogram: Annotated[
        Path,
        typer.Option("--histogram", help="PNG: teacher confidence per intended class, threshold marked."),
        FILE_OUTPUT,
    ],
    closest_pairs: Annotated[
        Path,
        typer.Option(
            "--closest-pairs", help="PNG: the synthetic images nearest to a real train image, beside it (judge)."
        ),
        FILE_OUTPUT,
    ],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    classes = params.common.classes
    synthetic, real_set = read_dataset(input_dir, classes), read_dataset(real, classes)
    # The teacher cache is a declared DVC output: it must exist even when nothing was generated to score.
    teachers.mkdir(parents=True, exist_ok=True)
    result = calibrate(synthetic, real_set, params.calibrate, params.common.seed, teachers, str(input_dir), str(real))
    error_console.print(acceptance_table(result.metrics(), classes))
    write_dataset(result.dataset, out, preview_title=f"calibrated ({params.calibrate.policy})")
    write_stage_metrics("calibrate", result.metrics(), diagnostics, metrics, record_environment=True)
    atomic_write_bytes(histogram, result.histogram_png)
    # A placeholder keeps the declared DVC out present when there is nothing to show.
    no_pairs = "no judge configured (calibrate.judge)" if params.calibrate.judge is None else "no synthetic images"
    atomic_write_bytes(closest_pairs, result.closest_pairs_png or placeholder_png(no_pairs))
