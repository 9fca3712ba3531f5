"""After `make run`: the run reproduced the committed baseline (HEAD's dvc.lock and metrics/).

Fails, naming each culprit, when a stage's code, params or inputs changed since the baseline was
committed (commit the new dvc.lock and metrics/ with the change, as DVC users expect), or when a
headline metric moved by more than fersynth.baseline.TOLERANCE.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from fersynth.baseline import TOLERANCE, metric_differences, stale_stages


def committed(path: str) -> str:
    return subprocess.run(["git", "show", f"HEAD:{path}"], check=True, capture_output=True, text=True).stdout


def main() -> int:
    pipeline: dict[str, Any] = yaml.safe_load(Path("dvc.yaml").read_text())
    problems = [
        f"stale baseline: {line}"
        for line in stale_stages(yaml.safe_load(Path("dvc.lock").read_text()), yaml.safe_load(committed("dvc.lock")))
    ]
    for path in pipeline["metrics"]:
        differences = metric_differences(json.loads(Path(path).read_text()), json.loads(committed(path)))
        problems += [f"{path}: {line}" for line in differences]
        print(f"{path}: {'agrees' if not differences else 'DIFFERS'} with HEAD (tolerance {TOLERANCE})")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print("If the change is intended: `make run`, then commit dvc.lock and metrics/ with it.", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
