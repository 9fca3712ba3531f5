"""Per-image stages over worker processes: identical results for any worker count, worker errors intact."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fersynth import offline_augmentation
from fersynth.config import CANONICAL_CLASSES, AugmentOfflineConfig, FaceAlignConfig
from fersynth.datasets.format import write_dataset
from fersynth.datasets.sources import load_source
from fersynth.errors import DataError
from fersynth.faces import AlignResult, align_dataset
from fersynth.offline_augmentation import augment_offline
from fersynth.runtime.parallel import Chunk, map_chunks

from .conftest import make_dataset, run_stage, shared_file

WORKER_COUNTS = (1, 2, 3)


def torch_threads(chunk: Chunk[list[int]]) -> list[int]:
    return [torch.get_num_threads()] * len(chunk.items)


def fail_on_chunks_one_and_three(chunk: Chunk[list[int]]) -> list[int]:
    """Chunk 1 fails late and chunk 3 at once, so that a pool sees chunk 3's failure first."""
    if chunk.start == 2:
        time.sleep(0.5)
        raise DataError("image 2 is broken")
    if chunk.start == 6:
        raise DataError("image 6 is broken")
    return list(chunk.items)


def test_chunks_come_back_in_order_from_workers_with_one_torch_thread_each() -> None:
    results = map_chunks(torch_threads, list(range(7)), chunk_size=2, workers=2, description="test")
    assert [len(result) for result in results] == [2, 2, 2, 1]
    assert {thread for result in results for thread in result} == {1}


@pytest.mark.parametrize("workers", [1, 3])
def test_a_worker_error_reaches_the_caller_as_the_first_failing_chunks_error(workers: int) -> None:
    with pytest.raises(DataError, match=r"^image 2 is broken$"):
        map_chunks(fail_on_chunks_one_and_three, list(range(10)), chunk_size=2, workers=workers, description="test")


def aligned_bytes(result: AlignResult) -> bytes:
    return result.dataset.images.tobytes() + result.outcomes_csv() + "".join(result.dataset.ids).encode()


def assert_same_for_any_worker_count(run: Callable[[int], bytes]) -> None:
    """`run(workers)` gives the same bytes for every worker count."""
    one_worker = run(1)
    for workers in WORKER_COUNTS[1:]:
        assert run(workers) == one_worker, f"{workers} workers"


def test_face_align_without_detector_is_identical_for_any_worker_count() -> None:
    dataset = make_dataset(per_class=6, size=40, channels=3)
    config = FaceAlignConfig(detector="none")
    assert_same_for_any_worker_count(
        lambda workers: aligned_bytes(align_dataset(dataset, config, 32, 1, workers=workers))
    )


@pytest.mark.slow  # two pools, each worker loading MTCNN
def test_face_align_with_mtcnn_is_identical_for_any_worker_count() -> None:
    dataset = make_dataset(per_class=6, size=64, channels=3)  # 42 noise images: MTCNN's work, no faces
    config = FaceAlignConfig(detector="mtcnn", batch_size=8, min_confidence=0.5)
    assert_same_for_any_worker_count(
        lambda workers: aligned_bytes(align_dataset(dataset, config, 32, 1, workers=workers))
    )


@pytest.mark.slow
@pytest.mark.shared
def test_face_align_of_real_photos_is_identical_for_any_worker_or_thread_count() -> None:
    """MTCNN's boxes change with torch's thread count, so face-align runs it on one; these photos showed it."""
    photos, _ = load_source("legend", shared_file("facial_expressions_dev.zip"), CANONICAL_CLASSES, max_side=256)
    photos = photos.subset(np.arange(20))
    config = FaceAlignConfig(detector="mtcnn", batch_size=4, on_no_face="drop")
    assert align_dataset(photos, config, 48, 1).counts()["aligned"] >= 15  # real faces: alignment is compared too
    assert_same_for_any_worker_count(
        lambda workers: aligned_bytes(align_dataset(photos, config, 48, 1, workers=workers))
    )
    one_thread = aligned_bytes(align_dataset(photos, config, 48, 1))  # conftest runs tests on one thread
    torch.set_num_threads(2)
    try:
        assert aligned_bytes(align_dataset(photos, config, 48, 1)) == one_thread
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("chunk_size", [5, 256])
def test_augment_offline_is_identical_for_any_worker_count_and_chunk_size(
    chunk_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline_augmentation, "CHUNK_SIZE", chunk_size)
    dataset = make_dataset(per_class=17, size=24)  # 40 training images
    config = AugmentOfflineConfig(variants_per_image=2)
    assert_same_for_any_worker_count(
        lambda workers: augment_offline(dataset, config, seed=5, workers=workers).dataset.images.tobytes()
    )


def test_an_images_variants_depend_on_the_seed_and_its_place_alone() -> None:
    dataset = make_dataset(per_class=3, size=24)
    config = AugmentOfflineConfig(variants_per_image=2)
    whole = augment_offline(dataset, config, seed=5).dataset
    train = dataset.split("train")
    first_half = train.subset(np.arange(len(train) // 2))
    np.testing.assert_array_equal(
        augment_offline(first_half, config, seed=5).dataset.images, whole.images[: 2 * len(first_half)]
    )


def stage_outputs(root: Path, stage: str, workers: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every file the stage wrote, by name, and its diagnostics without the worker count."""
    monkeypatch.setenv("FERSYNTH_WORKERS", str(workers))
    out, diagnostics = root / f"out{workers}", root / f"diagnostics{workers}.json"
    code, output = run_stage(
        [
            stage,
            *("--input", str(root / "input"), "--out", str(out)),
            *("--diagnostics", str(diagnostics), "--params", str(root / "params.yaml")),
        ]
    )
    assert code == 0, output
    measured = json.loads(diagnostics.read_text())
    assert measured.pop("workers") == workers
    return {path.name: path.read_bytes() for path in out.iterdir()} | {"diagnostics": json.dumps(measured).encode()}


@pytest.mark.parametrize(
    ("stage", "params"),
    [
        ("augment-offline", {"augment_offline": {"variants_per_image": 2}}),
        ("face-align", {"common": {"image_size": 32}, "face_align": {"detector": "mtcnn", "batch_size": 8}}),
    ],
)
def test_stage_writes_the_same_files_with_two_workers(
    stage: str, params: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline_augmentation, "CHUNK_SIZE", 8)
    dataset = make_dataset(per_class=6, size=48)
    write_dataset(replace(dataset, splits=np.full(len(dataset), "train", dtype=object)), tmp_path / "input")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    one = stage_outputs(tmp_path, stage, 1, monkeypatch)
    assert stage_outputs(tmp_path, stage, 2, monkeypatch) == one
