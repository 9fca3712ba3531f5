"""Atomic writes: a stage either leaves its complete outputs or none of them.

Every write stages under `.<name>.<random>.tmp` beside its target and renames it into place. A run
killed mid-write leaves that staging path behind; the next write of the same target removes it
first, so no stage needs to know which temporary names its outputs use. Within `commit_together`,
the writes to a stage's outputs all stage first and are renamed into place together at the end.

Output paths are checked before any work (`check_output`) and locked against another run writing
them (`lock_outputs`): only the lock's holder may clear their staging.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fersynth.errors import OutputError

log = logging.getLogger(__name__)

# The filesystem refusing a write (full, over quota, read-only, not ours to write): the disk or its
# permissions are at fault, not the run, so it is reported in one line naming the path.
FILESYSTEM_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


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
    with _refusals_named(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with _refusals_named(target, within=staging):
            yield staging
            staging.chmod(DIRECTORY_MODE)
            _land(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    with _refusals_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(path)
        handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(staging, FILE_MODE)
            _land(Path(staging), path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise


@contextmanager
def _refusals_named(target: Path, within: Path | None = None) -> Iterator[None]:
    """Turn the filesystem refusing a write of `target` into an OutputError naming `target`.

    With `within` (the staging folder a caller writes into), only refusals of paths inside it, or of
    unnamed writes to an open file, are `target`'s: a refused read of an input keeps its own name.
    """
    try:
        yield
    except OSError as error:
        if error.errno not in FILESYSTEM_REFUSALS:
            raise
        if (
            within is not None
            and error.filename is not None
            and not Path(os.fsdecode(error.filename)).is_relative_to(within)
        ):
            raise
        raise OutputError(f"{target}: cannot be written: {error.strerror}; it was left as it was") from None


def _land(staging: Path, target: Path) -> None:
    """Rename `staging` onto `target` now, or at the end of the `commit_together` block that holds `target` back."""
    batch = _batch.get()
    if batch is not None and _key(target) in batch.targets:
        batch.staged[_key(target)] = staging
        return
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(staging, target)


@dataclass
class _Batch:
    targets: frozenset[Path]
    staged: dict[Path, Path] = field(default_factory=dict)  # target -> its complete staging, in the order written


_batch: ContextVar[_Batch | None] = ContextVar("fersynth_output_batch", default=None)


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


@contextmanager
def commit_together(targets: Iterable[Path], commit_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Hold back the final rename of every atomic write to one of `targets` until the block ends, then do them all.

    Each output still stages completely beside its target; only its landing waits. A block that raises
    (anything but `commit_on`) removes what it staged, so no target is replaced. One that ends renames every
    staged output into place, each old one moved aside first, so a rename that fails puts all of them back:
    a full disk or a wrong path can no longer leave some outputs of a run replaced and the others not.
    """
    batch = _Batch(frozenset(_key(target) for target in targets))
    token = _batch.set(batch)
    try:
        yield
    except commit_on:
        _land_all(batch.staged)
        raise
    except BaseException:
        for staging in batch.staged.values():
            _discard(staging)
        raise
    else:
        _land_all(batch.staged)
    finally:
        _batch.reset(token)


def _land_all(staged: Mapping[Path, Path]) -> None:
    swapped: list[tuple[Path, Path, Path | None]] = []  # target, its staging, where the old target was moved
    try:
        for target, staging in staged.items():
            with _refusals_named(target):
                aside = _move_aside(target)
                swapped.append((target, staging, aside))
                os.replace(staging, target)
    except BaseException:
        _swap_back(swapped)
        for staging in staged.values():
            _discard(staging)
        raise
    for _, _, aside in swapped:
        if aside is not None:
            _discard(aside)


def _move_aside(target: Path) -> Path | None:
    """Rename an existing `target` to a staging name beside it (one a later run clears if this one is killed)."""
    if not os.path.lexists(target):
        return None
    aside = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    os.rename(target, aside)
    return aside


def _swap_back(swapped: Sequence[tuple[Path, Path, Path | None]]) -> None:
    for target, staging, aside in reversed(swapped):
        try:
            if not os.path.lexists(staging):  # landed: the new output goes back to its staging name, to be removed
                os.replace(target, staging)
            if aside is not None:
                os.replace(aside, target)
        except OSError as error:  # the error that started the undo is the one to report; this one is logged
            log.error("%s: could not be put back (%s); its earlier content is in %s", target, error, aside)


