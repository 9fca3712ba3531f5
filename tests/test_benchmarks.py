"""The benchmark suite runs end to end and writes its table (a smoke test: no figure is judged)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

SUITE = REPO_ROOT / "benchmarks" / "suite.py"
CHEAP_BENCHMARKS = ("augment", "train-linear", "gan-generate", "inference-vgg16")


def run_suite(out: Path, only: Sequence[str], environment: Mapping[str, str] | None = None) -> None:
    command = [sys.executable, str(SUITE), "--quick", "--threads", "1", "--out", str(out), "--only", *only]
    done = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text().strip() in done.stdout


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table row below the header and its rule."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.slow
def test_quick_suite_writes_a_row_with_a_figure_and_a_command_per_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    run_suite(out, CHEAP_BENCHMARKS[:3])
    # A row's own command replaces that row and adds the others it runs, keeping the rest of the table.
    run_suite(out, CHEAP_BENCHMARKS[2:])
    text = out.read_text()
    assert text.startswith("# Benchmarks (quick run")
    assert text.count("1 torch threads (set by --threads)") == 2
    rows = table_rows(text)
    assert len(rows) == len(CHEAP_BENCHMARKS)
    for (_name, figure, _spread, _details, rerun), benchmark in zip(rows, CHEAP_BENCHMARKS, strict=True):
        assert float(figure.split()[0].replace(",", "")) > 0
        assert rerun == f"`.venv/bin/python benchmarks/suite.py --only {benchmark}`"


def test_a_benchmark_without_its_data_is_a_row_that_says_why(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    run_suite(out, ["faces"], os.environ | {"FERSYNTH_SHARED_DATA": str(tmp_path / "absent")})
    [[name, figure, _spread, details, _rerun]] = table_rows(out.read_text())
    assert name.startswith("decode") and figure == "–" and details.startswith("skipped:") and "absent" in details


@pytest.mark.slow
def test_runtime_rows_compare_pytorch_and_onnxruntime_at_batch_one_and_many(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    run_suite(out, ["classifier-runtimes"])
    rows = table_rows(out.read_text())
    names = [name for name, *_ in rows]
    assert names == [
        f"classifier {runtime}, batch {batch}" for runtime in ("PyTorch", "onnxruntime") for batch in (1, 256)
    ]
    assert all(float(figure.split()[0].replace(",", "")) > 0 for _, figure, *_ in rows)
