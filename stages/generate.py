"""(being written) the generate stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("generate")
