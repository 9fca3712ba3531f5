from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from fersynth.config import MergeConfig
from fersynth.datasets.format import Dataset, concatenate
from fersynth.errors import DataError
from fersynth.merging import MergeResult, merge_training_set

CLASSES = ("angry", "happy", "sad")


def rows(
    counts: Sequence[int],
    prefix: str,
    source: str = "real",
    split: str = "train",
    origins: Sequence[str] | None = None,
    confidence: Sequence[float] | None = None,
) -> Dataset:
    """`counts[i]` images of class i with ids `<prefix><n>`; 4×4 grayscale, content irrelevant here."""
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    count = len(labels)
    ids = np.array([f"{prefix}{n}" for n in range(count)], dtype=object)
    return Dataset(
        images=np.zeros((count, 4, 4, 1), dtype=np.uint8),
        labels=labels,
        splits=np.full(count, split, dtype=object),
        classes=CLASSES,
        ids=ids,
        sources=np.full(count, source, dtype=object),
        origins=None if origins is None else np.array(origins, dtype=object),
        confidence=None if confidence is None else np.array(confidence, dtype=np.float32),
    )


def real_set() -> Dataset:
    """Train counts 5/2/1 (ids r0..r7) plus val and test rows that must never be merged."""
    return concatenate([rows([5, 2, 1], "r"), rows([1, 1, 1], "v", split="val"), rows([1, 1, 1], "t", split="test")])


def offline_set(origins: Sequence[str] = ("r0", "r1", "r5")) -> Dataset:
    """Variants 2/1/0 of real train images."""
    return rows([2, 1, 0], "o", source="offline", origins=origins)


def synthetic_set() -> Dataset:
    """3/3/10 GAN images; sad's confidences make the ranking (and its id tie-break) checkable."""
    sad_confidence = [0.9, 0.1, 0.8, 0.8, 0.3, 0.95, 0.5, 0.6, 0.2, 0.7]
    return rows([3, 3, 10], "g", source="gan", confidence=[0.9] * 6 + sad_confidence)


def merge(config: MergeConfig, seed: int = 0, **overrides: Dataset) -> MergeResult:
    inputs = {"real": real_set(), "offline": offline_set(), "synthetic": synthetic_set(), **overrides}
    return merge_training_set(inputs["real"], inputs["offline"], inputs["synthetic"], config, seed)


def test_all_takes_every_train_row_of_every_source() -> None:
    result = merge(MergeConfig(policy="all"))
    assert result.after() == {"angry": 10, "happy": 6, "sad": 11}
    assert result.before() == {"angry": 7, "happy": 3, "sad": 1}
    assert not any(row_id.startswith(("v", "t")) for row_id in result.dataset.ids)
    assert set(result.dataset.splits) == {"train"}
    assert result.shortfall == {"angry": 0, "happy": 0, "sad": 0}


def test_balance_to_max_fills_with_most_confident_synthetic() -> None:
    result = merge(MergeConfig(policy="balance_to_max"))
    assert result.after() == {"angry": 7, "happy": 6, "sad": 7}
    assert result.selected["synthetic"] == {"angry": 0, "happy": 3, "sad": 6}
    assert result.shortfall == {"angry": 0, "happy": 1, "sad": 0}
    sad_ids = {row_id for row_id in result.dataset.ids if row_id.startswith("g") and int(row_id[1:]) >= 6}
    # confidences 0.95 (g11), 0.9 (g6), 0.8 (g8, g9), 0.7 (g15), 0.6 (g13): the 0.5 of g12 is the first left out
    assert sad_ids == {"g11", "g6", "g8", "g9", "g15", "g13"}


def test_balance_breaks_confidence_ties_by_id() -> None:
    synthetic = rows([0, 0, 8], "g", source="gan", confidence=[0.5] * 8)
    shuffled = synthetic.subset(np.array([7, 3, 1, 0, 6, 2, 5, 4]))
    for candidates in (synthetic, shuffled):
        result = merge(MergeConfig(policy="balance_to_max"), synthetic=candidates)
        # sad: base 1, target 7: six of the eight equally confident images, lowest ids first
        assert set(result.dataset.ids[result.dataset.sources == "gan"]) == {f"g{n}" for n in range(6)}


def test_per_class_gives_exact_counts_in_source_order() -> None:
    result = merge(MergeConfig(policy="per_class", per_class=4))
    assert result.after() == {"angry": 4, "happy": 4, "sad": 4}
    assert result.selected["real"] == {"angry": 4, "happy": 2, "sad": 1}
    assert result.selected["offline"] == {"angry": 0, "happy": 1, "sad": 0}
    assert result.selected["synthetic"] == {"angry": 0, "happy": 1, "sad": 3}


def test_per_class_subsampling_is_seeded() -> None:
    config = MergeConfig(policy="per_class", per_class=2)
    assert list(merge(config, seed=0).dataset.ids) == list(merge(config, seed=0).dataset.ids)
    kept_angry = {tuple(merge(config, seed=seed).dataset.ids[:2]) for seed in range(4)}
    assert len(kept_angry) > 1  # the seed changes which two of the five angry images are kept


