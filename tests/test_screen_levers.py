"""benchmarks/screen_levers.py: one short run per lever, a row each, scored with and without TTA."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.screen_levers import parse_levers, screen, table
from fersynth.config import ClassifierConfig
from fersynth.datasets.format import write_dataset

from .conftest import make_dataset


def test_each_lever_gives_a_row(tmp_path: Path) -> None:
    write_dataset(make_dataset(per_class=3, size=16), tmp_path / "aligned")
    levers = parse_levers([["none"], ["mixup", "mixup_alpha=0.2", "random_erasing=0.5"]])
    assert levers == {"none": {}, "mixup": {"mixup_alpha": 0.2, "random_erasing": 0.5}}
    base = ClassifierConfig(arch="vgg", width=4, epochs=1, batch_size=4)
    rows = screen(tmp_path / "aligned", base, levers, seed=0, out=tmp_path / "screen.jsonl")
    assert [row["lever"] for row in rows] == ["none", "mixup"]
    assert all(0 <= row["flip_shifts_accuracy"] <= 1 for row in rows)
    written = [json.loads(line) for line in (tmp_path / "screen.jsonl").read_text().splitlines()]
    assert written == rows
    assert table(rows).splitlines()[2].startswith("| none | ")
