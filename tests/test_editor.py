from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fersynth.config import TrainEditorConfig
from fersynth.datasets.format import Dataset
from fersynth.editor import EDITOR_FILE, ExpressionEditor, load_editor, train_editor
from fersynth.editor.editor import grid_tile
from fersynth.editor.models import (
    EditorArchitecture,
    EditorDiscriminator,
    EditorGenerator,
    compose,
    condition_vectors,
)
from fersynth.editor.training import EPOCH_NAMES, EditorTrainer
from fersynth.errors import DataError
from fersynth.preview import LABEL_WIDTH, TITLE_HEIGHT
from fersynth.runtime.torch_files import save_torch_file

from .conftest import RecordingLive

TINY = TrainEditorConfig(epochs=2, base_channels=4, residual_blocks=1, batch_size=4, images_per_epoch=12)


def dark_and_bright(
    count: int = 64, size: int = 16, seed: int = 0, splits: np.ndarray | None = None, sources: np.ndarray | None = None
) -> Dataset:
    """Two classes anyone can tell apart: dark faces (mean 60) and bright ones (mean 190), alternating."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    base = np.where(labels == 0, 60.0, 190.0)[:, None, None, None]
    images = np.clip(base + rng.normal(0, 15, (count, size, size, 1)), 0, 255).astype(np.uint8)
    return Dataset(
        images=images,
        labels=labels.astype(np.int64),
        splits=np.full(count, "train", dtype=object) if splits is None else splits,
        classes=("dark", "bright"),
        ids=np.array([f"face{i:04d}" for i in range(count)], dtype=object),
        sources=sources,
    )


def untrained_editor(height: int, width: int, channels: int, classes: int = 3) -> ExpressionEditor:
    torch.manual_seed(0)
    arch = EditorArchitecture(height, width, channels, classes, base_channels=4, residual_blocks=1)
    return ExpressionEditor(EditorGenerator(arch), [f"class{index}" for index in range(classes)])


def faces_for(editor: ExpressionEditor, count: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *editor.image_shape), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained() -> tuple[Dataset, object, RecordingLive]:
    """A short run on dark/bright faces (about 6 s on one thread): enough for D and the edits to learn brightness."""
    data = dark_and_bright()
    config = TrainEditorConfig(
        epochs=6,
        base_channels=8,
        residual_blocks=1,
        batch_size=16,
        images_per_epoch=320,
        lr_generator=5.0e-4,
        lr_discriminator=5.0e-4,
        reconstruction_weight=2.0,  # the default 10 holds G at the identity for a few hundred steps first
    )
    live = RecordingLive()
    result = train_editor(data, config, seed=0, live=live, device=torch.device("cpu"))  # type: ignore[arg-type]
    return data, result, live


@pytest.mark.parametrize(("height", "width", "channels"), [(48, 48, 1), (64, 64, 3), (20, 28, 1)])
def test_edits_keep_shape_and_dtype_for_any_size_divisible_by_four(height: int, width: int, channels: int) -> None:
    editor = untrained_editor(height, width, channels)
    faces = faces_for(editor, count=5)
    edited = editor.edit(faces, np.array([0, 1, 2, 0, 1]), 2, np.full(5, 0.7), batch_size=2)
    assert edited.shape == (5, height, width, channels) and edited.dtype == np.uint8
    assert editor.image_shape == (height, width, channels)
    scores, logits = EditorDiscriminator(editor.network.arch)(torch.zeros(5, channels, height, width))
    assert scores.ndim == 3 and scores.shape[0] == 5 and min(scores.shape[1:]) >= 3
    assert logits.shape == (5, 3)


@pytest.mark.parametrize("size", [18, 50, 2])
def test_sizes_not_divisible_by_four_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match=f"{size}×48"):
        EditorArchitecture(size, 48, 1, 7, base_channels=4, residual_blocks=1)
    with pytest.raises(DataError, match="multiples of 4"):
        train_editor(dark_and_bright(size=18), TINY, seed=0)


def test_condition_mixes_source_and_target_by_intensity() -> None:
    condition = condition_vectors(torch.tensor([0, 2]), torch.tensor([1, 1]), torch.tensor([0.25, 1.0]), 3)
    assert torch.allclose(condition, torch.tensor([[0.75, 0.25, 0.0], [0.0, 1.0, 0.0]]))


def test_compose_keeps_the_real_face_where_the_mask_is_zero() -> None:
    real, colour = torch.full((1, 1, 2, 2), -0.5), torch.full((1, 1, 2, 2), 0.9)
    mask = torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]]])
    assert torch.allclose(compose(real, colour, mask), torch.tensor([[[[-0.5, 0.9], [0.2, -0.5]]]]))


def test_a_closed_mask_returns_the_faces_unchanged() -> None:
    editor = untrained_editor(16, 16, 3)
    faces = faces_for(editor)
    assert not np.array_equal(editor.edit(faces, np.zeros(5), 1, np.ones(5)), faces)  # an open mask paints
    with torch.no_grad():
        editor.network.heads.bias[-1].fill_(-60.0)  # the mask channel: sigmoid → 0, attend nowhere
    assert np.array_equal(editor.edit(faces, np.zeros(5), 1, np.ones(5)), faces)


def test_bad_edit_arguments_are_refused() -> None:
    editor = untrained_editor(16, 16, 1)
    faces = faces_for(editor, count=2)
    with pytest.raises(ValueError, match="uint8 faces of shape"):
        editor.edit(faces[:, :8], np.zeros(2), 1, np.ones(2))
    with pytest.raises(ValueError, match="target index 3"):
        editor.edit(faces, np.zeros(2), 3, np.ones(2))
    with pytest.raises(ValueError, match="source labels"):
        editor.edit(faces, np.array([0, 5]), 1, np.ones(2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        editor.edit(faces, np.zeros(2), 1, np.array([0.5, 1.5]))


def test_training_learns_expressions_and_edits_move_toward_the_target(trained: tuple) -> None:
    data, result, live = trained
    last = result.history[-1]
    assert last["d_real_class_accuracy"] > 0.9  # chance is 0.5
    dark, bright = data.images[data.labels == 0][:16], data.images[data.labels == 1][:16]
    brightened = result.editor.edit(dark, np.zeros(16), 1, np.ones(16))
    darkened = result.editor.edit(bright, np.ones(16), 0, np.ones(16))
    kept = result.editor.edit(dark, np.zeros(16), 1, np.zeros(16))  # intensity 0: ask for the source expression
    assert brightened.mean() > dark.mean() + 40
    assert darkened.mean() < bright.mean() - 40
    assert abs(float(kept.mean()) - float(dark.mean())) < (brightened.mean() - dark.mean()) / 2  # the source stays
    # Cycle: brightened faces edited back to dark come back near the originals.
    restored = result.editor.edit(brightened, np.ones(16), 0, np.ones(16))
    assert np.abs(restored.astype(float) - dark).mean() < np.abs(brightened.astype(float) - dark).mean()
    assert len(live.steps) == 7 and live.steps[-1] == {}  # one step per epoch
    assert all(set(step) == set(EPOCH_NAMES) for step in live.steps[:-1])


def test_metrics_are_flat_and_json_able(trained: tuple) -> None:
    _, result, _ = trained
    metrics = result.metrics()
    json.dumps(metrics)
    assert metrics["epochs"] == 6 and metrics["steps"] == 120 and metrics["train_images"] == 64
    assert metrics["generator_parameters"] == sum(p.numel() for p in result.editor.network.parameters())
    assert metrics["device"] == "cpu" and metrics["training_seconds"] > 0
    assert set(EPOCH_NAMES) <= set(metrics)
    assert all(isinstance(value, int | float | str) for value in metrics.values())


def test_no_epochs_gives_an_untrained_editor_and_empty_losses() -> None:
    result = train_editor(dark_and_bright(count=8), TINY.model_copy(update={"epochs": 0}), seed=0)
    metrics = result.metrics()
    json.dumps(metrics)
    assert metrics["epochs"] == 0 and metrics["d_adv"] is None and result.editor.classes == ("dark", "bright")


def test_same_seed_same_editor_and_another_seed_another() -> None:
    data = dark_and_bright(count=16)
    first, again, other = (train_editor(data, TINY, seed=seed).editor for seed in (3, 3, 4))
    for name, tensor in first.network.state_dict().items():
        assert torch.equal(tensor, again.network.state_dict()[name]), name
    faces = data.images[:6]
    assert np.array_equal(first.edit(faces, data.labels[:6], 1, 0.8), again.edit(faces, data.labels[:6], 1, 0.8))
    weights = first.network.state_dict()
    assert any(not torch.equal(weights[name], tensor) for name, tensor in other.network.state_dict().items())


def test_save_and_load_give_identical_edits(tmp_path: Path) -> None:
    editor = untrained_editor(20, 28, 3)
    path = tmp_path / EDITOR_FILE
    editor.save(path)
    loaded = load_editor(path)
    assert loaded.classes == editor.classes and loaded.image_shape == editor.image_shape
    faces, sources = faces_for(editor, count=4), np.array([0, 1, 2, 1])
    assert np.array_equal(loaded.edit(faces, sources, 2, 0.6), editor.edit(faces, sources, 2, 0.6))


def test_loading_a_missing_foreign_or_damaged_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.pt: expression editor file not found"):
        load_editor(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(DataError, match=r"garbage\.pt: not a readable expression editor file"):
        load_editor(garbage)
    foreign = tmp_path / "foreign.pt"
    save_torch_file(foreign, {"format": "fersynth-gan-generator/1"})
    with pytest.raises(DataError, match=r"foreign\.pt: not a fersynth expression editor"):
        load_editor(foreign)
    editor = untrained_editor(16, 16, 1)
    editor.save(tmp_path / "damaged.pt")
    payload = torch.load(tmp_path / "damaged.pt", weights_only=True)
    payload["state_dict"].popitem()
    save_torch_file(tmp_path / "damaged.pt", payload)
    with pytest.raises(DataError, match=r"damaged\.pt: a damaged expression editor file"):
        load_editor(tmp_path / "damaged.pt")


def test_only_real_train_faces_count_and_two_classes_are_needed() -> None:
    # The bright faces are all validation images or offline variants: no second class to edit between.
    count = 16
    bright = np.arange(count) % 2 == 1
    splits = np.where(bright & (np.arange(count) % 4 == 1), "val", "train").astype(object)
    sources = np.where(bright & (splits == "train"), "offline", "real").astype(object)
    with pytest.raises(DataError, match=r"at least 2 classes.*dark 8, bright 0"):
        train_editor(dark_and_bright(count, splits=splits, sources=sources), TINY, seed=0)
    with pytest.raises(DataError, match="batches of 32 real train faces but found only 16"):
        train_editor(dark_and_bright(count), TINY.model_copy(update={"batch_size": 32}), seed=0)


def test_batches_balance_classes_and_targets_skip_the_source_and_absent_classes() -> None:
    labels = np.array([0] * 90 + [2] * 5 + [3] * 5)  # class 1 has no faces
    data = Dataset(
        images=np.zeros((100, 8, 8, 1), dtype=np.uint8),
        labels=labels,
        splits=np.full(100, "train", dtype=object),
        classes=("a", "b", "c", "d"),
        ids=np.array([f"i{i}" for i in range(100)], dtype=object),
    )
    arch = EditorArchitecture(8, 8, 1, 4, base_channels=4, residual_blocks=0)
    config = TrainEditorConfig(batch_size=600, intensity_min=0.3, intensity_max=0.6)
    trainer = EditorTrainer(arch, config, data, seed=0, device=torch.device("cpu"))
    indexes, targets, intensities = trainer.draw_batch()
    sources = labels[indexes]
    shares = np.bincount(sources, minlength=4) / len(sources)
    assert shares[1] == 0 and np.all(np.abs(shares[[0, 2, 3]] - 1 / 3) < 0.08)
    assert np.all(targets != sources) and not np.any(targets == 1)
    for source in (0, 2, 3):
        drawn = np.bincount(targets[sources == source], minlength=4)
        assert np.count_nonzero(drawn) == 2  # both other present classes are drawn
    assert intensities.min() >= 0.3 and intensities.max() <= 0.6


def test_sample_grid_shows_each_face_then_one_edit_per_class() -> None:
    editor = untrained_editor(16, 16, 1, classes=4)
    faces = faces_for(editor, count=3)
    png = editor.sample_grid(faces, np.array([0, 3, 1]))
    sheet = Image.open(io.BytesIO(png))
    assert sheet.format == "PNG"
    tile = 16 * grid_tile(16)
    assert sheet.size == (LABEL_WIDTH + 5 * tile, TITLE_HEIGHT + 3 * tile)
    pixels, step = np.asarray(sheet.convert("L")), grid_tile(16)
    second_face = pixels[TITLE_HEIGHT + tile : TITLE_HEIGHT + 2 * tile : step, LABEL_WIDTH : LABEL_WIDTH + tile : step]
    assert np.array_equal(second_face, faces[1, :, :, 0])  # the first column is the face itself
