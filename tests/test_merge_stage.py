from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from fersynth.datasets.format import Dataset, read_dataset, write_dataset

from .conftest import make_dataset, run_stage


def write_inputs(root: Path, offline_origin_split: str = "train") -> None:
    """Real (7 classes × 6: 2 train each), offline variants of 4 real images, and 3 GAN images of class happy."""
    real = make_dataset(per_class=6, size=16)
    write_dataset(real, root / "aligned")
    parents = real.subset(real.splits == offline_origin_split).subset(np.arange(4))
    offline = replace(
        parents,
        ids=np.array([f"off{n}" for n in range(len(parents))], dtype=object),
        sources=np.full(len(parents), "offline", dtype=object),
        origins=parents.ids,
        splits=np.full(len(parents), "train", dtype=object),
    )
    write_dataset(offline, root / "offline")
    gan = make_dataset(per_class=1, size=16, seed=1).subset(np.full(3, 3))
    gan = replace(
        gan,
        ids=np.array(["gan0", "gan1", "gan2"], dtype=object),
        sources=np.full(3, "gan", dtype=object),
        origins=np.array(["", "", ""], dtype=object),
        confidence=np.array([0.9, 0.8, 0.7], dtype=np.float32),
    )
    write_dataset(gan, root / "calibrated")
    params = {"common": {"seed": 0, "image_size": 16}, "merge": {"policy": "balance_to_max"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def invoke(root: Path) -> tuple[int, str]:
    return run_stage(
        [
            "merge",
            *("--real", str(root / "aligned"), "--offline", str(root / "offline")),
            *("--synthetic", str(root / "calibrated"), "--out", str(root / "merged")),
            *(
                "--diagnostics",
                str(root / "merge.json"),
                "--metrics",
                str(root / "headline.json"),
                "--counts-plot",
                str(root / "merge_counts.json"),
            ),
            *("--params", str(root / "params.yaml")),
        ]
    )


def test_merge_stage_writes_training_set_and_metrics(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    code, output = invoke(tmp_path)
    assert code == 0, output
    merged: Dataset = read_dataset(tmp_path / "merged", make_dataset().classes)
    metrics = json.loads((tmp_path / "merge.json").read_text())
    # make_dataset's train split holds 2 images per class; 4 offline variants land in angry (2) and disgust (2)
    assert metrics["before_angry"] == 4 and metrics["before_happy"] == 2
    # target 4: happy takes its two most confident GAN images, the other classes stay 2 short
    assert metrics["synthetic_happy"] == 2 and metrics["shortfall_happy"] == 0 and metrics["shortfall_sad"] == 2
    assert metrics["total_after"] == len(merged) == 14 + 4 + 2
    assert sorted(merged.ids[merged.sources == "gan"]) == ["gan0", "gan1"]
    assert set(merged.splits) == {"train"}
    plot = json.loads((tmp_path / "merge_counts.json").read_text())
    assert {"class": "angry", "count": 4, "set": "after"} in plot
    assert (tmp_path / "merged" / "preview.png").is_file()


def test_merge_stage_ratio_policy_reads_synthetic_per_real(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    merge = {"sources": ["real", "gan"], "policy": "ratio", "synthetic_per_real": 0.5}
    params = {"common": {"seed": 0, "image_size": 16}, "merge": merge}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, output = invoke(tmp_path)
    assert code == 0, output
    metrics = json.loads((tmp_path / "merge.json").read_text())
    # 2 real train faces per class, 0.5 synthetic per real: one each; only happy has GAN faces (its most confident)
    assert metrics["synthetic_happy"] == 1 and metrics["shortfall_happy"] == 0 and metrics["shortfall_sad"] == 1
    assert metrics["source_offline"] == 0 and metrics["total_after"] == 14 + 1
    merged: Dataset = read_dataset(tmp_path / "merged", make_dataset().classes)
    assert list(merged.ids[merged.sources == "gan"]) == ["gan0"]


def test_merge_stage_rejects_variant_of_validation_image(tmp_path: Path) -> None:
    write_inputs(tmp_path, offline_origin_split="val")
    code, output = invoke(tmp_path)
    assert code == 1
    assert "".join(str(tmp_path / "offline" / "manifest.csv").split()) in output
    assert "avalimage" in output
    assert not (tmp_path / "merged").exists()


def test_merge_stage_names_missing_input(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    (tmp_path / "calibrated" / "images.npy").unlink()
    code, output = invoke(tmp_path)
    assert code == 1
    assert "".join(str(tmp_path / "calibrated" / "images.npy").split()) in output
    assert not (tmp_path / "merge.json").exists()
