"""The one torchrun launcher of the stages that train (train, train-gan): kept apart from _common, which every
stage imports, so that only they depend on fersynth.runtime.distributed and torch."""

from __future__ import annotations

import os
import sys

import typer

from fersynth.runtime.distributed import needs_torchrun, relaunch_under_torchrun
from fersynth.runtime.execution import ExecutionSettings


def launch_processes(settings: ExecutionSettings) -> None:
    """Run this stage as `settings.processes` torchrun ranks when more than one is asked for and torchrun did not
    start this process: the ranks run the same command line, and this process exits with torchrun's status.

    Otherwise it returns, and the caller is the only process or one rank. Any stage that trains may call it first.
    """
    if needs_torchrun(settings.processes, os.environ):
        raise typer.Exit(relaunch_under_torchrun(settings.processes, sys.argv[1:]))
