"""Accuracy against training minutes: the train stage's per-epoch val accuracy over its wall clock.

For each revision (a commit, or an experiment name from `dvc exp run -n` / `fersynth compare`) it reads
what the train stage recorded: the seconds of every epoch (`metrics/diagnostics/train.json`), the val
accuracy after every epoch (`metrics/train_live`) and the test accuracy of the checkpoint val chose
(`metrics/evaluate.json`). It draws val accuracy against cumulative minutes, one line per revision with
its test accuracy marked at the end, and prints a Markdown table.

    .venv/bin/python benchmarks/accuracy_curve.py fer2013-30min-s0 fer2013-30min-s1 --out report/accuracy_curve.png

A cosine schedule spans the whole run, so a point halfway is not what a run half as long would reach.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from matplotlib.figure import Figure

from fersynth.tools.experiments import resolve_revision

TRAIN_DIAGNOSTICS = "metrics/diagnostics/train.json"
VAL_ACCURACY = "metrics/train_live/plots/metrics/val_accuracy.tsv"
TEST_METRICS = "metrics/evaluate.json"


@dataclass(frozen=True)
class Curve:
    name: str
    minutes: list[float]  # cumulative, at the end of each epoch
    val_accuracy: list[float]
    test_accuracy: float
    test_macro_f1: float


def resolve(repo: Path, name: str) -> str:
    """A git revision as given, else the experiment ref of that name (refs/exps/<baseline>/<name>)."""
    ref = resolve_revision(repo, name)
    if ref is None:
        raise SystemExit(f"{name}: no git revision or experiment of that name")
    return ref


def read_curve(repo: Path, name: str) -> Curve:
    revision = resolve(repo, name)
    diagnostics = json.loads(_shown(repo, revision, TRAIN_DIAGNOSTICS))
    if "epoch_seconds" not in diagnostics:
        raise SystemExit(f"{name}: {TRAIN_DIAGNOSTICS} has no epoch_seconds (trained before they were recorded)")
    rows = list(csv.DictReader(io.StringIO(_shown(repo, revision, VAL_ACCURACY)), delimiter="\t"))
    test = json.loads(_shown(repo, revision, TEST_METRICS))
    minutes = [seconds / 60 for seconds in accumulate(diagnostics["epoch_seconds"])]
    accuracy = [float(row["val_accuracy"]) for row in rows]
    return Curve(name, minutes, accuracy, float(test["accuracy"]), float(test["macro_f1"]))


def plot(curves: list[Curve], out: Path) -> None:
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for curve in curves:
        (line,) = axes.plot(curve.minutes, curve.val_accuracy, marker=".", label=f"{curve.name} (val)")
        axes.plot(curve.minutes[-1], curve.test_accuracy, marker="*", markersize=12, color=line.get_color())
    axes.set_xlabel("training minutes (train stage wall clock)")
    axes.set_ylabel("accuracy")
    axes.set_title("Val accuracy per epoch; ★ test accuracy of the checkpoint val chose")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120, bbox_inches="tight")


def table(curves: list[Curve]) -> str:
    lines = [
        "| run | epochs | minutes | best val accuracy | test accuracy | test macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    for curve in curves:
        lines.append(
            f"| {curve.name} | {len(curve.minutes)} | {curve.minutes[-1]:.1f} | {max(curve.val_accuracy):.4f} "
            f"| {curve.test_accuracy:.4f} | {curve.test_macro_f1:.4f} |"
        )
    return "\n".join(lines)


def _shown(repo: Path, revision: str, path: str) -> str:
    text = _git(repo, "show", f"{revision}:{path}")
    if text is None:
        raise SystemExit(f"{revision}: no {path}")
    return text


def _git(repo: Path, *arguments: str) -> str | None:
    done = subprocess.run(["git", *arguments], cwd=repo, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="git revisions or experiment names")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("report/accuracy_curve.png"))
    arguments = parser.parse_args()
    curves = [read_curve(arguments.repo, name) for name in arguments.runs]
    plot(curves, arguments.out)
    print(table(curves))
    print(f"\n{arguments.out}")


if __name__ == "__main__":
    main()
