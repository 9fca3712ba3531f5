"""Presets: every file in presets/ gives valid params, its -S overrides mean what it says, the CLI applies it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc.utils.hydra import apply_overrides
from typer.testing import CliRunner

from fersynth.errors import ParamsError
from fersynth.tools.presets import (
    apply_preset,
    find_preset,
    list_presets,
    load_preset,
    preset_comment,
    preset_overrides,
    validate_preset,
)
from stages._common import check_tracked_inputs
from stages.cli import app

from .conftest import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"
PRESETS = list_presets(PRESETS_DIR)
runner = CliRunner()
INVALID = r"bad\.yaml: invalid parameters:\n  - "  # load_params' message, with the preset file as its source


def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def write_preset(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def dvc_written(tmp_path: Path, overrides: list[str]) -> dict[str, Any]:
    """What `dvc exp run -S` would leave in params.yaml: DVC's own writer on a copy of the committed file."""
    copy = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", copy)
    apply_overrides(str(copy), overrides)
    return yaml.safe_load(copy.read_text())


def test_the_issues_presets_are_all_there() -> None:
    assert set(PAPER_PRESETS) <= set(PRESETS)
    assert set(PRESETS) == {
        "real-only",
        "class-weighted",
        "offline-x5",
        "roy2024-sd-resemotenet",
        "kdef2024-dcgan-transfer",
        "ganmut-editing",
        "warrier-linear",
        "warrier-resnet18-dcgan",
        "synfer-calibrated",
        "fer2013-30min",
        "fer2013-30min-gan",
        "fer2013-gan-calibrated",
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_valid_params_and_names_its_source(name: str) -> None:
    preset = load_preset(PRESETS[name])
    params = validate_preset(repo_params(), preset, source=name)
    check_tracked_inputs(params, repo_root=REPO_ROOT)
    assert "Source:" in preset_comment(PRESETS[name])


# The presets named after a paper's method: each cites its paper and says which data it runs on.
PAPER_PRESETS = (
    "roy2024-sd-resemotenet",
    "synfer-calibrated",
    "kdef2024-dcgan-transfer",
    "offline-x5",
    "warrier-resnet18-dcgan",
    "warrier-linear",
    "ganmut-editing",
)


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_a_paper_preset_names_its_data_and_leaves_the_demo_only_when_it_says_so(name: str) -> None:
    """A researcher applying a paper's preset gets the paper's dataset, or a header line saying it stays on the
    demo faces; either way the header's `Data:` line says where the data comes from."""
    preset = load_preset(PRESETS[name])
    comment = preset_comment(PRESETS[name])
    data_lines = [line for line in comment.splitlines() if line.startswith("Data:")]
    assert data_lines, f"{name}: no `# Data:` line in its header"
    if preset.get("fetch.source", "demo") == "demo":
        assert "demo" in data_lines[0], f"{name} runs on the demo faces but its `Data:` line does not say so"
    else:
        assert preset["fetch.path"].startswith("data/raw/") and preset["fetch.path"] in comment


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dvc_writes_every_preset_value_as_the_preset_says(name: str, tmp_path: Path) -> None:
    """Every key of every preset reaches params.yaml through DVC's writer with its value (quoting, ++, merging)."""
    preset = load_preset(PRESETS[name])
    written = dvc_written(tmp_path, preset_overrides(preset, repo_params()))
    for key, value in preset.items():
        found = written
        for part in key.split("."):
            found = found[part]
        if isinstance(value, dict):
            assert {item: found[item] for item in value} == value, key
        else:
            assert found == value, key


def test_overrides_quote_free_text_add_missing_keys_and_merge_mappings(tmp_path: Path) -> None:
    preset = {
        "generate.diffusion.prompt": "it's a {expression}, ${not_interpolated}: C:\\faces\\",
        "generate.diffusion.negative_prompt": "",
        "generate.counts": {"disgust": 3000},  # adds a key to an empty mapping: needs Hydra's ++
        "generate.hybrid.sd_img2img": 0.25,  # a dotted key params.yaml lacks
        "calibrate.judge": {"epochs": 3},  # merged: the judge keeps its other keys
        "calibrate.teacher.seed": 7,
        "train.seed": None,
        "train.flip_augment": False,
        "train.weights_path": "models/pretrained/resnet18-f37072fd.pth",
        "train.lr": 2.5e-4,
        "fetch.label_aliases": {"furious": "angry"},
        "merge.sources": ["real", "gan"],
    }
    overrides = preset_overrides(preset, repo_params())
    assert "++generate.counts={disgust: 3000}" in overrides
    assert "calibrate.judge={epochs: 3}" in overrides
    assert "merge.sources=[real,gan]" in overrides
    expected = apply_preset(repo_params(), preset)
    assert expected["calibrate"]["judge"] == {"arch": "vgg", "width": 16, "epochs": 3, "lr": 3.0e-3}
    assert expected["generate"]["hybrid"] == {"gan": 0.5, "sd_text2img": 0.5, "sd_img2img": 0.25}
    assert dvc_written(tmp_path, overrides) == expected
    # Without params to compare with, every key is force-added, which Hydra takes for any key.
    assert dvc_written(tmp_path, preset_overrides(preset)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "train.archh: vgg\n",
            r"bad\.yaml: invalid parameters:\n  - train\.archh: unknown key \(did you mean 'arch'\?\)",
        ),
        ("trian.arch: vgg\n", r"bad\.yaml: invalid parameters:\n  - trian: unknown key \(did you mean 'train'\?\)"),
        ("train.epochs: many\n", r"bad\.yaml: invalid parameters:\n  - train\.epochs: Input should be a valid integer"),
        ("train:\n  arch: vgg\n", r"bad\.yaml: 'train' is not a dotted params key"),
        ("train..arch: vgg\n", r"bad\.yaml: 'train\.\.arch' is not a dotted params key"),
        ("- train.arch=vgg\n", r"bad\.yaml: expected a mapping of dotted params keys"),
        ("# only a comment\n", r"bad\.yaml: expected a mapping of dotted params keys"),
        ("train.arch: [vgg\n", r"bad\.yaml:2: not valid YAML"),
    ],
)
def test_a_broken_preset_names_its_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_preset(write_preset(tmp_path, "bad", text))


