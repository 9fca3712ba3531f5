"""Expression classifiers: build one from a `ClassifierConfig`, and its optimizer parameter groups.

Each architecture registers its builder in `CLASSIFIERS` under its `train.arch` name; importing the
modules below is what registers them.
"""

from __future__ import annotations

from fersynth.config import ClassifierConfig
from fersynth.models import linear, resemotenet, resnet, vgg  # noqa: F401  (they register themselves)
from fersynth.models.base import (
    CLASSIFIERS,
    Classifier,
    ClassifierHead,
    configured_head,
    count_parameters,
    parameter_groups,
)

__all__ = ["CLASSIFIERS", "Classifier", "ClassifierHead", "build_classifier", "count_parameters", "parameter_groups"]


def build_classifier(config: ClassifierConfig, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    """A freshly initialised classifier for (N, in_channels, image_size, image_size) inputs in [0, 1].

    Every architecture builds a linear head; the head `config` asks for (head_hidden, head_dropout) replaces it
    here, so each gets it alike.
    """
    model = CLASSIFIERS[config.arch](config, num_classes, in_channels, image_size)
    model.head = configured_head(model.head, config)
    return model
