"""Resumable training state, for the GAN and the classifier alike: atomic checkpoint files, RNG snapshots
and the fingerprint that guards them.

A checkpoint is only reused when its fingerprint (config + seed + training data) matches, so a
changed param or dataset never continues from stale weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fersynth.datasets.format import Dataset
from fersynth.errors import DataError
from fersynth.runtime.torch_files import load_torch_file, save_torch_file

log = logging.getLogger(__name__)


def training_fingerprint(train: Dataset, settings: dict[str, Any], seed: int) -> str:
    """A hash of everything that determines the trained weights: the settings, the seed and the data."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings | {"seed": seed, "classes": list(train.classes)}, sort_keys=True).encode())
    digest.update(str(train.images.shape).encode())
    digest.update(memoryview(np.ascontiguousarray(train.images)))
    digest.update(np.ascontiguousarray(train.labels, dtype=np.int64).tobytes())
    if train.soft_labels is not None:
        digest.update(np.ascontiguousarray(train.soft_labels, dtype=np.float32).tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, file_format: str, fingerprint: str, state: dict[str, Any]) -> None:
    """Write the state with its fingerprint and RNG snapshot; a crash mid-write keeps the previous file."""
    payload = {"format": file_format, "fingerprint": fingerprint, "rng": capture_rng()} | state
    save_torch_file(path, payload)


def load_checkpoint(path: Path, file_format: str, fingerprint: str) -> dict[str, Any] | None:
    """The saved state if it belongs to this exact run, else None (and a log line saying why).

    A damaged or foreign file is only reported: the checkpoint is a cache of progress, and training from
    scratch gives the same weights (the caller still checks that the state fits its networks).
    """
    if not path.is_file():
        return None
    try:
        payload = load_torch_file(path, "checkpoint")
    except DataError as error:
        log.warning("%s; training from scratch", error)
        return None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        log.warning("%s: not a checkpoint of this training (%s); training from scratch", path, file_format)
        return None
    if payload.get("fingerprint") != fingerprint:
        log.info("%s: params or training data changed since this checkpoint; training from scratch", path)
        return None
    return payload


def capture_rng() -> dict[str, Any]:
    """Global torch/numpy/python RNG states as plain values (loadable with weights_only=True)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def restore_rng(snapshot: dict[str, Any]) -> None:
    numpy_state = dict(snapshot["numpy"])
    numpy_state["state"] = dict(numpy_state["state"], key=np.asarray(numpy_state["state"]["key"], dtype=np.uint32))
    np.random.set_state(numpy_state)
    torch.set_rng_state(snapshot["torch"])
    python_state = snapshot["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
