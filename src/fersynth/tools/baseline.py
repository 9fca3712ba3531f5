"""Is a fresh run the committed baseline? Headline metrics within a tolerance, and no stale stage.

Pure functions over parsed JSON and dvc.lock mappings, so CI's check (`.ci/check_baseline.py`)
stays thin and the rules are unit-tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Largest difference allowed between a fresh `make run` and the committed headline metrics in the
# same environment (CPU model, thread count, library versions). Clean-shell runs of the demo on this
# project's 2-core machine gave identical metrics (docs/experiments.md "The committed baseline"); the margin only
# absorbs the 4th-decimal rounding.
TOLERANCE = 1.0e-4


def environment_differences(current: Mapping[str, Any], committed: Mapping[str, Any]) -> list[str]:
    """Recorded environment fields that differ: where they do, low bits and so training paths may differ."""
    return [
        f"{key}: {current.get(key)} now, {committed.get(key)} committed"
        for key in sorted(set(current) | set(committed))
        if current.get(key) != committed.get(key)
    ]


def metric_differences(
    current: Mapping[str, Any], committed: Mapping[str, Any], tolerance: float = TOLERANCE, prefix: str = ""
) -> list[str]:
    """One line per headline number that moved by more than `tolerance`, appeared or disappeared."""
    problems: list[str] = []
    for key in sorted(set(current) | set(committed)):
        name = f"{prefix}{key}"
        if key not in committed:
            problems.append(f"{name}: not in the committed baseline")
        elif key not in current:
            problems.append(f"{name}: committed but not produced")
        elif isinstance(committed[key], Mapping) and isinstance(current[key], Mapping):
            problems += metric_differences(current[key], committed[key], tolerance, prefix=f"{name}.")
        elif not _close(current[key], committed[key], tolerance):
            problems.append(f"{name}: {current[key]} now, {committed[key]} committed")
    return problems


def stale_stages(current_lock: Mapping[str, Any], committed_lock: Mapping[str, Any]) -> list[str]:
    """Stages whose command, code, data inputs or params differ from what the baseline was built with."""
    current, committed = current_lock.get("stages", {}), committed_lock.get("stages", {})
    # An upstream output that differs is the upstream stage's change (or a reproducibility
    # problem, which the metric comparison catches), not a stale baseline downstream.
    produced = {out["path"] for stage in current.values() for out in stage.get("outs", [])}
    stale = []
    for name in sorted(set(current) | set(committed)):
        if name not in current or name not in committed:
            stale.append(f"{name}: stage added or removed since the baseline")
            continue
        changed = [part for part in ("cmd", "params") if current[name].get(part) != committed[name].get(part)] + sorted(
            _changed_deps(current[name], committed[name]) - produced
        )
        if changed:
            stale.append(f"{name}: {', '.join(changed)} changed")
    return stale


def _changed_deps(current: Mapping[str, Any], committed: Mapping[str, Any]) -> set[str]:
    """Deps added, removed or with another content hash."""
    before = {dep["path"]: dep.get("md5") for dep in committed.get("deps", [])}
    after = {dep["path"]: dep.get("md5") for dep in current.get("deps", [])}
    return {path for path in set(before) | set(after) if before.get(path) != after.get(path)}


def _close(current: Any, committed: Any, tolerance: float) -> bool:
    numbers = (int, float)
    if isinstance(current, numbers) and isinstance(committed, numbers):
        return abs(float(current) - float(committed)) <= tolerance
    return bool(current == committed)
