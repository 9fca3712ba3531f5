"""Execution settings: how a stage runs (processes, threads, device), never what it computes.

They stay out of params.yaml, so DVC tracks none of them and changing one reruns nothing; each
stage records them beside its metrics instead. Per-image work gives identical results for any
worker count; thread count and device change only floating-point rounding (README, "Reproducibility").

Read from an untracked `fersynth.local.yaml` at the repository root (keys as below), overridden
by the environment: FERSYNTH_WORKERS, FERSYNTH_THREADS, FERSYNTH_PROCESSES, FERSYNTH_DEVICE.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fersynth.config import read_yaml_file
from fersynth.errors import ParamsError

LOCAL_FILE = "fersynth.local.yaml"
ENVIRONMENT_PREFIX = "FERSYNTH_"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class ExecutionSettings:
    workers: int = 1  # processes for per-image work (face-align, augment-offline)
    threads: int = 0  # torch threads per process; 0 = torch's default (all cores, or OMP_NUM_THREADS)
    processes: int = 1  # training processes (DistributedDataParallel ranks) for train and train-gan
    device: str = "auto"  # auto (a GPU when there is one) | cpu | cuda | cuda:N

    def record(self) -> dict[str, Any]:
        return asdict(self)


def read_execution_settings(repo_root: Path, environ: Mapping[str, str]) -> ExecutionSettings:
    """The local file's settings with the environment's on top, each checked and named when wrong."""
    given: dict[str, tuple[str, Any]] = {}
    local = Path(repo_root) / LOCAL_FILE
    if local.is_file():
        content = read_yaml_file(local, "execution settings") or {}
        if not isinstance(content, Mapping):
            raise ParamsError(f"{local}: expected a mapping of execution settings")
        given |= {str(key): (f"{local}: {key}", value) for key, value in content.items()}
    for field in fields(ExecutionSettings):
        variable = ENVIRONMENT_PREFIX + field.name.upper()
        if variable in environ:
            given[field.name] = (variable, environ[variable])
    known = {field.name for field in fields(ExecutionSettings)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ParamsError(f"{given[unknown[0]][0]}: unknown execution setting; known are {sorted(known)}")
    return ExecutionSettings(**{name: _checked(name, *source_value) for name, source_value in given.items()})


def _checked(name: str, source: str, value: Any) -> Any:
    if name == "device":
        if not isinstance(value, str) or not _DEVICE.fullmatch(value):
            raise ParamsError(f"{source}: {value!r} is not a device (auto, cpu, cuda or cuda:N)")
        return value
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ParamsError(f"{source}: {value!r} is not a whole number") from None
    lowest = 0 if name == "threads" else 1
    if number < lowest:
        raise ParamsError(f"{source}: {number} is below {lowest}")
    return number
