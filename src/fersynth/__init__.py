"""fersynth: facial expression recognition with calibrated synthetic faces."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["predict"]


def __getattr__(name: str) -> Any:
    """`fersynth.predict`, imported on first use: no pipeline stage calls it, so its module (and the
    classifier code it loads) is no dependency of theirs, neither at run time nor in dvc.yaml's deps
    (tests/test_dvc_yaml.py follows `import` statements, not this string)."""
    if name == "predict":
        return importlib.import_module("fersynth.prediction").predict
    raise AttributeError(f"module 'fersynth' has no attribute {name!r}")
