from __future__ import annotations

import numpy as np
import pytest

from fersynth.config import CANONICAL_CLASSES, GenerateConfig
from fersynth.errors import DataError, ParamsError
from fersynth.generation import generate_dataset, generate_metrics, plan_counts

REAL = {"angry": 40, "disgust": 4, "fear": 30, "happy": 100, "neutral": 60, "sad": 50, "surprise": 20}


class SeededNoiseBackend:
    """A stand-in backend: images are pure functions of (class, seed), so determinism is checkable."""

    source = "gan"
    classes = CANONICAL_CLASSES
    image_shape = (8, 8, 1)

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def sample(self, class_index: int, count: int, seed: int) -> np.ndarray:
        self.calls.append((class_index, count, seed))
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(count, *self.image_shape), dtype=np.uint8)


def test_balance_to_max_fills_every_class_to_the_largest() -> None:
    plan = plan_counts(REAL, GenerateConfig(target="balance_to_max", oversample=1.0))
    assert {name: REAL[name] + plan[name] for name in REAL} == dict.fromkeys(REAL, 100)
    assert plan["happy"] == 0


def test_oversample_rounds_up() -> None:
    plan = plan_counts(REAL, GenerateConfig(target="balance_to_max", oversample=1.5))
    assert plan["disgust"] == 144 and plan["surprise"] == 120 and plan["happy"] == 0


def test_per_class_and_counts_targets() -> None:
    assert plan_counts(REAL, GenerateConfig(target="per_class", per_class=7, oversample=2.0)) == dict.fromkeys(REAL, 14)
    counted = plan_counts(REAL, GenerateConfig(target="counts", counts={"disgust": 5}, oversample=1.2))
    assert counted == {**dict.fromkeys(REAL, 0), "disgust": 6}


def test_counts_with_unknown_class_names_it() -> None:
    with pytest.raises(ParamsError, match=r"generate\.counts: unknown class 'contempt'"):
        plan_counts(REAL, GenerateConfig(target="counts", counts={"contempt": 3}))


def test_generated_counts_match_the_plan_exactly() -> None:
    plan = {**dict.fromkeys(CANONICAL_CLASSES, 0), "disgust": 7, "surprise": 3}
    dataset = generate_dataset(SeededNoiseBackend(), plan, seed=0, batch_size=4)
    assert dataset.class_counts() == plan
    assert set(dataset.sources) == {"gan"} and set(dataset.splits) == {"train"}
    np.testing.assert_array_equal(dataset.intended, dataset.labels)
    assert len(set(dataset.ids)) == len(dataset) and dataset.ids[0] == "gan-disgust-00000"


def test_generation_is_deterministic_and_classes_are_independent() -> None:
    plan = {"disgust": 5, "fear": 5}
    first = generate_dataset(SeededNoiseBackend(), plan, seed=3, batch_size=2)
    again = generate_dataset(SeededNoiseBackend(), plan, seed=3, batch_size=2)
    np.testing.assert_array_equal(first.images, again.images)
    more_fear = generate_dataset(SeededNoiseBackend(), {"disgust": 5, "fear": 9}, seed=3, batch_size=2)
    np.testing.assert_array_equal(more_fear.images[:5], first.images[:5])  # disgust unchanged
    other_seed = generate_dataset(SeededNoiseBackend(), plan, seed=4, batch_size=2)
    assert not np.array_equal(other_seed.images, first.images)


def test_empty_plan_gives_an_empty_dataset_of_the_right_shape() -> None:
    dataset = generate_dataset(SeededNoiseBackend(), dict.fromkeys(CANONICAL_CLASSES, 0), seed=0, batch_size=8)
    assert len(dataset) == 0 and dataset.images.shape == (0, 8, 8, 1)
    assert generate_metrics(dict.fromkeys(CANONICAL_CLASSES, 0))["generated_total"] == 0


def test_class_unknown_to_the_generator_is_an_error() -> None:
    with pytest.raises(DataError, match="not 'contempt'"):
        generate_dataset(SeededNoiseBackend(), {"contempt": 1}, seed=0, batch_size=8)
