"""Grad-CAM grids: where on each test face the classifier looked for the class it predicted.

A reviewer reads the grid for shortcuts that synthetic faces can teach (a border, a background patch, a
generator artefact) instead of brows, eyes and mouth. The maps come from the maintained `grad-cam` package;
this module only chooses the faces and the layer, and draws.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM, HiResCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from fersynth.models import Classifier
from fersynth.runtime.io import atomic_write_bytes

logger = logging.getLogger(__name__)

FACES_PER_CLASS = 4
# A Grad-CAM map has its layer's resolution. 6 px still separates brows, eyes and mouth, and picks the usual
# layers at their usual input size (ResNet's layer4 at 224 px, VGG's last conv block); at FER's 48 px the last
# ResNet and ResEmoteNet stages are 1-2 px, where the map is a constant or one blob, so an earlier stage is taken.
MIN_MAP_SIDE = 6
CELL_INCHES = (1.6, 1.8)  # width, height of one face with its title
DPI = 80
GRADIENT_X_INPUT = "gradient × input"


@dataclass(frozen=True)
class Explanation:
    maps: np.ndarray  # (N, H, W) float32 in [0, 1], one per face, for its predicted class
    predicted: np.ndarray  # (N,) class index
    method: str  # "Grad-CAM" or GRADIENT_X_INPUT
    layer: str  # the classifier's module the maps were taken at


def choose_faces(labels: np.ndarray, num_classes: int, per_class: int) -> list[np.ndarray]:
    """Per class, the indices of its first `per_class` images in dataset order: the same faces every run."""
    return [np.flatnonzero(labels == index)[:per_class] for index in range(num_classes)]


def spatial_layer(model: Classifier, image_shape: Sequence[int]) -> str | None:
    """Name of the deepest body module whose output map is at least MIN_MAP_SIDE on a side; None if none is.

    Found by running one blank image, so it holds for any architecture and image size.
    """
    names = {module: f"body.{name}" if name else "body" for name, module in model.body.named_modules()}
    finished: list[tuple[str, tuple[int, ...]]] = []  # in the order modules return: a block after its parts

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            finished.append((names[module], tuple(output.shape)))

    handles = [module.register_forward_hook(record) for module in names]
    height, width, channels = image_shape
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    spatial = [name for name, shape in finished if len(shape) == 4 and min(shape[2:]) >= MIN_MAP_SIDE]
    return spatial[-1] if spatial else None


def explain(model: Classifier, images: np.ndarray) -> Explanation:
    """Grad-CAM of each uint8 (N, H, W, C) image's predicted class at `spatial_layer`.

    A model without such a layer (the linear baseline) gets gradient × input: HiResCAM at the normalised
    input multiplies gradient and activation element-wise, which there is exactly that.
    """
    model.eval()
    found = spatial_layer(model, images.shape[1:])
    if found is None:
        logger.info(
            "no layer keeps a map of %d px or more (a linear model has none): %s", MIN_MAP_SIDE, GRADIENT_X_INPUT
        )
        method, cam_type, layer = GRADIENT_X_INPUT, HiResCAM, "adapter"
    else:
        method, cam_type, layer = "Grad-CAM", GradCAM, found
    # The input requires a gradient so that one reaches the layer even before any trainable weight (the adapter).
    inputs = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().div(255.0).requires_grad_(True)
    cam = cam_type(model, [model.get_submodule(layer)])
    try:
        maps = cam(inputs, targets=None)  # None: each face's own predicted class
        predicted = cam.outputs.argmax(dim=1).cpu().numpy()
    finally:
        cam.activations_and_grads.release()  # unhook the caller's model; `with cam` would swallow an IndexError
        model.zero_grad(set_to_none=True)  # backward left weight gradients behind: free them
    return Explanation(maps, predicted, method, layer)


def write_gradcam_grid(
    model: Classifier,
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    path: Path,
    per_class: int = FACES_PER_CLASS,
) -> None:
    """PNG with a row per class: its first `per_class` faces with the predicted class's map overlaid.

    Only the chosen faces are read and explained, so a large test split costs no more than a small one.
    Predictions are the plain model's: with evaluate.tta a title can differ from evaluate's confusion row.
    """
    chosen = choose_faces(labels, len(classes), per_class)
    faces = np.asarray(images[np.concatenate(chosen)])
    explanation = explain(model, faces)
    logger.info(
        "%s at %s on %d test faces (up to %d per class)", explanation.method, explanation.layer, len(faces), per_class
    )
    atomic_write_bytes(Path(path), grid_png(faces, chosen, labels, classes, explanation, per_class))


def grid_png(
    faces: np.ndarray,
    chosen: Sequence[np.ndarray],
    labels: np.ndarray,
    classes: Sequence[str],
    explanation: Explanation,
    per_class: int,
) -> bytes:
    """Rows are true classes, in `chosen` order; a face's title is true → predicted, red when they differ."""
    figure = Figure(figsize=(CELL_INCHES[0] * per_class, CELL_INCHES[1] * len(classes)), layout="constrained")
    axes = figure.subplots(len(classes), per_class, squeeze=False)
    start = 0  # the row's first face in `faces`
    for row, members in enumerate(chosen):
        for column, axis in enumerate(axes[row]):
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_frame_on(column < len(members))
            if column < len(members):
                face = start + column
                axis.imshow(_overlay(faces[face], explanation.maps[face]))
                true, predicted = classes[labels[members[column]]], classes[explanation.predicted[face]]
                axis.set_title(f"{true} → {predicted}", fontsize=8, color="black" if true == predicted else "tab:red")
        axes[row][0].set_ylabel(classes[row])
        if len(members) == 0:
            axes[row][0].text(0.5, 0.5, "no test faces", ha="center", va="center", transform=axes[row][0].transAxes)
        start += len(members)
    figure.suptitle(f"{explanation.method} at {explanation.layer} for the predicted class", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _overlay(face: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """uint8 RGB of a uint8 (H, W, 1 or 3) face under a jet heat map; grayscale is repeated to RGB."""
    rgb = np.repeat(face, 3 // face.shape[2], axis=2).astype(np.float32) / 255.0
    return show_cam_on_image(rgb, heat, use_rgb=True)
