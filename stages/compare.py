"""Compare variants (the committed params and presets) over seeds and folds, as queued DVC experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fersynth.tools.compare_run import Vary, check_plan, plan_comparison, run_comparison
from fersynth.tools.comparison import DEFAULT_VARIANT_NAMES
from stages._common import FILE_OUTPUT, ParamsOption, read_params, read_raw_params, stage_command

app = typer.Typer(name="compare", add_completion=False)

VariantsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="`synthetic` (the committed params) or preset names [default: synthetic real-only class-weighted]."
    ),
]
SeedsOption = Annotated[int, typer.Option("--seeds", min=1, help="Seeds per variant: S, S+1, ... S+N-1.")]
FirstSeedOption = Annotated[
    int, typer.Option("--first-seed", min=0, help="S: the first seed (more seeds later, same runs before).")
]
VaryOption = Annotated[Vary, typer.Option("--vary", help="What the seeds vary.")]
FoldsOption = Annotated[
    int, typer.Option("--folds", min=0, help="k-fold: run every test fold (fetch.folds=K, fetch.fold=0..K-1).")
]
JobsOption = Annotated[int, typer.Option("-j", "--jobs", min=1, help="Experiments at once (cores/N threads each).")]
SetOption = Annotated[
    list[str] | None, typer.Option("-S", "--set", help="key=value for every run (a variant's own keys win).")
]
CopyOption = Annotated[
    list[str] | None, typer.Option("-C", "--copy", help="Untracked path every run needs (dvc exp run -C).")
]
BaselineOption = Annotated[
    str | None, typer.Option("--baseline", help="Variant the others are tested against [default: real-only].")
]
OutOption = Annotated[
    Path, typer.Option("--out", help="Markdown table; per-run metrics go beside it as .jsonl."), FILE_OUTPUT
]
DryOption = Annotated[bool, typer.Option("--dry", help="Check and print every planned run; queue nothing.")]
PresetsDirOption = Annotated[Path, typer.Option("--presets-dir", help="Folder of preset files.")]


@app.command("compare", help=__doc__)
@stage_command
def command(
    variants: VariantsArgument = None,
    seeds: SeedsOption = 3,
    first_seed: FirstSeedOption = 0,
    vary: VaryOption = "classifier",
    folds: FoldsOption = 0,
    jobs: JobsOption = 1,
    overrides: SetOption = None,
    copy_paths: CopyOption = None,
    baseline: BaselineOption = None,
    out: OutOption = Path("report/compare.md"),
    dry: DryOption = False,
    params_path: ParamsOption = Path("params.yaml"),
    presets_dir: PresetsDirOption = Path("presets"),
) -> None:
    seed_numbers = range(first_seed, first_seed + seeds)
    names = variants or DEFAULT_VARIANT_NAMES
    plan = plan_comparison(names, read_raw_params(params_path), presets_dir, seed_numbers, vary, folds, baseline)
    common = list(overrides or [])
    if dry:
        check_plan(plan, common, params_path, read_params, typer.echo)
        return
    classes = read_params(params_path).common.classes
    repo = params_path.resolve().parent
    records = out.with_suffix(".jsonl")
    report = run_comparison(plan, common, repo, classes, jobs, copy_paths or (), records, typer.echo, _echo_error)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    typer.echo(report)
    typer.echo(f"\nwritten: {out} and {records}")


def _echo_error(message: str) -> None:
    typer.echo(message, err=True)
