"""The GAN's network pairs, registered by `train_gan.arch`.

`projection`: a DCGAN-style generator and a projection discriminator, conditional or (num_classes=0)
unconditional. `dcgan`: the PyTorch DCGAN example's pair, unconditional only.

Both networks are built from a `GanArchitecture`, a plain dataclass saved inside every
checkpoint (nanoGPT style) so a generator file rebuilds itself without params.yaml.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

MIN_START_SIZE = 4  # the generator's first feature map is at least 4×4 (6×6 for 48-pixel faces)


@dataclass(frozen=True)
class GanArchitecture:
    image_size: int
    channels: int
    latent_dim: int
    base_channels: int
    num_classes: int  # 0: unconditional (one GAN per class)
    spectral_norm: bool = True  # projection only
    name: str = "projection"  # train_gan.arch; files saved before it existed hold projection networks

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def upsamplings(self) -> int:
        return upsampling_steps(self.image_size)

    @property
    def start_size(self) -> int:
        return self.image_size >> self.upsamplings

    def width(self, level: int) -> int:
        """Channels at `level` doublings below full resolution (level 1 = half size)."""
        return self.base_channels * 2 ** (level - 1)


def upsampling_steps(image_size: int) -> int:
    """How many ×2 steps lead from a small (≥ 4×4) square to `image_size`: 3 for 32/48/64, 2 for 16/20."""
    steps = 0
    while image_size % 2 ** (steps + 1) == 0 and image_size // 2 ** (steps + 1) >= MIN_START_SIZE:
        steps += 1
    if steps < 2:
        raise ValueError(f"GAN image size {image_size} must be divisible by 4 and at least 16")
    return steps


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (plain affine BatchNorm when unconditional).

    Class-dependent gains in every block give the label a strong say in the face while z keeps
    its own: with the label only at the input, short runs produced nearly class-blind faces.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=not num_classes)
        self.gain = nn.Embedding(num_classes, channels) if num_classes else None
        self.bias = nn.Embedding(num_classes, channels) if num_classes else None
        if self.gain is not None and self.bias is not None:  # start as plain BatchNorm for every class
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        features = self.norm(features)
        if self.gain is None or self.bias is None:
            return features
        if labels is None:
            raise ValueError("a conditional generator needs labels")
        return features * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]


class Generator(nn.Module):
    """z (+ class embedding) → linear → start×start map → [ConvTranspose, class BN, ReLU]… → tanh."""

    def __init__(self, arch: GanArchitecture) -> None:
        super().__init__()
        self.arch = arch
        steps = arch.upsamplings
        self.embedding = nn.Embedding(arch.num_classes, arch.latent_dim) if arch.num_classes else None
        input_dim = arch.latent_dim * (2 if arch.num_classes else 1)
        self.project = nn.Sequential(
            nn.Linear(input_dim, arch.width(steps) * arch.start_size**2, bias=False),
            nn.Unflatten(1, (arch.width(steps), arch.start_size, arch.start_size)),
        )
        # A 4×4 stride-2 transposed conv costs less than upsample + 3×3 conv, which matters on CPU.
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(arch.width(level), arch.width(level - 1), 4, stride=2, padding=1, bias=False)
            for level in range(steps, 1, -1)
        )
        self.norms = nn.ModuleList(
            ConditionalBatchNorm(arch.width(level), arch.num_classes) for level in range(steps, 0, -1)
        )
        self.to_image = nn.ConvTranspose2d(arch.width(1), arch.channels, 4, stride=2, padding=1)
        self._initialise()

    @torch.no_grad()
    def _initialise(self) -> None:
        """DCGAN's N(0, 0.02) weights and a small input class embedding.

        With an input embedding as large as z, short runs collapse to one face per class
        (within-class pixel std 0.05 against 0.46 for real faces); at 0.1 they keep their variety.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.ConvTranspose2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d) and module.affine:
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, 0.0, 0.1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embedding is not None:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embedding(labels)], dim=1)
        features = F.relu(self.norms[0](self.project(z), labels))
        for upsample, norm in zip(self.upsample, self.norms[1:], strict=True):
            features = F.relu(norm(upsample(features), labels))
        return torch.tanh(self.to_image(features))


