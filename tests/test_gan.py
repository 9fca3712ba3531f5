from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from fersynth.checkpointing import load_checkpoint, training_fingerprint
from fersynth.config import TrainGanConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import DataError
from fersynth.gan.augment import diff_augment
from fersynth.gan.generator import GanGenerator, load_generator, truncated_normal
from fersynth.gan.models import (
    DcganDiscriminator,
    DcganGenerator,
    Discriminator,
    GanArchitecture,
    Generator,
    build_discriminator,
    build_generator,
    upsampling_steps,
)
from fersynth.gan.training import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    NOT_FINGERPRINTED,
    UnitTrainer,
    architecture,
    train_gan,
    training_images,
    training_units,
)
from fersynth.runtime.torch_files import load_torch_file, save_torch_file

from .conftest import make_dataset

TINY = TrainGanConfig(epochs=2, base_channels=8, batch_size=8, latent_dim=16)


@pytest.fixture(scope="module")
def faces() -> Dataset:
    return make_dataset(per_class=6, size=16)


class Interrupt(Exception):
    pass


def interrupt_after(epochs: int):
    def hook(unit: str, epoch: int) -> None:
        if epoch == epochs:
            raise Interrupt(unit)

    return hook


def weights(generator: GanGenerator) -> list[torch.Tensor]:
    return [tensor for network in generator.networks for tensor in network.state_dict().values()]


@pytest.mark.parametrize(("size", "start"), [(16, 4), (20, 5), (32, 4), (48, 6), (64, 4)])
def test_networks_fit_every_supported_size(size: int, start: int) -> None:
    arch = GanArchitecture(image_size=size, channels=3, latent_dim=8, base_channels=4, num_classes=7)
    assert arch.start_size == start
    images = Generator(arch)(torch.randn(4, 8), torch.arange(4))
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1
    scores, logits = Discriminator(arch)(images, torch.arange(4))
    assert scores.shape == (4,) and logits is not None and logits.shape == (4, 7)


@pytest.mark.parametrize("size", [18, 50, 8])
def test_sizes_not_divisible_by_four_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match=f"image size {size}"):
        upsampling_steps(size)


def test_diff_augment_keeps_shape_and_gradients() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 1, 16, 16, requires_grad=True)
    augmented = diff_augment(images, ["translation", "cutout", "color"])
    assert augmented.shape == images.shape
    augmented.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not torch.equal(augmented, images)
    assert torch.equal(diff_augment(images, []), images)


def test_training_changes_the_generator_and_writes_a_loadable_checkpoint(faces: Dataset, tmp_path: Path) -> None:
    untrained = train_gan(faces, TINY.model_copy(update={"epochs": 0}), 0, tmp_path / "untrained")
    assert (tmp_path / "untrained").is_dir()  # the stage's declared DVC output, although nothing trained
    trained = train_gan(faces, TINY, 0, tmp_path / "trained")
    assert any(
        not torch.equal(a, b) for a, b in zip(weights(untrained.generator), weights(trained.generator), strict=True)
    )
    fingerprint = training_fingerprint(training_images(faces, None), TINY.model_dump(exclude=NOT_FINGERPRINTED), 0)
    state = load_checkpoint(tmp_path / "trained" / CHECKPOINT_FILE, CHECKPOINT_FORMAT, fingerprint)
    assert state is not None and state["trainer"]["epoch"] == 2
    assert [entry["epoch"] for entry in trained.history] == [1, 2]
    metrics = trained.metrics()
    assert metrics["epochs"] == 2 and metrics["train_images"] == 14  # every third image is train
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(metrics)


