"""Compare variants (the committed params and presets) over seeds and folds, as queued DVC experiments."""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer
import yaml
from dvc.utils.hydra import apply_overrides

from fersynth.errors import FersynthError, ParamsError
from fersynth.tools.comparison import (
    DEFAULT_VARIANT_NAMES,
    RESULT_FILES,
    SEED_KEYS,
    Run,
    Summary,
    gain_verdicts,
    markdown_table,
    plan_runs,
    preset_variants,
    run_figures,
    select_variants,
    stages_with_changed_params,
    summarise,
    table_keys,
)
from fersynth.tools.experiments import (
    QueuedRun,
    count_answering_workers,
    experiment_results,
    failure_log,
    head_commit,
    queue_runs,
    queue_status,
    start_queue,
    threads_per_job,
    wait_for,
)
from stages._common import FILE_OUTPUT, ParamsOption, read_params, read_raw_params, stage_command

app = typer.Typer(name="compare", add_completion=False)

SEED_SCOPE_TEXT = {
    "classifier": "the classifier alone (train.seed; data, GAN and teachers as committed)",
    "pipeline": "the whole pipeline (common.seed)",
}


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
VaryOption = Annotated[Literal["classifier", "pipeline"], typer.Option("--vary", help="What the seeds vary.")]
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
    raw = read_raw_params(params_path)
    try:
        chosen = select_variants(variants or DEFAULT_VARIANT_NAMES, preset_variants(presets_dir, raw))
    except ValueError as error:
        raise ParamsError(str(error)) from None
    compared = baseline or ("real-only" if "real-only" in [variant.name for variant in chosen] else chosen[0].name)
    if compared not in [variant.name for variant in chosen]:
        raise ParamsError(f"--baseline {compared!r} is not among the compared variants")
    runs = plan_runs(chosen, range(first_seed, first_seed + seeds), SEED_KEYS[vary], folds)
    common = list(overrides or [])
    if dry:
        _check_plan(runs, common, params_path)
        return
    summaries, keys = _run_all(runs, common, params_path, jobs, list(copy_paths or []), out)
    report = _report(summaries, keys, vary, compared, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    typer.echo(report)
    typer.echo(f"\nwritten: {out} and {out.with_suffix('.jsonl')}")


def _check_plan(runs: list[Run], common: list[str], params_path: Path) -> None:
    """Validate the params every run would use, as the stages will, and say which stages' params change."""
    lock_path = params_path.parent / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else {}
    typer.echo(f"{len(runs)} runs planned; overrides for all: {common or 'none'}")
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / "params.yaml"
        for run in runs:
            shutil.copyfile(params_path, trial)
            apply_overrides(str(trial), run.settings(common))  # DVC's own writer, as `dvc exp run -S` uses
            try:
                read_params(trial)
            except FersynthError as error:
                raise ParamsError(f"{run.name}: {error}") from None
            changed = stages_with_changed_params(lock, read_raw_params(trial))
            command = ["dvc", "exp", "run", "--queue", "-n", run.name, *_set_arguments(run.settings(common))]
            typer.echo(f"{run.name}: ok; params change for: {', '.join(changed) or 'none'}\n  {shlex.join(command)}")


def _set_arguments(settings: list[str]) -> list[str]:
    return [argument for setting in settings for argument in ("-S", setting)]


def _run_all(
    runs: list[Run], common: list[str], params_path: Path, jobs: int, copy_paths: list[str], out: Path
) -> tuple[list[Summary], list[str]]:
    """Queue, run and read back every run; the summaries per variant and the table's columns."""
    repo = params_path.resolve().parent
    classes = read_params(params_path).common.classes
    baseline_commit = head_commit(repo)
    queued = [QueuedRun(run.name, tuple(run.settings(common))) for run in runs]
    task_ids = queue_runs(repo, queued, copy_paths)
    threads = threads_per_job(jobs)
    typer.echo(f"queued {len(runs)} experiments on {baseline_commit[:7]}; {jobs} at a time, {threads} threads each")
    start_queue(repo, jobs, threads)
    finished = wait_for(
        lambda: queue_status(repo),
        task_ids,
        lambda name, status: typer.echo(f"  {name}: {status}"),
        lambda: count_answering_workers(repo),
    )
    failed = [name for name, status in finished.items() if status != "Success"]
    for name in failed:
        typer.echo(f"\n{name} failed; `dvc queue logs {name}` ends with:\n{failure_log(repo, name)}", err=True)
    if failed:
        raise FersynthError(f"{len(failed)} of {len(runs)} experiments failed: {', '.join(failed)}")
    per_run = {run.name: experiment_results(repo, baseline_commit, run.name, RESULT_FILES) for run in runs}
    _write_jsonl(out.with_suffix(".jsonl"), runs, per_run)
    flat = {name: run_figures(files) for name, files in per_run.items()}
    keys = list(table_keys(classes, flat.values()))
    results: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        results.setdefault(run.variant.name, []).append(flat[run.name])
    return summarise(results, keys), keys


def _write_jsonl(path: Path, runs: list[Run], per_run: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {"run": run.name, "variant": run.variant.name, "overrides": list(run.overrides), **per_run[run.name]}
        )
        for run in runs
    ]
    path.write_text("\n".join(lines) + "\n")


def _report(summaries: list[Summary], keys: list[str], vary: str, baseline: str, runs: list[Run]) -> str:
    folds = max(run.folds for run in runs)
    replicates = f"{len({run.seed for run in runs})} seeds" + (f" × {folds} folds" if folds else "")
    lines = [
        "# Comparison",
        "",
        f"Cells: mean ± sample std over {replicates} (n runs per variant). Seeds vary {SEED_SCOPE_TEXT[vary]}.",
        "Per-class columns are test recall; UAR is balanced accuracy. A dotted column is an extra test set.",
        "",
        markdown_table(summaries, keys),
    ]
    names = [summary.variant for summary in summaries]
    headline = [key for key in keys if key in ("accuracy", "macro_f1", "recall_disgust", "recall_fear")]
    for candidate in (name for name in names if name != baseline):
        lines += ["", f"{candidate} vs {baseline} (beyond noise: |gain| > 2 × the larger std):", ""]
        lines += [f"- {verdict}" for verdict in gain_verdicts(summaries, candidate, baseline, headline)]
    return "\n".join(lines)
