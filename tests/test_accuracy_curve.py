"""benchmarks/accuracy_curve.py reads what the train stage recorded from commits and experiment refs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.accuracy_curve import plot, read_curve, table


def _commit(repo: Path, epoch_seconds: list[float], val_accuracy: list[float], test_accuracy: float) -> str:
    (repo / "metrics" / "diagnostics").mkdir(parents=True, exist_ok=True)
    (repo / "metrics" / "diagnostics" / "train.json").write_text(json.dumps({"epoch_seconds": epoch_seconds}))
    live = repo / "metrics" / "train_live" / "plots" / "metrics"
    live.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{step}\t{value}\n" for step, value in enumerate(val_accuracy))
    (live / "val_accuracy.tsv").write_text("step\tval_accuracy\n" + rows)
    (repo / "metrics" / "evaluate.json").write_text(json.dumps({"accuracy": test_accuracy, "macro_f1": 0.5}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "run"], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def test_curves_from_a_commit_and_an_experiment_ref(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    first = _commit(tmp_path, [60.0, 90.0, 30.0], [0.4, 0.5, 0.55], 0.56)
    second = _commit(tmp_path, [120.0], [0.45], 0.44)
    subprocess.run(["git", "update-ref", "refs/exps/ab/cdef/short-s0", second], cwd=tmp_path, check=True)

    curve = read_curve(tmp_path, first)
    assert curve.minutes == pytest.approx([1.0, 2.5, 3.0]) and curve.val_accuracy == [0.4, 0.5, 0.55]
    experiment = read_curve(tmp_path, "short-s0")
    assert experiment.minutes == [2.0] and experiment.test_accuracy == 0.44
    rows = table([curve, experiment]).splitlines()
    assert rows[2] == f"| {first} | 3 | 3.0 | 0.5500 | 0.5600 | 0.5000 |"
    plot([curve, experiment], tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(SystemExit, match="no git revision or experiment"):
        read_curve(tmp_path, "absent")