def _discard(path: Path) -> None:
    """Remove a staging or set-aside path; one that resists keeps a staging name, which a later run clears."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink(missing_ok=True)


DISK_MARGIN_BYTES = 64 * 2**20  # room kept free beyond an output's known size: the rest of its files, logs, the OS


def check_free_space(folder: Path, needed_bytes: int) -> None:
    """Refuse, before writing, an output of known size that the disk under `folder` cannot hold.

    A write that runs out of room anyway still fails cleanly (nothing replaced); this only says so before
    minutes of work are written and thrown away.
    """
    free = shutil.disk_usage(_nearest_existing(folder)).free
    if needed_bytes + DISK_MARGIN_BYTES > free:
        raise OutputError(
            f"{folder}: needs {needed_bytes / 2**30:.2f} GiB for its output but the disk has "
            f"{free / 2**30:.2f} GiB free (with {DISK_MARGIN_BYTES // 2**20} MiB to spare); free some space"
        )


def check_output(path: Path, folder: bool, named: str) -> None:
    """Refuse, before any work, an output path that its write would fail on; `named` says what gave it (`--out`).

    The path must be absent or of the kind written (a folder when `folder`, else a file), and the folder it
    lands in (or its nearest existing ancestor, where the missing ones will be made) a writable folder.
    """
    path = Path(path)
    given = f"{named} {path}"
    existing = _nearest_existing(path)
    if existing != path:
        if not existing.is_dir():
            raise OutputError(f"{given}: {existing} is a file, so nothing can be made inside it; give another path")
        _check_writable(existing, given)
        return
    if folder and not path.is_dir():
        raise OutputError(
            f"{given}: exists and is a file, but a folder is written there; remove it or give another path"
        )
    if not folder and path.is_dir():
        raise OutputError(f"{given}: is a folder, but a file is written there; remove it or give another path")
    _check_writable(path.parent, given)
    if folder:  # an old folder is emptied or written into
        _check_writable(path, given)


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _check_writable(folder: Path, given: str) -> None:
    # access(2) also answers EROFS for a read-only mount, even to root.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{given}: {folder} is not writable (read-only, or no permission)")


def lock_file(output: Path) -> Path:
    """The lock of `output`: beside it, never inside, so it is no part of what DVC hashes for the output."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


@contextmanager
def lock_outputs(outputs: Sequence[Path], launcher: int | None = None) -> Iterator[list[Path]]:
    """Hold an exclusive lock on each output for the block; yield the outputs locked.

    A lock another process holds is an OutputError naming it, unless that process is `launcher` (one that
    started this one to write on its behalf, e.g. under torchrun), whose lock covers this process too.
    The kernel releases a lock when its process ends, however it ends: a killed run's lock file blocks
    no one. A released lock's file is removed.
    """
    with ExitStack() as held:
        locked = []
        for output in outputs:
            lock = _lock(Path(output), launcher)
            if lock is not None:
                held.callback(_release, lock_file(output), lock)
                locked.append(Path(output))
        yield locked


def _lock(output: Path, launcher: int | None) -> int | None:
    """A descriptor holding `output`'s lock, with this process's PID written in it; None when `launcher` holds it."""
    path = lock_file(output)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            if holder is not None and holder == launcher:
                return None
            by = "" if holder is None else f" (process {holder})"
            raise OutputError(
                f"{output}: another run{by} is writing it, so this one stopped before starting; "
                f"wait for that run to end (its lock: {path})"
            ) from None
        # A holder that released its lock removed the file: a lock on that old file would lock nothing.
        if _still_named(descriptor, path):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)


def _still_named(descriptor: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except FileNotFoundError:
        return False


def _holder(descriptor: int) -> int | None:
    text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _release(path: Path, descriptor: int) -> None:
    # Removed while still held, so a run that opened it meanwhile sees it gone and makes a fresh one.
    path.unlink(missing_ok=True)
    os.close(descriptor)


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove what an interrupted write of `target` left beside it: `.<target name>.<random>.tmp` files or folders.

    Only `target`'s own staging names match (the random part has no dot, so `.model.<r>.tmp` is never
    `.model.pt.<r>.tmp`). No other process may be writing `target` meanwhile: a stage holds the lock of
    every output it writes (`lock_outputs`), and writes each once.
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
