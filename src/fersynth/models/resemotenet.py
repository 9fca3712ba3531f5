"""ResEmoteNet (Roy et al., 2024), following the layout of its public reference code.

Stem of three conv3x3+BN+ReLU+maxpool stages (3 -> 64 -> 128 -> 256, dropout 0.2 after the first
two), a squeeze-and-excitation block on 256 channels, three stride-2 residual blocks
(256 -> 512 -> 1024 -> 2048), global average pooling and a 2048 -> 1024 -> 512 -> 256 -> K head with
dropout 0.5: about 80M parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fersynth.models.base import CLASSIFIERS, PLAIN_MEAN, PLAIN_STD, Classifier, InputAdapter

if TYPE_CHECKING:
    from fersynth.config import ClassifierConfig

STEM_CHANNELS = (64, 128, 256)
RESIDUAL_CHANNELS = (512, 1024, 2048)
HIDDEN_UNITS = (1024, 512, 256)
SE_REDUCTION = 16


class SqueezeExcitation(nn.Module):
    """Reweight channels by a gate computed from their global average."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class ResidualBlock(nn.Module):
    """Two conv3x3+BN with a projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.shortcut(x))


@CLASSIFIERS.register("resemotenet")
def build_resemotenet(config: ClassifierConfig, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    """The reference network at any image size (its pooling is adaptive)."""
    layers: list[nn.Module] = []
    channels = 3  # the reference network is RGB; grayscale is repeated by the adapter
    for stage, out_channels in enumerate(STEM_CHANNELS):
        layers += [
            nn.Conv2d(channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        if stage < len(STEM_CHANNELS) - 1:
            layers.append(nn.Dropout(0.2))
        channels = out_channels
    layers.append(SqueezeExcitation(channels))
    for out_channels in RESIDUAL_CHANNELS:
        layers.append(ResidualBlock(channels, out_channels, stride=2))
        channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for units in HIDDEN_UNITS:
        layers += [nn.Linear(channels, units), nn.ReLU(inplace=True), nn.Dropout(0.5)]
        channels = units
    return Classifier(
        adapter=InputAdapter(in_channels, 3, PLAIN_MEAN, PLAIN_STD),
        body=nn.Sequential(*layers),
        head=nn.Linear(channels, num_classes),
    )
