"""Run planned comparison runs as DVC experiments through DVC's queue, in parallel, and read their metrics.

Each run is queued as `dvc exp run --queue -n <name> -S ...`; `dvc queue start -j N` then runs N at a
time, each in its own temporary workspace under .dvc/tmp/exps (so concurrent runs never share a
file). Everything a stage reads there comes from git and DVC's cache, as in a teammate's clone:
datasets under data/raw, the teacher cache and the GAN's resume state are DVC outputs. Paths a
user keeps outside both (an untracked data/raw) travel with `-C`.

Each queue worker runs its stages with the environment `dvc queue start` had, so giving it
`OMP_NUM_THREADS` = cores / N keeps N jobs from fighting over the same cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvc.repo import Repo

from fersynth.errors import FersynthError

# Metrics files read back from each finished experiment (git-tracked in every experiment commit).
RESULT_FILES = ("metrics/evaluate.json", "metrics/merge.json", "metrics/calibrate.json")
FINISHED = frozenset({"Success", "Failed"})


@dataclass(frozen=True)
class QueuedRun:
    name: str
    settings: tuple[str, ...]  # `key=value` overrides, as `dvc exp run -S` takes them


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Cores shared evenly among `jobs` parallel experiments, at least one thread each."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, jobs))


def queue_runs(repo: Path, runs: Sequence[QueuedRun], copy_paths: Sequence[str] = ()) -> set[str]:
    """Queue every run (replacing an earlier experiment of the same name); the queue tasks' ids."""
    before = _task_ids(repo)
    for run in runs:
        # A name clash is an error in DVC; a rerun of the same comparison replaces its old result.
        _dvc(repo, "exp", "remove", run.name, check=False)
        settings = [argument for setting in run.settings for argument in ("-S", setting)]
        copies = [argument for path in copy_paths for argument in ("-C", path)]
        _dvc(repo, "exp", "run", "--queue", "-n", run.name, *settings, *copies)
    return _task_ids(repo) - before


def start_queue(repo: Path, jobs: int, threads: int) -> None:
    """`dvc queue start -j jobs`, its workers limited to `threads` threads each."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    _dvc(repo, "queue", "start", "-j", str(jobs), extra_env=env)


def queue_status(repo: Path) -> list[dict[str, Any]]:
    """DVC's queue tasks: one mapping per task with its `rev` (task id), `name` and `status`."""
    return list(Repo(str(repo)).experiments.celery_queue.status())


def wait_for(
    read_status: Callable[[], list[dict[str, Any]]],
    task_ids: set[str],
    on_finish: Callable[[str, str], None],
    poll_seconds: float = 5.0,
) -> dict[str, str]:
    """Block until every task has finished; name -> final status (Success, Failed, or Removed when a task
    left the queue unfinished, e.g. `dvc queue remove` or `dvc queue kill` by hand)."""
    finished: dict[str, str] = {}
    names: dict[str, str] = {}
    while len(finished) < len(task_ids):
        tasks = {task["rev"]: task for task in read_status() if task["rev"] in task_ids}
        names |= {rev: task["name"] for rev, task in tasks.items()}
        for rev in task_ids:
            name = names.get(rev, rev)
            if name in finished:
                continue
            status = tasks[rev]["status"] if rev in tasks else "Removed"
            if status in FINISHED or status == "Removed":
                finished[name] = status
                on_finish(name, status)
        if len(finished) < len(task_ids):
            time.sleep(poll_seconds)
    return finished


def experiment_results(repo: Path, baseline: str, name: str) -> dict[str, Any]:
    """The metrics files of the experiment `name` queued on commit `baseline`, by path."""
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    results = {}
    for path in RESULT_FILES:
        shown = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True)
        if shown.returncode != 0:
            raise FersynthError(f"experiment {name}: {path} not found in {ref} ({shown.stderr.strip()})")
        results[path] = json.loads(shown.stdout)
    return results


def experiment_ref(repo: Path, name: str) -> str | None:
    """The git ref of the DVC experiment named `name` (refs/exps/<baseline>/<name>); None unless exactly one."""
    listed = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo, capture_output=True, text=True
    )
    matches = [ref for ref in listed.stdout.split() if ref.rsplit("/", 1)[-1] == name]
    return matches[0] if len(matches) == 1 else None


def resolve_revision(repo: Path, name: str) -> str | None:
    """`name` when it is a git commit of `repo`, else the ref of the DVC experiment of that name; None when neither."""
    verified = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd=repo, capture_output=True, text=True
    )
    return name if verified.returncode == 0 else experiment_ref(repo, name)


def failure_log(repo: Path, name: str, tail: int = 30) -> str:
    """The last lines of a failed experiment's log, which names the stage and its error."""
    shown = _dvc(repo, "queue", "logs", name, check=False)
    return "\n".join(shown.splitlines()[-tail:])


def head_commit(repo: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise FersynthError(f"{repo}: not a git repository with a commit; DVC experiments need one")
    return done.stdout.strip()


def _task_ids(repo: Path) -> set[str]:
    return {task["rev"] for task in queue_status(repo)}


def _dvc(repo: Path, *arguments: str, check: bool = True, extra_env: Mapping[str, str] | None = None) -> str:
    """Run DVC of this environment, with its bin folder first on PATH: the queue's workers start `fersynth`."""
    bin_folder = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {}))
    done = subprocess.run([str(bin_folder / "dvc"), *arguments], cwd=repo, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise FersynthError(f"dvc {' '.join(arguments[:3])} failed:\n{output[-3000:]}")
    return output
