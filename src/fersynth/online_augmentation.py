"""On-the-fly augmentation of training batches, and the views test-time augmentation averages over.

Everything is drawn from the training loop's seeded generator, and only when its setting is on: a run
with a lever off draws exactly what it drew before that lever existed. Every process of a process group
draws the same, so each of them sees the whole batch as one process would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ERASED_AREA = (0.02, 0.33)  # share of the image a random-erasing box covers (Zhong et al. 2020's defaults)
ERASED_ASPECT = (0.3, 1 / 0.3)
TTA_SHIFT = 2  # pixels: the flip_shifts views move the image this far up, down, left and right

TestTimeAugmentation = Literal["none", "flip", "flip_shifts"]


def augment_batch(
    batch: np.ndarray, rng: np.random.Generator, flip: bool, shift: int, erasing: float = 0.0
) -> np.ndarray:
    """Per uint8 (N, H, W, C) image: a random horizontal flip, a translation of up to `shift` pixels (edges
    repeated) and, with probability `erasing`, a random box filled with noise."""
    count, height, width, _ = batch.shape
    if flip:
        flipped = rng.random(count) < 0.5
        batch[flipped] = batch[flipped, :, ::-1]
    if shift:
        padded = np.pad(batch, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        rows = rng.integers(0, 2 * shift + 1, count)[:, None] + np.arange(height)
        columns = rng.integers(0, 2 * shift + 1, count)[:, None] + np.arange(width)
        batch = padded[np.arange(count)[:, None, None], rows[:, :, None], columns[:, None, :]]
    if erasing:
        for index in np.flatnonzero(rng.random(count) < erasing):
            _erase_box(batch[index], rng)
    return batch


def _erase_box(image: np.ndarray, rng: np.random.Generator) -> None:
    height, width, channels = image.shape
    area = rng.uniform(*ERASED_AREA) * height * width
    aspect = math.exp(rng.uniform(math.log(ERASED_ASPECT[0]), math.log(ERASED_ASPECT[1])))
    box_height = min(height, max(1, round(math.sqrt(area * aspect))))
    box_width = min(width, max(1, round(math.sqrt(area / aspect))))
    top, left = rng.integers(0, height - box_height + 1), rng.integers(0, width - box_width + 1)
    image[top : top + box_height, left : left + box_width] = rng.integers(
        0, 256, (box_height, box_width, channels), dtype=np.uint8
    )


@dataclass(frozen=True)
class BatchMix:
    """One batch's mixing: image i keeps the share `keep` of itself and takes the rest from image partner[i],
    and its loss mixes its own target and its partner's by the same shares."""

    partner: np.ndarray  # a permutation of the batch
    keep: float
    box: tuple[int, int, int, int] | None  # cutmix: (top, bottom, left, right) pasted from the partner; mixup: None

    def apply(self, inputs: torch.Tensor) -> torch.Tensor:
        """Mix float (N, C, H, W) inputs."""
        partner = torch.from_numpy(self.partner).to(inputs.device)
        if self.box is None:
            return inputs * self.keep + inputs[partner] * (1.0 - self.keep)
        top, bottom, left, right = self.box
        mixed = inputs.clone()
        mixed[:, :, top:bottom, left:right] = inputs[partner, :, top:bottom, left:right]
        return mixed

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        part: slice,
        weight: torch.Tensor | None,
        label_smoothing: float,
    ) -> torch.Tensor:
        """Cross-entropy against the mixed targets of the images in `part` (this process's shard)."""
        partner = torch.from_numpy(self.partner).to(targets.device)
        own = F.cross_entropy(logits, targets[part], weight=weight, label_smoothing=label_smoothing)
        taken = F.cross_entropy(logits, targets[partner][part], weight=weight, label_smoothing=label_smoothing)
        return own * self.keep + taken * (1.0 - self.keep)


def draw_mix(
    rng: np.random.Generator, mixup_alpha: float, cutmix_alpha: float, count: int, height: int, width: int
) -> BatchMix | None:
    """This batch's mixup or cutmix (one of them, at random, when both alphas are set); None when both are 0."""
    kinds = [(kind, alpha) for kind, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha > 0]
    if not kinds:
        return None
    kind, alpha = kinds[int(rng.integers(len(kinds)))] if len(kinds) > 1 else kinds[0]
    keep = float(rng.beta(alpha, alpha))
    partner = rng.permutation(count)
    if kind == "mixup":
        return BatchMix(partner, keep, None)
    # A box of about (1 - keep) of the image, centred anywhere and clipped at the edges; keep is then what
    # is really left of each image (Yun et al. 2019).
    side = math.sqrt(1.0 - keep)
    centre_row, centre_column = int(rng.integers(height)), int(rng.integers(width))
    half_height, half_width = int(height * side) // 2, int(width * side) // 2
    top, bottom = max(0, centre_row - half_height), min(height, centre_row + half_height)
    left, right = max(0, centre_column - half_width), min(width, centre_column + half_width)
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return BatchMix(partner, kept, (top, bottom, left, right))


def tta_views(images: np.ndarray, tta: TestTimeAugmentation) -> list[np.ndarray]:
    """The uint8 (N, H, W, C) views a prediction averages over: the images alone, with their mirror images,
    or the mirrored and plain images each also shifted by TTA_SHIFT pixels in four directions (10 views)."""
    if tta == "none":
        return [images]
    mirrored = [images, images[:, :, ::-1]]
    if tta == "flip":
        return mirrored
    return [shifted for view in mirrored for shifted in _shifted_views(view, TTA_SHIFT)]


def _shifted_views(images: np.ndarray, shift: int) -> list[np.ndarray]:
    """The images, then moved by `shift` pixels down, up, right and left (the edge rows repeated)."""
    _, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    offsets = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    return [padded[:, top : top + height, left : left + width] for top, left in offsets]
