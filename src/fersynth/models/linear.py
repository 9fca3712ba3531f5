"""The linear baseline: one affine map from normalised pixels to logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from fersynth.models.base import CLASSIFIERS, PLAIN_MEAN, PLAIN_STD, Classifier, InputAdapter

if TYPE_CHECKING:
    from fersynth.config import ClassifierConfig


@CLASSIFIERS.register("linear")
def build_linear(config: ClassifierConfig, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    # The body only flattens, so the "features" are the normalised pixels themselves.
    return Classifier(
        adapter=InputAdapter(in_channels, in_channels, PLAIN_MEAN, PLAIN_STD),
        body=nn.Flatten(),
        head=nn.Linear(in_channels * image_size * image_size, num_classes),
    )
