"""Presets: a method's params overrides, one YAML file of dotted keys per method (`presets/<name>.yaml`).

A preset file maps dotted params keys to values (`train.arch: resemotenet`) under a header comment
naming its source and what differs from it. It reaches the pipeline the way `dvc exp run -S` does:
`preset_overrides` turns it into Hydra override strings, which DVC's own writer applies to params.yaml
(comments kept). `apply_preset` runs that same writer on a copy in a scratch folder: there is one `-S`
implementation, DVC's. A key sets its value, and a mapping value is merged into the mapping already there
(as Hydra merges), so `calibrate.judge: {epochs: 3}` keeps the judge's other keys.

Like the rest of the library this module never reads params.yaml: callers pass its mapping in.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dvc.utils.hydra import apply_overrides

from fersynth.config import Params, load_params, read_yaml_file
from fersynth.errors import ParamsError

PRESET_SUFFIX = ".yaml"

# Hydra reads these unquoted, so a string that looks like one must be quoted to stay a string.
_UNQUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")
_HYDRA_WORDS = {"true", "false", "null", "inf", "nan"}


def list_presets(folder: Path) -> dict[str, Path]:
    """Every preset in `folder`, by name (the file name without `.yaml`), sorted."""
    return {path.stem: path for path in sorted(folder.glob(f"*{PRESET_SUFFIX}"))}


def find_preset(folder: Path, name: str) -> Path:
    """The file of preset `name`; an unknown name is an error that lists the known ones."""
    presets = list_presets(folder)
    if name not in presets:
        known = ", ".join(presets) or "none"
        raise ParamsError(f"unknown preset {name!r}; presets in {folder}: {known}")
    return presets[name]


def load_preset(path: Path) -> dict[str, Any]:
    """Read a preset: a mapping of dotted params keys to values, each key checked against the params model.

    Errors name the file and the key: not a mapping, a key that is not dotted, an unknown key or a
    value of the wrong type (the same messages as for params.yaml, with its suggestions).
    """
    raw = read_yaml_file(path, "preset file")
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(f"{path}: expected a mapping of dotted params keys to values, e.g. `train.arch: vgg`")
    for key in raw:
        if not isinstance(key, str) or len(key.split(".")) < 2 or not all(key.split(".")):
            raise ParamsError(f"{path}: {key!r} is not a dotted params key (section.key, e.g. train.arch)")
    # The model's defaults stand in for params.yaml here: they hold every key, so an unknown or mistyped
    # key fails with the key named. Values that only clash with a given params file fail in validate_preset.
    validate_preset(Params().model_dump(), raw, source=str(path))
    return raw


def preset_comment(path: Path) -> str:
    """The comment at the top of a preset file, without the `#` marks: its source and what differs."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").removeprefix(" "))
    return "\n".join(lines).strip()


def apply_preset(params: Mapping[str, Any], preset: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with every key of `preset` set by DVC's own `-S` writer (on a scratch copy)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "params.yaml"
        path.write_text(yaml.safe_dump(dict(params), sort_keys=False))
        apply_overrides(str(path), preset_overrides(preset, params))
        return yaml.safe_load(path.read_text())


def validate_preset(params: Mapping[str, Any], preset: Mapping[str, Any], source: str) -> Params:
    """The typed params `preset` gives on top of `params`; errors name the offending keys and `source`."""
    return load_params(apply_preset(params, preset), source=source)


def preset_overrides(preset: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> list[str]:
    """`preset` as `dvc exp run -S` / Hydra override strings, e.g. `train.arch=resemotenet`.

    A key that `params` lacks, or a mapping that adds keys to the one in `params`, gets Hydra's `++`
    prefix: DVC applies overrides in Hydra's struct mode, where a plain `key=value` may only change
    what is already there. Without `params` every key gets `++`, which Hydra accepts for any key.
    """
    overrides = []
    for key, value in preset.items():
        prefix = "++" if params is None or _adds_keys(params, key.split("."), value) else ""
        overrides.append(f"{prefix}{key}={override_value(value)}")
    return overrides


def override_value(value: Any) -> str:
    """A YAML value in Hydra's override grammar: `[real,offline]`, `{disgust: 3000}`, quoted strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _override_string(value)
    if isinstance(value, list):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {override_value(item)}" for key, item in value.items()) + "}"
    raise ParamsError(f"{value!r}: a preset value must be a YAML scalar, list or mapping")


def _override_string(text: str) -> str:
    if _UNQUOTED.fullmatch(text) and text.lower() not in _HYDRA_WORDS:
        return text
    # Inside Hydra's quotes only backslashes before a quote, `${` or the end are special; `${` would
    # be read as an interpolation, and prompts are free text.
    escaped = re.sub(r"(\\+)(?='|\$\{|$)", lambda run: run.group(1) * 2, text)
    return "'" + escaped.replace("'", "\\'").replace("${", "\\${") + "'"


def _adds_keys(params: Any, path: list[str], value: Any) -> bool:
    """Whether setting `path` to `value` adds a key that `params` does not have."""
    node = params
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return True
        node = node[part]
    if not isinstance(value, Mapping):
        return False
    if not isinstance(node, Mapping):
        return True
    return any(_adds_keys(node, [str(key)], item) for key, item in value.items())
