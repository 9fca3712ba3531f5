"""Every command the README shows is valid as written: its -S overrides and its make targets."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from fersynth.config import load_params
from stages._common import check_tracked_inputs

from .conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
SHELL_LINES = [
    line.split(" #")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    for line in block.replace("\\\n", " ").splitlines()
]
EXP_RUNS = [line for line in SHELL_LINES if line.startswith("dvc exp run")]


def _apply(params: dict[str, Any], setting: str) -> None:
    """What `dvc exp run -S key=value` does: parse the value as YAML and set the dotted key."""
    key, _, value = setting.partition("=")
    *sections, leaf = key.split(".")
    target = params
    for section in sections:
        target = target.setdefault(section, {})
    target[leaf] = yaml.safe_load(value)


def test_readme_shows_experiments() -> None:
    assert len(EXP_RUNS) >= 6


@pytest.mark.parametrize("command", EXP_RUNS)
def test_every_readme_experiment_sets_valid_params(command: str) -> None:
    words = shlex.split(command)
    settings = [words[index + 1] for index, word in enumerate(words) if word == "-S"]
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for setting in settings:
        _apply(params, setting)
    check_tracked_inputs(load_params(params, source=command), repo_root=REPO_ROOT)


def test_every_make_target_in_the_readme_exists() -> None:
    targets = set(re.findall(r"^([a-z-]+):", (REPO_ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    shown = {word for line in SHELL_LINES if line.startswith("make ") for word in line.split()[1:2]}
    shown |= set(re.findall(r"`make ([a-z-]+)`", README))
    assert shown and shown <= targets, shown - targets
