"""(being written) the train_gan stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("train_gan")
