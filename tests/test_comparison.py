"""Planning and summarising the synthetic-vs-real comparison."""

from __future__ import annotations

import pytest
import yaml

from fersynth.comparison import (
    COMMITTED,
    DEFAULT_VARIANT_NAMES,
    Variant,
    gain_verdicts,
    markdown_table,
    plan_runs,
    preset_variants,
    select_variants,
    summarise,
)

from .conftest import REPO_ROOT

REAL_ONLY = ("train_gan.epochs=0", "generate.target=per_class", "generate.per_class=0", "merge.sources=[real,offline]")


def test_runs_are_grouped_by_variant_with_one_single_thread_run_each() -> None:
    variants = (Variant("synthetic", ()), Variant("real-only", REAL_ONLY))
    runs = plan_runs(variants, seeds=[0, 1])
    assert [run.name for run in runs] == [
        "synthetic-s0",
        "synthetic-s1",
        "synthetic-s0-t1",
        "real-only-s0",
        "real-only-s1",
        "real-only-s0-t1",
    ]
    assert runs[4].overrides == (*REAL_ONLY, "train.seed=1")


def test_summary_gives_mean_and_sample_std_and_the_verdict() -> None:
    results = {
        "synthetic": [{"macro_f1": 0.60}, {"macro_f1": 0.62}, {"macro_f1": 0.64}],
        "real-only": [{"macro_f1": 0.50}, {"macro_f1": 0.50}, {"macro_f1": 0.50}],
    }
    summaries = summarise(results, keys=["macro_f1"])
    assert summaries[0].mean["macro_f1"] == pytest.approx(0.62)
    assert summaries[0].std["macro_f1"] == pytest.approx(0.02)
    assert summaries[1].std["macro_f1"] == 0.0
    assert markdown_table(summaries, keys=["macro_f1"]).splitlines()[2] == "| synthetic | 3 | 0.620 ± 0.020 |"
    assert gain_verdicts(summaries, "synthetic", "real-only", ["macro_f1"]) == [
        "macro_f1: synthetic - real-only = +0.120 (2 std = 0.040): beyond noise"
    ]


def test_a_variants_own_overrides_win_over_the_common_ones() -> None:
    run = plan_runs([Variant("real-only", ("generate.per_class=0", "merge.sources=[real]"))], [3], one_thread=False)[0]
    settings = run.settings(["generate.per_class=500", "train.epochs=4"])
    assert settings == ["generate.per_class=0", "train.epochs=4", "merge.sources=[real]", "train.seed=3"]


def test_a_force_added_override_is_the_same_key_as_a_plain_one() -> None:
    run = plan_runs([Variant("counts", ("++generate.counts={disgust: 9}",))], [0], one_thread=False)[0]
    settings = run.settings(["generate.counts={fear: 5}", "++train.epochs=4"])
    assert settings == ["++generate.counts={disgust: 9}", "++train.epochs=4", "train.seed=0"]


def test_the_default_variants_are_the_committed_params_and_the_real_only_presets() -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    variants = select_variants(DEFAULT_VARIANT_NAMES, preset_variants(REPO_ROOT / "presets", params))
    assert variants == (
        COMMITTED,
        Variant("real-only", REAL_ONLY),
        Variant("class-weighted", (*REAL_ONLY, "train.class_weighting=balanced")),
    )


def test_variants_are_selected_by_name_in_the_order_given() -> None:
    variants = (COMMITTED, Variant("real-only", REAL_ONLY))
    chosen = select_variants(["real-only", "synthetic"], variants)
    assert [variant.name for variant in chosen] == ["real-only", "synthetic"]
    with pytest.raises(ValueError, match=r"unknown variant 'gan-only'.*real-only"):
        select_variants(["gan-only"], variants)
