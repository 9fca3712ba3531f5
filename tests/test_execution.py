"""Execution settings: a local file, the environment on top, each value checked and named when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from fersynth.errors import ParamsError
from fersynth.runtime.execution import LOCAL_FILE, ExecutionSettings, read_execution_settings


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    assert read_execution_settings(tmp_path, {}) == ExecutionSettings(workers=1, threads=0, processes=1, device="auto")


def test_the_environment_wins_over_the_local_file(tmp_path: Path) -> None:
    (tmp_path / LOCAL_FILE).write_text("workers: 4\nthreads: 2\ndevice: cpu\n")
    settings = read_execution_settings(tmp_path, {"FERSYNTH_WORKERS": "2", "FERSYNTH_PROCESSES": "3", "HOME": "/x"})
    assert settings == ExecutionSettings(workers=2, threads=2, processes=3, device="cpu")
    assert settings.record() == {"workers": 2, "threads": 2, "processes": 3, "device": "cpu"}


@pytest.mark.parametrize(
    ("environ", "file", "named"),
    [
        ({"FERSYNTH_WORKERS": "two"}, "", "FERSYNTH_WORKERS: 'two' is not a whole number"),
        ({"FERSYNTH_PROCESSES": "0"}, "", "FERSYNTH_PROCESSES: 0 is below 1"),
        ({"FERSYNTH_DEVICE": "tpu"}, "", "FERSYNTH_DEVICE: 'tpu' is not a device"),
        ({}, "wrokers: 2\n", "wrokers: unknown execution setting"),
        ({}, "- workers\n", "expected a mapping of execution settings"),
    ],
    ids=["not-a-number", "no-process", "unknown-device", "mistyped-key", "not-a-mapping"],
)
def test_a_wrong_setting_is_named(tmp_path: Path, environ: dict[str, str], file: str, named: str) -> None:
    if file:
        (tmp_path / LOCAL_FILE).write_text(file)
    with pytest.raises(ParamsError, match=named):
        read_execution_settings(tmp_path, environ)
