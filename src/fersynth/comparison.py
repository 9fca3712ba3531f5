"""Does synthetic data help, beyond noise? Variants of the pipeline run over classifier seeds, summarised.

A variant is a named set of params overrides (`-S key=value`, as `dvc exp run` takes them): the
committed params (`synthetic`) or a preset (`presets/<name>.yaml`, see `fersynth.presets`). Each
runs once per classifier seed (`train.seed`, so the data, the GAN and the teachers stay as they are)
and once more on one thread, since thread count alone changes floating-point sums. This module plans
the runs and summarises their metrics; `benchmarks/compare_synthetic.py` executes them with DVC.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fersynth.presets import list_presets, load_preset, preset_overrides, validate_preset

# Reported per variant, in this order (keys of metrics/evaluate.json).
REPORTED = ("accuracy", "macro_f1", "balanced_accuracy", "recall_disgust", "recall_fear")


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


@dataclass(frozen=True)
class Run:
    variant: Variant
    seed: int
    threads: int | None  # None: torch's default (all cores)

    @property
    def name(self) -> str:
        suffix = f"-t{self.threads}" if self.threads else ""
        return f"{self.variant.name}-s{self.seed}{suffix}"

    @property
    def overrides(self) -> tuple[str, ...]:
        return (*self.variant.overrides, f"train.seed={self.seed}")

    def settings(self, common: Sequence[str]) -> list[str]:
        """`common` overrides (given for every run) with this run's own on top: for a key set by both,
        the run's value wins, so real-only still generates nothing when `common` sets a generate target."""
        merged = {_override_key(setting): setting for setting in (*common, *self.overrides)}
        return list(merged.values())


def _override_key(setting: str) -> str:
    """The dotted key an override sets, without Hydra's `+`/`++` (add or force-add) prefix."""
    return setting.partition("=")[0].lstrip("+")


def plan_runs(variants: Sequence[Variant], seeds: Sequence[int], one_thread: bool = True) -> list[Run]:
    """Every variant at every seed, grouped by variant so upstream stages rerun once per variant.

    With `one_thread`, each variant also runs its first seed on one thread: the spread that
    thread count alone causes, next to the spread over seeds.
    """
    runs = []
    for variant in variants:
        runs += [Run(variant, seed, None) for seed in seeds]
        if one_thread and seeds:
            runs.append(Run(variant, seeds[0], 1))
    return runs


@dataclass(frozen=True)
class Summary:
    variant: str
    runs: int
    mean: dict[str, float]
    std: dict[str, float]  # sample standard deviation over the seeds (0 for one run)


def summarise(results: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str] = REPORTED) -> list[Summary]:
    """Mean and sample std of each key over the runs of each variant (variant name -> its runs' metrics)."""
    summaries = []
    for variant, runs in results.items():
        columns = {key: [float(run[key]) for run in runs] for key in keys}
        summaries.append(
            Summary(
                variant=variant,
                runs=len(runs),
                mean={key: statistics.fmean(values) for key, values in columns.items()},
                std={key: statistics.stdev(values) if len(values) > 1 else 0.0 for key, values in columns.items()},
            )
        )
    return summaries


def markdown_table(summaries: Sequence[Summary], keys: Sequence[str] = REPORTED) -> str:
    """One row per variant, each cell `mean ± std`."""
    header = ["variant", "runs", *keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        cells = [f"{summary.mean[key]:.3f} ± {summary.std[key]:.3f}" for key in keys]
        lines.append("| " + " | ".join([summary.variant, str(summary.runs), *cells]) + " |")
    return "\n".join(lines)


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
