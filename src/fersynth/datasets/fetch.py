"""The fetch step: load the configured source, make sure every split and class is usable, report counts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.table import Table

from fersynth.config import FetchConfig
from fersynth.datasets.archive import SKIP_REASONS
from fersynth.datasets.demo import DemoSizes
from fersynth.datasets.folds import KFold
from fersynth.datasets.format import SPLITS, Dataset
from fersynth.datasets.near_duplicates import NearDuplicateReport, drop_train_near_duplicates, find_near_duplicates
from fersynth.datasets.papers import PaperOptions
from fersynth.datasets.sources import SourceReport, load_source
from fersynth.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchResult:
    dataset: Dataset
    report: SourceReport
    near_duplicates: NearDuplicateReport  # audited before any drop: pairs index the loaded rows, not `dataset`'s
    dropped_train_near_duplicates: int

    def metrics(self) -> dict[str, Any]:
        """Flat, stable metric keys: counts per split and class, drops (by label, and too small), files of the folder or
        zip not read (by reason), duplicates, near-duplicates, image shape.

        Duplicate and near-duplicate figures describe the data as loaded, before any drop.
        """
        dataset, report = self.dataset, self.report
        per_split = split_class_counts(dataset)
        metrics: dict[str, Any] = {}
        for split, counts in per_split.items():
            metrics.update({f"count_{split}_{name}": count for name, count in counts.items()})
        metrics.update({f"total_{split}": sum(counts.values()) for split, counts in per_split.items()})
        metrics.update({f"dropped_{label}": count for label, count in report.dropped.items()})
        metrics["dropped_too_small"] = report.too_small
        metrics["dropped_total"] = sum(report.dropped.values()) + report.too_small
        metrics.update({f"skipped_{reason}": report.skipped.get(reason, 0) for reason in SKIP_REASONS})
        metrics["duplicate_ids"] = report.duplicate_ids
        metrics["identical_images"] = report.duplicates.identical_images
        metrics["conflicting_duplicates"] = report.duplicates.conflicting_duplicates
        metrics["cross_split_duplicates"] = report.duplicates.cross_split_duplicates
        metrics.update(self.near_duplicates.metrics)
        metrics["dropped_train_near_duplicates"] = self.dropped_train_near_duplicates
        _, height, width, channels = dataset.images.shape
        metrics.update({"image_height": height, "image_width": width, "channels": channels})
        return metrics


def fetch_dataset(config: FetchConfig, classes: Sequence[str], seed: int) -> FetchResult:
    """Load `config.source`, carve missing val/test splits, audit near-duplicates across splits (dropping the
    train copies if asked), and refuse a dataset training cannot use."""
    dataset, report = load_source(
        config.source,
        config.path,
        classes,
        config.label_aliases,
        config.max_side,
        seed=seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        demo_sizes=DemoSizes(config.demo_train, config.demo_val, config.demo_test),
        options=PaperOptions(tuple(config.kdef_angles), config.ckplus_neutral_first_frame),
        rules=config,
        k_fold=KFold(config.folds, config.fold) if config.folds else None,
    )
    _check_splits(dataset, report, config)
    _check_training_classes(dataset, report)
    near_duplicates = find_near_duplicates(dataset, config.near_duplicate_distance, config.near_duplicate_shift, seed)
    dropped = 0
    if config.drop_train_near_duplicates:
        dataset, dropped = drop_train_near_duplicates(dataset, near_duplicates)
        _check_training_classes(dataset, report, "after fetch.drop_train_near_duplicates: ")
    return FetchResult(dataset, report, near_duplicates, dropped)


def _check_splits(dataset: Dataset, report: SourceReport, config: FetchConfig) -> None:
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    problems = []
    for split, fraction in fractions.items():
        if (dataset.splits == split).any():
            continue
        if split in report.source_splits:
            problems.append(f"its {split} split holds no images of the selected classes")
        elif fraction == 0:
            problems.append(f"it has no {split} split and fetch.{split}_fraction is 0 (set it above 0 to carve one)")
        else:
            problems.append(f"carving fetch.{split}_fraction={fraction} of its train split left no {split} images")
    if problems:
        raise DataError(f"{config.path or config.source}: " + "; ".join(problems))


def _check_training_classes(dataset: Dataset, report: SourceReport, context: str = "") -> None:
    """A class with no training image would silently turn into a class the model can never predict."""
    empty = [name for name, count in split_class_counts(dataset)["train"].items() if count == 0]
    if empty:
        raise DataError(
            f"{report.path or report.source}: {context}no training images for class(es) {empty}; "
            "add them, map a label to them with fetch.label_aliases, or remove them from common.classes"
        )


def split_class_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    """split -> class -> image count (without copying any images)."""
    result = {}
    for split in SPLITS:
        counts = np.bincount(dataset.labels[dataset.splits == split], minlength=len(dataset.classes))
        result[split] = {name: int(counts[index]) for index, name in enumerate(dataset.classes)}
    return result


def class_count_table(dataset: Dataset) -> Table:
    """Class counts per split, for the log."""
    table = Table(title=f"fetched {len(dataset)} images, {dataset.images.shape[1]}×{dataset.images.shape[2]}")
    table.add_column("class")
    for split in SPLITS:
        table.add_column(split, justify="right")
    per_split = split_class_counts(dataset)
    for name in dataset.classes:
        table.add_row(name, *(str(per_split[split][name]) for split in SPLITS))
    table.add_row("total", *(str(sum(per_split[split].values())) for split in SPLITS), style="bold")
    return table
