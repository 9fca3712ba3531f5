"""End to end: the real dvc.yaml and params.yaml, shrunk, run by `dvc repro` in a temporary copy of the repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO_ROOT

pytestmark = pytest.mark.slow

ALL_STAGES = [
    "fetch",
    "face-align",
    "augment-offline",
    "train-gan",
    "generate",
    "calibrate",
    "merge",
    "train",
    "evaluate",
]

SHRUNK = {
    "fetch": {"demo_train": 210, "demo_val": 70, "demo_test": 70},
    "augment_offline": {"variants_per_image": 1},
    "train_gan": {"epochs": 1, "batch_size": 32},
    "calibrate": {"teacher": {"epochs": 1}},
    "train": {"epochs": 1},
}


def _deep_update(target: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "pyproject.toml"):
        if (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, repo / name)
    for folder in ("src", "stages"):
        shutil.copytree(REPO_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    _deep_update(params, SHRUNK)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run([_tool("dvc"), "init", "-q"], repo)
    # A clone always has commits; dvclive (3.49) fails in a repo that has none.
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "shrunk copy"], repo)
    return repo


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="t@example.com",
        DVC_NO_ANALYTICS="1",
    )
    return env


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
    return output


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def test_repro_runs_all_nine_stages_then_nothing(pipeline_repo: Path) -> None:
    first = _run([_tool("dvc"), "repro"], pipeline_repo)
    assert _stages_run(first) == ALL_STAGES
    evaluation = json.loads((pipeline_repo / "metrics" / "evaluate.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "recall_disgust"):
        assert 0.0 <= evaluation[key] <= 1.0
    for stage in ("fetch", "face_align", "augment_offline", "train_gan", "generate", "calibrate", "merge", "train"):
        assert (pipeline_repo / "metrics" / f"{stage}.json").is_file(), stage
    assert (pipeline_repo / "metrics" / "confusion" / "test.json").is_file()
    second = _run([_tool("dvc"), "repro"], pipeline_repo)
    assert _stages_run(second) == []
    assert "up to date" in second.lower()


def test_param_change_reruns_only_downstream_stages(pipeline_repo: Path) -> None:
    _run(["git", "add", "-A"], pipeline_repo)
    _run(["git", "commit", "-qm", "baseline"], pipeline_repo)
    threshold = _run([_tool("dvc"), "exp", "run", "-S", "calibrate.threshold=0.05"], pipeline_repo)
    assert _stages_run(threshold)[0] == "calibrate"
    assert set(_stages_run(threshold)) <= {"calibrate", "merge", "train", "evaluate"}
    learning_rate = _run([_tool("dvc"), "exp", "run", "-S", "train.lr=0.003"], pipeline_repo)
    assert _stages_run(learning_rate) == ["train", "evaluate"]
    shown = _run([_tool("dvc"), "exp", "show", "--md", "--no-pager"], pipeline_repo)
    assert "macro_f1" in shown


def test_readme_real_only_recipe_runs_without_synthetic_images(pipeline_repo: Path) -> None:
    recipe = ["train_gan.epochs=0", "generate.target=per_class", "generate.per_class=0", "merge.sources=[real,offline]"]
    arguments = [argument for setting in recipe for argument in ("-S", setting)]
    real_only = _run([_tool("dvc"), "exp", "run", *arguments], pipeline_repo)
    # train and evaluate are skipped when the shrunk run's calibration had kept no image anyway.
    assert _stages_run(real_only)[:4] == ["train-gan", "generate", "calibrate", "merge"]
    assert set(_stages_run(real_only)) <= set(ALL_STAGES[ALL_STAGES.index("train-gan") :])
    metrics = {
        name: json.loads((pipeline_repo / "metrics" / f"{name}.json").read_text()) for name in ("generate", "merge")
    }
    assert metrics["generate"]["generated_total"] == 0
    assert metrics["merge"]["synthetic_share"] == 0.0
