"""Sample synthetic faces per class up to the generate.target (GAN backend), with oversampling headroom."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.generation import (
    GanBackend,
    check_reference_shape,
    generate_dataset,
    generate_metrics,
    plan_counts,
)
from stages._common import DiagnosticsOption, ParamsOption, read_params, stage_command, write_stage_metrics


@stage_command
def command(
    generator: Annotated[Path, typer.Option("--generator", help="Directory holding generator.pt (train-gan output).")],
    reference: Annotated[
        Path, typer.Option("--reference", help="Aligned real images; their train-split class counts set the targets.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory for the generated dataset.")],
    diagnostics: DiagnosticsOption,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    params = read_params(params_path)
    real = read_dataset(reference, params.common.classes)
    plan = plan_counts(real.class_counts(split="train"), params.generate)
    backend = GanBackend(generator, params.generate.truncation)
    check_reference_shape(backend, real.images.shape[1:], generator)
    dataset = generate_dataset(backend, plan, params.common.seed, params.generate.batch_size)
    write_dataset(dataset, out, preview_title=f"generated ({params.generate.backend}, {params.generate.target})")
    write_stage_metrics("generate", generate_metrics(plan), diagnostics)
