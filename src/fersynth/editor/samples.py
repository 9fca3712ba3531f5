"""Which real faces the editor's sample grid shows: the same faces in every run, so grids compare across runs."""

from __future__ import annotations

import numpy as np

from fersynth.datasets.format import Dataset


def grid_faces(real: Dataset, rows: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Up to `rows` real train faces, the first of each class in turn (then the next of each): images and labels."""
    train = np.flatnonzero((real.splits == "train") & (real.sources == "real"))
    by_class = [train[real.labels[train] == index] for index in range(len(real.classes))]
    picked: list[int] = []
    for depth in range(max((len(rows_of) for rows_of in by_class), default=0)):
        picked += [int(rows_of[depth]) for rows_of in by_class if depth < len(rows_of)]
        if len(picked) >= rows:
            break
    chosen = np.asarray(sorted(picked[:rows]), dtype=np.int64)
    return np.asarray(real.images[chosen]), np.asarray(real.labels[chosen], dtype=np.int64)
