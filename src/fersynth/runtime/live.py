"""Per-epoch curves through dvclive, in a directory that holds this run's rows and no others."""

from __future__ import annotations

import shutil
from pathlib import Path

from dvclive import Live

# Where dvclive keeps logged rows: one .tsv per curve, and the last step (which a resumed Live continues from).
ROWS_DIR = Path("plots") / "metrics"
LAST_STEP_FILE = "metrics.json"


def open_live(directory: Path) -> Live:
    """A dvclive logger over `directory` whose curves start empty.

    dvclive empties them itself, unless DVCLIVE_RESUME is set in the environment: then it would append
    this run's rows to what an earlier or killed run left, so they are removed here first. A resumed GAN
    replays its checkpoint's epochs itself, which cuts its curves back to the checkpoint.
    dvcyaml=None and save_dvc_exp=False: DVC runs the stage and its dvc.yaml declares these plots, so
    dvclive must neither edit that file nor save an experiment.
    """
    directory = Path(directory)
    shutil.rmtree(directory / ROWS_DIR, ignore_errors=True)
    (directory / LAST_STEP_FILE).unlink(missing_ok=True)
    return Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
