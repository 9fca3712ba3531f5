"""(being written) the face_align stage."""

from __future__ import annotations


def command() -> None:
    raise NotImplementedError("face_align")
