"""(being written) the merge stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("merge")
