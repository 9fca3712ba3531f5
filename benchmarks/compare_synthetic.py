"""Synthetic vs real-only vs class-weighted (or any presets), over classifier seeds, in a fresh clone of HEAD.

    .venv/bin/python benchmarks/compare_synthetic.py                       # the demo, seeds 0 1 2
    .venv/bin/python benchmarks/compare_synthetic.py --seeds 0 1 2 \\
        --import-url "$PWD/../shared/data/fer2013.zip" data/raw/fer2013.zip \\
        -S fetch.source=fer2013 -S fetch.path=data/raw/fer2013.zip
    .venv/bin/python benchmarks/compare_synthetic.py --dry --presets synthetic roy2024-sd-resemotenet

A variant is `synthetic` (the committed params) or a preset: `--presets` names them (default: synthetic
real-only class-weighted; `--variants` is the same option), read from --presets-dir (default: presets/
of this checkout) and turned into overrides of the clone's params.yaml.
Each run is `dvc exp run -n <variant>-s<seed> -S train.seed=<seed> ...` from the committed params
plus every -S given here (a variant's own settings win: real-only keeps generating nothing); each
variant also runs its first seed with OMP_NUM_THREADS=1 (train and evaluate forced to rerun; the
data stages keep their default-thread outputs). Prints each run's wall time and stages,
then mean ± std per variant and whether the synthetic variant's gains over real-only exceed twice
their std. Per-run metrics go to --out as JSON lines.

`--import-url SOURCE DEST` imports a dataset into the clone's data/raw and commits it there (the
committed repository stays on the demo). `--prefill SOURCE DEST` copies a directory into the clone
and runs `dvc repro` with the -S settings there, committed as the runs' baseline: teachers
(`models/teachers`) or GAN checkpoints (`models/gan_checkpoints`) trained elsewhere, e.g. on a GPU.
The stages find them by their cache keys and fingerprints, so only files trained with exactly the
run's params and data are used; anything else is retrained.

`--dry` runs nothing: for each planned run it checks the params the run would use (DVC's writer, then
the stages' own validation), runs `dvc exp run --dry` (the pipeline resolves and DVC takes the
overrides) and prints the run with the stages whose params it changes; imports and prefills are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dvc.utils.hydra import apply_overrides

from fersynth.comparison import (
    DEFAULT_VARIANT_NAMES,
    REPORTED,
    Run,
    gain_verdicts,
    markdown_table,
    plan_runs,
    preset_variants,
    select_variants,
    summarise,
)
from fersynth.errors import FersynthError
from stages._common import read_params, read_raw_params

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="key=value for all runs")
    parser.add_argument("--out", type=Path, default=Path("compare_synthetic.jsonl"))
    parser.add_argument(
        "--presets", "--variants", nargs="+", default=list(DEFAULT_VARIANT_NAMES), help="synthetic or preset names"
    )
    parser.add_argument("--presets-dir", type=Path, default=REPO / "presets")
    parser.add_argument("--dry", action="store_true", help="check and print every planned run; run nothing")
    parser.add_argument("--no-one-thread", action="store_true", help="skip the one-thread run per variant")
    parser.add_argument("--import-url", nargs=2, action="append", default=[], metavar=("SOURCE", "DEST"))
    parser.add_argument("--prefill", nargs=2, action="append", default=[], metavar=("SOURCE", "DEST"))
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        clone = Path(work) / "fersynth"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        try:
            variants = preset_variants(arguments.presets_dir, read_raw_params(clone / "params.yaml"))
            chosen = select_variants(arguments.presets, variants)
        except (FersynthError, ValueError) as error:
            parser.error(str(error))
        runs = plan_runs(chosen, arguments.seeds, one_thread=not arguments.no_one_thread)
        if arguments.dry:
            _plan(clone, runs, arguments.overrides)
            return 0
        _prepare(clone, arguments.import_url, arguments.prefill, arguments.overrides)
        print(f"nproc={os.cpu_count()}; clone of {_head()}; overrides: {arguments.overrides or 'none'}", flush=True)
        results: dict[str, list[dict[str, float]]] = {}
        with arguments.out.open("w") as log:
            for run in runs:
                metrics = _run(clone, run, arguments.overrides)
                log.write(json.dumps({"run": run.name, "overrides": list(run.overrides), **metrics}) + "\n")
                log.flush()
                if run.threads is None:
                    results.setdefault(run.variant.name, []).append(metrics)
    summaries = summarise(results)
    print(markdown_table(summaries))
    if {"synthetic", "real-only"} <= set(results):
        print("\n".join(gain_verdicts(summaries, "synthetic", "real-only", REPORTED)))
    return 0


def _prepare(clone: Path, imports: list[list[str]], prefills: list[list[str]], common: list[str]) -> None:
    for source, destination in imports:
        _git_or_dvc(clone, "dvc", "import-url", str(Path(source).resolve()), destination)
    if imports:
        _git_or_dvc(clone, "git", "add", "-A", "data/raw")
        _git_or_dvc(clone, "git", "commit", "-q", "-m", "comparison inputs")
    if prefills:
        for source, destination in prefills:
            shutil.copytree(source, clone / destination, dirs_exist_ok=True)
        # `dvc exp run` first checks out the committed outputs, which deletes prefilled ones. A plain
        # `dvc repro` of the common settings uses them instead, and its commit becomes the runs' baseline.
        apply_overrides(str(clone / "params.yaml"), common)
        start = time.perf_counter()
        _git_or_dvc(clone, "dvc", "repro")
        _git_or_dvc(clone, "git", "add", "-A")
        _git_or_dvc(clone, "git", "commit", "-q", "-m", "comparison baseline")
        print(
            f"baseline with prefilled {[destination for _, destination in prefills]}: "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )


def _git_or_dvc(clone: Path, *command: str) -> None:
    done = subprocess.run(command, cwd=clone, env=_env(None), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{(done.stdout + done.stderr)[-4000:]}")


def _plan(clone: Path, runs: list[Run], extra: list[str]) -> None:
    """Check every planned run without running it, and print the plan."""
    print(f"{len(runs)} runs planned in a clone of {_head()}; overrides for all: {extra or 'none'}", flush=True)
    for run in runs:
        _restore_params(clone)
        # Without --force, --dry still hashes the inputs of every stage it would run, which a fresh clone
        # has not computed (treeverse/dvc#9021): forced, it lists every stage and needs no data.
        _git_or_dvc(clone, *_command(run, extra), "--dry", *([] if run.threads else ["--force"]))
        apply_overrides(str(clone / "params.yaml"), run.settings(extra))
        try:
            read_params(clone / "params.yaml")  # what each stage validates first, e.g. a mistyped key
        except FersynthError as error:
            sys.exit(f"{run.name}: {error}")
        stages = ", ".join(_stages_with_changed_params(clone)) or "none"
        print(f"{run.name}: ok; params change for: {stages}\n  {shlex.join(_command(run, extra))}", flush=True)
    _restore_params(clone)


def _stages_with_changed_params(clone: Path) -> list[str]:
    """The stages whose params differ from dvc.lock (they and all downstream of them rerun)."""
    done = subprocess.run(["dvc", "status", "--json"], cwd=clone, env=_env(None), capture_output=True, text=True)
    status = json.loads(done.stdout or "{}")
    return [
        stage
        for stage, changes in status.items()
        if any(isinstance(change, dict) and "params.yaml" in change.get("changed deps", {}) for change in changes)
    ]


def _command(run: Run, extra: list[str]) -> list[str]:
    settings = [argument for setting in run.settings(extra) for argument in ("-S", setting)]
    command = ["dvc", "exp", "run", "-n", run.name, *settings]
    if run.threads:
        # The thread count is no param, so DVC's run cache would restore the default-thread result
        # (observed: "ran: nothing", 7 s). Forcing train and evaluate retrains the classifier on the
        # variant's data, which its earlier runs left in the workspace.
        command += ["--force", "--downstream", "train"]
    return command


def _restore_params(clone: Path) -> None:
    # `dvc exp run` leaves its params in the workspace: every run starts again from the committed ones.
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=clone, check=True)


def _run(clone: Path, run: Run, extra: list[str]) -> dict[str, float]:
    _restore_params(clone)
    start = time.perf_counter()
    command = _command(run, extra)
    done = subprocess.run(command, cwd=clone, env=_env(run.threads), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{run.name} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    stages = " ".join(re.findall(r"Running stage '([\w-]+)'", done.stdout))
    metrics = json.loads((clone / "metrics" / "evaluate.json").read_text())
    calibrate = json.loads((clone / "metrics" / "diagnostics" / "calibrate.json").read_text())
    merge = json.loads((clone / "metrics" / "merge.json").read_text())
    summary = {key: metrics[key] for key in REPORTED} | {
        "synthetic_share": merge["synthetic_share"],
        "accepted_disgust": calibrate["accepted_disgust"],
        "judge_expression_accuracy": calibrate.get("judge_expression_accuracy"),
    }
    print(f"{run.name}: {time.perf_counter() - start:.0f} s; ran: {stages or 'nothing'}; {summary}", flush=True)
    return summary


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("GIT_AUTHOR_NAME", "bench")
    env.setdefault("GIT_AUTHOR_EMAIL", "bench@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "bench")
    env.setdefault("GIT_COMMITTER_EMAIL", "bench@example.com")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _head() -> str:
    command = ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
