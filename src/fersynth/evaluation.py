"""Score a trained classifier on the test split and on cross-dataset test sets.

The result holds flat metrics (test set at the top level, each extra set nested under its
name), per-image confusion rows for DVC's `confusion` plot template, and the classifier and test
split, from which the stage draws the Grad-CAM grid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fersynth.config import HELD_OUT_SET, EvaluateConfig, ExtraTestSet, FaceAlignConfig, ReadRules
from fersynth.datasets.format import Dataset
from fersynth.datasets.papers import PaperOptions
from fersynth.datasets.sources import load_source
from fersynth.errors import DataError
from fersynth.faces import align_dataset
from fersynth.metrics import classification_report_flat, confusion_rows
from fersynth.online_augmentation import TestTimeAugmentation
from fersynth.runtime.io import atomic_directory, write_json
from fersynth.training import LoadedClassifier, load_classifier, predict_proba

logger = logging.getLogger(__name__)

TEST_SET = HELD_OUT_SET  # an extra set may not take its name (config checks the names)
EXTRA_SOURCE_MAX_SIDE = 256  # photos are letterboxed to at most this side before alignment


@dataclass(frozen=True)
class Evaluation:
    figures: dict[str, Any]  # test-set metrics at the top level, extra sets nested under their names
    confusion: dict[str, list[dict[str, str]]]  # set name -> one {"actual", "predicted"} row per image
    classifier: LoadedClassifier  # what was scored, and the test split it was scored on, for figures
    test: Dataset

    def metrics(self) -> dict[str, Any]:
        return dict(self.figures)


def load_compatible_classifier(
    model_path: Path, classes: Sequence[str], image_size: int, channels: int
) -> LoadedClassifier:
    """The classifier at `model_path`, refused unless it was trained on `classes` at `image_size` and `channels`."""
    classifier = load_classifier(model_path)
    if classifier.classes != tuple(classes):
        raise DataError(f"{model_path}: trained on classes {list(classifier.classes)}, params list {list(classes)}")
    expected = (image_size, image_size, channels)
    if classifier.image_shape != expected:
        raise DataError(
            f"{model_path}: trained on {classifier.image_shape} images, but common.image_size/channels give {expected}"
        )
    return classifier


def read_extra_test_sets(
    config: EvaluateConfig,
    classes: Sequence[str],
    face_align: FaceAlignConfig,
    image_size: int,
    channels: int,
    rules: ReadRules,
) -> dict[str, Dataset]:
    """Every `config.extra_test_sets` entry, read within fetch's `rules` and aligned like the training data
    (`face_align`, `image_size`, `channels`), except that each names its own detector."""
    return {
        name: load_extra_test_set(
            name, spec, classes, face_align.model_copy(update={"detector": spec.detector}), image_size, channels, rules
        )
        for name, spec in config.extra_test_sets.items()
    }


def evaluate_classifier(
    classifier: LoadedClassifier,
    real: Dataset,
    extra_sets: Mapping[str, Dataset],
    config: EvaluateConfig,
    real_name: str = "real set",
) -> Evaluation:
    """Score the test split of `real` and every extra set (`read_extra_test_sets`) with `config`'s batch and TTA."""
    test = real.split(TEST_SET)
    if len(test) == 0:
        raise DataError(f"{real_name}: no rows with split 'test' to evaluate on")
    if test.images.shape[1:] != classifier.image_shape:
        raise DataError(f"{real_name}: images are {test.images.shape[1:]}, the model expects {classifier.image_shape}")
    metrics, rows = score_dataset(classifier, test, config.batch_size, config.tta)
    confusion = {TEST_SET: rows}
    for name, extra in extra_sets.items():
        metrics[name], confusion[name] = score_dataset(classifier, extra, config.batch_size, config.tta)
    return Evaluation(metrics, confusion, classifier, test)


def score_dataset(
    classifier: LoadedClassifier, dataset: Dataset, batch_size: int, tta: TestTimeAugmentation = "none"
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Flat metrics (with the image count) and confusion rows for one labelled dataset."""
    predictions = predict_proba(classifier.model, dataset.images, batch_size, tta).argmax(axis=1)
    metrics: dict[str, Any] = {"images": len(dataset)}
    metrics |= classification_report_flat(dataset.labels, predictions, dataset.classes)
    logger.info("%d images: accuracy %.4f, macro-F1 %.4f", len(dataset), metrics["accuracy"], metrics["macro_f1"])
    return metrics, confusion_rows(dataset.labels, predictions, dataset.classes)


def load_extra_test_set(
    name: str,
    spec: ExtraTestSet,
    classes: Sequence[str],
    alignment: FaceAlignConfig,
    image_size: int,
    channels: int,
    rules: ReadRules,
) -> Dataset:
    """Load a cross-dataset test set, keep the requested split and align its faces."""
    logger.info("extra test set %r: %s from %s (%s split)", name, spec.source, spec.path or "-", spec.split)
    dataset, _report = load_source(
        spec.source,
        Path(spec.path),
        classes,
        aliases={},
        max_side=EXTRA_SOURCE_MAX_SIDE,
        seed=spec.seed,
        options=PaperOptions(tuple(spec.kdef_angles), spec.ckplus_neutral_first_frame),
        rules=rules,
    )
    if spec.split == "test":
        dataset = dataset.split("test")
    if len(dataset) == 0:
        raise DataError(f"evaluate.extra_test_sets.{name}: no {spec.split!r} images in {spec.path}")
    aligned = align_dataset(dataset, alignment, image_size, channels).dataset
    if len(aligned) == 0:
        raise DataError(f"evaluate.extra_test_sets.{name}: no image of {spec.path} survived face alignment")
    return aligned


def write_confusion(evaluation: Evaluation, confusion_dir: Path) -> None:
    """`<set>.json` confusion rows per set, the directory replaced atomically."""
    with atomic_directory(Path(confusion_dir)) as staging:
        for name, rows in evaluation.confusion.items():
            write_json(staging / f"{name}.json", rows)
