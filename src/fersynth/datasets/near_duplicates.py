"""Find val/test images that nearly duplicate a train image: perceptual hashes compared across splits.

duplicates.py finds pixel-identical copies only. The same face re-encoded, brightened or re-cropped
differs in its pixels but hardly in its pHash (imagehash): the 8×8 lowest frequencies of a 32×32
grayscale DCT, one bit per coefficient above their median (so 32 of 64 bits are set and distances
are mostly even). Two images whose 64-bit hashes differ in at most `max_distance` bits count as
near-identical. pHash is robust to JPEG, brightness and contrast, but a one-pixel shift moves a
48×48 FER2013 face by a median 4-6 bits, so each val/test image is also hashed shifted by up to
`shift` pixels each way and every pair keeps its smallest distance. A val/test face that also sits
in train inflates the scores, so every such image is counted, pairs are drawn for a person to
judge, and fetch can drop the train copies (fetch.drop_train_near_duplicates).

Pixel-identical pairs have the same hash, so they are inside every threshold: the figures count
them with the rest and also without them (`*_not_identical`), which is what pHash adds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from fersynth.datasets.duplicates import pixel_digests
from fersynth.datasets.format import Dataset
from fersynth.preview import pair_sheet, placeholder_png, png_bytes

log = logging.getLogger(__name__)

HASH_BITS = 64  # imagehash.phash's default hash_size 8: 8×8 coefficients
EVALUATION_SPLITS = ("val", "test")
CHUNK_ELEMENTS = 1 << 22  # query×train distances computed at once: 32 MiB of XORed uint64
SHOWN_PAIRS = 16
BEYOND_THRESHOLD = 2  # distances past the threshold the picture also samples (pHash distances are mostly even)


@dataclass(frozen=True)
class HashMatches:
    """Query/reference row pairs within the threshold, and each query's nearest reference row."""

    queries: np.ndarray  # (P,) int64 query rows
    references: np.ndarray  # (P,) int64 reference rows
    distances: np.ndarray  # (P,) int64 Hamming distances, at most the threshold
    nearest: np.ndarray  # (Q,) int64 reference row closest to each query (the first of ties)
    nearest_distances: np.ndarray  # (Q,) int64


@dataclass(frozen=True)
class CrossSplitPairs:
    """Pairs of dataset rows: a val/test image and a train image, with their hash distance."""

    evaluation_rows: np.ndarray  # (P,) int64
    train_rows: np.ndarray  # (P,) int64
    distances: np.ndarray  # (P,) int64
    identical: np.ndarray  # (P,) bool: same pixels

    def __len__(self) -> int:
        return len(self.distances)

    def select(self, mask_or_indices: np.ndarray) -> CrossSplitPairs:
        return CrossSplitPairs(
            self.evaluation_rows[mask_or_indices],
            self.train_rows[mask_or_indices],
            self.distances[mask_or_indices],
            self.identical[mask_or_indices],
        )


