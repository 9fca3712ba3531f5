from __future__ import annotations

import functools
import math
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fersynth.config import MAX_ERRORS_LISTED, Params, load_params
from fersynth.errors import ParamsError
from stages._common import check_tracked_inputs

from .conftest import REPO_ROOT


def repo_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_repo_params_are_valid_and_spell_out_every_key() -> None:
    raw = repo_params()
    params = load_params(raw)
    # params.yaml documents every knob: each section lists every key its model has.
    for section, model in params:
        assert set(raw[section]) == set(type(model).model_fields), section
    assert set(raw["calibrate"]["teacher"]) == set(type(params.calibrate.teacher).model_fields)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "lrr", 0.1, r"train\.lrr: unknown key \(did you mean 'lr'\?\)"),
        ("train", "lr", "1e-3", r"train\.lr: Input should be a valid number \(got '1e-3'\)"),
        ("train", "epochs", 2.5, r"train\.epochs: Input should be a valid integer"),
        ("train", "arch", "vgg19", r"train\.arch: Input should be"),
        ("common", "classes", ["angry", "furious"], r"common\.classes: .*unknown class 'furious'"),
        ("calibrate", "threshold", 1.5, r"calibrate\.threshold: Input should be less than or equal to 1"),
        (
            "calibrate",
            "selection",
            "top_k",
            r"calibrate\.selection: Input should be 'threshold', 'quota' or 'precision'",
        ),
        ("calibrate", "quota_per_class", -1, r"calibrate\.quota_per_class: Input should be greater than or equal to 0"),
        ("calibrate", "confidence_floor", 1.5, r"calibrate\.confidence_floor: Input should be less than or equal to 1"),
        ("calibrate", "confidence_floor", -0.1, r"calibrate\.confidence_floor: Input should be greater than or equal"),
        ("calibrate", "target_precision", 0.0, r"calibrate\.target_precision: Input should be greater than 0"),
    ],
)
def test_bad_values_name_the_key(section: str, key: str, value: object, message: str) -> None:
    raw = repo_params()
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        load_params(raw)


@pytest.mark.parametrize(
    ("calibrate", "message"),
    [
        (
            {"selection": "quota", "quota_per_class": 0},
            r"calibrate\.quota_per_class must be at least 1 when calibrate\.selection is 'quota'",
        ),
        (
            {"policy": "relabel", "selection": "precision"},
            r"calibrate\.selection 'precision' has no effect: calibrate\.policy 'relabel' keeps every image",
        ),
    ],
)
def test_calibrate_selection_must_select(calibrate: dict[str, object], message: str) -> None:
    raw = repo_params()
    raw["calibrate"].update(calibrate)
    with pytest.raises(ParamsError, match=message):
        load_params(raw)


def test_calibrate_defaults_keep_the_absolute_threshold() -> None:
    config = Params().calibrate
    assert (config.policy, config.selection, config.threshold) == ("filter", "threshold", 0.5)


