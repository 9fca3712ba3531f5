"""What training the expression editor costs: seconds a step, and so a FER2013 and a demo epoch, per width.

Trains `train_editor` for `--steps` steps on random 48×48 grey faces (the step cost does not depend on the
pixels) and extrapolates to FER2013's 28,709 and the demo's 2,800 training faces at batch 32. The README's
editor cost table and its recommended settings (what fits 2 hours on 2 CPU cores) come from this.

    .venv/bin/python benchmarks/bench_editor.py --steps 100 --width 32:3 --width 16:2 --width 8:1
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from fersynth.config import CANONICAL_CLASSES, TrainEditorConfig
from fersynth.datasets.format import Dataset
from fersynth.editor import train_editor

FER2013_TRAIN, DEMO_TRAIN = 28_709, 2_800


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--width", action="append", help="base_channels:residual_blocks (repeatable)")
    args = parser.parse_args()
    faces = random_faces(args.batch_size * 8, args.size)
    print(f"{torch.get_num_threads()} torch threads, batch {args.batch_size}, {args.steps} steps each")
    print("| base_channels / residual_blocks | per step | FER2013 epoch | demo epoch |")
    print("|---|---|---|---|")
    for width in args.width or ["32:3"]:
        base, blocks = (int(part) for part in width.split(":"))
        config = TrainEditorConfig(
            epochs=1,
            base_channels=base,
            residual_blocks=blocks,
            batch_size=args.batch_size,
            images_per_epoch=args.steps * args.batch_size,
        )
        seconds = train_editor(faces, config, seed=0, device=torch.device("cpu")).training_seconds / args.steps
        fer_minutes = seconds * (FER2013_TRAIN // args.batch_size) / 60
        demo_seconds = seconds * (DEMO_TRAIN // args.batch_size)
        print(f"| {base} / {blocks} | {seconds:.2f} s | {fer_minutes:.1f} min | {demo_seconds:.0f} s |")
    return 0


def random_faces(count: int, size: int) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(
        images=rng.integers(0, 256, (count, size, size, 1), dtype=np.uint8),
        labels=np.arange(count) % len(CANONICAL_CLASSES),
        splits=np.full(count, "train", dtype=object),
        classes=CANONICAL_CLASSES,
        ids=np.asarray([f"face{index}" for index in range(count)], dtype=object),
    )


if __name__ == "__main__":
    sys.exit(main())
