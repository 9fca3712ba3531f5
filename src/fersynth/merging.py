"""Build the training set from real, offline-augmented and calibrated synthetic images under a policy.

Only real *training* images enter, and every derived image must trace back to one: a variant of a
validation or test image would leak evaluation data into training, so it is an error, never a warning.

Policies (`MergeConfig.policy`), applied per class:
- `all`: every usable row of the listed sources;
- `balance_to_max`: synthetic images fill each class up to the largest real+offline class count;
- `per_class`: exactly `per_class` images per class, real first, then offline, then synthetic;
- `max_synthetic_share`: like `balance_to_max`, but synthetic images never exceed that share of a class;
- `ratio`: every real and listed offline image, plus `synthetic_per_real` synthetic images per real train image
  of the class (rounded half up; 1.0 is real:synthetic 1:1, the GANmut thesis's hybrid set).
Synthetic images are taken highest teacher confidence first (ties by id, so the choice is deterministic);
real and offline images are subsampled with the seed only when `per_class` asks for fewer than there are.
A class that cannot reach its target keeps what exists and the gap is logged and reported as its shortfall.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fersynth.config import MergeConfig
from fersynth.datasets.format import (
    EDITED_SOURCES,
    MANIFEST_FILE,
    SYNTHETIC_SOURCES,
    Dataset,
    concatenate,
)
from fersynth.errors import DataError
from fersynth.registry import Registry

log = logging.getLogger(__name__)

# The three pools a class plan draws from; SYNTHETIC pools every listed synthetic source (gan, diffusion, edit).
REAL, OFFLINE, SYNTHETIC = "real", "offline", "synthetic"
MERGE_SOURCES = (REAL, OFFLINE, SYNTHETIC)
PlotRow = dict[str, str | int]


@dataclass(frozen=True)
class ClassPlan:
    """How many rows of each source one class takes, and how far it stays below its target."""

    real: int
    offline: int
    synthetic: int
    shortfall: int = 0


@dataclass(frozen=True)
class MergeResult:
    """The merged training rows plus per-class counts per source, before and after the policy."""

    dataset: Dataset
    available: Mapping[str, Mapping[str, int]]  # source -> class -> usable rows before the policy
    selected: Mapping[str, Mapping[str, int]]  # source -> class -> rows in the merged set
    shortfall: Mapping[str, int]  # class -> images missing to reach the policy's target

    def by_source(self) -> dict[str, dict[str, int]]:
        """Synthetic rows in the merged set per manifest source and class (every source of the format)."""
        merged = self.dataset
        return {
            source: {
                name: int(((merged.sources == source) & (merged.labels == index)).sum())
                for index, name in enumerate(merged.classes)
            }
            for source in SYNTHETIC_SOURCES
        }

    def before(self) -> dict[str, int]:
        """Real + offline rows per class (listed sources only): the set synthetic images are added to."""
        return {name: self.available[REAL][name] + self.available[OFFLINE][name] for name in self.dataset.classes}

    def after(self) -> dict[str, int]:
        return {name: sum(self.selected[source][name] for source in MERGE_SOURCES) for name in self.dataset.classes}

    def metrics(self) -> dict[str, int | float]:
        """Flat metrics: per class before/synthetic/after/shortfall, totals and the synthetic share."""
        before, after = self.before(), self.after()
        flat: dict[str, int | float] = {}
        for prefix, counts in (
            ("before", before),
            ("synthetic", self.selected[SYNTHETIC]),
            ("after", after),
            ("shortfall", self.shortfall),
        ):
            flat.update({f"{prefix}_{name}": int(counts[name]) for name in self.dataset.classes})
        total_after = sum(after.values())
        synthetic_total = sum(self.selected[SYNTHETIC].values())
        flat["total_before"] = sum(before.values())
        flat["total_after"] = total_after
        flat.update({f"source_{source}": sum(self.selected[source].values()) for source in (REAL, OFFLINE)})
        for source, counts in self.by_source().items():
            flat[f"source_{source}"] = sum(counts.values())
            flat.update({f"source_{source}_{name}": count for name, count in counts.items()})
        flat["synthetic_share"] = synthetic_total / total_after if total_after else 0.0
        return flat

    def counts_plot_rows(self) -> list[PlotRow]:
        """Rows for DVC's bar_horizontal template: one per class and set (before / after)."""
        return [
            {"class": name, "count": int(counts[name]), "set": label}
            for label, counts in (("before", self.before()), ("after", self.after()))
            for name in self.dataset.classes
        ]


