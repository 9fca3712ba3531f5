"""How good, how varied and how original each synthetic source is, in a judge's feature space.

The judge (calibrate.judge) is a classifier trained on the real train split that selects nothing; its
penultimate features embed every image. Per source (manifest `source`) and per intended class:
- `kid`, `kid_std`: kernel inception distance to the real train images (unbiased MMD² with the cubic
  polynomial kernel of Bińkowski et al., mean and std over random subsets): unbiased, so it reads about 0
  (slightly negative too) when the generator matches the real distribution, and it stays comparable
  between sets of different sizes, which the Fréchet distance does not.
- `fd`: Fréchet distance to the real train images (metrics.frechet_distance).
- `expression_accuracy`: the share the judge calls the intended class.
- `diversity`: mean pairwise L2 distance within the set; a collapsed generator scores low.
- `memorised_share`: the share closer to some real train image than `memorisation_threshold`, the 1%
  quantile of real train images' distances to their nearest other real train image: closer than real
  faces ever are to each other reads as a copy.
The same figures of real images the judge never trained on (the real val split, `real`) show what a
perfect generator would score, since none of them is 0 for real data.

Every distance matrix is computed in row chunks of at most CHUNK_ELEMENTS entries, so a 5k synthetic
set against 30k real images never needs the whole matrix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

from fersynth.datasets.format import Dataset
from fersynth.errors import DataError
from fersynth.metrics import frechet_distance
from fersynth.models import Classifier
from fersynth.preview import pair_sheet, png_bytes
from fersynth.training import extract_features

log = logging.getLogger(__name__)

KID_SUBSETS = 50
KID_SUBSET_SIZE = 1000  # both as in the reference code of Bińkowski et al. (torchmetrics draws 100 subsets)
MIN_IMAGES = 2  # below this a set has no spread: its figures are nan
MEMORISATION_QUANTILE = 0.01
MEMORISATION_ROWS = 5000  # real images whose nearest neighbour sets the threshold; neighbours come from all
CHUNK_ELEMENTS = 1 << 23  # entries of one distance-matrix chunk: 32 MiB of float32
REFERENCE = "real"  # key prefix of the real reference figures
FIGURES = ("kid", "kid_std", "fd", "expression_accuracy", "diversity", "memorised_share", "images")
CLOSEST_PAIRS = 16


@dataclass(frozen=True)
class QualityReport:
    metrics: dict[str, float | int]  # quality_<source>_<figure>[_<class>], quality_memorisation_threshold
    closest_pairs_png: bytes | None  # None when there is no synthetic image
    predicted: np.ndarray  # (N,) the judge's class for each synthetic image, so callers need no second pass
    reference_predicted: np.ndarray  # (M,) the same for the reference images


@dataclass(frozen=True)
class JudgedSet:
    """Images as the judge sees them: features, its argmax, the intended class, the nearest real train image."""

    features: np.ndarray  # (N, D) float32
    predicted: np.ndarray  # (N,) int64
    intended: np.ndarray  # (N,) int64
    nearest_distance: np.ndarray  # (N,) float32
    nearest_index: np.ndarray  # (N,) int64, into the real train images

    def subset(self, mask: np.ndarray) -> JudgedSet:
        return JudgedSet(
            self.features[mask],
            self.predicted[mask],
            self.intended[mask],
            self.nearest_distance[mask],
            self.nearest_index[mask],
        )


def synthetic_quality(
    judge: Classifier, train: Dataset, reference: Dataset, synthetic: Dataset, intended: np.ndarray, seed: int
) -> QualityReport:
    """Quality figures of every source in `synthetic` (by `intended` class) and of the real `reference`.

    `train` is the real data the judge learned from; `reference` holds real images it did not train on
    (the val split), labelled: their figures are what real faces score.
    """
    if REFERENCE in set(synthetic.sources):
        raise DataError(f"the synthetic set holds {REFERENCE!r} rows: their figures would overwrite the reference's")
    # Hundreds of small products (a KID subset per class and source): OpenBLAS threads that wait busily
    # between them made this 5-20x slower on 2 cores shared with other work; one thread is never that slow.
    with threadpool_limits(limits=1, user_api="blas"):
        real_features = extract_features(judge, train.images)
        threshold = memorisation_threshold(real_features, seed=seed)
        metrics: dict[str, float | int] = {"quality_memorisation_threshold": threshold}
        reference_judged = judge_images(judge, reference.images, reference.labels, real_features)
        metrics.update(
            source_figures(REFERENCE, reference_judged, real_features, train.labels, train.classes, threshold, seed)
        )
        judged = judge_images(judge, synthetic.images, intended, real_features)
        for source in sorted(set(synthetic.sources)):
            in_source = judged.subset(synthetic.sources == source)
            figures = source_figures(source, in_source, real_features, train.labels, train.classes, threshold, seed)
            metrics.update(figures)
    pairs_png = None
    if len(synthetic):
        image = closest_pairs_image(
            synthetic.images, train.images, judged.nearest_distance, judged.nearest_index, labels=synthetic.sources
        )
        pairs_png = png_bytes(image)
    return QualityReport(metrics, pairs_png, judged.predicted, reference_judged.predicted)


def source_figures(
    name: str,
    judged: JudgedSet,
    real_features: np.ndarray,
    real_labels: np.ndarray,
    classes: Sequence[str],
    threshold: float,
    seed: int,
) -> dict[str, float | int]:
    """`quality_<name>_<figure>` over the whole set, then `quality_<name>_<figure>_<class>` per intended class.

    A class is compared with the real train images of that class only.
    """
    overall = group_figures(real_features, judged, threshold, seed)
    metrics: dict[str, float | int] = {f"quality_{name}_{figure}": value for figure, value in overall.items()}
    for index, class_name in enumerate(classes):
        in_class = judged.subset(judged.intended == index)
        figures = group_figures(real_features[real_labels == index], in_class, threshold, seed)
        metrics.update({f"quality_{name}_{figure}_{class_name}": value for figure, value in figures.items()})
    log.info(
        "%s: %d images, KID %.4f ± %.4f, FD %.2f, judge accuracy %.3f, diversity %.3f, memorised %.3f",
        name,
        overall["images"],
        overall["kid"],
        overall["kid_std"],
        overall["fd"],
        overall["expression_accuracy"],
        overall["diversity"],
        overall["memorised_share"],
    )
    return metrics


def group_figures(real_features: np.ndarray, judged: JudgedSet, threshold: float, seed: int) -> dict[str, float | int]:
    """FIGURES of one set against `real_features`; all but `images` nan below MIN_IMAGES images."""
    count = len(judged.features)
    if count < MIN_IMAGES:
        return {**dict.fromkeys(FIGURES, math.nan), "images": count}
    kid, kid_std = kernel_inception_distance(real_features, judged.features, seed=seed)
    enough_real = len(real_features) >= MIN_IMAGES
    return {
        "kid": kid,
        "kid_std": kid_std,
        "fd": frechet_distance(real_features, judged.features) if enough_real else math.nan,
        "expression_accuracy": float(np.mean(judged.predicted == judged.intended)),
        "diversity": diversity(judged.features),
        "memorised_share": memorised_share(judged.nearest_distance, threshold),
        "images": count,
    }


def judge_images(judge: Classifier, images: np.ndarray, intended: np.ndarray, real_features: np.ndarray) -> JudgedSet:
    """The judge's features and argmax of `images`, with each one's nearest real train image."""
    features = extract_features(judge, images)
    distances, indices = nearest_real(features, real_features)
    predicted = judge_predictions(judge, features)
    return JudgedSet(features, predicted, np.asarray(intended, dtype=np.int64), distances, indices)


def judge_predictions(judge: Classifier, features: np.ndarray) -> np.ndarray:
    """(N,) int64 argmax of the judge from its penultimate features: only its head follows them, so no second pass."""
    device = next(judge.head.parameters()).device
    with torch.inference_mode():
        logits = judge.head(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device))
    return logits.argmax(dim=1).cpu().numpy().astype(np.int64)


def kernel_inception_distance(
    real_features: np.ndarray,
    synthetic_features: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and std over `subsets` random subsets of the unbiased MMD² with k(x, y) = (x·y/d + 1)³.

    Both subsets of a draw have min(subset_size, n_real, n_synthetic) rows, drawn without replacement;
    (nan, nan) when that is below 2.
    """
    real, synthetic = _matrix(real_features), _matrix(synthetic_features)
    size = min(subset_size, len(real), len(synthetic))
    if size < MIN_IMAGES:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    scores = np.array(
        [
            _unbiased_mmd2(
                real[rng.choice(len(real), size, replace=False)],
                synthetic[rng.choice(len(synthetic), size, replace=False)],
            )
            for _ in range(subsets)
        ]
    )
    return float(scores.mean()), float(scores.std())


