"""(being written) the augment_offline stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("augment_offline")
