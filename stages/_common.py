"""What every stage command shares: params loading, logging and error reporting."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from fersynth.config import Params, load_params, read_yaml_file
from fersynth.errors import FersynthError, ParamsError
from fersynth.execution import ExecutionSettings, read_execution_settings
from fersynth.io import remove_stale_staging, write_json
from fersynth.reporting import headline_metrics, run_environment

P = ParamSpec("P")
R = TypeVar("R")

error_console = Console(stderr=True)

# Where external inputs live, by kind; the stages that read them list these folders as deps in dvc.yaml.
TRACKED_INPUT_DIRS: Mapping[str, Path] = {"dataset": Path("data/raw"), "weights": Path("models/pretrained")}

ParamsOption = Annotated[Path, typer.Option("--params", help="Pipeline parameters (YAML); validated as a whole.")]
DiagnosticsOption = Annotated[
    Path, typer.Option("--diagnostics", help="Plain JSON: every number this stage measured (not a DVC metric).")
]
MetricsOption = Annotated[
    Path, typer.Option("--metrics", help="Headline figures as flat JSON: the stage's declared DVC metrics.")
]


def read_params(path: Path) -> Params:
    """Load and validate the whole params file, so a typo anywhere fails every stage."""
    params = load_params(read_raw_params(path), source=str(path))
    check_tracked_inputs(params, repo_root=path.parent)
    return params


def read_raw_params(path: Path) -> dict[str, Any]:
    """The params file as YAML reads it, not yet validated: a mapping of sections."""
    raw = read_yaml_file(path, "params file")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return raw


def check_tracked_inputs(params: Params, repo_root: Path) -> None:
    """Refuse an external input outside the folder its stages depend on in dvc.yaml.

    DVC hashes a stage's deps to decide what to rerun; a dataset or weights file elsewhere would
    change without any stage noticing (and would never reach the DVC remote).
    """
    for given in params.external_inputs():
        folder = TRACKED_INPUT_DIRS[given.kind]
        lexical = Path(os.path.normpath(repo_root / given.path))
        if not lexical.is_relative_to(os.path.normpath(repo_root / folder)):
            # dvc import-url resolves a relative local path against something else than the shell's
            # directory, so the suggested command names the file absolutely.
            raise ParamsError(
                f"{given.key}: {given.path} is outside {folder}/, so DVC would not see it change. "
                f"Bring it in first, e.g. `dvc import-url {lexical.absolute()} {folder}/{lexical.name}` "
                f"(or copy it there and `dvc add` it), then set {given.key}={folder}/{lexical.name}"
            )


def execution_settings() -> ExecutionSettings:
    """How this run executes (fersynth.local.yaml at the repo root, FERSYNTH_* on top): never tracked by DVC.

    DVC runs every stage from the repository root, so the working directory is where the file lives.
    """
    return read_execution_settings(Path.cwd(), os.environ)


def write_stage_metrics(
    stage: str,
    measured: Mapping[str, Any],
    diagnostics: Path,
    headline: Path | None = None,
    *,
    record_environment: bool = False,
) -> None:
    """All numbers to `diagnostics`; the headline subset (fersynth.reporting) to `headline`.

    `record_environment` adds thread count, device and library versions to the diagnostics,
    for stages whose numbers depend on them.
    """
    everything = dict(measured)
    if record_environment:
        everything["environment"] = run_environment() | {"execution": execution_settings().record()}
    write_json(diagnostics, everything)
    if headline is not None:
        write_json(headline, headline_metrics(stage, measured))


@dataclass
class ErrorReporting:
    tracebacks: bool = False  # library errors too; set by the `fersynth` group's --debug before a command runs


reporting = ErrorReporting()


def stage_command(function: Callable[P, R]) -> Callable[P, R]:
    """Set up logging and turn library errors into one message and exit code 1.

    Library errors are the input's fault (data, params, artefacts, checkpoints) and name the culprit, so
    a traceback would only hide the message; `fersynth --debug` shows it all the same. Any other
    exception is a bug and keeps its traceback.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        configure_logging()
        try:
            remove_stale_staging_beside(kwargs.values())
            apply_thread_setting(execution_settings())
            return function(*args, **kwargs)
        except FersynthError as error:
            if reporting.tracebacks:
                raise
            # soft_wrap: one line in a log however wide, not broken at the console's 80 columns
            error_console.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper


def remove_stale_staging_beside(arguments: Iterable[object]) -> None:
    """On start, clear what a killed run left beside every path the command names (`.<name>.<random>.tmp`).

    Outputs and inputs alike: DVC locks the repository while a stage runs, so no such entry can belong
    to a write still in progress, and a stage that fails early must not leave them for the next run.
    """
    for argument in arguments:
        if isinstance(argument, Path):
            remove_stale_staging(argument)


def apply_thread_setting(settings: ExecutionSettings) -> None:
    if settings.threads:
        import torch  # only here: tool commands that never set threads start without it

        torch.set_num_threads(settings.threads)


def configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, RichHandler) for handler in root.handlers):
        root.addHandler(RichHandler(console=error_console, show_path=False, markup=False))
    root.setLevel(logging.INFO)