def merge_training_set(
    real: Dataset,
    offline: Dataset,
    synthetic: Dataset,
    config: MergeConfig,
    seed: int,
    names: Mapping[str, str] | None = None,
) -> MergeResult:
    """Merge the listed sources under `config.policy`; `names` label the inputs in error messages."""
    names = {REAL: "real set", OFFLINE: "offline set", SYNTHETIC: "synthetic set", **(names or {})}
    pools = _usable_pools(real, offline, synthetic, config, names)
    available = {source: pool.class_counts() for source, pool in pools.items()}
    target = MERGE_POLICIES[config.policy].target(config, available, real.classes)
    plans = {name: plan_class(available, name, target, config) for name in real.classes}
    parts = _select(pools, plans, seed)
    for name, plan in plans.items():
        if plan.shortfall:
            wanted = plan.real + plan.offline + plan.synthetic + plan.shortfall  # the class's own target
            log.warning("class %s: %d images short of the %s target %d", name, plan.shortfall, config.policy, wanted)
    # Empty parts are left out so an empty input of another image shape cannot break the stacking.
    merged = concatenate([part for part in parts.values() if len(part)] or [parts[REAL]])
    merged = replace(merged, splits=np.full(len(merged), "train", dtype=object))
    result = MergeResult(
        dataset=merged,
        available=available,
        selected={source: part.class_counts() for source, part in parts.items()},
        shortfall={name: plan.shortfall for name, plan in plans.items()},
    )
    log.info("merged %d training images (%s policy): %s", len(merged), config.policy, result.after())
    return result


def check_origins(real: Dataset, derived: Dataset, where: str, allow_unknown: bool) -> None:
    """Every derived row must come from a real training image, else the merge would leak val/test data.

    `allow_unknown` admits rows whose origin is not a real image at all (a GAN sample derives from none).
    """
    split_of = dict(zip(real.ids, real.splits, strict=True))
    offenders = []
    for row_id, origin in zip(derived.ids, derived.origins, strict=True):
        split = split_of.get(origin)
        if split == "train" or (split is None and allow_unknown):
            continue
        offenders.append(f"{row_id!r} (origin {origin!r}: {f'a {split} image' if split else 'unknown'})")
    if offenders:
        shown = ", ".join(offenders[:5]) + (f" and {len(offenders) - 5} more" if len(offenders) > 5 else "")
        raise DataError(
            f"{where}: {len(offenders)} image(s) do not derive from a real training image: {shown}; "
            "derivatives of validation/test images must never enter training"
        )


Counts = Mapping[str, Mapping[str, int]]  # source -> class -> rows available


@dataclass(frozen=True)
class MergePolicy:
    """How many rows every class gets (`target`, None: no common one) and how its sources fill them (`plan`)."""

    target: Callable[[MergeConfig, Counts, Sequence[str]], int | None]
    plan: Callable[[int, int, int, int | None, MergeConfig], ClassPlan]  # (real, offline, synthetic, target, config)


MERGE_POLICIES: Registry[MergePolicy] = Registry("merge policy", "merge.policy")


def plan_class(available: Counts, name: str, target: int | None, config: MergeConfig) -> ClassPlan:
    """Rows per source for class `name` under the policy; `target` is None for `all` and `ratio`."""
    real, offline, synthetic = (available[source][name] for source in MERGE_SOURCES)
    return MERGE_POLICIES[config.policy].plan(real, offline, synthetic, target, config)


