"""The trained generator as a file: `generator.pt` rebuilds itself from the plain dicts it holds."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from fersynth.gan.models import GAN_NETWORKS, GanArchitecture, GanGeneratorNetwork, build_generator
from fersynth.preview import class_grid
from fersynth.runtime.torch_files import load_fersynth_file, save_torch_file

GENERATOR_FILE = "generator.pt"
FILE_FORMAT = "fersynth-gan-generator/1"
GanMode = Literal["conditional", "per_class"]


class GanGenerator:
    """One conditional generator, or one unconditional generator per class (`per_class` mode)."""

    def __init__(self, mode: GanMode, classes: Sequence[str], networks: Sequence[GanGeneratorNetwork]) -> None:
        expected = 1 if mode == "conditional" else len(classes)
        if len(networks) != expected:
            raise ValueError(f"{mode} GAN needs {expected} generator(s), got {len(networks)}")
        self.mode = mode
        self.classes = tuple(classes)
        self.networks = [network.eval() for network in networks]
        arch = networks[0].arch
        self.image_shape = (arch.image_size, arch.image_size, arch.channels)

    @classmethod
    def from_states(
        cls,
        mode: GanMode,
        classes: Sequence[str],
        arch: GanArchitecture,
        states: Sequence[dict[str, torch.Tensor]],
    ) -> GanGenerator:
        """Rebuild the networks of `arch` (one per state dict) from their weights."""
        networks = []
        for state in states:
            network = build_generator(arch)
            network.load_state_dict(state)
            networks.append(network)
        return cls(mode, classes, networks)

    @property
    def latent_dim(self) -> int:
        return self.networks[0].arch.latent_dim

    @torch.no_grad()
    def sample(self, class_index: int, count: int, seed: int, truncation: float = 0.0) -> np.ndarray:
        """`count` images of class `class_index` as uint8 (count, H, W, C); the same seed gives the same images.

        `truncation` > 0 draws z from the normal truncated at ±truncation (0 = untruncated).
        """
        if not 0 <= class_index < len(self.classes):
            raise ValueError(f"class index {class_index} outside 0..{len(self.classes) - 1}")
        noise = truncated_normal(count, self.latent_dim, seed, truncation)
        if self.mode == "conditional":
            images = self.networks[0](noise, torch.full((count,), class_index, dtype=torch.long))
        else:
            images = self.networks[class_index](noise)
        pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).numpy()

    def sample_grid(self, seed: int, per_class: int = 10) -> bytes:
        """A PNG with one labelled row of `per_class` samples per class (fixed noise: comparable across runs)."""
        images = np.concatenate([self.sample(index, per_class, seed) for index in range(len(self.classes))])
        labels = np.repeat(np.arange(len(self.classes)), per_class)
        buffer = io.BytesIO()
        class_grid(images, labels, self.classes, per_class).save(buffer, format="PNG")
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        payload: dict[str, Any] = {
            "format": FILE_FORMAT,
            "mode": self.mode,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "architecture": self.networks[0].arch.as_dict(),
            "state_dicts": [network.state_dict() for network in self.networks],
        }
        save_torch_file(path, payload)


def truncated_normal(count: int, dim: int, seed: int, truncation: float) -> torch.Tensor:
    """Standard normal noise with every |value| above `truncation` redrawn (the truncation trick).

    Latents near the centre give the generator's most typical faces of a class, at the cost of
    variety (Brock et al. 2019); 0 keeps the full normal.
    """
    random = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, dim, generator=random)
    if truncation > 0:
        outside = noise.abs() > truncation
        while outside.any():
            noise[outside] = torch.randn(int(outside.sum()), generator=random)
            outside = noise.abs() > truncation
    return noise


def load_generator(path: Path) -> GanGenerator:
    """Rebuild a saved generator; a missing, damaged or foreign file is a DataError naming it."""
    return load_fersynth_file(Path(path), "generator file", "GAN generator", FILE_FORMAT, "train-gan", _rebuild)


def _rebuild(payload: dict[str, Any]) -> GanGenerator:
    mode = payload["mode"]
    if mode not in get_args(GanMode):
        raise ValueError(f"mode {mode!r} is none of {get_args(GanMode)}")
    arch = GanArchitecture(**payload["architecture"])  # no `name` (older files): projection networks
    if arch.name not in GAN_NETWORKS:
        raise ValueError(f"architecture {arch.name!r} is none of {tuple(GAN_NETWORKS)}")
    return GanGenerator.from_states(mode, [str(name) for name in payload["classes"]], arch, payload["state_dicts"])