def diversity(features: np.ndarray) -> float:
    """Mean L2 distance between two different images of the set; nan below 2 images."""
    rows = _matrix(features).astype(np.float64)  # float32's expansion would leave identical rows ~1e-3 apart
    count = len(rows)
    if count < MIN_IMAGES:
        return math.nan
    rows -= rows.mean(axis=0)  # distances do not move; the expansion's roundoff shrinks with the norms
    norms = np.einsum("ij,ij->i", rows, rows)
    total = 0.0
    for chunk in _row_chunks(count, count):
        squared = norms[chunk, None] + norms[None, :] - 2.0 * (rows[chunk] @ rows.T)
        total += float(np.sqrt(np.maximum(squared, 0.0)).sum())
    return total / (count * (count - 1))  # the diagonal adds (almost exactly) 0


def nearest_real(synthetic_features: np.ndarray, real_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per synthetic image, the L2 distance to its nearest real image (float32) and that image's index (int64)."""
    return _nearest(_matrix(synthetic_features), _matrix(real_features))


def memorisation_threshold(
    real_features: np.ndarray,
    quantile: float = MEMORISATION_QUANTILE,
    seed: int = 0,
    max_rows: int = MEMORISATION_ROWS,
) -> float:
    """The `quantile` of real images' distances to their nearest other, non-identical real image.

    At most `max_rows` images (drawn with `seed`) are measured, each against all of them: subsampling
    the neighbours instead would lengthen every distance. Exact duplicates (distance 0) are no
    neighbours, or the threshold of a set with repeated images would be 0. nan without two distinct rows.
    """
    distinct, representative = _distinct_rows(_matrix(real_features))
    if len(distinct) < MIN_IMAGES:
        return math.nan
    rows = np.random.default_rng(seed).choice(len(representative), min(max_rows, len(representative)), replace=False)
    own = representative[rows]
    distances, _ = _nearest(distinct[own], distinct, exclude=own)
    positive = distances[distances > 0]  # rows that differ only in the sign of a zero are duplicates too
    return float(np.quantile(positive, quantile)) if len(positive) else math.nan


def memorised_share(distances: np.ndarray, threshold: float) -> float:
    """Share of images whose nearest real image is closer than `threshold`; nan when either is unknown."""
    if not len(distances) or math.isnan(threshold):
        return math.nan
    return float(np.mean(np.asarray(distances) < threshold))


def closest_pairs_image(
    synthetic_images: np.ndarray,
    real_images: np.ndarray,
    distances: np.ndarray,
    indices: np.ndarray,
    pairs: int = CLOSEST_PAIRS,
    labels: Sequence[str] | np.ndarray | None = None,
) -> Image.Image:
    """The `pairs` synthetic images nearest to a real one, each beside that real image, captioned with the distance.

    `distances` and `indices` are `nearest_real`'s; `labels` (e.g. each synthetic image's source) prefix
    the captions. What a person checks for copies: a pair that shows one face twice.
    """
    order = np.argsort(distances, kind="stable")[:pairs]
    prefixes = [f"{labels[row]} " if labels is not None else "" for row in order]
    return pair_sheet(
        synthetic_images[order],
        real_images[indices[order]],
        [f"{prefix}d={float(distances[row]):.3g}" for prefix, row in zip(prefixes, order, strict=True)],
        "synthetic | nearest real train image (judge-feature L2 distance)",
    )


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """MMD² of two equal-size samples, each within-sample sum without its diagonal (k(x, x) biases it up)."""
    m = len(x)
    within = (_off_diagonal_sum(_polynomial_kernel(x, x)) + _off_diagonal_sum(_polynomial_kernel(y, y))) / (m * (m - 1))
    return within - 2.0 * float(_polynomial_kernel(x, y).sum(dtype=np.float64)) / (m * m)


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    kernel = a @ b.T
    kernel /= a.shape[1]
    kernel += 1.0
    cubed = kernel * kernel
    cubed *= kernel  # two multiplications: np.power(kernel, 3) is ~20x slower
    return cubed


def _off_diagonal_sum(kernel: np.ndarray) -> float:
    return float(kernel.sum(dtype=np.float64) - np.trace(kernel, dtype=np.float64))


def _nearest(
    queries: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference row of each query, passing over row `exclude[i]` for query i: exact distance and index.

    The argmin runs on |r|² - 2q·r (|q|² is the same along a row); the winner's distance is then
    recomputed from the difference, so a copy reads exactly 0.
    """
    centre = reference.mean(axis=0)  # distances do not move; the expansion's roundoff shrinks with the norms
    centred_queries, centred_reference = queries - centre, reference - centre
    reference_norms = np.einsum("ij,ij->i", centred_reference, centred_reference)
    indices = np.empty(len(queries), dtype=np.int64)
    for chunk in _row_chunks(len(queries), len(reference)):
        scores = centred_queries[chunk] @ centred_reference.T
        scores *= -2.0
        scores += reference_norms
        if exclude is not None:
            scores[np.arange(len(scores)), exclude[chunk]] = np.inf
        indices[chunk] = scores.argmin(axis=1)
    return np.linalg.norm(queries - reference[indices], axis=1).astype(np.float32), indices


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows (first occurrences, in order) and, per row, the index of its distinct row.

    Keyed on the bytes: exact equality only (the judge gives a repeated image bitwise the same features),
    and ~10x faster than np.unique(axis=0)'s row sort.
    """
    first: dict[bytes, int] = {}
    representative = np.array([first.setdefault(row.tobytes(), len(first)) for row in rows], dtype=np.int64)
    return rows[np.unique(representative, return_index=True)[1]], representative


def _row_chunks(rows: int, columns: int) -> Iterator[slice]:
    step = max(1, CHUNK_ELEMENTS // max(columns, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def _matrix(features: np.ndarray) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"need an (N, D) feature array, got shape {matrix.shape}")
    return matrix