def _fill(real: int, offline: int, synthetic: int, target: int, synthetic_cap: int | None = None) -> ClassPlan:
    """All real and offline rows, then synthetic ones up to the target (and the cap)."""
    room = max(0, target - real - offline)
    if synthetic_cap is not None:
        room = min(room, synthetic_cap)
    taken = min(synthetic, room)
    return ClassPlan(real, offline, taken, shortfall=max(0, target - real - offline - taken))


def _largest_real_class(config: MergeConfig, available: Counts, classes: Sequence[str]) -> int:
    largest_base = max(available[REAL][name] + available[OFFLINE][name] for name in classes)
    if largest_base == 0:
        # Neither real nor offline listed (a synthetic-only experiment): balance to the largest synthetic class.
        return max(available[SYNTHETIC].values())
    return largest_base


def _fill_to_target(real: int, offline: int, synthetic: int, target: int | None, config: MergeConfig) -> ClassPlan:
    assert target is not None  # every policy that fills gives a target
    return _fill(real, offline, synthetic, target)


def _no_common_target(config: MergeConfig, available: Counts, classes: Sequence[str]) -> None:
    """all and ratio: each class's count follows from its own rows."""
    return None


def _take_everything(real: int, offline: int, synthetic: int, target: int | None, config: MergeConfig) -> ClassPlan:
    return ClassPlan(real, offline, synthetic)


def _synthetic_per_real(real: int, offline: int, synthetic: int, target: int | None, config: MergeConfig) -> ClassPlan:
    """ratio: every real and offline row, and round(synthetic_per_real × real) synthetic ones, as many as exist."""
    wanted = math.floor(config.synthetic_per_real * real + 0.5 + 1e-9)  # half up; epsilon: 0.58 * 25 must give 15
    taken = min(synthetic, wanted)
    return ClassPlan(real, offline, taken, shortfall=wanted - taken)


def _per_class_target(config: MergeConfig, available: Counts, classes: Sequence[str]) -> int:
    return config.per_class


def _real_first_up_to_target(
    real: int, offline: int, synthetic: int, target: int | None, config: MergeConfig
) -> ClassPlan:
    """per_class: real rows count toward the target too, then offline, then synthetic."""
    assert target is not None
    real = min(real, target)
    return _fill(real, min(offline, target - real), synthetic, target)


def _within_synthetic_share(
    real: int, offline: int, synthetic: int, target: int | None, config: MergeConfig
) -> ClassPlan:
    assert target is not None
    share = config.max_synthetic_share
    cap = _synthetic_cap(real + offline, share) if share < 1.0 else None
    return _fill(real, offline, synthetic, target, cap)


MERGE_POLICIES.register("all")(MergePolicy(_no_common_target, _take_everything))
MERGE_POLICIES.register("balance_to_max")(MergePolicy(_largest_real_class, _fill_to_target))
MERGE_POLICIES.register("per_class")(MergePolicy(_per_class_target, _real_first_up_to_target))
MERGE_POLICIES.register("max_synthetic_share")(MergePolicy(_largest_real_class, _within_synthetic_share))
MERGE_POLICIES.register("ratio")(MergePolicy(_no_common_target, _synthetic_per_real))


def _synthetic_cap(base: int, share: float) -> int:
    """Largest k with k / (base + k) <= share, for share < 1."""
    return math.floor(share * base / (1.0 - share) + 1e-9)  # epsilon: 0.5 * 10 / 0.5 must stay 10


