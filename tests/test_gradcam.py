"""Grad-CAM grids: which faces, which layer, what the maps are, and the PNG evaluate writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fersynth.config import CANONICAL_CLASSES, ClassifierConfig
from fersynth.gradcam import (
    CELL_INCHES,
    DPI,
    GRADIENT_X_INPUT,
    choose_faces,
    explain,
    spatial_layer,
    write_gradcam_grid,
)
from fersynth.models import Classifier, build_classifier

from .conftest import make_dataset


def _model(arch: str, size: int = 16, channels: int = 1, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return build_classifier(ClassifierConfig(arch=arch, width=4), len(CANONICAL_CLASSES), channels, size).eval()


def _grid_size(rows: int, columns: int) -> tuple[int, int]:
    return round(CELL_INCHES[0] * columns * DPI), round(CELL_INCHES[1] * rows * DPI)


def test_faces_are_the_first_of_each_class_in_dataset_order() -> None:
    labels = np.array([2, 0, 2, 2, 0, 2])
    chosen = choose_faces(labels, num_classes=4, per_class=2)
    assert [list(indices) for indices in chosen] == [[1, 4], [], [0, 2], []]


@pytest.mark.parametrize(
    ("arch", "size", "channels", "layer"),
    [
        ("vgg", 48, 1, "body.29"),  # the last ReLU of block 4 (6×6), not the 3×3 map its max-pool leaves
        ("resnet18", 48, 1, "body.layer2"),  # layer3 and layer4 are 3×3 and 2×2 at 48 px
        ("resnet18", 224, 3, "body.layer4"),  # the usual Grad-CAM layer at ImageNet's size (7×7)
        ("linear", 48, 1, None),  # a flattening body has no map
    ],
)
def test_the_layer_is_the_deepest_with_a_map_of_six_pixels(arch: str, size: int, channels: int, layer: str) -> None:
    model = _model(arch, size, channels)
    assert spatial_layer(model, (size, size, channels)) == layer
    if arch == "vgg":
        following = model.body[int(layer.split(".")[1]) + 1]
        assert isinstance(model.get_submodule(layer), nn.ReLU) and isinstance(following, nn.MaxPool2d)


def test_maps_explain_the_predicted_class_and_leave_the_model_as_found() -> None:
    model = _model("vgg")
    images = make_dataset(per_class=1, size=16).images
    explanation = explain(model, images)
    assert explanation.method == "Grad-CAM" and explanation.layer == "body.13"  # block 2's last ReLU, 8×8
    assert explanation.maps.shape == (7, 16, 16) and explanation.maps.min() >= 0 and explanation.maps.max() <= 1
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_array_equal(explanation.predicted, logits.argmax(dim=1).numpy())
    assert all(not module._forward_hooks for module in model.modules())  # the library's hooks are removed
    assert all(parameter.grad is None for parameter in model.parameters())


def test_a_linear_model_gets_gradient_times_input() -> None:
    """Its logit is W·x̂ + b on the normalised input x̂: the map is ReLU(W[predicted] ⊙ x̂), scaled to [0, 1]."""
    model = _model("linear")
    images = make_dataset(per_class=1, size=16).images
    explanation = explain(model, images)
    assert (explanation.method, explanation.layer) == (GRADIENT_X_INPUT, "adapter")
    normalised = (images[..., 0].astype(np.float32) / 255 - 0.5) / 0.25
    weights = model.head.weight.detach().numpy()[explanation.predicted].reshape(-1, 16, 16)
    expected = np.maximum(weights * normalised, 0)
    expected -= expected.min(axis=(1, 2), keepdims=True)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(explanation.maps, expected, atol=1e-4)


def test_the_grid_has_a_row_per_class_and_changes_with_the_model(tmp_path: Path) -> None:
    dataset = make_dataset(per_class=3, size=16)
    grids = {}
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        path = tmp_path / f"{name}.png"
        write_gradcam_grid(_model("vgg", seed=seed), dataset.images, dataset.labels, dataset.classes, path, 2)
        grids[name] = path.read_bytes()
    with Image.open(tmp_path / "first.png") as grid:
        assert grid.size == _grid_size(rows=len(CANONICAL_CLASSES), columns=2)
    assert grids["first"] == grids["again"]  # the same faces and maps every run
    assert grids["first"] != grids["other"]


def test_a_class_without_test_faces_keeps_its_row(tmp_path: Path) -> None:
    dataset = make_dataset(per_class=2, size=16)
    present = dataset.labels < 3  # angry, disgust and fear only
    path = tmp_path / "grid.png"
    model = _model("linear")
    write_gradcam_grid(model, dataset.images[present], dataset.labels[present], dataset.classes, path, per_class=3)
    with Image.open(path) as grid:
        assert grid.size == _grid_size(rows=len(CANONICAL_CLASSES), columns=3)
        pixels = np.asarray(grid.convert("L"))
    height = pixels.shape[0] / len(CANONICAL_CLASSES)
    drawn_rows = [pixels[round(row * height) : round((row + 1) * height)].std() for row in range(7)]
    # The classes with faces show heat maps; the others only their name and "no test faces" on white.
    assert min(drawn_rows[:3]) > 2 * max(drawn_rows[3:])
