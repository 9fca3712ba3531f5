"""What every stage command shares: params loading, logging, error reporting, and owning its outputs."""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar, get_args, get_origin

import typer
from rich.console import Console
from rich.logging import RichHandler
from typer.models import ParameterInfo

from fersynth.config import Params, load_params, read_yaml_file
from fersynth.errors import FersynthError, OutputError, ParamsError
from fersynth.runtime.execution import ExecutionSettings, read_execution_settings
from fersynth.runtime.io import (
    FILESYSTEM_REFUSALS,
    check_output,
    commit_together,
    lock_outputs,
    remove_stale_staging,
    write_json,
)
from fersynth.stage_metrics import headline_metrics, run_environment

P = ParamSpec("P")
R = TypeVar("R")

error_console = Console(stderr=True)

# Where external inputs live, by kind; the stages that read them list these folders as deps in dvc.yaml.
TRACKED_INPUT_DIRS: Mapping[str, Path] = {
    "dataset": Path("data/raw"),
    "weights": Path("models/pretrained"),
    "pipeline": Path("models/diffusion"),
}


@dataclass(frozen=True)
class Output:
    """Marks a path parameter as one the command writes (in its `Annotated[...]`, beside the typer.Option).

    `stage_command` checks every marked path before any work and locks it against another run. The outputs
    `held_back` land together when the command succeeds (fersynth.runtime.io.commit_together); the others are written
    while it runs and kept when it fails, as a resume checkpoint, a cache or curves must be.
    """

    folder: bool
    held_back: bool = True


FILE_OUTPUT = Output(folder=False)
FOLDER_OUTPUT = Output(folder=True)
WORKING_FILE_OUTPUT = Output(folder=False, held_back=False)
WORKING_FOLDER_OUTPUT = Output(folder=True, held_back=False)

ParamsOption = Annotated[Path, typer.Option("--params", help="Pipeline parameters (YAML); validated as a whole.")]
DiagnosticsOption = Annotated[
    Path,
    typer.Option("--diagnostics", help="Plain JSON: every number this stage measured (not a DVC metric)."),
    FILE_OUTPUT,
]
MetricsOption = Annotated[
    Path,
    typer.Option("--metrics", help="Headline figures as flat JSON: the stage's declared DVC metrics."),
    FILE_OUTPUT,
]

# Set while a command holds its outputs' locks, for the processes it starts: torchrun's rank 0 writes
# under its launcher's locks (fersynth.runtime.io.lock_outputs).
LOCK_HOLDER_VARIABLE = "FERSYNTH_OUTPUT_LOCKS_HELD_BY"


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

    DVC hashes a stage's deps to decide what to rerun; a dataset, weights file or pipeline elsewhere would
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
    """All numbers to `diagnostics`; the headline subset (fersynth.stage_metrics) to `headline`.

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
    """Set up logging, own the outputs, and turn library errors into one message and exit code 1.

    Library errors are the input's fault (data, params, artefacts, checkpoints) and name the culprit, so
    a traceback would only hide the message; `fersynth --debug` shows it all the same. So is the filesystem
    refusing a write (full, read-only). Any other exception is a bug and keeps its traceback.
    """
    signature = inspect.signature(function, eval_str=True)
    outputs = output_options(signature)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        configure_logging()
        try:
            given = given_outputs(outputs, signature.bind(*args, **kwargs))
            with owned_outputs([output.path for output in given]):
                apply_thread_setting(execution_settings())
                held_back = [output.path for output in given if output.kind.held_back]
                # An exit code the command chose (predict: some inputs unreadable) comes after complete outputs.
                with commit_together(held_back, commit_on=(typer.Exit,)):
                    return function(*args, **kwargs)
        except (FersynthError, OSError) as error:
            message = error_message(error)
            if message is None or reporting.tracebacks:
                raise
            # soft_wrap: one line in a log however wide, not broken at the console's 80 columns
            error_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper


def error_message(error: Exception) -> str | None:
    """The line an input error or a refused write is reported with; None for a bug, which keeps its traceback."""
    if isinstance(error, FersynthError):
        return str(error)
    if isinstance(error, OSError) and error.errno in FILESYSTEM_REFUSALS:
        return f"{error.filename}: {error.strerror}" if error.filename else f"a write was refused: {error.strerror}"
    return None


@dataclass(frozen=True)
class GivenOutput:
    option: str  # the option that gave it, e.g. --out
    path: Path
    kind: Output


def output_options(signature: inspect.Signature) -> dict[str, tuple[str, Output]]:
    """The parameters marked Output, by name: the option that gives each (`--out`) and its marker."""
    outputs = {}
    for name, parameter in signature.parameters.items():
        if get_origin(parameter.annotation) is not Annotated:
            continue
        metadata = get_args(parameter.annotation)[1:]
        for marker in (item for item in metadata if isinstance(item, Output)):
            declared = [decl for info in metadata if isinstance(info, ParameterInfo) for decl in info.param_decls or ()]
            option = next((decl for decl in declared if decl.startswith("--")), "--" + name.replace("_", "-"))
            outputs[name] = (option, marker)
    return outputs


def given_outputs(outputs: Mapping[str, tuple[str, Output]], arguments: inspect.BoundArguments) -> list[GivenOutput]:
    """The output paths this call was given (an optional one left out gives none), each checked before any work."""
    arguments.apply_defaults()
    given = [
        GivenOutput(option, Path(arguments.arguments[name]), marker)
        for name, (option, marker) in outputs.items()
        if arguments.arguments[name] is not None
    ]
    seen: dict[str, str] = {}
    for output in given:
        key = os.path.abspath(output.path)
        if key in seen:
            raise OutputError(f"{seen[key]} and {output.option} both name {output.path}; give each its own path")
        seen[key] = output.option
        check_output(output.path, output.kind.folder, output.option)
    return given


@contextmanager
def owned_outputs(paths: Sequence[Path]) -> Iterator[None]:
    """Lock every output against another run, then clear what a killed run left beside it (`.<name>.<random>.tmp`).

    Only the holder of an output's lock clears its staging: another live run's would vanish under it.
    torchrun's ranks other than 0 never write (fersynth.runtime.distributed), so they neither lock nor clear.
    """
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)  # where its lock file goes
    launcher = os.environ.get(LOCK_HOLDER_VARIABLE, "")
    with lock_outputs(paths, int(launcher) if launcher.isdigit() else None) as locked:
        for path in locked:
            remove_stale_staging(path)
        with environment_variable(LOCK_HOLDER_VARIABLE, str(os.getpid())):
            yield


@contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    earlier = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if earlier is None:
            del os.environ[name]
        else:
            os.environ[name] = earlier


def apply_thread_setting(settings: ExecutionSettings) -> None:
    if settings.threads:
        import torch  # only here: tool commands that never set threads start without it

        torch.set_num_threads(settings.threads)


def configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, RichHandler) for handler in root.handlers):
        root.addHandler(RichHandler(console=error_console, show_path=False, markup=False))
    root.setLevel(logging.INFO)
