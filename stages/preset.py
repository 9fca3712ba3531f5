"""Presets: one method's params overrides per file in presets/ (list, show, apply to params.yaml)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from dvc.utils.hydra import apply_overrides

from fersynth.errors import ParamsError
from fersynth.tools.presets import (
    find_preset,
    list_presets,
    load_preset,
    preset_comment,
    preset_overrides,
    validate_preset,
)
from stages._common import ParamsOption, read_params, read_raw_params, stage_command

app = typer.Typer(name="preset", help=__doc__, no_args_is_help=True, add_completion=False)

PresetName = Annotated[str, typer.Argument(help="Preset name: its file in the presets folder without .yaml.")]
PresetsDirOption = Annotated[
    Path | None, typer.Option("--presets-dir", help="Folder of preset files [default: presets/ beside --params].")
]


@app.command("list")
@stage_command
def list_command(params_path: ParamsOption = Path("params.yaml"), presets_dir: PresetsDirOption = None) -> None:
    """Every preset with the first line of its comment."""
    for name, path in list_presets(_folder(params_path, presets_dir)).items():
        typer.echo(f"{name:<26} {_summary(path)}")


@app.command("show")
@stage_command
def show_command(
    name: PresetName, params_path: ParamsOption = Path("params.yaml"), presets_dir: PresetsDirOption = None
) -> None:
    """A preset's source comment and its `dvc exp run -S` overrides, checked against the params file."""
    path, overrides = _checked_overrides(name, params_path, presets_dir)
    typer.echo(preset_comment(path) + "\n")
    typer.echo(f"Overrides of {params_path} (dvc exp run -S):")
    typer.echo("\n".join(f"  -S {shlex.quote(setting)}" for setting in overrides))
    typer.echo(f"\nRun it: fersynth preset apply {name} && dvc exp run -n {name}")


@app.command("apply")
@stage_command
def apply_command(
    name: PresetName, params_path: ParamsOption = Path("params.yaml"), presets_dir: PresetsDirOption = None
) -> None:
    """Write a preset into the params file with DVC's own writer (`dvc exp run -S`'s; comments kept)."""
    _, overrides = _checked_overrides(name, params_path, presets_dir)
    original = params_path.read_text()
    apply_overrides(str(params_path), overrides)
    try:
        read_params(params_path)  # what the stages will read: DVC's writer, not the preset, has the last word
    except ParamsError:
        params_path.write_text(original)
        raise
    typer.echo(f"{params_path}: preset {name} applied ({len(overrides)} keys).")
    typer.echo(f"Run it: dvc exp run -n {name}    Undo: git checkout {params_path}")


def _checked_overrides(name: str, params_path: Path, presets_dir: Path | None) -> tuple[Path, list[str]]:
    """The preset's file and overrides, after checking that it gives valid params on top of `params_path`."""
    path = find_preset(_folder(params_path, presets_dir), name)
    preset = load_preset(path)
    raw = read_raw_params(params_path)
    validate_preset(raw, preset, source=f"{params_path} with preset {path}")
    return path, preset_overrides(preset, raw)


def _folder(params_path: Path, presets_dir: Path | None) -> Path:
    # presets/ sits at the repository root, beside params.yaml: no package data to install.
    return presets_dir if presets_dir is not None else params_path.parent / "presets"


def _summary(path: Path) -> str:
    return preset_comment(path).partition("\n")[0]
