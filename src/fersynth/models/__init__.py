"""Expression classifiers: build one from a `ClassifierConfig`, and its optimizer parameter groups."""

from __future__ import annotations

from fersynth.config import ClassifierConfig
from fersynth.models.base import Classifier, count_parameters, parameter_groups
from fersynth.models.linear import build_linear
from fersynth.models.resemotenet import build_resemotenet
from fersynth.models.resnet import build_resnet18
from fersynth.models.vgg import build_vgg

__all__ = ["Classifier", "build_classifier", "count_parameters", "parameter_groups"]


def build_classifier(config: ClassifierConfig, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    """A freshly initialised classifier for (N, in_channels, image_size, image_size) inputs in [0, 1]."""
    if config.arch == "linear":
        return build_linear(num_classes, in_channels, image_size)
    if config.arch == "vgg":
        return build_vgg(num_classes, in_channels, config.width)
    if config.arch == "resemotenet":
        return build_resemotenet(num_classes, in_channels)
    return build_resnet18(num_classes, in_channels, config.weights_path, config.freeze_blocks, config.backbone_lr_scale)
