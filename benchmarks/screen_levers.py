"""Screen classifier levers: one short single-seed run each, scored on val (PublicTest for FER2013).

Each lever is a name and `train` overrides (`mixup_alpha=0.2`) on top of a base classifier. Every run
trains on the real train split of an aligned dataset (the face-align stage's output) and reports its
best val accuracy and macro-F1, with and without test-time augmentation, as a Markdown table and as
JSON lines in `--out`. Short runs screen, they do not decide: a regulariser that costs accuracy in six
epochs can pay in forty.

    .venv/bin/python benchmarks/screen_levers.py --data data/aligned --epochs 6 \\
        --lever none --lever smoothing label_smoothing=0.1 --lever mixup mixup_alpha=0.2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fersynth.calibration import teacher_data
from fersynth.config import CANONICAL_CLASSES, ClassifierConfig
from fersynth.datasets.format import read_dataset
from fersynth.training import fit_classifier, predict_proba

TTA_MODES = ("flip", "flip_shifts")


def parse_levers(specs: list[list[str]]) -> dict[str, dict[str, Any]]:
    """`name key=value ...` → {name: overrides}; values are YAML (0.2, true)."""
    return {
        name: {key: yaml.safe_load(value) for key, _, value in (pair.partition("=") for pair in pairs)}
        for name, *pairs in specs
    }


def screen(data: Path, base: ClassifierConfig, levers: dict[str, dict[str, Any]], seed: int, out: Path) -> list[dict]:
    train, val = teacher_data(read_dataset(data, CANONICAL_CLASSES), str(data))
    rows = []
    for name, overrides in levers.items():
        started = time.perf_counter()
        fit = fit_classifier(train, val, base.model_copy(update=overrides), seed=seed, description=name)
        row: dict[str, Any] = {
            "lever": name,
            "overrides": overrides,
            "seconds": round(time.perf_counter() - started, 1),
            "device": fit.device,
            "precision": fit.precision,
            "val_accuracy": round(fit.best_val_accuracy, 4),
            "val_macro_f1": round(fit.best_val_macro_f1, 4),
        }
        for tta in TTA_MODES:
            predicted = predict_proba(fit.model, val.images, tta=tta).argmax(axis=1)
            row[f"{tta}_accuracy"] = round(float(np.mean(predicted == val.labels)), 4)
        rows.append(row)
        with out.open("a") as lines:
            lines.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    header = "| lever | val accuracy | val macro-F1 | with flip TTA | with flip_shifts TTA | seconds |"
    lines = [header, "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['lever']} | {row['val_accuracy']:.3f} | {row['val_macro_f1']:.3f} | {row['flip_accuracy']:.3f} "
            f"| {row['flip_shifts_accuracy']:.3f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/aligned"))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lever", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]")
    parser.add_argument("--out", type=Path, default=Path("screen_levers.jsonl"))
    arguments = parser.parse_args()
    base = ClassifierConfig(arch="vgg", width=arguments.width, epochs=arguments.epochs, lr=1.0e-3)
    rows = screen(arguments.data, base, parse_levers(arguments.lever), arguments.seed, arguments.out)
    print(table(rows))


if __name__ == "__main__":
    main()
