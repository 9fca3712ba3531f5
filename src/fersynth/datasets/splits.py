"""Carve validation and test splits out of a training split, stratified by class and seeded.

Used only for splits a source does not provide (a legend CSV or a plain ImageFolder
has none); FER2013's own PublicTest/PrivateTest splits are never re-drawn.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from fersynth.datasets.format import Dataset

log = logging.getLogger(__name__)


def stratified_quotas(class_counts: np.ndarray, fraction: float) -> np.ndarray:
    """How many images of each class to move: `fraction` of the total, spread in proportion to the classes.

    Largest remainders make the total exact even when every class is small; each class keeps at least
    one image where it had one, so carving never empties a class out of training.
    """
    wanted = class_counts * fraction
    quotas = np.floor(wanted).astype(np.int64)
    target = round(float(class_counts.sum()) * fraction)
    capacity = np.maximum(class_counts - 1, 0) - quotas
    for index in np.argsort(-(wanted - quotas), kind="stable"):
        if quotas.sum() >= target:
            break
        if capacity[index] > 0:
            quotas[index] += 1
            capacity[index] -= 1
    return np.minimum(quotas, np.maximum(class_counts - 1, 0))


def carve_splits(dataset: Dataset, fractions: dict[str, float], seed: int, groups: np.ndarray | None = None) -> Dataset:
    """Move `fractions[split]` of the train images (per class) to each named split; same seed, same result.

    With `groups` (one person id per row) whole people move instead, so nobody is on both sides of a split.
    """
    if groups is not None:
        return _carve_groups(dataset, fractions, seed, groups)
    rng = np.random.default_rng(seed)
    splits = dataset.splits.copy()
    train_rows = np.flatnonzero(splits == "train")
    train_labels = dataset.labels[train_rows]
    available = [rng.permutation(train_rows[train_labels == label]) for label in range(len(dataset.classes))]
    # Fractions are of the original train split, whatever order the splits are carved in.
    train_counts = np.array([len(rows) for rows in available])
    for split, fraction in fractions.items():
        moved = 0
        for label, quota in enumerate(stratified_quotas(train_counts, fraction)):
            quota = max(0, min(int(quota), len(available[label]) - 1))  # keep one training image per class
            splits[available[label][:quota]] = split
            available[label] = available[label][quota:]
            moved += quota
        log.info("carved %d %s images out of train (%.0f%%, stratified, seed %d)", moved, split, 100 * fraction, seed)
    return replace(dataset, splits=splits)


def _carve_groups(dataset: Dataset, fractions: dict[str, float], seed: int, groups: np.ndarray) -> Dataset:
    """Whole groups in seeded random order move until a split holds `fraction` of the train images.

    Not stratified by class: posed sets (KDEF, JAFFE, CK+) show every person in (nearly) every class, so
    whole people keep the class mix. A group whose move would empty a class out of training is skipped.
    """
    rng = np.random.default_rng(seed)
    splits = dataset.splits.copy()
    train = splits == "train"
    total = int(train.sum())
    order = list(rng.permutation(sorted(set(groups[train]))))
    for split, fraction in fractions.items():
        target, moved = round(total * fraction), 0
        for group in list(order):
            if moved >= target:
                break
            rows = train & (groups == group)
            left = np.bincount(dataset.labels[train & ~rows], minlength=len(dataset.classes))
            had = np.bincount(dataset.labels[train], minlength=len(dataset.classes))
            if ((had > 0) & (left == 0)).any():
                continue
            splits[rows], train = split, train & ~rows
            moved += int(rows.sum())
            order.remove(group)
        log.info("carved %d %s images out of train (%.0f%%, by person, seed %d)", moved, split, 100 * fraction, seed)
    return replace(dataset, splits=splits)
