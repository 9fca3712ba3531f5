"""Find repeated images: the same name twice, and the same pixels under several names.

Real FER data has both (FER2013 holds hundreds of pixel-identical faces, some with
different labels). They are reported, not removed: which copy is "right" is a
judgement for the user, and the counts land in the fetch metrics.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fersynth.datasets.format import Dataset

log = logging.getLogger(__name__)

DUPLICATE_ID_MARK = "~"


@dataclass(frozen=True)
class DuplicateReport:
    identical_images: int  # images whose pixels equal an earlier image's
    conflicting_duplicates: int  # groups of identical images that carry more than one label
    cross_split_duplicates: int  # val/test images whose pixels also occur in train (a leak to know about)


def unique_ids(ids: Sequence[str]) -> tuple[list[str], int]:
    """Keep every image, renaming repeats `name~2`, `name~3`, ...; also return how many were repeats."""
    seen: Counter[str] = Counter()
    renamed = []
    for name in ids:
        seen[name] += 1
        renamed.append(name if seen[name] == 1 else f"{name}{DUPLICATE_ID_MARK}{seen[name]}")
    repeats = len(ids) - len(seen)
    if repeats:
        examples = [name for name, count in seen.items() if count > 1][:5]
        log.warning("%d images repeat an earlier image's name (kept, renamed with ~N), e.g. %s", repeats, examples)
    return renamed, repeats


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """A 16-byte hash of each image's pixels (dtype S16): equal digests mean identical images."""
    return np.array(
        [hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).digest() for pixels in images],
        dtype="S16",
    )


def find_identical_images(dataset: Dataset) -> DuplicateReport:
    """Group images by a hash of their pixels and count repeats, label conflicts and cross-split copies."""
    groups: defaultdict[bytes, list[int]] = defaultdict(list)
    for row, digest in enumerate(pixel_digests(dataset.images)):
        groups[bytes(digest)].append(row)
    repeated = [rows for rows in groups.values() if len(rows) > 1]
    conflicting = [rows for rows in repeated if len(set(dataset.labels[rows].tolist())) > 1]
    cross_split = sum(
        int(np.sum(dataset.splits[rows] != "train")) for rows in repeated if "train" in set(dataset.splits[rows])
    )
    report = DuplicateReport(
        identical_images=sum(len(rows) - 1 for rows in repeated),
        conflicting_duplicates=len(conflicting),
        cross_split_duplicates=cross_split,
    )
    if repeated:
        examples = [[str(dataset.ids[row]) for row in rows] for rows in conflicting[:3]]
        log.warning(
            "%d images repeat another image's pixels; %d such groups disagree on the label (e.g. %s); "
            "%d val/test images also appear in train",
            report.identical_images,
            report.conflicting_duplicates,
            examples,
            report.cross_split_duplicates,
        )
    return report
