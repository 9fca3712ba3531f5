"""k-fold cross-validation for small datasets: every image is in the test split of exactly one fold.

A fold assignment ignores the splits a source came with (a posed set such as KDEF or JAFFE has none
worth keeping): all images are pooled, cut into `folds` parts, and part `fold` becomes the test
split; validation is then carved out of the rest as usual. Parts are stratified by class, or made of
whole people when the source names them, so nobody is in train and test at once. The cut depends
only on the seed, so the folds of one seed partition the data whatever fold is asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from fersynth.datasets.format import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KFold:
    folds: int  # at least 2
    fold: int  # the test fold, 0..folds-1


def fold_numbers(labels: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """The fold (0..folds-1) of every row: per class round-robin in seeded order, or per person."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        return _group_folds(groups, folds, rng)
    numbers = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        # Each class starts where the previous one stopped, so small classes do not all pile into fold 0.
        numbers[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)
    return numbers


def _group_folds(groups: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Whole groups, largest first (ties in seeded order), each to the fold holding the fewest images so far."""
    names, inverse, sizes = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    order = sorted(rng.permutation(len(names)), key=lambda group: -sizes[group])
    filled = np.zeros(folds, dtype=np.int64)
    fold_of_group = np.empty(len(names), dtype=np.int64)
    for group in order:
        fold_of_group[group] = int(np.argmin(filled))
        filled[fold_of_group[group]] += sizes[group]
    return fold_of_group[inverse]


def assign_test_fold(dataset: Dataset, folds: int, fold: int, seed: int, groups: np.ndarray | None = None) -> Dataset:
    """Every image in train but those of fold `fold`, which become the test split."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not in 0..{folds - 1}")
    numbers = fold_numbers(dataset.labels, folds, seed, groups)
    splits = np.where(numbers == fold, "test", "train").astype(object)
    tested = int((numbers == fold).sum())
    log.info("k-fold: fold %d of %d is the test split (%d of %d images)", fold, folds, tested, len(numbers))
    return replace(dataset, splits=splits)
