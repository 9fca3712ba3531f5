"""Training-batch augmentation (flip, shift, random erasing, mixup, cutmix) and test-time views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fersynth.online_augmentation import BatchMix, augment_batch, draw_mix, tta_views


def _images(count: int = 8, size: int = 12, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, channels), dtype=np.uint8)


def _state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def test_levers_left_off_draw_nothing() -> None:
    """A run with erasing and mixing off draws what it drew before they existed."""
    plain, levered = np.random.default_rng(1), np.random.default_rng(1)
    augment_batch(_images(), plain, flip=True, shift=2)
    augment_batch(_images(), levered, flip=True, shift=2, erasing=0.0)
    assert draw_mix(levered, 0.0, 0.0, 8, 12, 12) is None
    assert _state(plain) == _state(levered)


def test_random_erasing_fills_one_box_per_image_with_noise() -> None:
    images = np.full((20, 24, 24, 1), 128, dtype=np.uint8)
    erased = augment_batch(images.copy(), np.random.default_rng(0), flip=False, shift=0, erasing=1.0)
    for image in erased[..., 0]:
        rows, columns = np.nonzero(image != 128)
        assert len(rows)  # noise hits 128 at 1/256 of its pixels only
        box_area = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
        assert 0.01 * 24 * 24 <= box_area <= 0.34 * 24 * 24
    untouched = augment_batch(images.copy(), np.random.default_rng(0), flip=False, shift=0, erasing=0.5)
    share = np.mean([(image != 128).any() for image in untouched])
    assert 0.2 < share < 0.8


def test_mixup_blends_images_and_targets_by_the_same_share() -> None:
    mix = draw_mix(np.random.default_rng(0), 0.4, 0.0, 6, 4, 4)
    assert mix is not None and mix.box is None and 0.0 <= mix.keep <= 1.0
    assert sorted(mix.partner) == list(range(6))
    inputs = torch.rand(6, 1, 4, 4)
    expected = inputs * mix.keep + inputs[torch.from_numpy(mix.partner)] * (1 - mix.keep)
    torch.testing.assert_close(mix.apply(inputs), expected)


def test_cutmix_pastes_a_box_and_keeps_the_rest() -> None:
    mixes = [draw_mix(np.random.default_rng(seed), 0.0, 1.0, 5, 10, 10) for seed in range(20)]
    assert all(mix is not None and mix.box is not None for mix in mixes)
    mix = next(mix for mix in mixes if mix is not None and mix.box is not None and 0.1 < mix.keep < 0.9)
    assert mix.box is not None
    top, bottom, left, right = mix.box
    assert mix.keep == pytest.approx(1 - (bottom - top) * (right - left) / 100)
    inputs = torch.rand(5, 1, 10, 10)
    mixed = mix.apply(inputs)
    partner = torch.from_numpy(mix.partner)
    torch.testing.assert_close(mixed[:, :, top:bottom, left:right], inputs[partner, :, top:bottom, left:right])
    outside = torch.ones(10, 10, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    torch.testing.assert_close(mixed[:, :, outside], inputs[:, :, outside])


def test_both_alphas_alternate_the_two_kinds() -> None:
    rng = np.random.default_rng(0)
    kinds = {draw_mix(rng, 1.0, 1.0, 4, 8, 8).box is None for _ in range(30)}  # type: ignore[union-attr]
    assert kinds == {True, False}


@pytest.mark.parametrize("soft", [False, True])
def test_mixed_loss_weighs_both_targets(soft: bool) -> None:
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 1])
    targets = F.one_hot(labels, 3).float() if soft else labels
    mix = BatchMix(np.array([1, 0, 3, 2]), 0.7, None)
    loss = mix.loss(logits, targets, slice(0, 4), None, 0.0)
    expected = 0.7 * F.cross_entropy(logits, labels) + 0.3 * F.cross_entropy(logits, labels[[1, 0, 3, 2]])
    torch.testing.assert_close(loss, expected)
    # A process's shard mixes its own images' partners, drawn from the whole batch.
    shard_loss = mix.loss(logits[2:], targets, slice(2, 4), None, 0.0)
    expected_shard = 0.7 * F.cross_entropy(logits[2:], labels[2:]) + 0.3 * F.cross_entropy(logits[2:], labels[[3, 2]])
    torch.testing.assert_close(shard_loss, expected_shard)


def test_tta_views() -> None:
    images = _images(3, 8)
    (alone,) = tta_views(images, "none")
    assert alone is images
    _, mirrored = tta_views(images, "flip")
    np.testing.assert_array_equal(mirrored, images[:, :, ::-1])
    views = tta_views(images, "flip_shifts")
    assert len(views) == 10 and all(view.shape == images.shape for view in views)
    np.testing.assert_array_equal(views[0], images)
    np.testing.assert_array_equal(views[5], images[:, :, ::-1])
    # Moved down by 2: the top rows repeat the first row, the rest is the image shifted.
    np.testing.assert_array_equal(views[1][:, 2:], images[:, :-2])
    np.testing.assert_array_equal(views[1][:, :2], np.repeat(images[:, :1], 2, axis=1))
