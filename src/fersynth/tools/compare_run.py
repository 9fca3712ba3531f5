"""`fersynth compare` end to end: choose the variants, check or run every planned run, and write up the result.

`fersynth.tools.comparison` plans runs and summarises figures without touching DVC; `fersynth.tools.experiments`
drives DVC's queue. This module joins the two the way the command does, so the whole comparison runs (and is
tested) without the CLI. Progress goes through the `echo` callbacks the caller passes, so the library never
prints on its own and never imports the CLI; problems are FersynthError (ParamsError for a bad request).
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from dvc.utils.hydra import apply_overrides

from fersynth.config import read_yaml_file
from fersynth.errors import FersynthError, ParamsError
from fersynth.tools.comparison import (
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
    option_arguments,
    queue_runs,
    queue_status,
    start_queue,
    threads_per_job,
    wait_for,
)

Vary = Literal["classifier", "pipeline"]  # a key of SEED_KEYS

SEED_SCOPE_TEXT: Mapping[str, str] = {
    "classifier": "the classifier alone (train.seed; data, GAN and teachers as committed)",
    "pipeline": "the whole pipeline (common.seed)",
}

# Where the report's verdicts look: the overall figures and the rare classes synthetic data is meant to lift.
HEADLINE_KEYS = ("accuracy", "macro_f1", "recall_disgust", "recall_fear")

Echo = Callable[[str], None]


@dataclass(frozen=True)
class ComparisonPlan:
    """Every run of a comparison, what its seeds vary, and the variant the others are tested against."""

    runs: list[Run]
    vary: Vary
    baseline: str


def plan_comparison(
    names: Sequence[str],
    params: Mapping[str, Any],
    presets_dir: Path,
    seeds: Sequence[int],
    vary: Vary,
    folds: int,
    baseline: str | None,
) -> ComparisonPlan:
    """The runs of the variants called `names` (presets checked against the raw `params`), before any runs.

    Without a `baseline`, real-only is tested against when compared, else the first variant: the question is
    whether the others beat training on real faces alone.
    """
    try:
        chosen = select_variants(names, preset_variants(presets_dir, params))
    except ValueError as error:
        raise ParamsError(str(error)) from None
    chosen_names = [variant.name for variant in chosen]
    compared = baseline or ("real-only" if "real-only" in chosen_names else chosen_names[0])
    if compared not in chosen_names:
        raise ParamsError(f"--baseline {compared!r} is not among the compared variants")
    return ComparisonPlan(plan_runs(chosen, seeds, SEED_KEYS[vary], folds), vary, compared)


def check_plan(
    plan: ComparisonPlan, common: Sequence[str], params_path: Path, validate: Callable[[Path], object], echo: Echo
) -> None:
    """Validate the params every run would use, as the stages will, and say which stages' params change.

    Each run's params are written by DVC's own writer, as `dvc exp run -S` will, then checked by `validate`
    (the stages' params check, passed in since the library does not import the CLI): a bad override fails
    here, before hours of queued runs, and `echo` prints each run's `dvc exp run` command.
    """
    lock_path = params_path.parent / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else {}
    echo(f"{len(plan.runs)} runs planned; overrides for all: {list(common) or 'none'}")
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / "params.yaml"
        for run in plan.runs:
            shutil.copyfile(params_path, trial)
            apply_overrides(str(trial), run.settings(common))  # DVC's own writer, as `dvc exp run -S` uses
            try:
                validate(trial)
            except FersynthError as error:
                raise ParamsError(f"{run.name}: {error}") from None
            changed = stages_with_changed_params(lock, read_yaml_file(trial, "params file"))
            command = ["dvc", "exp", "run", "--queue", "-n", run.name, *option_arguments("-S", run.settings(common))]
            echo(f"{run.name}: ok; params change for: {', '.join(changed) or 'none'}\n  {shlex.join(command)}")


def run_comparison(
    plan: ComparisonPlan,
    common: Sequence[str],
    repo: Path,
    classes: Sequence[str],
    jobs: int,
    copy_paths: Sequence[str],
    records_path: Path,
    echo: Echo,
    echo_error: Echo,
) -> str:
    """Queue, run and read back every run of `plan` in `repo`; the Markdown report (see `comparison_report`).

    Every run's metrics files go to `records_path` (JSON lines) as soon as all are read, so no figure is lost
    to a later failure. `echo` reports progress as runs finish; `echo_error` each failed run's log tail, before
    the FersynthError that names them all.
    """
    baseline_commit = head_commit(repo)
    queued = [QueuedRun(run.name, tuple(run.settings(common))) for run in plan.runs]
    task_ids = queue_runs(repo, queued, copy_paths)
    threads = threads_per_job(jobs)
    echo(f"queued {len(plan.runs)} experiments on {baseline_commit[:7]}; {jobs} at a time, {threads} threads each")
    start_queue(repo, jobs, threads)
    finished = wait_for(
        lambda: queue_status(repo),
        task_ids,
        lambda name, status: echo(f"  {name}: {status}"),
        lambda: count_answering_workers(repo),
    )
    failed = [name for name, status in finished.items() if status != "Success"]
    for name in failed:
        echo_error(f"\n{name} failed; `dvc queue logs {name}` ends with:\n{failure_log(repo, name)}")
    if failed:
        raise FersynthError(f"{len(failed)} of {len(plan.runs)} experiments failed: {', '.join(failed)}")
    per_run = {run.name: experiment_results(repo, baseline_commit, run.name, RESULT_FILES) for run in plan.runs}
    write_records(records_path, plan.runs, per_run)
    flat = {name: run_figures(files) for name, files in per_run.items()}
    keys = list(table_keys(classes, flat.values()))
    results: dict[str, list[dict[str, float]]] = {}
    for run in plan.runs:
        results.setdefault(run.variant.name, []).append(flat[run.name])
    return comparison_report(summarise(results, keys), keys, plan)


def write_records(path: Path, runs: Sequence[Run], per_run: Mapping[str, Mapping[str, Any]]) -> None:
    """One JSON line per run: its name, variant, overrides and metrics files, for analyses beyond the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {"run": run.name, "variant": run.variant.name, "overrides": list(run.overrides), **per_run[run.name]}
        )
        for run in runs
    ]
    path.write_text("\n".join(lines) + "\n")


def comparison_report(summaries: Sequence[Summary], keys: Sequence[str], plan: ComparisonPlan) -> str:
    """The table of every variant (mean ± std over its runs), then each other variant's gains over the baseline
    on the headline figures, each named beyond or within noise, so a reader sees at once what held up."""
    folds = max(run.folds for run in plan.runs)
    replicates = f"{len({run.seed for run in plan.runs})} seeds" + (f" × {folds} folds" if folds else "")
    lines = [
        "# Comparison",
        "",
        f"Cells: mean ± sample std over {replicates} (n runs per variant). Seeds vary {SEED_SCOPE_TEXT[plan.vary]}.",
        "Per-class columns are test recall; UAR is balanced accuracy. A dotted column is an extra test set.",
        "",
        markdown_table(summaries, keys),
    ]
    names = [summary.variant for summary in summaries]
    headline = [key for key in keys if key in HEADLINE_KEYS]
    for candidate in (name for name in names if name != plan.baseline):
        lines += ["", f"{candidate} vs {plan.baseline} (beyond noise: |gain| > 2 × the larger std):", ""]
        lines += [f"- {verdict}" for verdict in gain_verdicts(summaries, candidate, plan.baseline, headline)]
    return "\n".join(lines)
