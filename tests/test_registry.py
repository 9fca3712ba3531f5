"""Registries: each one's names are exactly its param's choices in config.py, and lookups name the param."""

from __future__ import annotations

from typing import get_args

import pytest

from fersynth.config import ClassifierConfig
from fersynth.errors import ParamsError
from fersynth.models import CLASSIFIERS, build_classifier
from fersynth.registry import Registry


def test_every_classifier_arch_has_a_builder_and_every_builder_an_arch() -> None:
    assert set(CLASSIFIERS.names()) == set(get_args(ClassifierConfig.model_fields["arch"].annotation))


@pytest.mark.parametrize("arch", CLASSIFIERS.names())
def test_each_registered_classifier_builds_for_grey_48_pixel_faces(arch: str) -> None:
    model = build_classifier(ClassifierConfig(arch=arch, width=4), 7, 1, 48)
    assert model.head.out_features == 7


def test_an_unknown_name_names_the_param_and_the_choices() -> None:
    registry: Registry[int] = Registry("policy", "merge.policy")
    registry.register("all")(1)
    assert registry["all"] == 1
    with pytest.raises(ParamsError, match=r"merge\.policy: unknown policy 'some' \(known: all\)"):
        registry["some"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("all")(2)


def test_every_fetch_source_read_from_files_has_a_layout() -> None:
    """`demo` is drawn and `fer2013_csv` holds pixel rows; every other source is a folder layout."""
    from fersynth.config import FetchConfig
    from fersynth.datasets.members import LAYOUTS
    from fersynth.datasets.sources import load_source  # noqa: F401  (registers every layout)

    sources = set(get_args(FetchConfig.model_fields["source"].annotation))
    assert set(LAYOUTS.names()) == sources - {"demo", "fer2013_csv"}


def test_every_merge_policy_is_registered() -> None:
    from fersynth.config import MergeConfig
    from fersynth.merging import MERGE_POLICIES

    assert set(MERGE_POLICIES.names()) == set(get_args(MergeConfig.model_fields["policy"].annotation))


def test_every_calibrate_policy_is_registered() -> None:
    from fersynth.calibration import CALIBRATE_POLICIES
    from fersynth.config import CalibrateConfig

    assert set(CALIBRATE_POLICIES.names()) == set(get_args(CalibrateConfig.model_fields["policy"].annotation))


def test_every_gan_loss_is_registered() -> None:
    from fersynth.config import TrainGanConfig
    from fersynth.gan.training import GAN_LOSSES

    assert set(GAN_LOSSES.names()) == set(get_args(TrainGanConfig.model_fields["loss"].annotation))


def test_every_gan_arch_is_registered() -> None:
    from fersynth.config import TrainGanConfig
    from fersynth.gan.models import GAN_NETWORKS

    assert set(GAN_NETWORKS) == set(get_args(TrainGanConfig.model_fields["arch"].annotation))
