"""Screen GAN settings by how recognisable their faces are to a judge that never saw them.

For each variant (a set of `train_gan` overrides) it trains the GAN on the real train split of an
aligned dataset (the face-align stage's output), draws `--samples` faces per class (with each
`--truncation` given) and reports the judge's per-class expression accuracy: the share of faces
generated as class c that the judge calls c, and their mean, beside the quality figures calibrate
reports (`fersynth.quality`: KID, Fréchet distance, diversity, memorised share, in the judge's
features; `real_*` the same for real val faces). The judge is a real-data classifier trained once
and cached (`calibrate.judge`'s code path), so screening many variants pays for it once. Results
go to `--work`: `results.jsonl`, one `grid-<variant>.png` each, the GAN checkpoints.

    .venv/bin/python benchmarks/screen_gan.py --data data/aligned --work /tmp/screen --epochs 20 \\
        --judge '{"width": 32, "epochs": 12, "lr": 1.0e-3, "class_weighting": "balanced"}' --judge-seed 0 \\
        --truncation 0 1.0 --variant base --variant class3 class_loss_weight=3.0

Short single-seed runs: a screen, not a result (the pipeline's calibrate stage reports the same
figures with `calibrate.judge` set).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import yaml

from fersynth.calibration import data_fingerprint, load_or_train_classifier
from fersynth.config import CANONICAL_CLASSES, ClassifierConfig, TrainGanConfig, load_params
from fersynth.datasets.format import Dataset, read_dataset
from fersynth.gan.training import train_gan
from fersynth.metrics import classification_report_flat, macro_f1
from fersynth.models import Classifier
from fersynth.quality import synthetic_quality
from fersynth.training import predict_proba

SAMPLE_SEED = 12345
QUALITY_FIGURES = ("kid", "kid_std", "fd", "diversity", "memorised_share")


def parse_variants(specs: list[list[str]]) -> list[tuple[str, dict[str, object]]]:
    """`name key=value ...` → (name, overrides); values are YAML (3.0, true, [translation])."""
    variants = []
    for name, *pairs in specs:
        overrides = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            overrides[key] = yaml.safe_load(value)
        variants.append((name, overrides))
    return variants


def judge_accuracy(judge_proba: np.ndarray, intended: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    """Per class, the share of images meant as c that the judge calls c (its recall), and their mean (UAR)."""
    report = classification_report_flat(intended, judge_proba.argmax(axis=1), classes)
    return {"mean": report["balanced_accuracy"]} | {name: report[f"recall_{name}"] for name in classes}


def gan_quality(
    judge: Classifier, train: Dataset, val: Dataset, images: np.ndarray, intended: np.ndarray, seed: int
) -> dict[str, float]:
    """Calibrate's quality figures of the GAN's faces and, for scale, of real val faces (`real_<figure>`)."""
    synthetic = Dataset(
        images=images,
        labels=intended,
        splits=np.full(len(images), "train", dtype=object),
        classes=train.classes,
        ids=np.array([f"gan-{row}" for row in range(len(images))], dtype=object),
        sources=np.full(len(images), "gan", dtype=object),
    )
    metrics = synthetic_quality(judge, train, val, synthetic, intended, seed).metrics
    figures = {figure: float(metrics[f"quality_gan_{figure}"]) for figure in QUALITY_FIGURES}
    return figures | {f"real_{figure}": float(metrics[f"quality_real_{figure}"]) for figure in QUALITY_FIGURES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="aligned real dataset (face-align output)")
    parser.add_argument("--work", type=Path, required=True, help="judge cache, GAN checkpoints, grids, results")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="base train_gan section")
    parser.add_argument("--judge", default="{}", help="overrides of calibrate.teacher for the judge, as JSON")
    parser.add_argument("--judge-seed", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=None, help="override train_gan.epochs for every variant")
    parser.add_argument("--samples", type=int, default=200, help="faces drawn per class")
    parser.add_argument("--truncation", type=float, nargs="*", default=[0.0], help="0 = none")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    params = load_params(yaml.safe_load(args.params.read_text()), str(args.params))
    real = read_dataset(args.data, CANONICAL_CLASSES)
    train, val = real.subset(real.splits == "train"), real.subset(real.splits == "val")
    judge_config = ClassifierConfig.model_validate(params.calibrate.teacher.model_dump() | json.loads(args.judge))
    started = time.perf_counter()
    judge = load_or_train_classifier(
        train, val, judge_config, args.judge_seed, args.work / "judge", "judge", data_fingerprint(train, val)
    )
    val_proba = predict_proba(judge, val.images)
    print(
        f"judge val macro-F1 {macro_f1(val.labels, val_proba.argmax(axis=1)):.3f} "
        f"({time.perf_counter() - started:.0f} s); per-class val recall "
        + json.dumps(judge_accuracy(val_proba, val.labels, real.classes))
    )

    results = []
    for name, overrides in parse_variants(args.variant):
        values = params.train_gan.model_dump() | overrides
        if args.epochs is not None:
            values["epochs"] = args.epochs
        config = TrainGanConfig.model_validate(values)
        started = time.perf_counter()
        gan = train_gan(real, config, args.seed, args.work / "gan" / name).generator
        seconds = time.perf_counter() - started
        (args.work / f"grid-{name}.png").write_bytes(gan.sample_grid(SAMPLE_SEED))
        for truncation in args.truncation:
            images = np.concatenate(
                [gan.sample(index, args.samples, SAMPLE_SEED + index, truncation) for index in range(len(gan.classes))]
            )
            intended = np.repeat(np.arange(len(gan.classes)), args.samples)
            accuracy = judge_accuracy(predict_proba(judge, images), intended, gan.classes)
            quality = gan_quality(judge, train, val, images, intended, args.seed)
            row = {"variant": name, "overrides": overrides, "truncation": truncation, "train_s": round(seconds)}
            results.append(row | {key: round(value, 3) for key, value in (accuracy | quality).items()})
            print(json.dumps(results[-1]), flush=True)
    with open(args.work / "results.jsonl", "a") as handle:
        for row in results:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