def test_a_value_valid_alone_but_not_on_the_params_file_names_the_params_and_the_preset(tmp_path: Path) -> None:
    # relabel keeps every image, so the committed precision selection would silently do nothing
    preset = load_preset(write_preset(tmp_path, "relabel", "calibrate.policy: relabel\n"))
    with pytest.raises(ParamsError, match=r"params\.yaml with relabel: invalid parameters:\n  - calibrate: "):
        validate_preset(repo_params(), preset, source="params.yaml with relabel")


def test_a_key_below_a_value_is_refused() -> None:
    """DVC's writer turns train.lr into a mapping; validation refuses it, naming the key."""
    with pytest.raises(ParamsError, match=r"p\.yaml: invalid parameters:\n  - train\.lr: "):
        validate_preset(repo_params(), {"train.lr.max": 1.0}, source="p.yaml")


def test_an_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(
        ParamsError, match=r"unknown preset 'roy2024'; presets in .*presets: class-weighted, .*real-only"
    ):
        find_preset(PRESETS_DIR, "roy2024")


def test_the_readme_names_only_existing_presets() -> None:
    readme = "\n".join(page.read_text() for page in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")])
    named = set(re.findall(r"fersynth preset (?:show|apply) ([\w.-]+)", readme))
    named |= {word for line in re.findall(r"--presets ([^\n\\]+)", readme) for word in line.split()}
    unknown = {name for name in named if name not in PRESETS and name != "synthetic" and not name.startswith("-")}
    assert not unknown, unknown


# --- the `fersynth preset` command ---------------------------------------------------------------


def invoke(*arguments: str) -> tuple[int, str]:
    result = runner.invoke(app, ["preset", *arguments])
    return result.exit_code, result.output


def copied_params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", path)
    return path


def test_list_shows_every_preset_with_its_summary(tmp_path: Path) -> None:
    code, output = invoke("list", "--params", str(REPO_ROOT / "params.yaml"))
    assert code == 0, output
    lines = output.splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    summary = preset_comment(PRESETS["real-only"]).splitlines()[0]
    assert any(line.startswith("real-only") and line.endswith(summary) for line in lines)


def test_show_prints_the_source_and_the_overrides() -> None:
    code, output = invoke("show", "roy2024-sd-resemotenet", "--params", str(REPO_ROOT / "params.yaml"))
    assert code == 0, output
    assert "arXiv 2411.10863" in output
    assert "  -S train.arch=resemotenet\n" in output
    assert "  -S 'merge.sources=[real,diffusion]'\n" in output
    assert "fersynth preset apply roy2024-sd-resemotenet && dvc exp run -n roy2024-sd-resemotenet" in output


def test_apply_writes_the_preset_with_dvcs_writer_and_keeps_the_comments(tmp_path: Path) -> None:
    params_path = copied_params(tmp_path)
    code, output = invoke("apply", "class-weighted", "--params", str(params_path), "--presets-dir", str(PRESETS_DIR))
    assert code == 0, output
    assert yaml.safe_load(params_path.read_text()) == apply_preset(
        repo_params(), load_preset(PRESETS["class-weighted"])
    )
    written = params_path.read_text()
    original_comments = [line.partition("#")[2] for line in (REPO_ROOT / "params.yaml").read_text().splitlines()]
    assert [line.partition("#")[2] for line in written.splitlines() if "#" in line] == [
        comment for comment in original_comments if comment
    ]
    assert re.search(r"\n  class_weighting: balanced +# none \| balanced", written)


def own_presets(tmp_path: Path, text: str) -> Path:
    """A params.yaml copy with a presets/ folder beside it holding one preset, `mine`."""
    (tmp_path / "presets").mkdir()
    write_preset(tmp_path / "presets", "mine", text)
    return copied_params(tmp_path)


def test_apply_finds_presets_beside_the_params_file_by_default(tmp_path: Path) -> None:
    params_path = own_presets(tmp_path, "train.epochs: 2\n")
    code, output = invoke("apply", "mine", "--params", str(params_path))
    assert code == 0, output
    assert yaml.safe_load(params_path.read_text())["train"]["epochs"] == 2


def test_apply_refuses_an_invalid_result_and_leaves_the_params_file_alone(tmp_path: Path) -> None:
    params_path = own_presets(tmp_path, "# a policy the committed selection contradicts\ncalibrate.policy: relabel\n")
    code, output = invoke("apply", "mine", "--params", str(params_path))
    assert code == 1
    assert "calibrate.selection 'quota' has no effect" in " ".join(output.split())
    assert params_path.read_text() == (REPO_ROOT / "params.yaml").read_text()


def test_an_unknown_preset_name_exits_with_the_list(tmp_path: Path) -> None:
    code, output = invoke("show", "nope", "--params", str(REPO_ROOT / "params.yaml"))
    assert code == 1
    assert "unknown preset 'nope'" in output
    assert "warrier-linear" in " ".join(output.split())


def test_every_preset_passes_a_dry_comparison_run() -> None:
    """`fersynth compare --dry`: DVC's writer takes each preset's overrides, the stages' validation accepts them."""
    paths = ("--params", str(REPO_ROOT / "params.yaml"), "--presets-dir", str(PRESETS_DIR))
    result = CliRunner().invoke(app, ["compare", *PRESETS, "--seeds", "1", "--dry", *paths])
    assert result.exit_code == 0, result.output
    planned = re.findall(r"^([\w-]+)-s0: ok; params change for: (.+)$", result.output, flags=re.MULTILINE)
    assert [name for name, _ in planned] == list(PRESETS)
    assert all("train" in stages.split(", ") for _, stages in planned)  # train.seed is set for every run


def test_first_seed_plans_later_seeds_so_a_comparison_can_grow() -> None:
    paths = ("--params", str(REPO_ROOT / "params.yaml"), "--presets-dir", str(PRESETS_DIR))
    result = CliRunner().invoke(app, ["compare", "real-only", "--seeds", "2", "--first-seed", "3", "--dry", *paths])
    assert result.exit_code == 0, result.output
    assert re.findall(r"^(real-only-s\d+): ok", result.output, flags=re.MULTILINE) == ["real-only-s3", "real-only-s4"]
