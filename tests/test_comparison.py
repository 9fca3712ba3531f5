"""Planning and summarising the synthetic-vs-real comparison."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from fersynth.errors import FersynthError, ParamsError
from fersynth.tools.compare_run import (
    ComparisonPlan,
    check_plan,
    comparison_report,
    plan_comparison,
    write_records,
)
from fersynth.tools.comparison import (
    COMMITTED,
    DEFAULT_VARIANT_NAMES,
    SEED_KEYS,
    Variant,
    extra_set_keys,
    flatten_metrics,
    gain_verdicts,
    markdown_table,
    plan_runs,
    preset_variants,
    reported_keys,
    run_figures,
    select_variants,
    stages_with_changed_params,
    summarise,
    table_keys,
)
from fersynth.tools.experiments import start_workers_in_turn, threads_per_job, wait_for

from .conftest import REPO_ROOT

REAL_ONLY = ("train_gan.epochs=0", "generate.target=per_class", "generate.per_class=0", "merge.sources=[real,offline]")


def test_runs_are_grouped_by_variant_and_seeds_set_the_chosen_key() -> None:
    variants = (Variant("synthetic", ()), Variant("real-only", REAL_ONLY))
    runs = plan_runs(variants, seeds=[0, 1], seed_key=SEED_KEYS["classifier"])
    assert [run.name for run in runs] == ["synthetic-s0", "synthetic-s1", "real-only-s0", "real-only-s1"]
    assert runs[3].overrides == (*REAL_ONLY, "train.seed=1")
    whole = plan_runs(variants[:1], seeds=[2], seed_key=SEED_KEYS["pipeline"])
    assert whole[0].overrides == ("common.seed=2",)


def test_folds_multiply_the_runs_and_rotate_the_test_fold() -> None:
    runs = plan_runs([Variant("real-only", ())], seeds=[0, 1], seed_key="train.seed", folds=3)
    assert [run.name for run in runs] == [f"real-only-s{seed}-f{fold}" for seed in (0, 1) for fold in range(3)]
    assert runs[4].overrides == ("train.seed=1", "fetch.folds=3", "fetch.fold=1")
    assert plan_runs([Variant("x", ())], seeds=[0], seed_key="train.seed", folds=1)[0].name == "x-s0"


def test_table_columns_lead_with_the_rare_classes_and_add_one_group_per_extra_test_set() -> None:
    classes = ("angry", "disgust", "fear", "happy")
    assert reported_keys(classes) == (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "recall_disgust",
        "recall_fear",
        "recall_angry",
        "recall_happy",
    )
    evaluated = {"accuracy": 0.5, "recall_angry": 0.4, "kdef": {"accuracy": 0.3, "macro_f1": 0.2, "images": 70}}
    flat = flatten_metrics(evaluated)
    assert flat == {"accuracy": 0.5, "recall_angry": 0.4, "kdef.accuracy": 0.3, "kdef.macro_f1": 0.2}
    assert extra_set_keys([flat, flat | {"jaffe.accuracy": 0.1}]) == ("kdef.accuracy", "kdef.macro_f1")
    summaries = summarise({"real-only": [flat]}, ["accuracy", "kdef.accuracy"])
    assert markdown_table(summaries, ["accuracy", "kdef.accuracy"]).splitlines()[0] == (
        "| variant | n | accuracy | kdef accuracy |"
    )


def test_the_stages_whose_params_a_run_changes_come_from_dvc_lock() -> None:
    lock = {
        "stages": {
            "fetch": {"params": {"params.yaml": {"common.seed": 0, "fetch": {"source": "demo"}}}},
            "train": {"params": {"params.yaml": {"train.seed": None, "train.lr": 0.001}}},
            "report": {"cmd": "no params"},
        }
    }
    params = {"common": {"seed": 0}, "fetch": {"source": "demo"}, "train": {"seed": 3, "lr": 0.001}}
    assert stages_with_changed_params(lock, params) == ["train"]
    assert stages_with_changed_params(lock, params | {"fetch": {"source": "kdef"}}) == ["fetch", "train"]


def test_parallel_jobs_share_the_cores() -> None:
    assert threads_per_job(jobs=2, cores=16) == 8
    assert threads_per_job(jobs=3, cores=2) == 1


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
    run = plan_runs([Variant("real-only", ("generate.per_class=0", "merge.sources=[real]"))], [3], "train.seed")[0]
    settings = run.settings(["generate.per_class=500", "train.epochs=4"])
    assert settings == ["generate.per_class=0", "train.epochs=4", "merge.sources=[real]", "train.seed=3"]


def test_a_force_added_override_is_the_same_key_as_a_plain_one() -> None:
    run = plan_runs([Variant("counts", ("++generate.counts={disgust: 9}",))], [0], "train.seed")[0]
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


def test_waiting_ends_when_every_task_finished_or_left_the_queue() -> None:
    polls = iter(
        [
            [{"rev": "a", "name": "x-s0", "status": "Running"}, {"rev": "b", "name": "y-s0", "status": "Queued"}],
            [{"rev": "a", "name": "x-s0", "status": "Success"}, {"rev": "b", "name": "y-s0", "status": "Queued"}],
            [{"rev": "a", "name": "x-s0", "status": "Success"}, {"rev": "old", "name": "y-s0", "status": "Failed"}],
        ]
    )
    reported: list[tuple[str, str]] = []
    finished = wait_for(lambda: next(polls), {"a", "b"}, lambda *pair: reported.append(pair), lambda: 1, poll_seconds=0)
    assert finished == {"x-s0": "Success", "y-s0": "Removed"}  # an older task of the same name is not ours
    assert reported == [("x-s0", "Success"), ("y-s0", "Removed")]


def test_waiting_on_queued_runs_that_no_worker_will_take_is_an_error_naming_them() -> None:
    stuck = [{"rev": "a", "name": "x-s0", "status": "Success"}, {"rev": "b", "name": "y-s0", "status": "Queued"}]
    with pytest.raises(FersynthError, match=r"no DVC queue worker is running.*still queued: y-s0"):
        wait_for(lambda: stuck, {"a", "b"}, lambda *pair: None, lambda: 0, poll_seconds=0, stall_seconds=0)


def test_a_queued_run_behind_a_running_one_is_not_a_stall() -> None:
    polls = iter(
        [
            [{"rev": "a", "name": "x-s0", "status": "Running"}, {"rev": "b", "name": "y-s0", "status": "Queued"}],
            [{"rev": "a", "name": "x-s0", "status": "Success"}, {"rev": "b", "name": "y-s0", "status": "Success"}],
        ]
    )
    finished = wait_for(lambda: next(polls), {"a", "b"}, lambda *pair: None, lambda: 0, poll_seconds=0, stall_seconds=0)
    assert finished == {"x-s0": "Success", "y-s0": "Success"}


class FakeQueue:
    """A started worker answers after `answer_after` polls, then takes one waiting task."""

    def __init__(self, tasks: int, answer_after: int) -> None:
        self.waiting, self.answer_after = tasks, answer_after
        self.answering_count = 0
        self.polls_until_answer: int | None = None
        self.answering_at_each_start: list[int] = []

    def start(self, count: int) -> None:
        assert count == self.answering_count + 1
        self.answering_at_each_start.append(self.answering_count)
        self.polls_until_answer = self.answer_after

    def answering(self) -> int:
        if self.polls_until_answer == 0:
            self.answering_count += 1
            self.waiting = max(0, self.waiting - 1)
            self.polls_until_answer = None
        elif self.polls_until_answer is not None:
            self.polls_until_answer -= 1
        return self.answering_count


def test_each_worker_starts_only_once_the_ones_before_it_answer() -> None:
    queue = FakeQueue(tasks=5, answer_after=3)
    started = start_workers_in_turn(queue.start, queue.answering, lambda: queue.waiting, jobs=3, poll_seconds=0)
    assert started == 3
    assert queue.answering_at_each_start == [0, 1, 2]  # worker k was started with workers 1..k-1 answering


def test_no_more_workers_start_than_there_are_tasks_waiting() -> None:
    queue = FakeQueue(tasks=1, answer_after=0)
    started = start_workers_in_turn(queue.start, queue.answering, lambda: queue.waiting, jobs=4, poll_seconds=0)
    assert started == 1 and queue.answering_at_each_start == [0]


def test_a_worker_that_never_answers_is_an_error() -> None:
    with pytest.raises(FersynthError, match="worker 1 did not answer"):
        start_workers_in_turn(lambda count: None, lambda: 0, lambda: 2, jobs=2, timeout_seconds=0, poll_seconds=0)


def test_a_run_reports_its_val_teacher_and_cost_figures_beside_the_test_ones() -> None:
    synthetic = {
        "metrics/evaluate.json": {
            **dict.fromkeys(["accuracy", "balanced_accuracy", "macro_f1", "recall_disgust", "recall_happy"], 0.6),
            "dev": {"accuracy": 0.5},
        },
        "metrics/train.json": {"best_val_macro_f1": 0.63, "best_val_accuracy": 0.67, "epochs_reached": 35.5},
        "metrics/diagnostics/train.json": {"training_seconds": 1800.0, "epochs": 36},
        "metrics/calibrate.json": {"teacher_val_macro_f1": 0.6},
    }
    figures = run_figures(synthetic)
    assert figures["train_minutes"] == 30.0 and figures["epochs_reached"] == 35.5
    assert figures["teacher_val_macro_f1"] == 0.6 and figures["best_val_macro_f1"] == 0.63
    # A real-only run trained no teacher; a run from before epochs_reached was recorded counts its epochs.
    real_only = synthetic | {
        "metrics/calibrate.json": {"teacher_val_macro_f1": float("nan")},
        "metrics/train.json": {"best_val_macro_f1": 0.62, "best_val_accuracy": 0.66},
    }
    assert run_figures(real_only)["epochs_reached"] == 36.0
    keys = table_keys(["disgust", "happy"], [figures])
    assert keys[-5:] == (
        "best_val_macro_f1",
        "best_val_accuracy",
        "teacher_val_macro_f1",
        "train_minutes",
        "epochs_reached",
    )
    assert "dev.accuracy" in keys
    summaries = summarise({"synthetic": [figures], "real-only": [run_figures(real_only)] * 2}, keys)
    table = markdown_table(summaries, keys).splitlines()
    assert table[0].endswith("| val macro-F1 | val accuracy | teacher val macro-F1 | train min | epochs |")
    assert table[2].endswith("| 0.600 ± 0.000 | 30.000 ± 0.000 | 35.500 ± 0.000 |")
    assert table[3].endswith("| — | 30.000 ± 0.000 | 36.000 ± 0.000 |")  # two runs without a teacher


def test_a_comparison_is_tested_against_real_only_unless_another_baseline_is_named(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    presets = tmp_path / "presets"
    presets.mkdir()
    shutil.copy(REPO_ROOT / "presets" / "real-only.yaml", presets)
    plan = plan_comparison(["synthetic", "real-only"], params, presets, [0, 1], "pipeline", 0, None)
    assert plan.baseline == "real-only" and plan.vary == "pipeline"
    assert [run.name for run in plan.runs] == ["synthetic-s0", "synthetic-s1", "real-only-s0", "real-only-s1"]
    assert plan.runs[0].overrides == ("common.seed=0",)
    assert plan_comparison(["synthetic"], params, presets, [0], "classifier", 0, None).baseline == "synthetic"
    with pytest.raises(ParamsError, match="--baseline 'real-only' is not among the compared variants"):
        plan_comparison(["synthetic"], params, presets, [0], "classifier", 0, "real-only")
    with pytest.raises(ParamsError, match="unknown variant 'nope'"):
        plan_comparison(["nope"], params, presets, [0], "classifier", 0, None)


def test_a_dry_plan_prints_each_runs_command_and_names_the_run_a_bad_override_breaks(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    plan = ComparisonPlan(plan_runs([Variant("real-only", ("train.epochs=2",))], [0], "train.seed"), "classifier", "x")
    printed: list[str] = []
    check_plan(plan, ["fetch.folds=0"], tmp_path / "params.yaml", lambda path: None, printed.append)
    assert printed == [
        "1 runs planned; overrides for all: ['fetch.folds=0']",
        "real-only-s0: ok; params change for: none\n"
        "  dvc exp run --queue -n real-only-s0 -S fetch.folds=0 -S train.epochs=2 -S train.seed=0",
    ]

    def refuse_two_epochs(path: Path) -> None:
        if yaml.safe_load(path.read_text())["train"]["epochs"] == 2:
            raise ParamsError("train.epochs: too few")

    with pytest.raises(ParamsError, match=r"real-only-s0: train\.epochs: too few"):
        check_plan(plan, [], tmp_path / "params.yaml", refuse_two_epochs, printed.append)


def test_the_comparison_report_tests_every_other_variant_against_the_baseline(tmp_path: Path) -> None:
    variants = [Variant("synthetic", ()), Variant("real-only", REAL_ONLY)]
    plan = ComparisonPlan(plan_runs(variants, [0, 1], "train.seed", folds=2), "classifier", "real-only")
    figures = {"accuracy": 0.5, "macro_f1": 0.4}
    summaries = summarise({"synthetic": [figures] * 4, "real-only": [figures] * 4}, list(figures))
    text = comparison_report(summaries, list(figures), plan)
    assert "mean ± sample std over 2 seeds × 2 folds" in text and "Seeds vary the classifier alone" in text
    assert "synthetic vs real-only (beyond noise" in text and "real-only vs" not in text
    assert "- macro_f1: synthetic - real-only = +0.000 (2 std = 0.000): within noise" in text

    write_records(tmp_path / "out" / "compare.jsonl", plan.runs[:1], {"synthetic-s0-f0": {"metrics/a.json": {}}})
    record = json.loads((tmp_path / "out" / "compare.jsonl").read_text())
    assert record == {
        "run": "synthetic-s0-f0",
        "variant": "synthetic",
        "overrides": ["train.seed=0", "fetch.folds=2", "fetch.fold=0"],
        "metrics/a.json": {},
    }
