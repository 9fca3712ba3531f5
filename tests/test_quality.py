from __future__ import annotations

import io
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from fersynth import quality
from fersynth.config import ClassifierConfig
from fersynth.datasets.format import Dataset, concatenate
from fersynth.models import Classifier, build_classifier
from fersynth.preview import placeholder_png
from fersynth.quality import (
    closest_pairs_image,
    diversity,
    kernel_inception_distance,
    memorisation_threshold,
    memorised_share,
    nearest_real,
    synthetic_quality,
)
from fersynth.training import predict_proba

from .conftest import make_dataset
from .helpers import synthetic_rows


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² with k(a, b) = (a·b/d + 1)³, term by term."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / len(a) + 1.0) ** 3

    m = len(x)
    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
    return within - 2.0 * sum(k(a, b) for a in x for b in y) / (m * m)


def test_kid_with_whole_sets_is_the_unbiased_mmd2_with_no_spread() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(1.0, size=(6, 3))
    # Subsets as large as the sets are the whole sets reordered: every draw scores the same.
    mean, std = kernel_inception_distance(x, y, subsets=4, subset_size=100)
    assert mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-5)
    assert std == pytest.approx(0.0, abs=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_clearly_positive_for_a_shifted_one() -> None:
    rng = np.random.default_rng(1)
    real = rng.normal(size=(600, 16))
    same, _ = kernel_inception_distance(real, rng.normal(size=(500, 16)), subsets=20, subset_size=200)
    shifted, shifted_std = kernel_inception_distance(real, rng.normal(0.5, size=(500, 16)), subsets=20, subset_size=200)
    assert abs(same) < 0.02  # -0.004 ± 0.011 over the subsets
    assert shifted > 0.5 and shifted > 10 * shifted_std > 0.0  # 1.03 ± 0.09


def test_kid_is_unbiased_so_it_can_be_negative() -> None:
    rng = np.random.default_rng(2)
    real, synthetic = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    draws = [kernel_inception_distance(real, synthetic, subsets=1, subset_size=30, seed=seed)[0] for seed in range(20)]
    assert min(draws) < 0.0 < max(draws)


def test_kid_needs_two_images_on_each_side() -> None:
    rng = np.random.default_rng(3)
    assert all(math.isnan(value) for value in kernel_inception_distance(rng.normal(size=(9, 4)), np.ones((1, 4))))
    assert all(math.isnan(value) for value in kernel_inception_distance(np.ones((1, 4)), rng.normal(size=(9, 4))))


def test_diversity_is_the_mean_distance_between_two_different_images() -> None:
    assert diversity(np.ones((5, 64), dtype=np.float32) * 37.5) == 0.0
    # Pairwise distances 5, 10 and 5 (three points on a line).
    assert diversity(np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])) == pytest.approx(20 / 3)
    assert math.isnan(diversity(np.ones((1, 3))))


def test_diversity_in_chunks_matches_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    features = np.random.default_rng(4).normal(size=(50, 6))
    whole = diversity(features)
    monkeypatch.setattr(quality, "CHUNK_ELEMENTS", 7 * 50)  # seven rows per chunk
    assert diversity(features) == pytest.approx(whole, rel=1e-6)
    assert whole == pytest.approx(np.mean([np.linalg.norm(a - b) for a, b in itertools.permutations(features, 2)]))


def test_nearest_real_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    real, synthetic = rng.normal(size=(40, 5)).astype(np.float32), rng.normal(size=(23, 5)).astype(np.float32)
    synthetic[3] = real[17]
    monkeypatch.setattr(quality, "CHUNK_ELEMENTS", 4 * 40)  # four synthetic rows per chunk
    distances, indices = nearest_real(synthetic, real)
    every = np.linalg.norm(synthetic[:, None, :] - real[None, :, :], axis=2)
    assert indices.tolist() == every.argmin(axis=1).tolist()
    np.testing.assert_allclose(distances, every.min(axis=1), rtol=1e-6)
    assert distances[3] == 0.0 and indices[3] == 17  # a copy reads exactly 0


def test_memorisation_threshold_ignores_exact_duplicates() -> None:
    # One-dimensional faces 0, 0, 1, 3: nearest other distinct face at 1, 1, 1 and 2.
    real = np.array([[0.0], [0.0], [1.0], [3.0]])
    assert memorisation_threshold(real, quantile=0.0) == pytest.approx(1.0)
    assert memorisation_threshold(real, quantile=1.0) == pytest.approx(2.0)
    assert memorisation_threshold(real, quantile=0.5) == pytest.approx(1.0)
    assert math.isnan(memorisation_threshold(np.ones((5, 3))))  # no two distinct faces


