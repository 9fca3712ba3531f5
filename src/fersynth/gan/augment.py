"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real AND fake images before D.

Augmenting both sides keeps D from memorising a small training set while gradients still reach G.
Images are float tensors (N, C, H, W) in [-1, 1]; randomness comes from torch's global generator,
which the training checkpoint saves, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def diff_augment(images: torch.Tensor, policies: Sequence[str]) -> torch.Tensor:
    """Apply each named augmentation in turn, each with independent per-image randomness."""
    for policy in policies:
        images = AUGMENTATIONS[policy](images)
    return images


def random_color(images: torch.Tensor) -> torch.Tensor:
    """Random brightness, saturation (colour images only) and contrast."""
    count = images.shape[0]
    images = images + (torch.rand(count, 1, 1, 1, dtype=images.dtype, device=images.device) - 0.5)
    if images.shape[1] > 1:
        mean = images.mean(dim=1, keepdim=True)
        images = (images - mean) * (torch.rand(count, 1, 1, 1, dtype=images.dtype, device=images.device) * 2) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (torch.rand(count, 1, 1, 1, dtype=images.dtype, device=images.device) + 0.5) + mean


def random_translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size, filling with zeros (mid-grey)."""
    count, _, height, width = images.shape
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-shift_y, shift_y + 1, (count, 1, 1), device=images.device)
    dx = torch.randint(-shift_x, shift_x + 1, (count, 1, 1), device=images.device)
    rows = (torch.arange(height, device=images.device).view(1, height, 1) + dy + 1).clamp(0, height + 1)
    cols = (torch.arange(width, device=images.device).view(1, 1, width) + dx + 1).clamp(0, width + 1)
    padded = F.pad(images, [1, 1, 1, 1])  # the zero border is what out-of-range pixels read
    batch = torch.arange(count, device=images.device).view(count, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` × the image size at a random place in each image."""
    count, _, height, width = images.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height + (1 - cut_h % 2), (count, 1, 1), device=images.device) - cut_h // 2
    left = torch.randint(0, width + (1 - cut_w % 2), (count, 1, 1), device=images.device) - cut_w // 2
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    return images * (~inside).unsqueeze(1).to(images.dtype)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": random_color,
    "translation": random_translation,
    "cutout": random_cutout,
}
