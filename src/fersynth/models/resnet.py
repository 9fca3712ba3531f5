"""ResNet-18 from torchvision, optionally initialised from a local state dict for transfer learning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from fersynth.errors import DataError
from fersynth.models.base import CLASSIFIERS, IMAGENET_MEAN, IMAGENET_STD, Classifier, InputAdapter
from fersynth.runtime.torch_files import MISFIT, describe, load_torch_file

if TYPE_CHECKING:
    from fersynth.config import ClassifierConfig

logger = logging.getLogger(__name__)

RESIDUAL_STAGES = ("layer1", "layer2", "layer3", "layer4")


@CLASSIFIERS.register("resnet18")
def build_resnet18(config: ClassifierConfig, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    """Without `config.weights_path` every layer trains at the full lr; with it the first `freeze_blocks`
    residual stages (and the stem) stay fixed and the rest of the backbone trains at
    `lr × backbone_lr_scale`."""
    weights_path, freeze_blocks, backbone_lr_scale = config.weights_path, config.freeze_blocks, config.backbone_lr_scale
    # torchvision pulls in torch._dynamo (about 2 s); only runs that build a ResNet pay for it.
    from torchvision.models import resnet18

    backbone = resnet18(weights=None)
    if weights_path:
        _load_backbone_weights(backbone, Path(weights_path))
    head = nn.Linear(backbone.fc.in_features, num_classes)
    backbone.fc = nn.Identity()  # the body ends at the pooled 512-d features
    model = Classifier(
        # ImageNet statistics for every resnet18, so a checkpoint reloads with the same normalisation.
        adapter=InputAdapter(in_channels, 3, IMAGENET_MEAN, IMAGENET_STD),
        body=backbone,
        head=head,
        body_lr_scale=backbone_lr_scale if weights_path else 1.0,
    )
    if freeze_blocks and not weights_path:
        logger.warning("freeze_blocks=%d ignored: freezing needs pretrained weights (weights_path)", freeze_blocks)
    elif freeze_blocks:
        stem: list[nn.Module] = [backbone.conv1, backbone.bn1]
        model.freeze(stem + [getattr(backbone, name) for name in RESIDUAL_STAGES[:freeze_blocks]])
    return model


def _load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a torchvision resnet18 state dict; its classifier (fc) is replaced, so it is skipped."""
    if not path.is_file():
        raise DataError(f"{path}: resnet18 weights file not found (train.weights_path)")
    state = load_torch_file(path, "resnet18 weights file (train.weights_path)")
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a resnet18 state dict, found {type(state).__name__}")
    state = {key: value for key, value in state.items() if not str(key).startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except MISFIT as error:  # shape mismatches, values that are no tensors
        raise DataError(f"{path}: incompatible with resnet18 ({describe(error)})") from None
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        raise DataError(f"{path}: not a resnet18 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
    logger.info("resnet18 initialised from %s", path)
