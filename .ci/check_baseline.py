"""After `make run`: the run reproduced the committed baseline (HEAD's dvc.lock and metrics/).

Fails, naming each culprit, when a stage's code, params or inputs changed since the baseline was
committed (commit the new dvc.lock and metrics/ with the change, as DVC users expect), or when a
headline metric moved by more than fersynth.tools.baseline.TOLERANCE.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from fersynth.tools.baseline import TOLERANCE, environment_differences, metric_differences, stale_stages

# The train stage records the environment its numbers depend on.
ENVIRONMENT_RECORD = "metrics/diagnostics/train.json"


def committed(path: str) -> str:
    return subprocess.run(["git", "show", f"HEAD:{path}"], check=True, capture_output=True, text=True).stdout


def main() -> int:
    pipeline: dict[str, Any] = yaml.safe_load(Path("dvc.yaml").read_text())
    current_lock = yaml.safe_load(Path("dvc.lock").read_text())
    failures = [f"stale baseline: {line}" for line in stale_stages(current_lock, yaml.safe_load(committed("dvc.lock")))]
    environment = environment_differences(
        json.loads(Path(ENVIRONMENT_RECORD).read_text())["environment"],
        json.loads(committed(ENVIRONMENT_RECORD))["environment"],
    )
    moved = []
    for path in pipeline["metrics"]:
        differences = metric_differences(json.loads(Path(path).read_text()), json.loads(committed(path)))
        moved += [f"{path}: {line}" for line in differences]
        print(f"{path}: {'agrees' if not differences else 'DIFFERS'} with HEAD (tolerance {TOLERANCE})")
    if environment:
        # Another CPU or library version computes other low bits; training then takes another path.
        print("environment differs from the baseline's, so metric differences are reported, not failed:")
        print("\n".join(f"  {line}" for line in environment + moved))
    else:
        failures += moved
    for line in failures:
        print(line, file=sys.stderr)
    if failures:
        print("If the change is intended: `make run`, then commit dvc.lock and metrics/ with it.", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