class Discriminator(nn.Module):
    """Strided conv blocks (spectral norm) → minibatch std → flat features → score, class projection, class logits."""

    def __init__(self, arch: GanArchitecture) -> None:
        super().__init__()
        self.arch = arch
        steps = arch.upsamplings
        layers: list[nn.Module] = []
        in_channels = arch.channels
        for level in range(1, steps + 1):
            layers += [self._norm(nn.Conv2d(in_channels, arch.width(level), 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_channels = arch.width(level)
        # Minibatch standard deviation (Karras et al. 2018) lets D see a batch's lack of variety.
        # Features are flattened, not summed: in short runs D then learns face layout much sooner.
        layers += [MinibatchStd(), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        flat = (in_channels + 1) * arch.start_size**2
        self.score = self._norm(nn.Linear(flat, 1))
        # Projection discriminator (Miyato & Koyama 2018): score += <embed(y), features>. The class
        # embedding starts at zero and is not normalised, so the class term can grow as fast as D learns it.
        self.embedding = nn.Embedding(arch.num_classes, flat) if arch.num_classes else None
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight)
        # Auxiliary classifier (AC-GAN): supervised class logits learn class features far sooner than
        # the adversarial projection does alone, and give G a direct "look like this class" gradient.
        self.classifier = nn.Linear(flat, arch.num_classes) if arch.num_classes else None

    def _norm(self, module: nn.Module) -> nn.Module:
        return add_spectral_norm(module) if self.arch.spectral_norm else module

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Realness scores (N,) and, for a conditional D, class logits (N, num_classes)."""
        features = self.features(images)
        score = self.score(features).squeeze(1)
        if self.embedding is None or self.classifier is None:
            return score, None
        if labels is None:
            raise ValueError("a conditional discriminator needs labels")
        return score + (self.embedding(labels) * features).sum(dim=1), self.classifier(features)


class MinibatchStd(nn.Module):
    """Append one channel: the feature standard deviation within groups of `group_size` images."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        count, _, height, width = features.shape
        group = math.gcd(self.group_size, count)
        grouped = features.reshape(count // group, group, -1)
        # Written out rather than Tensor.var, which is ~8× slower on CPU for this reduction.
        centred = grouped - grouped.mean(dim=1, keepdim=True)
        spread = (centred.square().mean(dim=1) + 1e-8).sqrt().mean(dim=1)
        spread = spread.view(-1, 1, 1, 1, 1).expand(-1, group, 1, height, width).reshape(count, 1, height, width)
        return torch.cat([features, spread], dim=1)


class DcganGenerator(nn.Module):
    """The PyTorch DCGAN example's generator, unconditional: z as a 1×1 map → transposed convs with BN, ReLU → tanh."""

    def __init__(self, arch: GanArchitecture) -> None:
        super().__init__()
        if arch.num_classes:
            raise ValueError("the dcgan generator is unconditional (num_classes 0)")
        self.arch = arch
        steps = arch.upsamplings
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(arch.latent_dim, arch.width(steps), arch.start_size, 1, 0, bias=False),
            nn.BatchNorm2d(arch.width(steps)),
            nn.ReLU(True),
        ]
        for level in range(steps, 1, -1):
            layers += [
                nn.ConvTranspose2d(arch.width(level), arch.width(level - 1), 4, 2, 1, bias=False),
                nn.BatchNorm2d(arch.width(level - 1)),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(arch.width(1), arch.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        dcgan_initialise(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(z[:, :, None, None])


class DcganDiscriminator(nn.Module):
    """The PyTorch DCGAN example's discriminator: strided convs (BN after the first), LeakyReLU 0.2 → one logit.

    The example's closing sigmoid is left out: its BCELoss on sigmoid(score) is train_gan.loss nonsaturating
    (BCE with logits) on the score.
    """

    def __init__(self, arch: GanArchitecture) -> None:
        super().__init__()
        if arch.num_classes:
            raise ValueError("the dcgan discriminator is unconditional (num_classes 0)")
        self.arch = arch
        layers: list[nn.Module] = []
        in_channels = arch.channels
        for level in range(1, arch.upsamplings + 1):
            layers.append(nn.Conv2d(in_channels, arch.width(level), 4, 2, 1, bias=False))
            if level > 1:
                layers.append(nn.BatchNorm2d(arch.width(level)))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_channels = arch.width(level)
        layers.append(nn.Conv2d(in_channels, 1, arch.start_size, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        dcgan_initialise(self)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Realness scores (N,) and no class logits, as an unconditional `Discriminator`."""
        return self.main(images).flatten(), None


@torch.no_grad()
def dcgan_initialise(network: nn.Module) -> None:
    """The example's `weights_init`: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


GanGeneratorNetwork = Generator | DcganGenerator
GanDiscriminatorNetwork = Discriminator | DcganDiscriminator


@dataclass(frozen=True)
class GanNetworks:
    """How one `train_gan.arch` builds its generator and discriminator from a `GanArchitecture`."""

    generator: Callable[[GanArchitecture], GanGeneratorNetwork]
    discriminator: Callable[[GanArchitecture], GanDiscriminatorNetwork]


# By train_gan.arch (tests/test_registry.py holds its names equal to the param's choices). A plain mapping, as the
# synthesis backends are: the generate stage rebuilds generators from this module alone, without the registry.
GAN_NETWORKS: dict[str, GanNetworks] = {
    "projection": GanNetworks(Generator, Discriminator),
    "dcgan": GanNetworks(DcganGenerator, DcganDiscriminator),
}


def build_generator(arch: GanArchitecture) -> GanGeneratorNetwork:
    return GAN_NETWORKS[arch.name].generator(arch)


def build_discriminator(arch: GanArchitecture) -> GanDiscriminatorNetwork:
    return GAN_NETWORKS[arch.name].discriminator(arch)
