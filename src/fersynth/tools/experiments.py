"""Run planned comparison runs as DVC experiments through DVC's queue, in parallel, and read their metrics.

Each run is queued as `dvc exp run --queue -n <name> -S ...`; N queue workers (`dvc queue start`,
started one at a time) then run N at a time, each in its own temporary workspace under .dvc/tmp/exps
(so concurrent runs never share a file). Everything a stage reads there comes from git and DVC's
cache, as in a teammate's clone: datasets under data/raw, the teacher cache and the GAN's resume
state are DVC outputs. Paths a user keeps outside both (an untracked data/raw) travel with `-C`.

Each queue worker runs its stages with the environment `dvc queue start` had, so giving it
`OMP_NUM_THREADS` = cores / N keeps N jobs from fighting over the same cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvc.repo import Repo

from fersynth.errors import FersynthError

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
        settings = option_arguments("-S", run.settings)
        _dvc(repo, "exp", "run", "--queue", "-n", run.name, *settings, *option_arguments("-C", copy_paths))
    return _task_ids(repo) - before


def option_arguments(option: str, values: Iterable[str]) -> list[str]:
    """`option` before each value (`-S a=1 -S b=2`): how DVC takes a repeatable option."""
    return [argument for value in values for argument in (option, value)]


def start_queue(repo: Path, jobs: int, threads: int) -> None:
    """`jobs` queue workers, started one at a time, each limited to `threads` threads.

    `dvc queue start -j N` starts N workers at once, and each registers on the filesystem broker's
    control exchange; when the exchange file does not exist yet, two first registrations race and one
    is lost (kombu creates the file with a truncating open before taking its lock). A worker whose
    registration is lost never hears the shutdown its idle monitor sends: it never exits.
    """
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start_workers_in_turn(
        lambda count: _dvc(repo, "queue", "start", "-j", str(count), extra_env=env),
        lambda: count_answering_workers(repo),
        lambda: _count_status(queue_status(repo), "Queued"),
        jobs,
    )


def start_workers_in_turn(
    start: Callable[[int], object],
    answering: Callable[[], int],
    waiting_tasks: Callable[[], int],
    jobs: int,
    timeout_seconds: float = 120.0,
    poll_seconds: float = 1.0,
) -> int:
    """Start workers 1..k for k = 1..jobs, each once the ones before answer; stop when no task is left
    waiting for a worker. `start(k)` makes k workers run (DVC starts only those not answering). Returns k."""
    started = 0
    while started < jobs and waiting_tasks() > 0:
        started += 1
        start(started)
        deadline = time.monotonic() + timeout_seconds
        while answering() < started and waiting_tasks() > 0:
            if time.monotonic() > deadline:
                raise FersynthError(
                    f"DVC queue worker {started} did not answer within {timeout_seconds:.0f} s; "
                    "`dvc queue status` shows what runs, `dvc queue logs <name>` what a run printed"
                )
            time.sleep(poll_seconds)
    return started


def count_answering_workers(repo: Path) -> int:
    """How many DVC queue workers of `repo` answer a ping."""
    with Repo(str(repo)) as dvc_repo:
        return len(dvc_repo.experiments.celery_queue.worker_status())


def queue_status(repo: Path) -> list[dict[str, Any]]:
    """DVC's queue tasks: one mapping per task with its `rev` (task id), `name` and `status`."""
    with Repo(str(repo)) as dvc_repo:
        return list(dvc_repo.experiments.celery_queue.status())


def wait_for(
    read_status: Callable[[], list[dict[str, Any]]],
    task_ids: set[str],
    on_finish: Callable[[str, str], None],
    count_workers: Callable[[], int],
    poll_seconds: float = 5.0,
    stall_seconds: float = 120.0,
) -> dict[str, str]:
    """Block until every task has finished; name -> final status (Success, Failed, or Removed when a task
    left the queue unfinished, e.g. `dvc queue remove` or `dvc queue kill` by hand).

    Tasks still queued with none running and no worker answering for `stall_seconds` (after `dvc queue
    stop`, or a worker that died) are an error that names them, instead of a wait without end.
    """
    finished: dict[str, str] = {}
    names: dict[str, str] = {}
    stalled_since: float | None = None
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
        pending = list(tasks.values())
        if _count_status(pending, "Queued") and not _count_status(pending, "Running") and not count_workers():
            stalled_since = time.monotonic() if stalled_since is None else stalled_since
            if time.monotonic() - stalled_since >= stall_seconds:
                queued = ", ".join(task["name"] for task in pending if task["status"] == "Queued")
                raise FersynthError(
                    f"no DVC queue worker is running and these runs are still queued: {queued}; "
                    "`dvc queue start` runs them (then `dvc exp show`), `dvc queue remove --queued` drops them"
                )
        else:
            stalled_since = None
        if len(finished) < len(task_ids):
            time.sleep(poll_seconds)
    return finished


def experiment_results(repo: Path, baseline: str, name: str, paths: Sequence[str]) -> dict[str, Any]:
    """The JSON files `paths` of the experiment `name` queued on commit `baseline`, by path."""
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    results = {}
    for path in paths:
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


def _count_status(tasks: Sequence[Mapping[str, Any]], status: str) -> int:
    return sum(task["status"] == status for task in tasks)


def _dvc(repo: Path, *arguments: str, check: bool = True, extra_env: Mapping[str, str] | None = None) -> str:
    """Run DVC of this environment, with its bin folder first on PATH: the queue's workers start `fersynth`.

    Output goes through a file, not a pipe: `dvc queue start` forks workers that inherit its output, and
    reading a pipe to its end would wait for them to exit.
    """
    bin_folder = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {}))
    with tempfile.TemporaryFile(mode="w+") as log:
        done = subprocess.run([str(bin_folder / "dvc"), *arguments], cwd=repo, env=env, stdout=log, stderr=log)
        log.seek(0)
        output = log.read()
    if check and done.returncode != 0:
        raise FersynthError(f"dvc {' '.join(arguments[:3])} failed:\n{output[-3000:]}")
    return output
