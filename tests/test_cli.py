"""The `fersynth` command group: stages load lazily but all ten are listed and runnable."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from stages.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_dvc_stage_in_pipeline_order() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    dvc_stages = [name.replace("_", "-") for name in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]]
    # The first word of a line in the commands table (after any box-drawing border) is a command.
    listed = [words[0] for line in result.output.splitlines() if (words := line.strip("│ ").split())]
    assert [name for name in listed if name in dvc_stages] == dvc_stages


def test_every_dvc_stage_command_names_a_fersynth_command() -> None:
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        command = stage["cmd"].split()
        assert command[0] == "fersynth", name
        result = runner.invoke(app, [command[1], "--help"])
        assert result.exit_code == 0, f"{name}: {result.output}"


def test_unknown_command_is_refused() -> None:
    result = runner.invoke(app, ["trian"])
    assert result.exit_code == 2
    assert "No such command" in result.output
