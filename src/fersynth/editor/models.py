"""The expression editor's networks: a StarGAN generator with a GANimation attention mask, and a PatchGAN critic.

G(x, c) sees the face x and the K-dim expression condition c tiled as K extra input channels, and paints a
colour image C and an attention mask A; the edit is A·C + (1 − A)·x, so wherever A ≈ 0 the real face passes
through untouched (Pumarola et al. 2018, GANimation; GANmut uses the same generator). D scores patches as real or
fake and classifies the expression (Choi et al. 2018, StarGAN).

Both networks are built from an `EditorArchitecture`, a plain dataclass saved in every editor file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

DOWNSAMPLINGS = 2  # the generator's stride-2 steps: image sides must be divisible by 2**DOWNSAMPLINGS
MAX_CRITIC_DOWNSAMPLINGS = 4  # 48 px → 3×3 patches, 64 px → 4×4
MIN_CRITIC_SIDE = 3  # D's patch map is at least 3×3 where the image allows
MAX_CRITIC_WIDTH_FACTOR = 8  # D's widest layer: 8 × base_channels
LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class EditorArchitecture:
    height: int
    width: int
    channels: int
    num_classes: int
    base_channels: int
    residual_blocks: int

    def __post_init__(self) -> None:
        step = 2**DOWNSAMPLINGS
        if self.height % step or self.width % step or min(self.height, self.width) < step:
            raise ValueError(f"editor image size {self.height}×{self.width}: both sides must be multiples of {step}")
        if self.channels not in (1, 3):
            raise ValueError(f"editor images need 1 or 3 channels, got {self.channels}")
        if self.num_classes < 2:
            raise ValueError(f"an expression editor needs at least 2 classes, got {self.num_classes}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def critic_downsamplings(self) -> int:
        return critic_downsamplings(self.height, self.width)


def critic_downsamplings(height: int, width: int) -> int:
    """How many stride-2 convolutions D applies: halve while both sides stay even and at least MIN_CRITIC_SIDE."""
    steps = 0
    while (
        steps < MAX_CRITIC_DOWNSAMPLINGS
        and height % 2 == 0
        and width % 2 == 0
        and min(height, width) // 2 >= MIN_CRITIC_SIDE
    ):
        height, width, steps = height // 2, width // 2, steps + 1
    return steps


def condition_vectors(
    source: torch.Tensor, target: torch.Tensor, intensity: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """intensity · onehot(target) + (1 − intensity) · onehot(source), (N, K): intensity 0 asks for the source."""
    source_hot = F.one_hot(source, num_classes).float()
    target_hot = F.one_hot(target, num_classes).float()
    weight = intensity.float().view(-1, 1)
    return weight * target_hot + (1 - weight) * source_hot


def compose(real: torch.Tensor, colour: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mask · colour + (1 − mask) · real: the painted colour where the mask attends, the real face elsewhere."""
    return mask * colour + (1 - mask) * real


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            instance_norm(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            instance_norm(channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.body(features)


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """Affine instance norm without running statistics: the same computation in training and editing."""
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class EditorGenerator(nn.Module):
    """conv7 → 2 × stride-2 (channels doubled) → residual blocks → 2 × upsampling → colour (tanh) and mask (sigmoid).

    The input is the face with the condition tiled as K extra channels.
    """

    def __init__(self, arch: EditorArchitecture) -> None:
        super().__init__()
        self.arch = arch
        width = arch.base_channels
        layers: list[nn.Module] = [
            nn.Conv2d(arch.channels + arch.num_classes, width, 7, padding=3, bias=False),
            instance_norm(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(DOWNSAMPLINGS):
            layers += [nn.Conv2d(width, width * 2, 4, stride=2, padding=1, bias=False), instance_norm(width * 2)]
            layers += [nn.ReLU(inplace=True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(arch.residual_blocks)]
        for _ in range(DOWNSAMPLINGS):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False)]
            layers += [instance_norm(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        self.body = nn.Sequential(*layers)
        # Both heads in one convolution, its last channel the mask: on the CPU a 7×7 convolution with one or two
        # output channels costs about as much as one with four, and two of them took a fifth of G's time.
        self.heads = nn.Conv2d(width, arch.channels + 1, 7, padding=3)

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edited images in [-1, 1] (N, C, H, W) and the attention mask in [0, 1] (N, 1, H, W)."""
        count, _, height, width = images.shape
        tiled = condition.to(images.dtype).view(count, -1, 1, 1).expand(-1, -1, height, width)
        features = self.body(torch.cat([images, tiled], dim=1))
        heads = self.heads(features)
        colour = torch.tanh(heads[:, :-1])
        mask = torch.sigmoid(heads[:, -1:])
        return compose(images, colour, mask), mask


class EditorDiscriminator(nn.Module):
    """Strided 4×4 convolutions (spectral norm, LeakyReLU) → a real/fake patch map and K expression logits."""

    def __init__(self, arch: EditorArchitecture) -> None:
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = []
        in_channels, width = arch.channels, arch.base_channels
        height, side = arch.height, arch.width
        for _ in range(arch.critic_downsamplings):
            layers += [spectral_norm(nn.Conv2d(in_channels, width, 4, stride=2, padding=1)), nn.LeakyReLU(LEAKY_SLOPE)]
            in_channels, width = width, min(width * 2, arch.base_channels * MAX_CRITIC_WIDTH_FACTOR)
            height, side = height // 2, side // 2
        self.features = nn.Sequential(*layers)
        self.patches = spectral_norm(nn.Conv2d(in_channels, 1, 3, padding=1, bias=False))
        # StarGAN's classifier: one convolution as large as the last feature map, so it sees the whole face. Not
        # spectrally normalised (as the GAN's auxiliary classifier): its logits must be free to grow confident.
        self.classifier = nn.Conv2d(in_channels, arch.num_classes, (height, side), bias=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Realness per patch (N, h, w) and expression logits (N, K)."""
        features = self.features(images)
        return self.patches(features).squeeze(1), self.classifier(features).flatten(1)


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