@dataclass(frozen=True)
class NearDuplicateReport:
    max_distance: int
    pairs: CrossSplitPairs  # every (val/test, train) pair within max_distance, identical ones included
    metrics: dict[str, Any]  # flat counts, and `near_duplicate_examples` (ids of the closest distinct pairs)
    sheet_png: bytes  # the closest pairs that are not pixel-identical, or a placeholder saying there are none

    @property
    def train_rows(self) -> np.ndarray:
        """Train rows that nearly duplicate some val/test image: what fetch.drop_train_near_duplicates removes."""
        return np.unique(self.pairs.train_rows)


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """imagehash's 64-bit pHash of each (H, W, 1|3) uint8 image as uint64; `f"{h:016x}"` is imagehash's hex.

    One image at a time: PIL's Lanczos resize, which dominates, has no batch form, and a batched
    DCT measured slower than imagehash's per-image one on FER2013's 48×48 faces.
    """
    if not len(images):
        return np.empty(0, dtype=np.uint64)
    bits = np.stack([imagehash.phash(_pil_image(np.asarray(image))).hash.ravel() for image in images])
    # Big-endian packing keeps imagehash's bit order, so a hash reads the same in both.
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def _pil_image(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`images` (N, H, W, C) moved down `dy` and right `dx` pixels, the edge rows and columns repeated into the gap."""
    height, width = images.shape[1:3]
    rows = np.clip(np.arange(height) - dy, 0, height - 1)
    columns = np.clip(np.arange(width) - dx, 0, width - 1)
    return images[:, rows][:, :, columns]


def match_images(queries: np.ndarray, references: np.ndarray, max_distance: int, shift: int) -> HashMatches:
    """match_hashes of the query images moved by up to `shift` pixels each way; each pair at its smallest distance."""
    reference_hashes = perceptual_hashes(references)
    offsets = range(-shift, shift + 1)
    return _closest_over(
        [
            match_hashes(perceptual_hashes(shifted(queries, dy, dx)), reference_hashes, max_distance)
            for dy in offsets
            for dx in offsets
        ]
    )


def _closest_over(matches: Sequence[HashMatches]) -> HashMatches:
    """Merge the matches of shifted copies of the same queries: each pair, and each query's nearest, at its smallest."""
    queries = np.concatenate([match.queries for match in matches])
    references = np.concatenate([match.references for match in matches])
    distances = np.concatenate([match.distances for match in matches])
    order = np.lexsort((distances, references, queries))  # by query, reference, then the smallest distance first
    queries, references, distances = queries[order], references[order], distances[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (queries[1:] != queries[:-1]) | (references[1:] != references[:-1])
    nearest_distances = np.stack([match.nearest_distances for match in matches])
    best = nearest_distances.argmin(axis=0)
    columns = np.arange(nearest_distances.shape[1])
    return HashMatches(
        queries=queries[first],
        references=references[first],
        distances=distances[first],
        nearest=np.stack([match.nearest for match in matches])[best, columns],
        nearest_distances=nearest_distances[best, columns],
    )


def match_hashes(queries: np.ndarray, references: np.ndarray, max_distance: int) -> HashMatches:
    """All (query, reference) pairs whose hashes differ in at most `max_distance` bits, by brute force.

    XOR and popcount over a chunk of query rows against every reference at once: FER2013's 7k val/test
    against 29k train hashes take well under a second, so no index (BK-tree) is needed.
    """
    if not len(references):
        raise ValueError("no reference hashes to match against")
    rows_per_chunk = max(1, CHUNK_ELEMENTS // len(references))
    found_queries, found_references, found_distances = [], [], []
    nearest = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), rows_per_chunk):
        distances = np.bitwise_count(queries[start : start + rows_per_chunk, None] ^ references[None, :])
        nearest[start : start + len(distances)] = distances.argmin(axis=1)
        query_rows, reference_rows = np.nonzero(distances <= max_distance)
        found_queries.append(query_rows + start)
        found_references.append(reference_rows)
        found_distances.append(distances[query_rows, reference_rows])
    return HashMatches(
        queries=np.concatenate(found_queries or [np.empty(0)]).astype(np.int64),
        references=np.concatenate(found_references or [np.empty(0)]).astype(np.int64),
        distances=np.concatenate(found_distances or [np.empty(0)]).astype(np.int64),
        nearest=nearest,
        nearest_distances=np.bitwise_count(queries ^ references[nearest]).astype(np.int64),
    )


def find_near_duplicates(
    dataset: Dataset, max_distance: int, shift: int = 1, seed: int = 0, shown_pairs: int = SHOWN_PAIRS
) -> NearDuplicateReport:
    """Match every val/test image (shifted up to `shift` pixels) against every train image by pHash;
    count, list and draw the matches.

    `seed` picks which pairs of each distance are shown (a source's row order would show one class only).
    """
    started = time.perf_counter()
    train = np.flatnonzero(dataset.splits == "train")
    evaluation = np.flatnonzero(np.isin(dataset.splits, EVALUATION_SPLITS))
    matches = match_images(dataset.images[evaluation], dataset.images[train], max_distance, shift)
    log.info(
        "matched %d val/test images (shifted up to %d px) with %d train images by pHash in %.1f s",
        len(evaluation),
        shift,
        len(train),
        time.perf_counter() - started,
    )
    digests = pixel_digests(dataset.images)
    pairs = _cross_split_pairs(evaluation[matches.queries], train[matches.references], matches.distances, digests)
    nearest = _cross_split_pairs(evaluation, train[matches.nearest], matches.nearest_distances, digests)
    shown = _shown_pairs(pairs, nearest, max_distance, shown_pairs, seed)
    metrics = {"near_duplicate_shift": shift, **near_duplicate_metrics(dataset, pairs, max_distance)}
    within = shown.select(shown.distances <= max_distance)
    metrics["near_duplicate_examples"] = [
        f"{dataset.ids[row]} ~ {dataset.ids[match]} (d={distance})"
        for row, match, distance in zip(within.evaluation_rows, within.train_rows, within.distances, strict=True)
    ]
    _log_findings(metrics)
    return NearDuplicateReport(max_distance, pairs, metrics, _pairs_png(dataset, shown, max_distance, shift))


def _cross_split_pairs(
    evaluation_rows: np.ndarray, train_rows: np.ndarray, distances: np.ndarray, digests: np.ndarray
) -> CrossSplitPairs:
    return CrossSplitPairs(evaluation_rows, train_rows, distances, digests[evaluation_rows] == digests[train_rows])


def _shown_pairs(
    pairs: CrossSplitPairs, nearest: CrossSplitPairs, max_distance: int, count: int, seed: int
) -> CrossSplitPairs:
    """Up to `count` pairs that are not pixel-identical (duplicates.py reports those), closest first, spread
    over the distances within `max_distance` and the next BEYOND_THRESHOLD distances that occur past it.

    Each distance gets its turn, so the picture shows pairs at the threshold and just past it (from
    each val/test image's nearest train image), not only the many at distance 0: a person judges the
    threshold by whether those still show one face twice. Data without any pair that close still
    shows its closest pairs.
    """
    candidates = _distinct_pairs(_concatenate(pairs, nearest))
    levels = np.unique(candidates.distances)
    levels = np.concatenate([levels[levels <= max_distance], levels[levels > max_distance][:BEYOND_THRESHOLD]])
    candidates = candidates.select(np.isin(candidates.distances, levels))
    shuffled = np.random.default_rng(seed).permutation(len(candidates))
    by_distance = shuffled[np.argsort(candidates.distances[shuffled], kind="stable")]
    distances = candidates.distances[by_distance]
    turn = np.arange(len(distances)) - np.searchsorted(distances, distances)  # place within its distance
    chosen = by_distance[np.lexsort((distances, turn))[:count]]
    return candidates.select(chosen[np.argsort(candidates.distances[chosen], kind="stable")])


def _distinct_pairs(pairs: CrossSplitPairs) -> CrossSplitPairs:
    """Each (val/test, train) pair once, pixel-identical ones left out."""
    _, first = np.unique(np.stack([pairs.evaluation_rows, pairs.train_rows]), axis=1, return_index=True)
    keep = np.zeros(len(pairs), dtype=bool)
    keep[first] = True
    return pairs.select(keep & ~pairs.identical)


def _concatenate(first: CrossSplitPairs, second: CrossSplitPairs) -> CrossSplitPairs:
    return CrossSplitPairs(
        np.concatenate([first.evaluation_rows, second.evaluation_rows]),
        np.concatenate([first.train_rows, second.train_rows]),
        np.concatenate([first.distances, second.distances]),
        np.concatenate([first.identical, second.identical]),
    )


def near_duplicate_metrics(dataset: Dataset, pairs: CrossSplitPairs, max_distance: int) -> dict[str, Any]:
    """Flat counts: val/test images with a near-identical train image (all, and without a pixel-identical one)."""
    metrics: dict[str, Any] = {"near_duplicate_distance": max_distance}
    with_identical = np.unique(pairs.evaluation_rows[pairs.identical])
    for split in EVALUATION_SPLITS:
        rows = np.unique(pairs.evaluation_rows[dataset.splits[pairs.evaluation_rows] == split])
        metrics[f"near_duplicates_{split}_in_train"] = len(rows)
        # Images duplicates.py missed: near-identical to a train image, pixel-identical to none.
        metrics[f"near_duplicates_{split}_in_train_not_identical"] = len(np.setdiff1d(rows, with_identical))
    metrics["near_duplicate_pairs"] = len(pairs)
    metrics["near_duplicate_pairs_not_identical"] = int(np.sum(~pairs.identical))
    labels = dataset.labels
    metrics["near_duplicate_pairs_label_conflict"] = int(
        np.sum(labels[pairs.evaluation_rows] != labels[pairs.train_rows])
    )
    metrics["near_duplicate_train_images"] = len(np.unique(pairs.train_rows))
    return metrics


def _log_findings(metrics: dict[str, Any]) -> None:
    counts = {split: metrics[f"near_duplicates_{split}_in_train"] for split in EVALUATION_SPLITS}
    if not any(counts.values()):
        return
    log.warning(
        "val/test images with a near-identical train image (pHash distance <= %d): %s, %s of them not pixel-identical; "
        "%d train images involved; e.g. %s",
        metrics["near_duplicate_distance"],
        counts,
        {split: metrics[f"near_duplicates_{split}_in_train_not_identical"] for split in EVALUATION_SPLITS},
        metrics["near_duplicate_train_images"],
        metrics["near_duplicate_examples"][:3],
    )


def drop_train_near_duplicates(dataset: Dataset, report: NearDuplicateReport) -> tuple[Dataset, int]:
    """`dataset` without the train images that nearly duplicate a val/test image, and how many went."""
    dropped = report.train_rows
    if len(dropped):
        log.warning("dropped %d train images that nearly duplicate a val/test image", len(dropped))
    keep = np.ones(len(dataset), dtype=bool)
    keep[dropped] = False
    return dataset.subset(keep), len(dropped)


def _pairs_png(dataset: Dataset, pairs: CrossSplitPairs, max_distance: int, shift: int) -> bytes:
    if not len(pairs):
        return placeholder_png("no pair of a val/test and a train image that differ in their pixels")
    title = (
        f"val/test | near train image; d: pHash distance (of {HASH_BITS} bits, best of shifts up to {shift} px); "
        f"* counted (d <= {max_distance})"
    )
    captions = [
        f"{'*' if distance <= max_distance else ' '}d={distance} {dataset.splits[row]}:"
        f"{dataset.classes[dataset.labels[row]]} train:{dataset.classes[dataset.labels[match]]}"
        for row, match, distance in zip(pairs.evaluation_rows, pairs.train_rows, pairs.distances, strict=True)
    ]
    sheet = pair_sheet(dataset.images[pairs.evaluation_rows], dataset.images[pairs.train_rows], captions, title)
    return png_bytes(sheet)
