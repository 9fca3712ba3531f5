"""The `fersynth` command: one sub-command per pipeline stage, in pipeline order."""

from __future__ import annotations

import importlib
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

# Pipeline order; `fersynth --help` lists the commands in this order.
STAGE_MODULES: tuple[str, ...] = (
    "fetch",
    "face_align",
    "augment_offline",
    "train_gan",
    "train_editor",
    "generate",
    "calibrate",
    "merge",
    "train",
    "evaluate",
    "export",
)

# Commands that are no DVC stage, listed after the stages; each module defines a Typer group `app`.
TOOL_MODULES: tuple[str, ...] = ("predict", "serve", "preset", "report", "compare")


class StageGroup(TyperGroup):
    """Imports a stage's module only when that stage runs.

    Stages pull in torch, torchvision and scikit-learn; importing all ten up front cost about
    8 s per command, paid by every stage `dvc repro` runs.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name.replace("_", "-") for name in (*STAGE_MODULES, *TOOL_MODULES)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = cmd_name.replace("-", "_")
        if module_name in TOOL_MODULES:
            return typer.main.get_command(importlib.import_module(f"stages.{module_name}").app)
        if module_name not in STAGE_MODULES:
            return None
        module = importlib.import_module(f"stages.{module_name}")
        stage = typer.Typer(add_completion=False)
        stage.command(name=cmd_name, help=module.__doc__)(module.command)
        return typer.main.get_command(stage)


app = typer.Typer(
    cls=StageGroup,
    help="fersynth: FER with calibrated synthetic faces. Each command is one DVC stage (see dvc.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def pipeline(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="FERSYNTH_DEBUG",  # DVC runs the commands of dvc.yaml: `FERSYNTH_DEBUG=1 dvc repro` reaches them
            help="Show the traceback of every error, also of those caused by input (data, params, checkpoints).",
        ),
    ] = False,
) -> None:
    """Typer builds a command group only around a callback; the stages come from StageGroup."""
    # Imported here, not at the top: `fersynth --help` runs no callback and need not load params validation.
    from stages._common import reporting

    reporting.tracebacks = debug


def main() -> None:
    app()
