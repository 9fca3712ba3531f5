"""Weights and checkpoint files: written atomically, read without running pickled code, refused by name.

`torch.load(weights_only=True)` only rebuilds tensors and plain data, so a foreign pickle is refused
rather than executed; it refuses it, and fails on a damaged file, with any of several exception types.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from fersynth.errors import DataError
from fersynth.runtime.io import atomic_write_bytes

# How torch.load fails on a file it cannot read: a pickle of other objects (UnpicklingError), a truncated or
# damaged archive (RuntimeError, BadZipFile, EOFError), a file that is no torch file at all (ValueError, or
# KeyError from the legacy reader), I/O.
UNREADABLE = (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)
# How rebuilding from a readable file of the wrong make fails: a key missing (KeyError), a value of the wrong
# type (TypeError, ValueError) or size (IndexError), weights of another architecture (load_state_dict's RuntimeError).
MISFIT = (KeyError, TypeError, ValueError, IndexError, RuntimeError)
LONGEST_REASON = 300  # characters of an exception's message kept in a one-line error

T = TypeVar("T")


def save_torch_file(path: Path, payload: Any) -> None:
    """`torch.save` atomically: a crash mid-write keeps the previous file."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_torch_file(path: Path, what: str) -> Any:
    """The tensors and plain data `path` holds, on the CPU; an unreadable file is a DataError naming it as `what`."""
    try:
        with warnings.catch_warnings():
            # A pickle of another protocol draws a warning before it is refused: the refusal says it all.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(f"{path}: not a readable {what} (it holds objects other than tensors and plain data)") from None
    except UNREADABLE as error:
        raise DataError(f"{path}: not a readable {what} ({describe(error)})") from None


def load_fersynth_file(
    path: Path, what: str, kind: str, file_format: object, stage: str, rebuild: Callable[[dict[str, Any]], T]
) -> T:
    """`rebuild` of the plain-data dict a fersynth file of `file_format` holds. A missing file (made by `stage`),
    a file of another kind or format, or one that does not rebuild (a key missing, weights of another shape) is
    a DataError naming it: `what` names the file, `kind` what it should have been."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; run the {stage} stage first")
    payload = load_torch_file(path, what)
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise DataError(f"{path}: not a fersynth {kind} (expected format {file_format})")
    try:
        return rebuild(payload)
    except MISFIT as error:
        raise DataError(f"{path}: a damaged {what} ({describe(error)})") from None


def describe(error: BaseException) -> str:
    """An exception as one short line: torch's messages run over several lines (load_state_dict lists every key)."""
    message = " ".join(str(error).split())
    if len(message) > LONGEST_REASON:
        message = message[:LONGEST_REASON] + "…"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
