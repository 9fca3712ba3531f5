from __future__ import annotations

import json
from pathlib import Path

import yaml

from fersynth.datasets.format import IMAGES_FILE, read_dataset, write_dataset

from .conftest import make_dataset, run_stage


def invoke(root: Path, input_dir: Path, out: str, variants: int = 2) -> tuple[int, str]:
    params = {"common": {"seed": 3}, "augment_offline": {"variants_per_image": variants}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return run_stage(
        [
            "augment-offline",
            *("--input", str(input_dir), "--out", str(root / out)),
            *("--diagnostics", str(root / f"{out}.json"), "--params", str(root / "params.yaml")),
        ]
    )


def test_augment_stage_writes_variants_and_metrics_reproducibly(tmp_path: Path) -> None:
    dataset = make_dataset(per_class=3, size=24)
    write_dataset(dataset, tmp_path / "aligned")
    for out in ("offline", "again"):
        code, output = invoke(tmp_path, tmp_path / "aligned", out)
        assert code == 0, output
    offline = read_dataset(tmp_path / "offline", dataset.classes)
    train_ids = set(dataset.ids[dataset.splits == "train"])
    assert len(offline) == 2 * len(train_ids) and set(offline.origins) == train_ids
    assert set(offline.sources) == {"offline"} and set(offline.splits) == {"train"}
    assert (tmp_path / "offline" / IMAGES_FILE).read_bytes() == (tmp_path / "again" / IMAGES_FILE).read_bytes()
    metrics = json.loads((tmp_path / "offline.json").read_text())
    assert metrics["variants_per_image"] == 2 and metrics["train_images"] == len(train_ids)
    assert metrics["variants_written"] == len(offline)
    assert metrics["count_train_happy"] == int((offline.labels == dataset.classes.index("happy")).sum())


def test_augment_stage_with_zero_variants_writes_a_valid_empty_dataset(tmp_path: Path) -> None:
    dataset = make_dataset(per_class=2, size=24, channels=3)
    write_dataset(dataset, tmp_path / "aligned")
    code, output = invoke(tmp_path, tmp_path / "aligned", "offline", variants=0)
    assert code == 0, output
    offline = read_dataset(tmp_path / "offline", dataset.classes)
    assert offline.images.shape == (0, 24, 24, 3)
    assert (tmp_path / "offline" / "preview.png").is_file()
    assert json.loads((tmp_path / "offline.json").read_text())["variants_written"] == 0


def test_augment_stage_names_a_broken_input(tmp_path: Path) -> None:
    write_dataset(make_dataset(per_class=1), tmp_path / "aligned")
    (tmp_path / "aligned" / IMAGES_FILE).write_bytes(b"not an array")
    code, output = invoke(tmp_path, tmp_path / "aligned", "offline")
    assert code == 1
    assert "".join(str(tmp_path / "aligned" / IMAGES_FILE).split()) in output
    assert not list(tmp_path.glob("*offline*"))  # neither the dataset, its staging copy nor the metrics
