"""Train calibrate's teachers and judge into its cache ahead of `dvc repro`, e.g. on a GPU machine.

The calibrate stage trains them only once it has generated faces to score, and on 2 CPU cores the
FER2013 teachers take about an hour each. This trains exactly the classifiers calibrate would
(`calibrate.teacher`, one per `ensemble_class_weightings` entry and ensemble member, then
`calibrate.judge`), with calibrate's seeds, into the same cache layout: copy the cache folder to
`models/teachers` of the repo and calibrate loads them (`teacher (seed N): cache hit`). The cache key
hashes the real train+val images, so run it on the face-align output of the same params.

    .venv/bin/python benchmarks/train_teachers.py --params params.yaml --real data/aligned --cache models/teachers
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from fersynth.calibration import load_or_train_judge, load_or_train_teachers, teacher_data
from fersynth.config import load_params, read_yaml_file
from fersynth.datasets.format import read_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--real", type=Path, default=Path("data/aligned"), help="face-align's output")
    parser.add_argument("--cache", type=Path, default=Path("models/teachers"), help="calibrate's --teachers folder")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    params = load_params(read_yaml_file(arguments.params, "params file"), source=str(arguments.params))
    config, seed = params.calibrate, params.common.seed
    train, val = teacher_data(read_dataset(arguments.real, params.common.classes), str(arguments.real))

    start = time.perf_counter()
    teachers = load_or_train_teachers(train, val, config, seed, arguments.cache)
    print(f"teachers: val macro-F1 {teachers.ensemble_val_macro_f1:.3f} ({time.perf_counter() - start:.0f} s)")
    if config.judge is not None:
        start = time.perf_counter()
        load_or_train_judge(train, val, config, seed, arguments.cache, teachers.data_fingerprint)
        print(f"judge: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