def test_unknown_section_is_named() -> None:
    raw = repo_params()
    raw["trian"] = {"epochs": 1}
    with pytest.raises(ParamsError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        load_params(raw)


def test_nested_teacher_key_is_named() -> None:
    raw = repo_params()
    raw["calibrate"]["teacher"]["epoch"] = 1
    with pytest.raises(ParamsError, match=r"calibrate\.teacher\.epoch: unknown key \(did you mean 'epochs'\?\)"):
        load_params(raw)


def test_file_sources_need_a_path() -> None:
    raw = repo_params()
    raw["fetch"]["source"] = "fer2013"
    with pytest.raises(ParamsError, match=r"fetch\.path is required"):
        load_params(raw)


def test_defaults_build_without_a_file(tmp_path: Path) -> None:
    assert Params().common.classes[1] == "disgust"


def test_every_classifier_weights_path_is_an_external_input() -> None:
    """train, the teacher and the judge each read their weights file: each must be DVC-tracked."""
    weights = {"weights_path": "models/pretrained/r18.pt"}
    params = load_params({"train": weights, "calibrate": {"teacher": weights, "judge": weights}})
    assert [(given.key, given.kind) for given in params.external_inputs()] == [
        ("train.weights_path", "weights"),
        ("calibrate.teacher.weights_path", "weights"),
        ("calibrate.judge.weights_path", "weights"),
    ]


def test_teacher_checkpoints_are_external_inputs_that_must_live_under_models_pretrained(tmp_path: Path) -> None:
    params = load_params({"calibrate": {"teacher_checkpoints": ["models/pretrained/a.pt", "models/pretrained/b.pt"]}})
    assert [given.key for given in params.external_inputs()] == [
        "calibrate.teacher_checkpoints[0]",
        "calibrate.teacher_checkpoints[1]",
    ]
    check_tracked_inputs(params, repo_root=tmp_path)
    elsewhere = load_params({"calibrate": {"teacher_checkpoints": ["models/classifier/model.pt"]}})
    with pytest.raises(ParamsError, match=r"calibrate\.teacher_checkpoints\[0\]: .* is outside models/pretrained/"):
        check_tracked_inputs(elsewhere, repo_root=tmp_path)


def _sections(model: type[BaseModel] = Params, prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """Every params model reachable from Params, with its dotted key."""
    for name, field in model.model_fields.items():
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield f"{prefix}{name}", candidate
                yield from _sections(candidate, f"{prefix}{name}.")


def _numeric_fields() -> Iterator[tuple[str, FieldInfo, type]]:
    for key, model in _sections():
        for name, field in model.model_fields.items():
            optional = type(None) in typing.get_args(field.annotation)  # int | None; not dict[str, float]
            kinds = {float, int} & {field.annotation, *(typing.get_args(field.annotation) if optional else ())}
            if kinds:
                yield f"{key}.{name}", field, kinds.pop()


def test_every_numeric_param_has_a_finite_range() -> None:
    """Floats are finite (the sections refuse .inf and .nan); every integer has an upper bound that names its key."""
    unbounded = [
        key
        for key, field, kind in _numeric_fields()
        if kind is int and not any(isinstance(rule, annotated_types.Le | annotated_types.Lt) for rule in field.metadata)
    ]
    assert unbounded == []


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused_by_key_everywhere(value: float) -> None:
    floats = [key for key, _, kind in _numeric_fields() if kind is float] + ["generate.hybrid.gan"]
    assert "train.lr" in floats and "calibrate.teacher.lr" in floats
    for key in floats:
        raw: dict[str, Any] = {}
        *sections, leaf = key.split(".")
        functools.reduce(lambda level, name: level.setdefault(name, {}), sections, raw)[leaf] = value
        with pytest.raises(ParamsError, match=rf"{re.escape(key)}: Input should be a finite number"):
            load_params(raw)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train", "epochs", 10**24),
        ("train", "epochs", 10_001),
        ("train_gan", "epochs", 10_001),
        ("train", "batch_size", 65_537),
        ("fetch", "demo_train", 10**8 + 1),
        ("merge", "per_class", 10**9),
    ],
)
def test_counts_past_their_bound_name_the_key(section: str, key: str, value: int) -> None:
    with pytest.raises(ParamsError, match=rf"{section}\.{key}: Input should be less than or equal to"):
        load_params({section: {key: value}})


def test_generate_counts_are_bounded_per_class() -> None:
    with pytest.raises(ParamsError, match=r"generate\.counts\.sad: Input should be greater than or equal to 0"):
        load_params({"generate": {"counts": {"sad": -1}}})


def test_a_long_bad_value_is_quoted_short_and_many_errors_are_counted() -> None:
    huge = "x" * 100_000
    with pytest.raises(ParamsError) as refused:
        load_params(
            {"common": {"classes": [huge]}, "fetch": {"source": huge}, "train_gan": {"diffaugment": ["up"] * 99}}
        )
    lines = str(refused.value).splitlines()
    assert lines[1].startswith("  - common.classes: Value error, unknown class 'xxx") and "fetch.source" in lines[2]
    assert len(lines) == 1 + MAX_ERRORS_LISTED + 1 and lines[-1] == "  - ... and 81 more"
    assert max(map(len, lines)) < 600  # a key, the message and the value, each clipped