def _usable_pools(
    real: Dataset, offline: Dataset, synthetic: Dataset, config: MergeConfig, names: Mapping[str, str]
) -> dict[str, Dataset]:
    """Rows each pool may contribute: real train rows, checked offline variants, checked synthetic rows."""
    listed_synthetic = [source for source in config.sources if source in SYNTHETIC_SOURCES]
    pools = {
        REAL: real.subset((real.splits == "train") & (real.sources == REAL)),
        OFFLINE: _rows_of_sources(offline, (OFFLINE,), names[OFFLINE]),
        SYNTHETIC: _rows_of_sources(synthetic, SYNTHETIC_SOURCES, names[SYNTHETIC]),
    }
    pools[SYNTHETIC] = pools[SYNTHETIC].subset(np.isin(pools[SYNTHETIC].sources.astype(str), listed_synthetic))
    listed = {
        source: pool
        for source, pool in pools.items()
        if source in config.sources or (source == SYNTHETIC and listed_synthetic)
    }
    shapes = {source: pool.images.shape[1:] for source, pool in listed.items() if len(pool)}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{names[source]} {'×'.join(map(str, shape))}" for source, shape in shapes.items())
        raise DataError(f"image shapes differ between the merged sources: {described}")
    if OFFLINE in listed:
        check_origins(real, listed[OFFLINE], f"{names[OFFLINE]}/{MANIFEST_FILE}", allow_unknown=False)
    if SYNTHETIC in listed:
        where = f"{names[SYNTHETIC]}/{MANIFEST_FILE}"
        edits = np.isin(listed[SYNTHETIC].sources.astype(str), EDITED_SOURCES)
        # An edit is a real face changed: it must name its real training source, never a made-up one.
        check_origins(real, listed[SYNTHETIC].subset(edits), where, allow_unknown=False)
        check_origins(real, _claims_an_origin(listed[SYNTHETIC].subset(~edits)), where, allow_unknown=True)
    return {
        source: pool if source in listed else pool.subset(np.zeros(0, dtype=np.int64)) for source, pool in pools.items()
    }


def _rows_of_sources(dataset: Dataset, allowed: Sequence[str], where: str) -> Dataset:
    """All rows, refusing any whose source does not belong in this input (a mix-up of stage outputs)."""
    wrong = ~np.isin(dataset.sources.astype(str), list(allowed))
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise DataError(
            f"{where}/{MANIFEST_FILE}: {int(wrong.sum())} row(s) of source {sorted(set(dataset.sources[wrong]))} "
            f"(first: {dataset.ids[row]!r}); this input holds only {', '.join(allowed)} rows"
        )
    return dataset


def _claims_an_origin(dataset: Dataset) -> Dataset:
    """Drawn rows that name a source image; a sample drawn from noise names itself, its source or nothing."""
    own_or_none = (dataset.origins == dataset.ids) | (dataset.origins == dataset.sources) | (dataset.origins == "")
    return dataset.subset(~own_or_none)


def _select(pools: Mapping[str, Dataset], plans: Mapping[str, ClassPlan], seed: int) -> dict[str, Dataset]:
    classes = next(iter(pools.values())).classes
    chosen: dict[str, list[np.ndarray]] = {source: [] for source in MERGE_SOURCES}
    for index, name in enumerate(classes):
        plan = plans[name]
        # One generator per class: changing one class's data does not reshuffle the others.
        rng = np.random.default_rng([seed, index])
        for source, count in ((REAL, plan.real), (OFFLINE, plan.offline)):
            members = np.flatnonzero(pools[source].labels == index)
            if count < len(members):
                members = np.sort(rng.choice(members, size=count, replace=False))
            chosen[source].append(members)
        chosen[SYNTHETIC].append(_most_confident(pools[SYNTHETIC], index, plan.synthetic))
    return {source: pools[source].subset(np.concatenate(rows).astype(np.int64)) for source, rows in chosen.items()}


def _most_confident(pool: Dataset, label: int, count: int) -> np.ndarray:
    """Indices of the `count` highest-confidence rows of class `label` (missing confidence ranks last)."""
    members = np.flatnonzero(pool.labels == label)
    confidence = np.nan_to_num(pool.confidence[members].astype(np.float64), nan=-np.inf)
    ranked = members[np.lexsort((pool.ids[members].astype(str), -confidence))]
    return np.sort(ranked[:count])
