"""(being written) the fetch stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("fetch")
