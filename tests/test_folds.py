"""k-fold: the folds of one seed partition the data, stratified by class or made of whole people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fersynth.config import CANONICAL_CLASSES, FetchConfig, load_params
from fersynth.datasets.fetch import fetch_dataset
from fersynth.datasets.folds import assign_test_fold, fold_numbers
from fersynth.errors import ParamsError

from .conftest import make_dataset


def test_the_test_folds_of_one_seed_partition_the_dataset() -> None:
    dataset = make_dataset(per_class=10)
    tested = [assign_test_fold(dataset, folds=5, fold=fold, seed=3).splits == "test" for fold in range(5)]
    assert (np.sum(tested, axis=0) == 1).all()  # every image is tested exactly once
    assert all(int(mask.sum()) == len(dataset) // 5 for mask in tested)
    for mask in tested:  # stratified: each class gives a fifth of its images to every fold
        assert np.bincount(dataset.labels[mask], minlength=7).tolist() == [2] * 7
    assert set(assign_test_fold(dataset, 5, 0, seed=3).splits) == {"train", "test"}


def test_the_seed_reshuffles_the_folds_and_the_same_seed_repeats_them() -> None:
    labels = make_dataset(per_class=10).labels
    assert (fold_numbers(labels, 5, seed=1) == fold_numbers(labels, 5, seed=1)).all()
    assert not (fold_numbers(labels, 5, seed=1) == fold_numbers(labels, 5, seed=2)).all()


def test_with_groups_a_person_is_never_on_both_sides() -> None:
    labels = np.repeat(np.arange(7), 12)
    people = np.array([f"p{row % 9}" for row in range(len(labels))], dtype=object)
    numbers = fold_numbers(labels, folds=3, seed=0, groups=people)
    for person in set(people):
        assert len(set(numbers[people == person])) == 1
    assert sorted(np.bincount(numbers).tolist()) == [28, 28, 28]  # 9 people of 9-10 images each, 3 a fold


def test_a_fold_outside_the_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"fold 5 is not in 0\.\.4"):
        assign_test_fold(make_dataset(), folds=5, fold=5, seed=0)


def test_fetch_rotates_the_test_fold_of_the_demo(tmp_path: Path) -> None:
    config = FetchConfig(demo_train=70, demo_val=14, demo_test=14, folds=4, fold=1, val_fraction=0.1)
    dataset = fetch_dataset(config, CANONICAL_CLASSES, seed=0).dataset
    other = fetch_dataset(config.model_copy(update={"fold": 2}), CANONICAL_CLASSES, seed=0).dataset
    assert len(dataset) == 98
    tested, other_tested = dataset.splits == "test", other.splits == "test"
    assert 98 // 4 <= tested.sum() <= 98 // 4 + 1 and not (tested & other_tested).any()
    assert round(0.1 * (~tested).sum()) - 1 <= (dataset.splits == "val").sum() <= round(0.1 * (~tested).sum())


@pytest.mark.parametrize(
    ("folds", "fold", "message"), [(1, 0, r"0 \(off\) or at least 2"), (3, 3, "below fetch.folds")]
)
def test_fold_params_are_checked(folds: int, fold: int, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params({"fetch": {"folds": folds, "fold": fold}})
