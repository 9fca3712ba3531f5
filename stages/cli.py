"""The `fersynth` command: one sub-command per pipeline stage, in pipeline order."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="fersynth: FER with calibrated synthetic faces. Each command is one DVC stage (see dvc.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Stage modules register themselves here as they land; pipeline order is kept.
STAGE_MODULES: tuple[str, ...] = (
    "fetch",
    "face_align",
    "augment_offline",
    "train_gan",
    "generate",
    "calibrate",
    "merge",
    "train",
    "evaluate",
)


def _register() -> None:
    import importlib

    for name in STAGE_MODULES:
        module = importlib.import_module(f"stages.{name}")
        app.command(name=name.replace("_", "-"), help=module.__doc__)(module.command)


_register()


def main() -> None:
    app()
