"""dvc.yaml cannot drift from the code: deps cover every imported module, metrics follow the one rule."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fersynth.stage_metrics import HEADLINE_KEYS
from stages._common import TRACKED_INPUT_DIRS

from .conftest import REPO_ROOT

PIPELINE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
STAGES: dict[str, Any] = PIPELINE["stages"]


def _module_file(name: str) -> Path | None:
    """The repo file of a fersynth or stages module (package __init__ or plain module); None for others."""
    top = name.split(".")[0]
    if top not in ("fersynth", "stages"):
        return None
    base = REPO_ROOT / ("src" if top == "fersynth" else "") / Path(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_closure(module: str) -> set[Path]:
    """Every repo file `module` imports, directly or not (lazy imports inside functions included)."""
    seen: set[Path] = set()
    pending = [module, "stages.cli"]  # DVC runs each stage through the `fersynth` entry point
    while pending:
        name = pending.pop()
        parts = name.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]  # parent packages run first
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        pending += list(_imported_names(path))
    return seen


def _dep_paths(stage: dict[str, Any]) -> list[Path]:
    return [REPO_ROOT / dep for dep in stage["deps"]]


@pytest.mark.parametrize("stage_name", list(STAGES))
def test_stage_deps_cover_every_module_it_imports(stage_name: str) -> None:
    """Editing any module a stage imports must rerun that stage."""
    deps = _dep_paths(STAGES[stage_name])
    closure = import_closure(f"stages.{stage_name.replace('-', '_')}")
    missing = [path for path in closure if not any(path == dep or path.is_relative_to(dep) for dep in deps)]
    assert not missing, f"{stage_name}: add to deps in dvc.yaml: {[str(p.relative_to(REPO_ROOT)) for p in missing]}"


@pytest.mark.parametrize(
    ("stage_name", "kind"),
    [("fetch", "dataset"), ("evaluate", "dataset"), ("train", "weights"), ("calibrate", "weights")],
)
def test_stages_reading_external_inputs_depend_on_their_folder(stage_name: str, kind: str) -> None:
    assert str(TRACKED_INPUT_DIRS[kind]) in STAGES[stage_name]["deps"]
    assert (REPO_ROOT / TRACKED_INPUT_DIRS[kind]).is_dir(), "the folder must exist in a fresh clone"


def test_declared_metrics_are_exactly_the_headline_files() -> None:
    """Headline figures are DVC metrics; diagnostics are plain outputs that `dvc exp show` leaves out."""
    headline_files = {f"metrics/{stage}.json" for stage in HEADLINE_KEYS}
    assert set(PIPELINE["metrics"]) == headline_files
    # DVC lists metrics in the order it collects them: stage-level declarations first, in stage order, which put
    # calibrate's quality figures before accuracy. Declared once at the top level, they follow that list.
    assert PIPELINE["metrics"][0] == "metrics/evaluate.json"
    for name, stage in STAGES.items():
        assert "metrics" not in stage, f"{name}: declare its metrics file in the top-level list (and as an out)"
        outs = {next(iter(entry)) if isinstance(entry, dict) else entry for entry in stage["outs"]}
        assert ({f"metrics/{name}.json"} & headline_files) <= outs, name
        assert f"metrics/diagnostics/{name.replace('-', '_')}.json" in outs, name
        assert f"--diagnostics metrics/diagnostics/{name.replace('-', '_')}.json" in " ".join(stage["cmd"].split())
