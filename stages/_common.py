"""What every stage command shares: params loading, logging and error reporting."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler

from fersynth.config import Params, load_params
from fersynth.errors import FersynthError, ParamsError

P = ParamSpec("P")
R = TypeVar("R")

error_console = Console(stderr=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="Pipeline parameters (YAML); validated as a whole.")]


def read_params(path: Path) -> Params:
    """Load and validate the whole params file, so a typo anywhere fails every stage."""
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return load_params(raw, source=str(path))


def stage_command(function: Callable[P, R]) -> Callable[P, R]:
    """Set up logging and turn library errors into one message and exit code 1."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        configure_logging()
        try:
            return function(*args, **kwargs)
        except FersynthError as error:
            error_console.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
            raise typer.Exit(code=1) from None

    return wrapper


def configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, RichHandler) for handler in root.handlers):
        root.addHandler(RichHandler(console=error_console, show_path=False, markup=False))
    root.setLevel(logging.INFO)
