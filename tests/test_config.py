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


TWO_CLASSES = {"classes": ["happy", "sad"]}


def test_generate_counts_name_only_common_classes_when_they_are_the_target() -> None:
    counts = {"target": "counts", "counts": {"sad": 1, "angry": 2}}
    with pytest.raises(ParamsError, match=r"generate\.counts: unknown class 'angry'; classes are \['happy', 'sad'\]"):
        load_params({"common": TWO_CLASSES, "generate": counts})
    load_params({"common": TWO_CLASSES, "generate": {**counts, "target": "per_class"}})  # counts unread


@pytest.mark.parametrize("generate", [{"backend": "editor"}, {"backend": "hybrid", "hybrid": {"sd_img2img": 1.0}}])
def test_edit_source_classes_must_be_common_classes_when_faces_are_edited(generate: dict[str, Any]) -> None:
    message = r"generate\.edit\.source_classes: names 'neutral', which is not in common\.classes \['happy', 'sad'\]"
    with pytest.raises(ParamsError, match=message):
        load_params({"common": TWO_CLASSES, "generate": generate})  # source_classes: [neutral] by default
    load_params({"common": TWO_CLASSES, "generate": {**generate, "edit": {"source_classes": ["sad"]}}})
    load_params({"common": TWO_CLASSES})  # the GAN edits no face


@pytest.mark.parametrize("backend", ["sd_text2img", "sd_img2img"])
def test_every_class_needs_an_expression_when_the_pipeline_is_prompted(backend: str) -> None:
    partial = {"backend": backend, "edit": {"source_classes": ["happy"]}, "diffusion": {"expressions": {"happy": "x"}}}
    with pytest.raises(ParamsError, match=r"generate\.diffusion\.expressions: no expression for \['sad'\]"):
        load_params({"common": TWO_CLASSES, "generate": partial})
    load_params({"common": {"classes": ["happy", "neutral"]}, "generate": {**partial, "backend": "gan"}})


def test_cross_section_problems_are_listed_together() -> None:
    generate = {"backend": "sd_img2img", "target": "counts", "counts": {"angry": 1}, "diffusion": {"expressions": {}}}
    with pytest.raises(ParamsError) as refused:
        load_params({"common": TWO_CLASSES, "generate": generate})
    keys = [line.split(":")[0] for line in str(refused.value).splitlines()[1:]]
    assert keys == ["  - generate.counts", "  - generate.edit.source_classes", "  - generate.diffusion.expressions"]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a {mood} face with {expression}", r"names \{mood\}; it may only name \{age\}, \{gender\}"),
        ("a {} face", r"cannot be filled in \(IndexError"),
        ("a {age!z} face", r"cannot be filled in \(ValueError"),
        ("a face}", r"is not a valid template"),
    ],
)
def test_diffusion_prompts_that_cannot_be_filled_in_are_refused(prompt: str, message: str) -> None:
    with pytest.raises(ParamsError, match=r"generate\.diffusion: Value error, generate\.diffusion\.prompt " + message):
        load_params({"generate": {"diffusion": {"prompt": prompt}}})


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a {age} face with {expression}", r"names \{age\}; it may only name \{expression\}"),
        ("a face with {expression:d}", r"cannot be filled in \(ValueError"),
        ("a face with {expression", r"is not a valid template"),
    ],
)
def test_an_edit_prompt_that_cannot_be_filled_in_is_refused_when_sd_img2img_reads_it(prompt: str, message: str) -> None:
    with pytest.raises(ParamsError, match=r"generate\.edit\.prompt: " + message):
        load_params({"generate": {"backend": "sd_img2img", "edit": {"prompt": prompt}}})
    load_params({"generate": {"backend": "editor", "edit": {"prompt": prompt}}})  # the editor reads no prompt


def test_a_local_diffusion_pipeline_must_live_under_models_diffusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local pipeline is an external input (DVC must see it change); a hub id names no local path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights" / "sd").mkdir(parents=True)  # looks like a hub id, but a folder is read first
    (tmp_path / "models" / "diffusion" / "sd").mkdir(parents=True)
    text2img = {"backend": "sd_text2img"}
    for model in ("weights/sd", str(tmp_path / "nowhere" / "sd")):  # a missing path is no hub id either
        outside = load_params({"generate": {**text2img, "diffusion": {"model": model}}})
        with pytest.raises(ParamsError, match=rf"generate\.diffusion\.model: {re.escape(model)} is outside models/di"):
            check_tracked_inputs(outside, repo_root=tmp_path)
    inside = load_params({"generate": {**text2img, "diffusion": {"model": "models/diffusion/sd"}}})
    assert [(given.key, given.kind) for given in inside.external_inputs()] == [("generate.diffusion.model", "pipeline")]
    check_tracked_inputs(inside, repo_root=tmp_path)
    edits = load_params({"generate": {"backend": "hybrid", "hybrid": {"gan": 0.5, "sd_img2img": 0.5}}})
    assert [given.key for given in edits.external_inputs()] == ["generate.diffusion.model"]
    hub = load_params({"generate": {**text2img, "diffusion": {"model": "org/model", "revision": "abc"}}})
    assert hub.external_inputs() == []
    for backend in ("gan", "editor"):  # neither reads the pipeline
        unread = load_params({"generate": {"backend": backend, "diffusion": {"model": "weights/sd"}}})
        assert unread.external_inputs() == []


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"scheduler": "plateau", "warmup_epochs": 1}, r"train: .*scheduler 'plateau' takes no warm-up"),
        ({"scheduler": "plateau", "time_budget_minutes": 1.0}, r"train: .*set time_budget_minutes and images_budget"),
        ({"phase_two_lr_factor": 0.5}, r"train: .*phase_two_lr_factor has no effect without head_only_epochs"),
        ({"plateau_factor": 1.0}, r"train\.plateau_factor: Input should be less than 1"),
    ],
)
def test_classifier_schedules_that_cannot_run_are_refused_by_key(train: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params({"train": train})
    load_params({"calibrate": {"teacher": {"scheduler": "plateau", "head_only_epochs": 2, "phase_two_lr_factor": 0.5}}})
