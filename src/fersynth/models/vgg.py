"""A VGG-style CNN sized for 48×48 faces: four double-conv blocks, global pooling, small head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from fersynth.models.base import CLASSIFIERS, PLAIN_MEAN, PLAIN_STD, Classifier, InputAdapter

if TYPE_CHECKING:
    from fersynth.config import ClassifierConfig

BLOCKS = 4  # 48 -> 24 -> 12 -> 6 -> 3 pixels
BLOCK_DROPOUT = 0.2
HEAD_DROPOUT = 0.5


@CLASSIFIERS.register("vgg")
def build_vgg(config: ClassifierConfig, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    """Blocks of width, 2w, 4w, 8w channels; ~1.2M parameters at width 32, ~0.3M at 16; any image size."""
    width = config.width
    layers: list[nn.Module] = []
    channels = in_channels
    for block in range(BLOCKS):
        out_channels = width * 2**block
        layers += [*_conv_bn_relu(channels, out_channels), *_conv_bn_relu(out_channels, out_channels)]
        layers += [nn.MaxPool2d(2), nn.Dropout(BLOCK_DROPOUT)]
        channels = out_channels
    # Global pooling keeps the head independent of the input size (48 px, but also 64 or 96).
    hidden = channels // 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(inplace=True)]
    layers += [nn.Dropout(HEAD_DROPOUT)]
    return Classifier(
        adapter=InputAdapter(in_channels, in_channels, PLAIN_MEAN, PLAIN_STD),
        body=nn.Sequential(*layers),
        head=nn.Linear(hidden, num_classes),
    )


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the batch norm that follows has its own shift.
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