def test_memorisation_threshold_measures_a_seeded_subsample_against_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = np.arange(100, dtype=np.float64)[:, None] ** 2  # row i's nearest other row is 2i - 1 away (row 0's: 1)
    measured: list[list[int]] = []  # per call, the rows whose nearest neighbour was looked up
    real_nearest = quality._nearest

    def recording_nearest(
        queries: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert len(reference) == len(real)  # every real image is a candidate neighbour, not only the subsample
        measured.append(np.sqrt(queries[:, 0]).round().astype(int).tolist())
        return real_nearest(queries, reference, exclude)

    monkeypatch.setattr(quality, "_nearest", recording_nearest)
    lowest = memorisation_threshold(real, quantile=0.0, max_rows=10, seed=0)
    highest = memorisation_threshold(real, quantile=1.0, max_rows=10, seed=0)
    rows = measured[0]
    assert len(rows) == len(set(rows)) == 10  # max_rows rows, none twice
    assert measured[1] == rows  # the seed fixes the draw
    nearest = [max(2 * row - 1, 1) for row in rows]
    assert (lowest, highest) == pytest.approx((min(nearest), max(nearest)))  # each measured against all rows
    for seed in range(1, 6):
        memorisation_threshold(real, quantile=0.0, max_rows=10, seed=seed)
    assert len({tuple(sorted(draw)) for draw in measured[1:]}) == 6  # other seeds, other rows
    assert max(max(draw) for draw in measured) >= 90  # drawn from the whole set, not from its first rows
    memorisation_threshold(real, quantile=0.0, max_rows=1000, seed=0)
    assert sorted(measured[-1]) == list(range(100))  # max_rows beyond the set: every row, once


def test_memorised_share_counts_copies_and_not_far_images() -> None:
    real = np.random.default_rng(6).normal(size=(300, 16)).astype(np.float32)
    threshold = memorisation_threshold(real)
    assert threshold > 0.0
    assert memorised_share(nearest_real(real[:40], real)[0], threshold) == 1.0
    assert memorised_share(nearest_real(real[:40] + 100.0, real)[0], threshold) == 0.0
    assert math.isnan(memorised_share(np.zeros(0), threshold))
    assert math.isnan(memorised_share(np.zeros(3), math.nan))


def test_closest_pairs_image_shows_the_closest_first_at_the_expected_size() -> None:
    synthetic = np.stack([np.full((8, 8, 1), value, dtype=np.uint8) for value in (10, 20, 30, 40, 50)])
    real = np.stack([np.full((8, 8, 1), value, dtype=np.uint8) for value in (200, 210)])
    distances = np.array([4.0, 0.5, 3.0, 2.0, 1.0], dtype=np.float32)
    indices = np.array([0, 1, 0, 1, 0])
    sheet = closest_pairs_image(synthetic, real, distances, indices, pairs=5, labels=["gan"] * 5)
    # 8 px faces drawn 12x (96 px): 4 pairs of 2 tiles, 2 px apart, + an 8 px gap a row; 2 rows of 96 px + a caption.
    assert sheet.size == (4 * (2 * 96 + 2 + 8), 16 + 2 * (96 + 14))
    assert sheet.getpixel((5, 16 + 5)) == (20, 20, 20)  # synthetic image 1, the closest
    assert sheet.getpixel((96 + 2 + 5, 16 + 5)) == (210, 210, 210)  # beside its nearest real image
    assert closest_pairs_image(synthetic, real, distances, indices, pairs=2).size == (2 * (2 * 96 + 10), 16 + 96 + 14)


def test_placeholder_is_a_png() -> None:
    image = Image.open(io.BytesIO(placeholder_png("no judge configured (calibrate.judge)")))
    assert image.format == "PNG" and image.width > 100


def untrained_judge(size: int = 8) -> Classifier:
    """A linear classifier: its features are the normalised pixels, so distances between copies are 0."""
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig(arch="linear"), num_classes=7, in_channels=1, image_size=size)


def mixed_sources(train: Dataset) -> tuple[Dataset, np.ndarray]:
    """Seven GAN images (one per class but none of disgust, two of fear) and seven edits that copy train images."""
    gan = synthetic_rows(7)
    gan = replace(gan, intended=np.array([0, 2, 2, 3, 4, 5, 6]))
    edits = replace(
        synthetic_rows(7, seed=9),
        images=train.images[:7].copy(),
        ids=np.array([f"edit{n}" for n in range(7)], dtype=object),
        sources=np.full(7, "edit", dtype=object),
    )
    synthetic = concatenate([gan, edits])
    return synthetic, synthetic.intended.copy()


def test_synthetic_quality_reports_every_source_and_class() -> None:
    data = make_dataset(per_class=6, size=8)
    train, reference = data.split("train"), data.split("val")
    synthetic, intended = mixed_sources(train)
    judge = untrained_judge()
    report = synthetic_quality(judge, train, reference, synthetic, intended, seed=0)
    metrics = report.metrics

    for source in ("real", "gan", "edit"):
        for figure in quality.FIGURES:
            assert f"quality_{source}_{figure}" in metrics
            assert all(f"quality_{source}_{figure}_{name}" in metrics for name in train.classes)
    assert metrics["quality_memorisation_threshold"] > 0.0
    assert metrics["quality_gan_images"] == 7 and metrics["quality_edit_images"] == 7
    assert metrics["quality_real_images"] == len(reference)
    # No GAN image of disgust, one of angry: no figures but the count; two of fear: figures.
    assert metrics["quality_gan_images_disgust"] == 0 and math.isnan(metrics["quality_gan_kid_disgust"])
    assert metrics["quality_gan_images_angry"] == 1 and math.isnan(metrics["quality_gan_expression_accuracy_angry"])
    assert metrics["quality_gan_images_fear"] == 2 and not math.isnan(metrics["quality_gan_kid_fear"])
    # Edits are copies of train images; the judge's verdicts are its own argmax.
    assert metrics["quality_edit_memorised_share"] == 1.0
    gan_rows = synthetic.sources == "gan"
    predicted = predict_proba(judge, synthetic.images[gan_rows]).argmax(axis=1)
    assert metrics["quality_gan_expression_accuracy"] == pytest.approx(np.mean(predicted == intended[gan_rows]))
    assert report.closest_pairs_png is not None and report.closest_pairs_png.startswith(b"\x89PNG")


def test_synthetic_quality_without_synthetic_images_reports_the_reference_only() -> None:
    data = make_dataset(per_class=6, size=8)
    report = synthetic_quality(
        untrained_judge(), data.split("train"), data.split("val"), synthetic_rows(0), np.zeros(0, dtype=np.int64), 0
    )
    assert report.closest_pairs_png is None
    assert {key.split("_")[1] for key in report.metrics} == {"real", "memorisation"}
