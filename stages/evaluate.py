"""(being written) the evaluate stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("evaluate")
