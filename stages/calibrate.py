"""(being written) the calibrate stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("calibrate")
