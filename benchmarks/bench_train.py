"""Training throughput of the classifiers at 48×48 on random data.

Runs `fit_classifier` for two epochs on `--batches` random batches and times the second epoch
(the first pays for warm-up), then extrapolates to a FER2013-sized epoch of 28,709 images.
The timed epoch includes a validation pass over a handful of images, so it is a slight
overestimate. Example:

    .venv/bin/python benchmarks/bench_train.py --arch vgg --width 16 --batches 20
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import get_args

import numpy as np
import torch

from fersynth.config import CANONICAL_CLASSES, ClassifierConfig
from fersynth.datasets.format import Dataset
from fersynth.device import default_device
from fersynth.models import count_parameters
from fersynth.training import fit_classifier

FER2013_TRAIN_IMAGES = 28_709
IMAGE_SIZE = 48
VAL_IMAGES = 8


class EpochClock:
    """A dvclive stand-in: fit_classifier calls next_step() once per finished epoch."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def log_metric(self, name: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        self.ends.append(time.perf_counter())


def random_dataset(count: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        images=rng.integers(0, 256, size=(count, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8),
        labels=rng.integers(0, len(CANONICAL_CLASSES), size=count).astype(np.int64),
        splits=np.full(count, "train", dtype=object),
        classes=CANONICAL_CLASSES,
        ids=np.array([f"r{seed}-{i}" for i in range(count)], dtype=object),
    )


def measure(config: ClassifierConfig, batches: int) -> dict[str, float]:
    train = random_dataset(batches * config.batch_size, seed=0)
    val = random_dataset(VAL_IMAGES, seed=1)
    clock = EpochClock()
    result = fit_classifier(train, val, config.model_copy(update={"epochs": 2}), seed=0, live=clock)  # type: ignore[arg-type]
    seconds = clock.ends[1] - clock.ends[0]
    images_per_second = len(train) / seconds
    return {
        "parameters": count_parameters(result.model),
        "images_per_second": images_per_second,
        "fer2013_epoch_seconds": FER2013_TRAIN_IMAGES / images_per_second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=get_args(ClassifierConfig.model_fields["arch"].annotation), default="vgg")
    parser.add_argument("--width", type=int, default=32, help="vgg base channels")
    parser.add_argument("--batches", type=int, default=20, help="training batches per timed epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    config = ClassifierConfig(arch=args.arch, width=args.width, batch_size=args.batch_size)
    numbers = measure(config, args.batches)
    print(
        f"arch={args.arch} width={args.width} batch={args.batch_size} batches={args.batches} "
        f"device={default_device()} threads={torch.get_num_threads()} params={numbers['parameters']:,} "
        f"images/s={numbers['images_per_second']:.1f} fer2013_epoch_s={numbers['fer2013_epoch_seconds']:.0f}"
    )


if __name__ == "__main__":
    main()
