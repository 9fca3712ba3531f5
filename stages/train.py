"""(being written) the train stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("train")
