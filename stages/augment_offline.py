"""Write N label-preserving augmented variants of every training image (augment_offline.*)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.offline_augmentation import augment_offline
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
        Path, typer.Option("--input", help="Aligned dataset (face-align output); only its train split is augmented.")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Directory for the variants (source 'offline', origin = the real image)."),
        FOLDER_OUTPUT,
    ],
    diagnostics: DiagnosticsOption,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    dataset = read_dataset(input_dir, params.common.classes)
    config = params.augment_offline
    workers = execution_settings().workers
    variants = augment_offline(dataset, config, params.common.seed, workers=workers)
    write_dataset(
        variants.dataset, out, preview_title=f"offline variants ({config.variants_per_image} per training image)"
    )
    # workers is informational: an execution setting, the results are identical for any count
    write_stage_metrics("augment-offline", variants.metrics() | {"workers": workers}, diagnostics)
