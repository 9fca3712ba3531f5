"""Does synthetic data help, beyond noise? Variants of the pipeline run over seeds (and folds), summarised.

A variant is a named set of params overrides (`-S key=value`, as `dvc exp run` takes them): the
committed params (`synthetic`) or a preset (`presets/<name>.yaml`, see `fersynth.tools.presets`). Each
runs once per seed, varying the classifier alone (`train.seed`) or the whole pipeline (`common.seed`),
and with k-fold once per test fold. This module plans the runs and summarises their metrics;
`fersynth.tools.experiments` queues and runs them with DVC, and `fersynth.tools.compare_run` joins the two
(`fersynth compare`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fersynth.tools.presets import list_presets, load_preset, preset_overrides, validate_preset

# Overall figures of metrics/evaluate.json, in the table's order (balanced accuracy is UAR).
OVERALL = ("accuracy", "balanced_accuracy", "macro_f1")
# Classes whose recall leads the table: the rare ones synthetic data is meant to lift.
RARE_FIRST = ("disgust", "fear")
COLUMN_TITLES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "UAR",
    "macro_f1": "macro-F1",
    "best_val_macro_f1": "val macro-F1",
    "best_val_accuracy": "val accuracy",
    "teacher_val_macro_f1": "teacher val macro-F1",
    "train_minutes": "train min",
    "epochs_reached": "epochs",
}
# What each run cost and how it chose, after the test columns: the val figures that chose the checkpoint
# (PublicTest on FER2013: a lever is chosen on these, never on the test columns), the teachers' val macro-F1
# beside the student's, and the train stage's minutes and epochs (equal-cost comparisons under a time budget).
RUN_KEYS = ("best_val_macro_f1", "best_val_accuracy", "teacher_val_macro_f1", "train_minutes", "epochs_reached")
# The metrics files a run's figures come from, relative to the repo.
RESULT_FILES = (
    "metrics/evaluate.json",
    "metrics/merge.json",
    "metrics/calibrate.json",
    "metrics/train.json",
    "metrics/diagnostics/train.json",
)


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]  # `key=value` settings on top of the committed params


# The committed params, as they are: the pipeline's own synthetic method.
COMMITTED = Variant("synthetic", ())
# Synthetic first: the GAN and the teachers train once, then the real-only presets reuse the data.
DEFAULT_VARIANT_NAMES = ("synthetic", "real-only", "class-weighted")


def preset_variants(presets_dir: Path, params: Mapping[str, Any]) -> tuple[Variant, ...]:
    """`synthetic` (the committed params) and every preset in `presets_dir`, as overrides of `params`.

    Every preset is checked against `params` here, so a broken one fails before any run starts.
    """
    variants = [COMMITTED]
    for name, path in list_presets(presets_dir).items():
        preset = load_preset(path)
        validate_preset(params, preset, source=f"{path} on the compared params")
        variants.append(Variant(name, tuple(preset_overrides(preset, params))))
    return tuple(variants)


def select_variants(names: Sequence[str], variants: Sequence[Variant]) -> tuple[Variant, ...]:
    """The variants called `names`, in the order given; an unknown name is an error that lists the known ones."""
    by_name = {variant.name: variant for variant in variants}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown variant {unknown[0]!r}; variants are {list(by_name)}")
    return tuple(by_name[name] for name in names)


# What a comparison's seeds vary: the classifier alone (the data, the GAN and the teachers stay as they
# are, so their runs are shared) or every seeded stage of the pipeline.
SEED_KEYS: dict[str, str] = {"classifier": "train.seed", "pipeline": "common.seed"}


@dataclass(frozen=True)
class Run:
    variant: Variant
    seed: int
    seed_key: str  # a value of SEED_KEYS
    fold: int | None = None  # the test fold of k-fold cross-validation; None: the source's own split
    folds: int = 0

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"-f{self.fold}"
        return f"{self.variant.name}-s{self.seed}{fold}"

    @property
    def overrides(self) -> tuple[str, ...]:
        folds = () if self.fold is None else (f"fetch.folds={self.folds}", f"fetch.fold={self.fold}")
        return (*self.variant.overrides, f"{self.seed_key}={self.seed}", *folds)

    def settings(self, common: Sequence[str]) -> list[str]:
        """`common` overrides (given for every run) with this run's own on top: for a key set by both,
        the run's value wins, so real-only still generates nothing when `common` sets a generate target."""
        merged = {_override_key(setting): setting for setting in (*common, *self.overrides)}
        return list(merged.values())


def _override_key(setting: str) -> str:
    """The dotted key an override sets, without Hydra's `+`/`++` (add or force-add) prefix."""
    return setting.partition("=")[0].lstrip("+")


def plan_runs(variants: Sequence[Variant], seeds: Sequence[int], seed_key: str, folds: int = 0) -> list[Run]:
    """Every variant at every seed (and every fold, with `folds` >= 2), grouped by variant.

    Grouped, a variant's upstream stages run once and DVC's run cache serves its later runs.
    """
    fold_numbers: Sequence[int | None] = range(folds) if folds >= 2 else [None]
    return [
        Run(variant, seed, seed_key, fold, folds if fold is not None else 0)
        for variant in variants
        for seed in seeds
        for fold in fold_numbers
    ]


