"""The pull-request workflow: it cannot run here, so check what can be: the file parses, it triggers on pull
requests with the rights it needs, every `make` target and `fersynth` command it runs exists with those options,
and its comment step posts the report (run with a stand-in `gh`)."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "pr-report.yml"
COMMAND_SEPARATORS = {";", "&&", "||", "|", "&"}


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _scripts(workflow: dict[Any, Any]) -> list[str]:
    return [step["run"] for step in _steps(workflow) if "run" in step]


def _commands(workflow: dict[Any, Any], program: str) -> list[list[str]]:
    """The arguments of each `program ...` in the run scripts, as the shell splits them into commands."""
    found = []
    for script in _scripts(workflow):
        for line in script.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for token in [*lexer, ";"]:  # the `;` ends the line's last command
                if token not in COMMAND_SEPARATORS:
                    command.append(token)
                    continue
                if command[:1] == [program]:
                    found.append(command[1:])
                command = []
    return found


def test_it_runs_on_pull_requests_with_full_history_and_python_3_11(workflow: dict[Any, Any]) -> None:
    # YAML 1.1 reads the key `on` as the boolean true.
    assert "pull_request" in workflow[True]
    assert workflow["permissions"]["pull-requests"] == "write"
    steps = {step["uses"].split("@")[0]: step for step in _steps(workflow) if "uses" in step}
    assert steps["actions/checkout"]["with"]["fetch-depth"] == 0
    assert steps["actions/setup-python"]["with"]["python-version"] == "3.11"


def test_every_make_target_it_runs_is_in_the_makefile(workflow: dict[Any, Any]) -> None:
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    used = [arguments[0] for arguments in _commands(workflow, "make")]
    assert {"setup", "run"} <= set(used)
    assert set(used) <= targets


def test_every_fersynth_command_it_runs_exists_with_its_options(workflow: dict[Any, Any]) -> None:
    group = typer.main.get_command(app)
    invocations = _commands(workflow, "fersynth")
    assert [arguments[0] for arguments in invocations] == ["report"]
    for name, *arguments in invocations:
        with click.Context(group) as context:
            command = group.get_command(context, name)
        assert command is not None, f"fersynth {name}: no such command"
        command.make_context(name, arguments)  # raises click.UsageError on an unknown option or a missing value
    [(_, *report_arguments)] = invocations
    assert report_arguments[report_arguments.index("--baseline") + 1] == "origin/$BASE_REF"


def test_no_expression_is_pasted_into_a_script(workflow: dict[Any, Any]) -> None:
    """`${{ github.* }}` inside `run:` would splice PR-controlled text into shell code; env passes it as data."""
    assert not [script for script in _scripts(workflow) if "${{" in script]


def test_the_comment_step_posts_the_report_with_image_links_to_the_artifact(
    workflow: dict[Any, Any], tmp_path: Path
) -> None:
    [step] = [step for step in _steps(workflow) if "gh pr comment" in step.get("run", "")]
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "README.md").write_text(
        "# fersynth report\n\n### Grad-CAM\n\n![Grad-CAM on test faces](gradcam.png)\n\n| a | b |\n"
    )
    # A stand-in gh that records its arguments and the body it was given.
    gh = tmp_path / "bin" / "gh"
    gh.parent.mkdir()
    gh.write_text('#!/bin/sh\necho "$@" > gh_arguments\n')
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    run_url = "https://github.com/owner/repo/actions/runs/42"
    environment = {
        "PATH": f"{gh.parent}{os.pathsep}{os.environ['PATH']}",
        "PR_NUMBER": "7",
        "RUN_URL": run_url,
        "GITHUB_REPOSITORY": "owner/repo",
    }
    # GitHub runs a step's script with `bash --noprofile --norc -eo pipefail`.
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=tmp_path,
        env=environment,
        check=True,
    )
    arguments = (tmp_path / "gh_arguments").read_text().split()
    assert arguments == ["pr", "comment", "7", "--repo", "owner/repo", "--body-file", "comment.md"]
    posted = (tmp_path / arguments[-1]).read_text()
    assert posted.startswith("# fersynth report") and "| a | b |" in posted
    assert "![" not in posted
    assert f"[Grad-CAM on test faces (gradcam.png in the pr-report artifact)]({run_url}#artifacts)" in posted
