"""Atomic writes: a stage either leaves its complete output or none at all.

Every write stages under `.<name>.<random>.tmp` beside its target and renames it into place. A run
killed mid-write leaves that staging path behind; the next write of the same target removes it
first, so no stage needs to know which temporary names its outputs use.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _read_umask() -> int:
    # The only portable way to read the umask is to set it; doing it once at import, before any thread
    # starts, keeps other threads from creating files under the temporary value.
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK  # what open() would have given the file; mkstemp gives 0600
DIRECTORY_MODE = 0o777 & ~_UMASK  # what mkdir would have given the folder; mkdtemp gives 0700


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        staging.chmod(DIRECTORY_MODE)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(staging, FILE_MODE)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove what an interrupted write of `target` left beside it: `.<target name>.<random>.tmp` files or folders.

    Only `target`'s own staging names match (the random part has no dot, so `.model.<r>.tmp` is never
    `.model.pt.<r>.tmp`). No other process can be writing `target` meanwhile: DVC locks the repository
    while a stage runs, and a stage writes each output once.
    """
    target = Path(target)
    return remove_staging_of(target.parent, re.escape(target.name))


def remove_staging_of(folder: Path, name_pattern: str) -> list[Path]:
    """Remove `.<name>.<random>.tmp` entries of `folder` whose <name> matches the regex `name_pattern` (whole)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"\.(?:{name_pattern})\.[^.]+\.tmp")
    stale = sorted(entry for entry in folder.iterdir() if pattern.fullmatch(entry.name))
    for entry in stale:
        log.info("%s: removing a temporary output left by an interrupted run", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return stale


def round_floats(value: Any, digits: int = 4) -> Any:
    """Round every float in a nested structure so metric files diff cleanly."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    if isinstance(value, Mapping):
        return {str(key): round_floats(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(item, digits) for item in value]
    return value


def write_json(path: Path, payload: Any, digits: int = 4) -> None:
    """Write JSON atomically with floats rounded to `digits` places."""
    text = json.dumps(round_floats(payload, digits), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(Path(path), text.encode())