def reported_keys(classes: Sequence[str]) -> tuple[str, ...]:
    """The compare table's columns: overall figures, then per-class recall with the rare classes first."""
    rare_first = [name for name in RARE_FIRST if name in classes] + [name for name in classes if name not in RARE_FIRST]
    return (*OVERALL, *(f"recall_{name}" for name in rare_first))


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """evaluate.json's test figures as they are; each extra test set's as `<set>.<key>` (its column group)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat |= {f"{key}.{inner}": float(number) for inner, number in value.items() if inner in OVERALL}
        else:
            flat[key] = float(value)
    return flat


def run_figures(files: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """One run's figures for the table: its test metrics (`flatten_metrics`) and its RUN_KEYS (nan when its files
    predate them, or when it trained no teacher)."""
    train = {**files.get("metrics/diagnostics/train.json", {}), **files.get("metrics/train.json", {})}
    seconds = train.get("training_seconds")
    found = {
        "best_val_macro_f1": train.get("best_val_macro_f1"),
        "best_val_accuracy": train.get("best_val_accuracy"),
        "teacher_val_macro_f1": files.get("metrics/calibrate.json", {}).get("teacher_val_macro_f1"),
        "train_minutes": None if seconds is None else float(seconds) / 60.0,
        "epochs_reached": train.get("epochs_reached", train.get("epochs")),
    }
    run_keys = {key: float("nan") if value is None else float(value) for key, value in found.items()}
    return flatten_metrics(files["metrics/evaluate.json"]) | run_keys


def extra_set_keys(runs: Iterable[Mapping[str, float]]) -> tuple[str, ...]:
    """The cross-dataset columns every run has, in the order the first run lists them."""
    runs = list(runs)
    if not runs:
        return ()
    shared = set.intersection(*(set(run) for run in runs))
    return tuple(key for key in runs[0] if "." in key and key in shared)


def table_keys(classes: Sequence[str], runs: Iterable[Mapping[str, float]]) -> tuple[str, ...]:
    """The columns of a table of `runs` (run_figures): test figures, extra test sets, then RUN_KEYS."""
    return (*reported_keys(classes), *extra_set_keys(runs), *RUN_KEYS)


@dataclass(frozen=True)
class Summary:
    variant: str
    runs: int
    mean: dict[str, float]
    std: dict[str, float]  # sample standard deviation over the seeds (0 for one run)


def summarise(results: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str]) -> list[Summary]:
    """Mean and sample std of each key over the runs of each variant (variant name -> its runs' metrics)."""
    summaries = []
    for variant, runs in results.items():
        columns = {key: [float(run[key]) for run in runs] for key in keys}
        summaries.append(
            Summary(
                variant=variant,
                runs=len(runs),
                mean={key: statistics.fmean(values) for key, values in columns.items()},
                std={key: _spread(values) for key, values in columns.items()},
            )
        )
    return summaries


def _spread(values: Sequence[float]) -> float:
    """Sample std; 0 for one run; nan where a run has no such figure (statistics.stdev fails on nan)."""
    if any(math.isnan(value) for value in values):
        return float("nan")
    return statistics.stdev(values) if len(values) > 1 else 0.0


def column_title(key: str) -> str:
    """`recall_disgust` -> `disgust`, `balanced_accuracy` -> `UAR`, `kdef.accuracy` -> `kdef accuracy`."""
    test_set, _, figure = key.rpartition(".")
    title = COLUMN_TITLES.get(figure, figure.removeprefix("recall_"))
    return f"{test_set} {title}" if test_set else title


def markdown_table(summaries: Sequence[Summary], keys: Sequence[str]) -> str:
    """One row per variant, each cell `mean ± std`; `n` counts its runs (seeds × folds)."""
    header = ["variant", "n", *(column_title(key) for key in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        cells = [_cell(summary.mean[key], summary.std[key]) for key in keys]
        lines.append("| " + " | ".join([summary.variant, str(summary.runs), *cells]) + " |")
    return "\n".join(lines)


def _cell(mean: float, std: float) -> str:
    """`mean ± std`, or a dash where the figure does not apply (no teacher) or the runs predate it."""
    return "—" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def gain_verdicts(summaries: Sequence[Summary], candidate: str, baseline: str, keys: Sequence[str]) -> list[str]:
    """For each key: the candidate's gain over the baseline and whether it exceeds twice the larger std."""
    by_name = {summary.variant: summary for summary in summaries}
    ours, theirs = by_name[candidate], by_name[baseline]
    verdicts = []
    for key in keys:
        gain = ours.mean[key] - theirs.mean[key]
        noise = 2 * max(ours.std[key], theirs.std[key])
        verdict = "beyond noise" if abs(gain) > noise else "within noise"
        verdicts.append(f"{key}: {candidate} - {baseline} = {gain:+.3f} (2 std = {noise:.3f}): {verdict}")
    return verdicts


def stages_with_changed_params(lock: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """Stages of a dvc.lock whose recorded params.yaml values differ from `params` (they rerun, and all after)."""
    changed = []
    for stage, entry in (lock.get("stages") or {}).items():
        recorded = (entry.get("params") or {}).get("params.yaml", {})
        if any(_lookup(params, key) != value for key, value in recorded.items()):
            changed.append(stage)
    return changed


def _lookup(params: Mapping[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
