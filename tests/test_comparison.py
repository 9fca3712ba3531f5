"""Planning and summarising the synthetic-vs-real comparison."""

from __future__ import annotations

import pytest

from fersynth.comparison import (
    REAL_ONLY,
    Variant,
    gain_verdicts,
    markdown_table,
    plan_runs,
    select_variants,
    summarise,
)


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


def test_variants_are_selected_by_name_in_the_order_given() -> None:
    chosen = select_variants(["real-only", "synthetic"])
    assert [variant.name for variant in chosen] == ["real-only", "synthetic"]
    with pytest.raises(ValueError, match=r"unknown variant 'gan-only'.*real-only"):
        select_variants(["gan-only"])
