"""Classifier architectures: output shapes, features, resnet18 transfer learning and parameter groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from fersynth.config import ClassifierConfig
from fersynth.errors import DataError
from fersynth.models import ClassifierHead, build_classifier, count_parameters, parameter_groups


@pytest.mark.parametrize("arch", ["linear", "vgg", "resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
def test_architectures_give_logits_and_features(arch: str, channels: int) -> None:
    model = build_classifier(ClassifierConfig(arch=arch, width=8), 7, channels, 48).eval()
    images = torch.rand(2, channels, 48, 48)
    assert model(images).shape == (2, 7)
    assert model.features(images).shape == (2, model.head.in_features)


def test_vgg_width_sets_the_size() -> None:
    narrow = count_parameters(build_classifier(ClassifierConfig(arch="vgg", width=16), 7, 1, 48))
    default = count_parameters(build_classifier(ClassifierConfig(arch="vgg"), 7, 1, 48))
    assert 1_000_000 < default < 2_000_000
    assert narrow < default / 3


def test_linear_is_linear_in_the_pixels() -> None:
    model = build_classifier(ClassifierConfig(arch="linear"), 7, 1, 16).eval()
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    zero = model(torch.zeros(1, 1, 16, 16))
    torch.testing.assert_close(model(a + b) - zero, (model(a) - zero) + (model(b) - zero))


@pytest.mark.slow  # ~80M parameters: a few seconds to build on a small CPU
def test_resemotenet_reference_layout() -> None:
    model = build_classifier(ClassifierConfig(arch="resemotenet"), 7, 1, 48).eval()
    assert 75_000_000 < count_parameters(model) < 85_000_000
    assert model.head.in_features == 256
    with torch.inference_mode():
        assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)  # grayscale repeated to the RGB stem


def _random_resnet18_weights(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = resnet18(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_resnet18_loads_weights_freezes_and_groups(tmp_path: Path) -> None:
    weights = tmp_path / "resnet18.pt"
    state = _random_resnet18_weights(weights)
    config = ClassifierConfig(arch="resnet18", weights_path=str(weights), freeze_blocks=2, backbone_lr_scale=0.1)
    model = build_classifier(config, 7, 1, 48)

    torch.testing.assert_close(model.body.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert model.head.out_features == 7
    frozen = [model.body.conv1, model.body.bn1, model.body.layer1, model.body.layer2]
    assert all(not p.requires_grad for module in frozen for p in module.parameters())
    assert all(p.requires_grad for p in model.body.layer3.parameters())

    groups = {group["name"]: group for group in parameter_groups(model, lr=1.0e-3)}
    assert groups["body"]["lr"] == pytest.approx(1.0e-4)
    assert groups["head"]["lr"] == pytest.approx(1.0e-3)
    grouped = {id(p) for group in groups.values() for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable

    model.train()  # frozen batch norms keep their loaded statistics
    before = model.body.layer1[0].bn1.running_mean.clone()
    model(torch.rand(4, 1, 48, 48))
    assert not model.body.layer1[0].bn1.training
    torch.testing.assert_close(model.body.layer1[0].bn1.running_mean, before)
    assert model.body.layer3[0].bn1.training


def test_resnet18_without_weights_trains_everything_at_full_lr() -> None:
    model = build_classifier(ClassifierConfig(arch="resnet18", freeze_blocks=2), 7, 3, 48)
    assert all(p.requires_grad for p in model.parameters())
    assert {group["lr"] for group in parameter_groups(model, lr=0.01)} == {0.01}


def test_resnet18_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(DataError, match=r"nowhere\.pt"):
        build_classifier(ClassifierConfig(arch="resnet18", weights_path=str(missing)), 7, 1, 48)


def test_resnet18_incompatible_weights_are_named(tmp_path: Path) -> None:
    wrong = tmp_path / "vgg.pt"
    torch.save(build_classifier(ClassifierConfig(arch="vgg", width=4), 7, 1, 48).state_dict(), wrong)
    with pytest.raises(DataError, match=r"vgg\.pt"):
        build_classifier(ClassifierConfig(arch="resnet18", weights_path=str(wrong)), 7, 1, 48)
    resized = tmp_path / "resized.pt"
    state = resnet18(weights=None).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)
    torch.save(state, resized)
    with pytest.raises(DataError, match=r"resized\.pt"):
        build_classifier(ClassifierConfig(arch="resnet18", weights_path=str(resized)), 7, 1, 48)


@pytest.mark.parametrize("arch", ["linear", "vgg", "resnet18"])
def test_the_configured_head_follows_every_body(arch: str) -> None:
    plain = build_classifier(ClassifierConfig(arch=arch, width=4), 7, 1, 48)
    assert isinstance(plain.head, torch.nn.Linear)  # the default: one linear layer, its weights named as ever
    assert {name for name in plain.state_dict() if name.startswith("head.")} == {"head.weight", "head.bias"}

    model = build_classifier(ClassifierConfig(arch=arch, width=4, head_hidden=32, head_dropout=0.5), 7, 1, 48)
    head = model.head
    assert isinstance(head, ClassifierHead) and (head.in_features, head.out_features) == (plain.head.in_features, 7)
    assert [type(layer) for layer in head] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout, torch.nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].in_features) == (head.in_features, 32, 32)
    assert head[2].p == 0.5
    images = torch.rand(2, 1, 48, 48)
    assert model.eval()(images).shape == (2, 7) and model.features(images).shape == (2, head.in_features)
    groups = {group["name"]: group for group in parameter_groups(model, lr=0.01)}
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in head.parameters()}  # type: ignore[attr-defined]

    dropout_only = build_classifier(ClassifierConfig(arch=arch, width=4, head_dropout=0.2), 7, 1, 48).head
    assert [type(layer) for layer in dropout_only] == [torch.nn.Dropout, torch.nn.Linear]


def test_held_body_statistics_survive_train_and_are_released() -> None:
    model = build_classifier(ClassifierConfig(arch="vgg", width=4, head_dropout=0.5), 7, 1, 16)
    norms = [module for module in model.body.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    before = [norm.running_mean.clone() for norm in norms]
    model.hold_body_statistics(True)
    model.train()
    model(torch.rand(4, 1, 16, 16))
    assert not any(norm.training for norm in norms) and model.head.training  # dropout still drops
    assert all(torch.equal(a, norm.running_mean) for a, norm in zip(before, norms, strict=True))
    model.hold_body_statistics(False)
    assert all(norm.training for norm in norms)
    model(torch.rand(4, 1, 16, 16))
    assert not any(torch.equal(a, norm.running_mean) for a, norm in zip(before, norms, strict=True))
