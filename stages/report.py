"""A pull request's report: headline metrics against a baseline revision, per-class tables, figures, model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.tools.report_folder import REPORT_NAME, write_report
from stages._common import FOLDER_OUTPUT, ParamsOption, read_params, stage_command

app = typer.Typer(name="report", help=__doc__, add_completion=False)

OutOption = Annotated[
    Path, typer.Option("--out", help="Folder for README.md and its images (replaced whole)."), FOLDER_OUTPUT
]
BaselineOption = Annotated[
    str,
    typer.Option(
        "--baseline",
        help="Git revision (a PR: its base, e.g. main) or DVC experiment name to compare headline metrics with.",
    ),
]


CompareOption = Annotated[
    Path | None,
    typer.Option("--compare", help="A `fersynth compare` table (report/compare.md) to include: variants over seeds."),
]


@app.command("report")
@stage_command
def command(
    out: OutOption = Path("report"),
    baseline: BaselineOption = "HEAD",
    compare: CompareOption = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Write OUT/README.md with its PNGs beside it, ready to paste or upload as a PR comment."""
    params = read_params(params_path)
    images = write_report(out, params_path.parent, baseline, compare, params.common.classes, params.fetch.source)
    typer.echo(f"{out / REPORT_NAME}: report against {baseline}, {images} images.")
