"""What every classifier shares: input normalisation, a feature body and a head (linear, or `ClassifierHead`).

Models take float images in [0, 1] (N, C, H, W). Normalisation lives inside the model, so
`predict_proba`, feature extraction and the saved checkpoint never need to know an architecture's
statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from fersynth.registry import Registry

if TYPE_CHECKING:
    from fersynth.config import ClassifierConfig

# Pixels in [0, 1] mapped to roughly zero mean, unit variance for nets trained from scratch.
PLAIN_MEAN: tuple[float, ...] = (0.5,)
PLAIN_STD: tuple[float, ...] = (0.25,)
# torchvision's ImageNet statistics: what pretrained ResNet weights expect.
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)


# (config, num_classes, in_channels, image_size) -> a freshly initialised classifier
ClassifierBuilder = Callable[["ClassifierConfig", int, int, int], "Classifier"]
CLASSIFIERS: Registry[ClassifierBuilder] = Registry("classifier", "train.arch")


class InputAdapter(nn.Module):
    """Repeat grayscale to the channels the body expects, then normalise per channel."""

    def __init__(self, in_channels: int, body_channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if body_channels % in_channels:
            raise ValueError(f"cannot feed {in_channels}-channel images to a {body_channels}-channel network")
        self.repeat = body_channels // in_channels
        # Constants, not weights: kept out of the state dict (persistent=False).
        self.register_buffer("mean", _per_channel(mean, body_channels), persistent=False)
        self.register_buffer("std", _per_channel(std, body_channels), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.repeat > 1:
            images = images.repeat(1, self.repeat, 1, 1)
        return (images - self.mean) / self.std


def _per_channel(values: Sequence[float], channels: int) -> torch.Tensor:
    """(1, C, 1, 1) tensor; a single value is broadcast to every channel."""
    expanded = list(values) * channels if len(values) == 1 else list(values)
    if len(expanded) != channels:
        raise ValueError(f"{len(values)} normalisation values for {channels} channels")
    return torch.tensor(expanded, dtype=torch.float32).view(1, channels, 1, 1)


class ClassifierHead(nn.Sequential):
    """Pooled features -> [Linear(hidden) -> ReLU] -> Dropout -> Linear(classes): the hidden layer only when
    `hidden` > 0. Exposes `in_features` and `out_features` as the plain linear head does."""

    def __init__(self, in_features: int, num_classes: int, hidden: int, dropout: float) -> None:
        layers: list[nn.Module] = []
        width = in_features
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = num_classes


def configured_head(head: nn.Linear | ClassifierHead, config: ClassifierConfig) -> nn.Linear | ClassifierHead:
    """The head `config` asks for (head_hidden, head_dropout) in place of an architecture's linear `head`; the
    linear head itself (its weights and their names unchanged) when it asks for none."""
    if not config.head_hidden and not config.head_dropout:
        return head
    return ClassifierHead(head.in_features, head.out_features, config.head_hidden, config.head_dropout)


# What "hold the body's batch-norm statistics" reaches: every batch norm over a batch.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class Classifier(nn.Module):
    """adapter -> body (penultimate features, (N, D)) -> head (logits, (N, K))."""

    def __init__(
        self, adapter: InputAdapter, body: nn.Module, head: nn.Linear | ClassifierHead, body_lr_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.body = body
        self.head = head
        self.body_lr_scale = body_lr_scale
        # Frozen pretrained modules; a plain list, so they are not registered (or saved) twice.
        self.frozen: list[nn.Module] = []
        self.body_statistics_held = False  # see hold_body_statistics

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.adapter(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def freeze(self, modules: Sequence[nn.Module]) -> None:
        """Stop training `modules`: no gradients, and batch-norm statistics kept as loaded."""
        for module in modules:
            module.requires_grad_(False)
            self.frozen.append(module)
        self.train(self.training)

    def hold_body_statistics(self, held: bool) -> None:
        """While `held`, the body's batch norms stay in eval mode when the model trains: they normalise with, and
        keep, their running statistics (phase 1 of two-phase fine-tuning, as a frozen module's do)."""
        self.body_statistics_held = held
        self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        held = self.body.modules() if self.body_statistics_held else []
        for module in [*self.frozen, *(module for module in held if isinstance(module, BATCH_NORMS))]:
            module.eval()
        return self


def parameter_groups(model: Classifier, lr: float) -> list[dict[str, object]]:
    """Optimizer groups: the body at `lr × body_lr_scale`, the head at `lr`; frozen weights left out."""
    groups = [
        {"name": "body", "params": _trainable(model.body), "lr": lr * model.body_lr_scale},
        {"name": "head", "params": _trainable(model.head), "lr": lr},
    ]
    return [group for group in groups if group["params"]]


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