def test_per_class_reports_shortfall() -> None:
    result = merge(MergeConfig(policy="per_class", per_class=12))
    assert result.after() == {"angry": 10, "happy": 6, "sad": 11}
    assert result.shortfall == {"angry": 2, "happy": 6, "sad": 1}


def test_max_synthetic_share_caps_each_class() -> None:
    result = merge(MergeConfig(policy="max_synthetic_share", max_synthetic_share=0.5))
    assert result.selected["synthetic"] == {"angry": 0, "happy": 3, "sad": 1}
    assert result.shortfall == {"angry": 0, "happy": 1, "sad": 5}
    for name, total in result.after().items():
        assert result.selected["synthetic"][name] <= 0.5 * total


def test_full_synthetic_share_equals_balance_to_max() -> None:
    capped = merge(MergeConfig(policy="max_synthetic_share", max_synthetic_share=1.0))
    balanced = merge(MergeConfig(policy="balance_to_max"))
    assert capped.after() == balanced.after()


def test_ratio_one_to_one_takes_every_real_image_and_as_many_synthetic(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fersynth.merging"):
        result = merge(MergeConfig(sources=["real", "gan"], policy="ratio"))
    # real train 5/2/1, synthetic 3/3/10: angry asks 5 of 3 there are, happy takes the two lowest ids of
    # its equally confident three, sad its most confident one (g11, 0.95)
    assert result.selected["real"] == {"angry": 5, "happy": 2, "sad": 1}
    assert result.selected["offline"] == {"angry": 0, "happy": 0, "sad": 0}
    assert result.selected["synthetic"] == {"angry": 3, "happy": 2, "sad": 1}
    assert set(result.dataset.ids[result.dataset.sources == "gan"]) == {"g0", "g1", "g2", "g3", "g4", "g11"}
    assert result.shortfall == {"angry": 2, "happy": 0, "sad": 0}
    assert "class angry: 2 images short of the ratio target 10" in caplog.text
    metrics = result.metrics()
    assert metrics["shortfall_angry"] == 2 and metrics["synthetic_share"] == pytest.approx(6 / 14)


def test_ratio_adds_offline_variants_only_when_listed() -> None:
    result = merge(MergeConfig(policy="ratio"))  # the default sources list offline
    assert result.selected["offline"] == {"angry": 2, "happy": 1, "sad": 0}
    # synthetic images per *real* image: the offline variants do not raise the count
    assert result.selected["synthetic"] == {"angry": 3, "happy": 2, "sad": 1}
    assert result.after() == {"angry": 10, "happy": 5, "sad": 2}


@pytest.mark.parametrize(
    ("ratio", "synthetic", "shortfall"),
    [(0.5, [3, 1, 1], [0, 0, 0]), (2.0, [3, 3, 2], [7, 1, 0]), (0.0, [0, 0, 0], [0, 0, 0])],
)
def test_ratio_rounds_half_up_and_caps_at_what_exists(ratio: float, synthetic: list[int], shortfall: list[int]) -> None:
    result = merge(MergeConfig(sources=["real", "gan"], policy="ratio", synthetic_per_real=ratio))
    assert list(result.selected["synthetic"].values()) == synthetic  # 0.5 × 5 = 2.5 -> 3, 0.5 × 1 -> 1
    assert list(result.shortfall.values()) == shortfall


def test_ratio_needs_real_among_the_sources() -> None:
    with pytest.raises(ValueError, match=r"merge\.sources must list real"):
        MergeConfig(sources=["offline", "gan"], policy="ratio")


def test_shortfall_is_logged_and_in_metrics(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fersynth.merging"):
        result = merge(MergeConfig(policy="balance_to_max"))
    assert "class happy: 1 images short" in caplog.text
    metrics = result.metrics()
    assert metrics["shortfall_happy"] == 1
    assert metrics["shortfall_sad"] == 0


def test_metrics_and_plot_rows() -> None:
    result = merge(MergeConfig(policy="balance_to_max"))
    metrics = result.metrics()
    assert metrics["before_angry"] == 7 and metrics["synthetic_sad"] == 6 and metrics["after_sad"] == 7
    assert metrics["total_before"] == 11 and metrics["total_after"] == 20
    assert metrics["synthetic_share"] == pytest.approx(9 / 20)
    assert metrics["source_real"] == 8 and metrics["source_offline"] == 3 and metrics["source_gan"] == 9
    plot = result.counts_plot_rows()
    assert {"class": "sad", "count": 1, "set": "before"} in plot
    assert {"class": "sad", "count": 7, "set": "after"} in plot
    assert len(plot) == 2 * len(CLASSES)


def test_sources_filter_leaves_unlisted_sources_out() -> None:
    # offline is not listed: its val-derived variant is neither merged nor an error
    result = merge(
        MergeConfig(sources=["real", "gan"], policy="balance_to_max"), offline=offline_set(("r0", "v0", "r5"))
    )
    assert result.selected["offline"] == {"angry": 0, "happy": 0, "sad": 0}
    assert result.after() == {"angry": 5, "happy": 5, "sad": 5}  # target 5 from real alone
    only_real = merge(MergeConfig(sources=["real"], policy="all"))
    assert set(only_real.dataset.sources) == {"real"}


def test_synthetic_only_balances_to_largest_synthetic_class() -> None:
    result = merge(MergeConfig(sources=["gan"], policy="balance_to_max"))
    assert result.after() == {"angry": 3, "happy": 3, "sad": 10}
    assert result.shortfall == {"angry": 7, "happy": 7, "sad": 0}


@pytest.mark.parametrize(("origin", "reason"), [("v1", "a val image"), ("t0", "a test image"), ("x9", "unknown")])
def test_offline_variant_of_non_train_image_is_rejected(origin: str, reason: str) -> None:
    with pytest.raises(DataError, match=rf"'o1' \(origin '{origin}': {reason}\)"):
        merge(MergeConfig(policy="all"), offline=offline_set(("r0", origin, "r5")))


def test_synthetic_derived_from_test_image_is_rejected() -> None:
    synthetic = rows([1, 0, 0], "e", source="gan", origins=["t2"], confidence=[0.9])
    with pytest.raises(DataError, match=r"'e0'.*a test image"):
        merge(MergeConfig(policy="all"), synthetic=synthetic)


def test_soft_labels_are_carried_through() -> None:
    synthetic = synthetic_set()
    soft = np.full((len(synthetic), len(CLASSES)), 0.2, dtype=np.float32)
    soft[np.arange(len(synthetic)), synthetic.labels] = 0.6
    object.__setattr__(synthetic, "soft_labels", soft)
    result = merge(MergeConfig(policy="all"), synthetic=synthetic)
    merged_soft = result.dataset.soft_labels
    assert merged_soft is not None and merged_soft.shape == (len(result.dataset), len(CLASSES))
    is_gan = result.dataset.sources == "gan"
    np.testing.assert_allclose(merged_soft[is_gan].max(axis=1), 0.6)
    np.testing.assert_allclose(merged_soft[~is_gan].max(axis=1), 1.0)  # one-hot for hard rows


def test_mismatched_image_shapes_name_the_sources() -> None:
    synthetic = synthetic_set()
    object.__setattr__(synthetic, "images", np.zeros((len(synthetic), 8, 8, 1), dtype=np.uint8))
    with pytest.raises(DataError, match=r"synthetic set 8×8×1"):
        merge(MergeConfig(policy="all"), synthetic=synthetic)


def test_empty_synthetic_set_merges_real_and_offline() -> None:
    result = merge(MergeConfig(policy="balance_to_max"), synthetic=rows([0, 0, 0], "g", source="gan"))
    assert result.after() == {"angry": 7, "happy": 3, "sad": 1}
    assert result.shortfall == {"angry": 0, "happy": 4, "sad": 6}


def hybrid_set() -> Dataset:
    """2/0/2 GAN samples, 0/0/2 text-to-image samples and 0/2/0 edits of real train faces."""
    return concatenate(
        [
            rows([2, 0, 2], "g", source="gan", confidence=[0.9] * 4),
            rows([0, 0, 2], "d", source="diffusion", confidence=[0.8] * 2),
            rows([0, 2, 0], "e", source="edit", origins=["r0", "r1"], confidence=[0.7] * 2),
        ]
    )


def test_every_synthetic_source_merges_and_is_counted_per_class() -> None:
    metrics = merge(MergeConfig(policy="all"), synthetic=hybrid_set()).metrics()
    assert metrics["source_gan"] == 4 and metrics["source_diffusion"] == 2 and metrics["source_edit"] == 2
    assert (
        metrics["source_edit_happy"] == 2 and metrics["source_diffusion_sad"] == 2 and metrics["source_gan_happy"] == 0
    )
    assert metrics["synthetic_sad"] == 4


def test_an_unlisted_synthetic_source_stays_out() -> None:
    result = merge(MergeConfig(sources=["real", "edit"], policy="all"), synthetic=hybrid_set())
    assert set(result.dataset.sources) == {"real", "edit"}


@pytest.mark.parametrize(("origin", "reason"), [("v1", "a val image"), ("e-made-up", "unknown"), ("", "unknown")])
def test_an_edit_must_come_from_a_real_training_face(origin: str, reason: str) -> None:
    edit = rows([0, 1, 0], "e", source="edit", origins=[origin], confidence=[0.9])
    with pytest.raises(DataError, match=rf"'e0' \(origin '{origin}': {reason}\)"):
        merge(MergeConfig(policy="all"), synthetic=edit)


def test_rows_of_a_source_the_input_cannot_hold_are_an_error() -> None:
    mixed_up = concatenate([synthetic_set(), rows([1, 0, 0], "x", source="offline", origins=["r0"])])
    with pytest.raises(DataError, match=r"source \['offline'\].*'x0'.*only gan, diffusion, edit"):
        merge(MergeConfig(policy="all"), synthetic=mixed_up)