def test_interrupted_run_resumes_to_the_uninterrupted_result(
    faces: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TINY.model_copy(update={"epochs": 3})
    straight = train_gan(faces, config, 0, tmp_path / "straight")
    with pytest.raises(Interrupt):
        train_gan(faces, config, 0, tmp_path / "resumed", on_epoch_end=interrupt_after(2))
    with caplog.at_level(logging.INFO):
        resumed = train_gan(faces, config, 0, tmp_path / "resumed")
    assert resumed.resumed_epochs == 2 and "resuming" in caplog.text
    assert resumed.history == straight.history
    for a, b in zip(weights(straight.generator), weights(resumed.generator), strict=True):
        torch.testing.assert_close(a, b)


def test_changed_params_start_fresh(faces: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train_gan(faces, TINY, 0, tmp_path)
    with caplog.at_level(logging.INFO):
        changed = TINY.model_copy(update={"lr_generator": TINY.lr_generator / 2})
        again = train_gan(faces, changed, 0, tmp_path)
    assert again.resumed_epochs == 0 and "training from scratch" in caplog.text
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    saving_less_often = changed.model_copy(update={"checkpoint_every": 5})
    assert train_gan(faces, saving_less_often, 0, tmp_path).resumed_epochs == 2  # same training: nothing to redo


def test_samples_are_uint8_deterministic_and_survive_save_and_load(faces: Dataset, tmp_path: Path) -> None:
    generator = train_gan(faces, TINY.model_copy(update={"epochs": 1}), 0, tmp_path).generator
    images = generator.sample(class_index=2, count=5, seed=1)
    assert images.shape == (5, 16, 16, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, generator.sample(2, 5, seed=1))
    assert not np.array_equal(images, generator.sample(2, 5, seed=2))
    generator.save(tmp_path / "generator.pt")
    loaded = load_generator(tmp_path / "generator.pt")
    assert loaded.classes == faces.classes and loaded.image_shape == (16, 16, 1)
    np.testing.assert_array_equal(loaded.sample(2, 5, seed=1), images)
    assert generator.sample_grid(seed=0).startswith(b"\x89PNG")


def test_truncated_noise_stays_inside_the_bound_and_zero_means_untruncated() -> None:
    truncated = truncated_normal(64, 100, seed=5, truncation=0.5)
    assert truncated.abs().max() <= 0.5 and truncated.std() > 0.2
    torch.testing.assert_close(truncated, truncated_normal(64, 100, seed=5, truncation=0.5))
    torch.testing.assert_close(
        truncated_normal(4, 8, 5, 0.0), torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    )


def test_truncation_changes_the_samples_deterministically(faces: Dataset, tmp_path: Path) -> None:
    generator = train_gan(faces, TINY.model_copy(update={"epochs": 1}), 0, tmp_path).generator
    plain, truncated = generator.sample(1, 6, seed=3), generator.sample(1, 6, seed=3, truncation=0.5)
    assert not np.array_equal(plain, truncated)
    np.testing.assert_array_equal(truncated, generator.sample(1, 6, seed=3, truncation=0.5))


def test_load_generator_names_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"generator\.pt: generator file not found"):
        load_generator(tmp_path / "generator.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match=r"other\.pt: not a fersynth GAN generator"):
        load_generator(tmp_path / "other.pt")


def test_ema_generator_differs_from_the_raw_one(faces: Dataset) -> None:
    train = training_images(faces, None)
    unit = training_units(train, TINY)[0]
    trainer = UnitTrainer(architecture(train, TINY), TINY, unit, seed=0, index=0)
    for batch in trainer.epoch_batches():
        trainer.train_step(torch.from_numpy(batch))
    assert trainer.ema is not None
    raw, ema = trainer.generator.state_dict(), trainer.ema.state_dict()
    assert any(not torch.equal(raw[name], ema[name]) for name in raw if raw[name].is_floating_point())
    without_ema = UnitTrainer(architecture(train, TINY), TINY.model_copy(update={"ema_decay": 0.0}), unit, 0, 0)
    assert without_ema.ema is None


def test_balanced_sampling_evens_out_classes() -> None:
    labels = np.repeat(np.arange(7), [400, 20, 100, 400, 100, 100, 100])
    skewed = make_dataset(per_class=1, size=16)
    skewed = Dataset(
        images=np.zeros((len(labels), 16, 16, 1), np.uint8),
        labels=labels,
        splits=np.full(len(labels), "train", dtype=object),
        classes=skewed.classes,
        ids=np.array([f"i{n}" for n in range(len(labels))], dtype=object),
    )
    config = TINY.model_copy(update={"batch_size": 32})
    unit = training_units(skewed, config)[0]
    batches = UnitTrainer(architecture(skewed, config), config, unit, 0, 0).epoch_batches()
    drawn = np.bincount(labels[batches.ravel()], minlength=7)
    assert drawn.min() > 0.7 * drawn.max()  # disgust (20 of 1,220 images) drawn about as often as happy


def test_only_train_rows_and_requested_offline_variants_train(faces: Dataset) -> None:
    offline = faces.split("train")
    assert len(training_images(faces, None)) == 14
    assert len(training_images(faces, offline)) == 28
    with pytest.raises(DataError, match="no images in the 'train' split"):
        training_images(faces.split("val"), None)


def test_per_class_mode_trains_one_generator_per_class(faces: Dataset, tmp_path: Path) -> None:
    config = TINY.model_copy(update={"mode": "per_class", "epochs": 1})
    result = train_gan(faces, config, 0, tmp_path)
    assert result.generator.mode == "per_class" and len(result.generator.networks) == 7
    assert result.generator.sample(6, 3, seed=0).shape == (3, 16, 16, 1)
    assert {"d_loss_angry", "g_loss_surprise"} <= set(result.metrics())
    result.generator.save(tmp_path / "g.pt")
    np.testing.assert_array_equal(load_generator(tmp_path / "g.pt").sample(1, 2, 5), result.generator.sample(1, 2, 5))


@pytest.mark.parametrize(("size", "start"), [(48, 6), (64, 4)])
def test_dcgan_networks_fit_48_and_64_pixels(size: int, start: int) -> None:
    arch = GanArchitecture(image_size=size, channels=1, latent_dim=8, base_channels=4, num_classes=0, name="dcgan")
    generator, discriminator = build_generator(arch), build_discriminator(arch)
    assert isinstance(generator, DcganGenerator) and isinstance(discriminator, DcganDiscriminator)
    assert arch.start_size == start and generator.main[0].kernel_size == (start, start)
    images = generator(torch.randn(4, 8))
    assert images.shape == (4, 1, size, size) and images.abs().max() <= 1
    scores, logits = discriminator(images)
    assert scores.shape == (4,) and logits is None
    assert not any(isinstance(module, nn.BatchNorm2d) for module in discriminator.main[:2])  # none on the first
    with pytest.raises(ValueError, match="unconditional"):
        DcganGenerator(GanArchitecture(size, 1, 8, 4, num_classes=7, name="dcgan"))


def test_a_dcgan_generator_file_loads_back_the_same_samples(faces: Dataset, tmp_path: Path) -> None:
    arch = GanArchitecture(image_size=16, channels=1, latent_dim=8, base_channels=4, num_classes=0, name="dcgan")
    generator = GanGenerator("per_class", faces.classes, [DcganGenerator(arch) for _ in faces.classes])
    generator.save(tmp_path / "g.pt")
    loaded = load_generator(tmp_path / "g.pt")
    assert all(isinstance(network, DcganGenerator) for network in loaded.networks)
    np.testing.assert_array_equal(loaded.sample(3, 4, seed=2), generator.sample(3, 4, seed=2))


def test_a_generator_file_without_an_arch_name_loads_as_projection(tmp_path: Path) -> None:
    arch = GanArchitecture(image_size=16, channels=1, latent_dim=8, base_channels=4, num_classes=7)
    generator = GanGenerator("conditional", [f"c{index}" for index in range(7)], [Generator(arch)])
    generator.save(tmp_path / "g.pt")
    payload = load_torch_file(tmp_path / "g.pt", "generator file")
    del payload["architecture"]["name"]  # as files saved before train_gan.arch existed
    save_torch_file(tmp_path / "old.pt", payload)
    loaded = load_generator(tmp_path / "old.pt")
    assert isinstance(loaded.networks[0], Generator) and loaded.networks[0].arch.name == "projection"
    np.testing.assert_array_equal(loaded.sample(1, 3, seed=0), generator.sample(1, 3, seed=0))


def test_dcgan_refuses_conditional_mode() -> None:
    with pytest.raises(ValidationError, match=r"train_gan\.arch dcgan .*train_gan\.mode per_class"):
        TrainGanConfig(arch="dcgan", mode="conditional")


def test_per_class_dcgan_trains_end_to_end(faces: Dataset, tmp_path: Path) -> None:
    config = TINY.model_copy(update={"mode": "per_class", "arch": "dcgan", "epochs": 1, "loss": "nonsaturating"})
    result = train_gan(faces, config, 0, tmp_path)
    assert all(isinstance(network, DcganGenerator) for network in result.generator.networks)
    assert result.generator.sample(6, 3, seed=0).shape == (3, 16, 16, 1)
    assert np.isfinite(result.metrics()["d_loss_angry"])
    result.generator.save(tmp_path / "g.pt")
    np.testing.assert_array_equal(load_generator(tmp_path / "g.pt").sample(1, 2, 5), result.generator.sample(1, 2, 5))
