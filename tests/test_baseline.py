"""The committed-baseline check: which metric moved, which stage is stale."""

from __future__ import annotations

import re
from pathlib import Path

from fersynth.stage_metrics import run_environment
from fersynth.tools.baseline import environment_differences, metric_differences, stale_stages


def test_metrics_within_tolerance_agree() -> None:
    committed = {"accuracy": 0.7083, "fe_dev": {"macro_f1": 0.5}}
    assert metric_differences({"accuracy": 0.7084, "fe_dev": {"macro_f1": 0.5}}, committed, tolerance=1.0e-4) == []


def test_moved_missing_and_new_metrics_are_each_named() -> None:
    committed = {"accuracy": 0.70, "recall_fear": 0.3, "fe_dev": {"macro_f1": 0.5}}
    current = {"accuracy": 0.72, "recall_sad": 0.1, "fe_dev": {"macro_f1": 0.4}}
    assert metric_differences(current, committed, tolerance=1.0e-4) == [
        "accuracy: 0.72 now, 0.7 committed",
        "fe_dev.macro_f1: 0.4 now, 0.5 committed",
        "recall_fear: committed but not produced",
        "recall_sad: not in the committed baseline",
    ]


def _lock(code_md5: str, lr: float, aligned_md5: str = "a1") -> dict:
    return {
        "stages": {
            "face-align": {
                "cmd": "fersynth face-align",
                "deps": [],
                "outs": [{"path": "data/aligned", "md5": aligned_md5}],
            },
            "train": {
                "cmd": "fersynth train",
                "deps": [
                    {"path": "data/aligned", "md5": aligned_md5},
                    {"path": "src/fersynth/training.py", "md5": code_md5},
                ],
                "params": {"params.yaml": {"train": {"lr": lr}}},
                "outs": [],
            },
        }
    }


def test_unchanged_lock_is_not_stale() -> None:
    assert stale_stages(_lock("c1", 0.001), _lock("c1", 0.001)) == []


def test_changed_code_or_params_make_the_stage_stale() -> None:
    assert stale_stages(_lock("c2", 0.001), _lock("c1", 0.001)) == ["train: src/fersynth/training.py changed"]
    assert stale_stages(_lock("c1", 0.003), _lock("c1", 0.001)) == ["train: params changed"]


def test_an_upstream_output_that_differs_does_not_make_downstream_stale() -> None:
    """A differing intermediate output is a reproducibility question, left to the metric comparison."""
    assert stale_stages(_lock("c1", 0.001, aligned_md5="a2"), _lock("c1", 0.001)) == []


def test_environment_differences_name_each_field() -> None:
    committed = {"cpu": "AMD EPYC", "torch_threads": 2, "torch": "2.14.1"}
    assert environment_differences(dict(committed), committed) == []
    assert environment_differences(committed | {"cpu": "Intel Xeon", "torch_threads": 1}, committed) == [
        "cpu: Intel Xeon now, AMD EPYC committed",
        "torch_threads: 1 now, 2 committed",
    ]


def test_the_environment_record_tells_cpu_generations_apart() -> None:
    recorded = run_environment()
    assert {"cpu", "cpu_id", "cpu_capability", "torch_threads"} <= set(recorded)
    assert isinstance(recorded["cpu_capability"], str) and recorded["cpu_capability"]
    if Path("/proc/cpuinfo").is_file():  # two EPYC generations share one model name, not their family/model
        assert re.fullmatch(r"\S+ family \d+ model \d+ stepping \d+", recorded["cpu_id"]), recorded["cpu_id"]
