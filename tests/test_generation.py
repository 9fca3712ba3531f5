from __future__ import annotations

import numpy as np
import pytest

from fersynth.config import CANONICAL_CLASSES, GenerateConfig
from fersynth.errors import DataError, ParamsError
from fersynth.generation import Generated, Samples, generate_dataset, plan_counts, split_plan

REAL = {"angry": 40, "disgust": 4, "fear": 30, "happy": 100, "neutral": 60, "sad": 50, "surprise": 20}


class SeededNoiseBackend:
    """A stand-in backend: images are pure functions of (class, seed), so determinism is checkable."""

    source = "gan"
    classes = CANONICAL_CLASSES
    image_shape = (8, 8, 1)

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def sample(self, class_index: int, count: int, seed: int) -> Samples:
        self.calls.append((class_index, count, seed))
        rng = np.random.default_rng(seed)
        return Samples.drawn(rng.integers(0, 256, size=(count, *self.image_shape), dtype=np.uint8))


class EditingBackend(SeededNoiseBackend):
    """Keeps every other image, as a backend that drops faces it cannot find; names a real origin for each."""

    source = "edit"

    def sample(self, class_index: int, count: int, seed: int) -> Samples:
        kept = super().sample(class_index, count, seed).images[::2]
        return Samples(kept, np.array([f"real-{seed}-{row}" for row in range(len(kept))], dtype=object))


def generate(backend: SeededNoiseBackend, plan: dict[str, int], seed: int, batch_size: int) -> Generated:
    return generate_dataset({backend.source: backend}, {backend.source: plan}, seed, batch_size)


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


def test_copy_real_gives_every_class_its_real_count_times_oversample() -> None:
    assert plan_counts(REAL, GenerateConfig(target="copy_real", oversample=1.0)) == REAL
    oversampled = plan_counts(REAL, GenerateConfig(target="copy_real", oversample=1.5))
    assert oversampled["disgust"] == 6 and oversampled["happy"] == 150 and oversampled["surprise"] == 30
    assert plan_counts({"angry": 3, "happy": 0}, GenerateConfig(target="copy_real", oversample=1.5)) == {
        "angry": 5,  # rounded up, as every target
        "happy": 0,
    }


def test_counts_with_unknown_class_names_it() -> None:
    with pytest.raises(ParamsError, match=r"generate\.counts: unknown class 'contempt'"):
        plan_counts(REAL, GenerateConfig(target="counts", counts={"contempt": 3}))


def test_generated_counts_match_the_plan_exactly() -> None:
    plan = {**dict.fromkeys(CANONICAL_CLASSES, 0), "disgust": 7, "surprise": 3}
    dataset = generate(SeededNoiseBackend(), plan, seed=0, batch_size=4).dataset
    assert dataset.class_counts() == plan
    assert set(dataset.sources) == {"gan"} and set(dataset.splits) == {"train"}
    np.testing.assert_array_equal(dataset.intended, dataset.labels)
    assert len(set(dataset.ids)) == len(dataset) and dataset.ids[0] == "gan-disgust-00000"


def test_generation_is_deterministic_and_classes_are_independent() -> None:
    plan = {"disgust": 5, "fear": 5}
    first = generate(SeededNoiseBackend(), plan, seed=3, batch_size=2).dataset
    again = generate(SeededNoiseBackend(), plan, seed=3, batch_size=2).dataset
    np.testing.assert_array_equal(first.images, again.images)
    more_fear = generate(SeededNoiseBackend(), {"disgust": 5, "fear": 9}, seed=3, batch_size=2).dataset
    np.testing.assert_array_equal(more_fear.images[:5], first.images[:5])  # disgust unchanged
    other_seed = generate(SeededNoiseBackend(), plan, seed=4, batch_size=2).dataset
    assert not np.array_equal(other_seed.images, first.images)


def test_empty_plan_gives_an_empty_dataset_of_the_right_shape() -> None:
    generated = generate(SeededNoiseBackend(), dict.fromkeys(CANONICAL_CLASSES, 0), seed=0, batch_size=8)
    assert len(generated.dataset) == 0 and generated.dataset.images.shape == (0, 8, 8, 1)
    assert generated.metrics()["generated_total"] == 0


def test_class_unknown_to_the_generator_is_an_error() -> None:
    with pytest.raises(DataError, match="not 'contempt'"):
        generate(SeededNoiseBackend(), {"contempt": 1}, seed=0, batch_size=8)


def test_split_plan_shares_every_class_exactly() -> None:
    split = split_plan({"disgust": 7, "fear": 1, "happy": 0}, {"gan": 0.5, "sd_text2img": 0.5})
    assert split == {"gan": {"disgust": 4, "fear": 1, "happy": 0}, "sd_text2img": {"disgust": 3, "fear": 0, "happy": 0}}
    thirds = split_plan({"sad": 10}, {"gan": 1 / 3, "sd_text2img": 1 / 3, "sd_img2img": 1 / 3})
    assert sum(counts["sad"] for counts in thirds.values()) == 10


def test_hybrid_keeps_each_backends_images_and_counts_drops() -> None:
    gan, edit = SeededNoiseBackend(), EditingBackend()
    plans = {"gan": {"disgust": 4, "sad": 2}, "edit": {"disgust": 6, "sad": 0}}
    alone = generate(gan, plans["gan"], seed=1, batch_size=3).dataset
    generated = generate_dataset({"gan": gan, "edit": edit}, plans, seed=1, batch_size=3)
    dataset = generated.dataset
    np.testing.assert_array_equal(dataset.images[: len(alone)], alone.images)  # adding a backend moves nothing
    assert generated.metrics() == generated.metrics() | {
        "planned_disgust": 10,
        "generated_total": 10,
        "generated_gan": 6,
        "generated_edit": 4,  # two batches of three, every other image kept
        "dropped_edit": 2,
        "dropped_gan": 0,
        "generated_edit_disgust": 4,
    }
    edits = dataset.sources == "edit"
    assert all(origin.startswith("real-") for origin in dataset.origins[edits])
    assert set(dataset.origins[~edits]) == {"gan"}  # drawn from noise: no real image behind it
    assert len(set(dataset.ids)) == len(dataset)
