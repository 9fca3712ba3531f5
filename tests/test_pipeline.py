"""End to end: the real dvc.yaml and params.yaml, shrunk, run by `dvc repro` in a temporary copy of the repo.

The module fixture reproduces the pipeline once, commits the result as the baseline and pushes it to
the repo's default DVC remote (a folder beside the repo). Every other test works in its own git clone
beside it, which pulls the baseline from that remote, as a teammate would: no test depends on another.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .conftest import REPO_ROOT

pytestmark = pytest.mark.slow

ALL_STAGES = [
    "fetch",
    "face-align",
    "augment-offline",
    "train-gan",
    "train-editor",
    "generate",
    "calibrate",
    "merge",
    "train",
    "evaluate",
    "export",
]

SHRUNK = {
    "fetch": {"demo_train": 210, "demo_val": 70, "demo_test": 70},
    "augment_offline": {"variants_per_image": 1},
    "train_gan": {"epochs": 1, "batch_size": 32},
    # A one-epoch teacher is too weak for precision thresholds; a quota still shows every planned class
    # travelling from generate through calibrate into the merged training set.
    # No confidence floor: one-epoch teachers score every face low.
    "calibrate": {
        "teacher": {"epochs": 1},
        "judge": {"epochs": 1},
        "selection": "quota",
        "quota_per_class": 20,
        "confidence_floor": 0.0,
    },
    # One epoch left the classifier predicting one class on some CPUs, so a changed train param moved no metric.
    "train": {"epochs": 3},
}
# Produced by the pipeline (the real repo commits them as its baseline); the copy makes its own.
NOT_COPIED = ("dvc.lock", "metrics/")


def _deep_update(target: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


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


def _dvc(cwd: Path, *arguments: str) -> str:
    return _run([_tool("dvc"), *arguments], cwd)


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def _copy_checkout(target: Path) -> None:
    """The files git would put in a clone of this checkout, uncommitted edits included."""
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], REPO_ROOT)
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file() and not name.startswith(NOT_COPIED):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A shrunk copy of the repo, reproduced, committed on `main` and pushed; returns it and the repro log."""
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    _copy_checkout(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    _deep_update(params, SHRUNK)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q", "-b", "main"], repo)
    # A clone always has commits; dvclive (3.49) fails in a repo that has none.
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "shrunk copy"], repo)
    log = _dvc(repo, "repro")
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "baseline"], repo)
    _dvc(repo, "push")
    return repo, log


def _teammate_clone(baseline: tuple[Path, str], name: str) -> Path:
    """A git clone beside the baseline (so the same default remote) with the data pulled, not trained."""
    repo = baseline[0]
    clone = repo.parent / name
    _run(["git", "clone", "-q", str(repo), str(clone)], repo.parent)
    _dvc(clone, "pull")
    return clone


def test_repro_runs_every_stage_then_nothing(baseline: tuple[Path, str]) -> None:
    repo, log = baseline
    assert _stages_run(log) == ALL_STAGES
    evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())
    diagnostics = json.loads((repo / "metrics" / "diagnostics" / "evaluate.json").read_text())
    hits = sum(
        row["actual"] == row["predicted"] for row in json.loads((repo / "metrics/confusion/test.json").read_text())
    )
    assert evaluation["accuracy"] == pytest.approx(hits / diagnostics["images"], abs=1e-4)
    assert evaluation == {key: diagnostics[key] for key in evaluation}
    for stage in ALL_STAGES:
        assert (repo / "metrics" / "diagnostics" / f"{stage.replace('-', '_')}.json").is_file(), stage
    planned = json.loads((repo / "metrics" / "diagnostics" / "generate.json").read_text())
    merged = json.loads((repo / "metrics" / "diagnostics" / "merge.json").read_text())
    planned_classes = [
        key.removeprefix("planned_") for key, count in planned.items() if key.startswith("planned_") and count
    ]
    assert planned_classes, "the demo's balance_to_max plans every class but the largest"
    assert {name: merged[f"synthetic_{name}"] for name in planned_classes} == dict.fromkeys(planned_classes, 20)
    calibrated = json.loads((repo / "metrics" / "calibrate.json").read_text())
    assert calibrated["classes_with_nothing_kept"] == 0
    # The demo's judge grades the GAN's faces against the real val reference.
    assert {"quality_real_kid", "quality_gan_kid", "quality_gan_memorised_share"} <= set(calibrated)
    assert (repo / "metrics" / "plots" / "closest_pairs.png").read_bytes().startswith(b"\x89PNG")
    assert (repo / "metrics" / "plots" / "gradcam.png").read_bytes().startswith(b"\x89PNG")
    second = _dvc(repo, "repro")
    assert _stages_run(second) == []
    assert "up to date" in second.lower()


def test_exp_show_leads_with_headline_metrics(baseline: tuple[Path, str]) -> None:
    shown = _dvc(baseline[0], "exp", "show", "--md", "--no-pager")
    header = shown.splitlines()[0]
    assert header.index("macro_f1") < header.index("common.seed")  # metrics before params
    # evaluate's figures lead, calibrate's quality figures come after train's and merge's
    assert header.index("macro_f1") < header.index("best_val_macro_f1") < header.index("synthetic_share")
    assert header.index("synthetic_share") < header.index("quality_gan_kid")
    assert "synthetic_share" in header and "recall_disgust" in header
    assert "count_train_angry" not in header and "before_angry" not in header  # diagnostics stay out


def test_teammate_pulls_models_and_has_nothing_to_run(baseline: tuple[Path, str]) -> None:
    clone = _teammate_clone(baseline, "teammate")
    assert (clone / "models" / "classifier" / "model.pt").is_file()
    assert "Data and pipelines are up to date" in _dvc(clone, "status")
    assert _stages_run(_dvc(clone, "repro", "--dry")) == []


def test_param_change_reruns_only_downstream_stages(baseline: tuple[Path, str]) -> None:
    clone = _teammate_clone(baseline, "params")
    threshold = _dvc(clone, "exp", "run", "-S", "calibrate.threshold=0.05")
    assert _stages_run(threshold)[0] == "calibrate"
    assert set(_stages_run(threshold)) <= {"calibrate", "merge", "train", "evaluate", "export"}
    learning_rate = _dvc(clone, "exp", "run", "-S", "train.lr=0.003")
    assert _stages_run(learning_rate) == ["train", "evaluate", "export"]


def test_readme_real_only_recipe_runs_without_synthetic_images(baseline: tuple[Path, str]) -> None:
    clone = _teammate_clone(baseline, "real-only")
    merged_before = _output_hash(clone, "merge", "data/merged")
    had_synthetic = json.loads((clone / "metrics" / "merge.json").read_text())["synthetic_share"] > 0
    recipe = ["train_gan.epochs=0", "generate.target=per_class", "generate.per_class=0", "merge.sources=[real,offline]"]
    real_only = _dvc(clone, "exp", "run", *[argument for setting in recipe for argument in ("-S", setting)])
    ran = _stages_run(real_only)
    assert ran[:4] == ["train-gan", "generate", "calibrate", "merge"]
    assert set(ran) <= set(ALL_STAGES[ALL_STAGES.index("train-gan") :])
    # train and evaluate must run on a merged set that changed (dropping the baseline's synthetic rows changes it),
    # and must not when merge wrote the same data again.
    merged_changed = _output_hash(clone, "merge", "data/merged") != merged_before
    assert merged_changed or not had_synthetic
    assert ("train" in ran, "evaluate" in ran) == (merged_changed, merged_changed), ran
    generate = json.loads((clone / "metrics" / "diagnostics" / "generate.json").read_text())
    assert generate["generated_total"] == 0
    assert json.loads((clone / "metrics" / "merge.json").read_text()) == {"synthetic_share": 0.0}


def _output_hash(repo: Path, stage: str, path: str) -> str:
    """The hash dvc.lock records for one of `stage`'s outputs."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def _write_faces_zip(path: Path, per_class: int) -> None:
    """An ImageFolder zip: `per_class` random 48x48 grey faces for each of the seven classes."""
    rng = np.random.default_rng(per_class)
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
            for index in range(per_class):
                image = Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8))
                with archive.open(f"{name}/{index}.png", "w") as member:
                    image.save(member, format="PNG")


def _fetched_images(repo: Path) -> int:
    counts = json.loads((repo / "metrics" / "diagnostics" / "fetch.json").read_text())
    return sum(counts[f"total_{split}"] for split in ("train", "val", "test"))


def test_new_content_at_the_same_dataset_path_reruns_fetch(baseline: tuple[Path, str]) -> None:
    clone = _teammate_clone(baseline, "dataset")
    dataset = clone / "data" / "raw" / "faces.zip"
    _write_faces_zip(dataset, per_class=6)
    _dvc(clone, "add", "-q", "data/raw/faces.zip")
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["fetch"] |= {"source": "imagefolder", "path": "data/raw/faces.zip"}
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stages_run(_dvc(clone, "repro", "-s", "fetch")) == ["fetch"]
    assert _fetched_images(clone) == 7 * 6

    _write_faces_zip(dataset, per_class=10)  # same path, new content, not re-added
    status = _dvc(clone, "status", "fetch")
    assert re.search(r"fetch:\s+changed deps:\s+modified:\s+data/raw", status), status
    assert _stages_run(_dvc(clone, "repro", "-s", "fetch")) == ["fetch"]
    assert _fetched_images(clone) == 7 * 10


def test_pull_request_workflow_shows_the_reviewer_a_diff(baseline: tuple[Path, str]) -> None:
    """The README's PR recipe: branch, experiment, commit, and the diffs against main."""
    clone = _teammate_clone(baseline, "pull-request")
    _run(["git", "checkout", "-q", "-b", "faster-lr"], clone)
    _dvc(clone, "exp", "run", "-S", "train.lr=0.003")
    _run(["git", "add", "-A"], clone)
    _run(["git", "commit", "-qm", "train.lr 0.003"], clone)
    _dvc(clone, "push")
    metrics_diff = _dvc(clone, "metrics", "diff", "main", "--md")
    assert "| metrics/evaluate.json | macro_f1" in metrics_diff
    assert "count_" not in metrics_diff  # diagnostics stay out of the reviewer's table
    params_diff = _dvc(clone, "params", "diff", "main", "--md")
    assert re.search(r"\| params\.yaml\s*\| train\.lr\s*\| 0\.001\s*\| 0\.003\s*\|", params_diff), params_diff
    _dvc(clone, "plots", "diff", "main", "--out", "plots-review")
    assert (clone / "plots-review" / "index.html").is_file()


def test_the_classifier_is_a_dvc_artifact_that_classifies_faces_elsewhere(baseline: tuple[Path, str]) -> None:
    """`dvc artifacts get` in a folder outside the repo yields the model; `fersynth predict` there reads only
    it (no params.yaml) and agrees with evaluate; the ONNX artifact agrees with both."""
    repo = baseline[0]
    for artifact in ("classifier", "classifier-onnx"):  # a version registered as the model registry does (GTO tags)
        _run(["git", "tag", "-a", f"{artifact}@v1.0.0", "-m", f"{artifact} v1.0.0"], repo)
    elsewhere = repo.parent / "elsewhere"
    elsewhere.mkdir()
    _dvc(elsewhere, "artifacts", "get", str(repo), "classifier")
    _dvc(elsewhere, "artifacts", "get", str(repo), "classifier-onnx", "-o", "onnx")
    assert sorted(path.name for path in (elsewhere / "onnx").iterdir()) == ["classifier.json", "classifier.onnx"]
    parity = json.loads((repo / "metrics" / "export.json").read_text())
    assert parity["argmax_agreement"] == 1.0
    faces = elsewhere / "faces"
    faces.mkdir()
    test = np.load(repo / "data" / "aligned" / "images.npy", mmap_mode="r")[_test_rows(repo)[:12]]
    for index, pixels in enumerate(test):
        Image.fromarray(pixels.squeeze()).save(faces / f"{index:02d}.png")
    expected = [row["predicted"] for row in json.loads((repo / "metrics/confusion/test.json").read_text())][:12]
    for model in (["--model", "model.pt"], ["--onnx", "onnx/classifier.onnx"]):
        command = [_tool("fersynth"), "predict", "faces", *model, "--detector", "none", "--format", "json"]
        records = json.loads(_run_stdout(command, elsewhere))
        assert [record["label"] for record in records] == expected, model


def _test_rows(repo: Path) -> list[int]:
    with (repo / "data" / "aligned" / "manifest.csv").open() as manifest:
        return [int(row["index"]) for row in csv.DictReader(manifest) if row["split"] == "test"]


def _run_stdout(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900, check=True)
    return done.stdout


# The committed tiny Stable Diffusion pipeline draws noise: no face for MTCNN to find, so the demo
# aligns its images by centre crop; two steps keep the run short. Calibration keeps its quota anyway.
DIFFUSION_DEMO = ["generate.diffusion.steps=2", "generate.diffusion.face_detector=none"]


@pytest.mark.parametrize(
    "sources",
    [{"diffusion": "sd_text2img"}, {"edit": "sd_img2img"}, {"gan": "gan", "diffusion": "sd_text2img"}],
    ids=["sd_text2img", "sd_img2img", "hybrid"],
)
def test_diffusion_backends_run_end_to_end(baseline: tuple[Path, str], sources: dict[str, str]) -> None:
    clone = _teammate_clone(baseline, "diffusion-" + "-".join(sorted(sources)))
    if len(sources) == 1:
        backend = [f"generate.backend={next(iter(sources.values()))}"]
    else:
        shares = ",".join(f"{name}:{1 / len(sources)}" for name in sources.values())
        backend = ["generate.backend=hybrid", f"generate.hybrid={{{shares}}}"]
    run = _dvc(clone, "exp", "run", *[argument for setting in backend + DIFFUSION_DEMO for argument in ("-S", setting)])
    assert _stages_run(run)[0] == "generate" and "evaluate" in _stages_run(run)
    generated = json.loads((clone / "metrics" / "diagnostics" / "generate.json").read_text())
    merged = json.loads((clone / "metrics" / "diagnostics" / "merge.json").read_text())
    for source in sources:
        assert generated[f"generated_{source}"] > 0, source
        assert merged[f"source_{source}"] > 0, source
        assert (clone / "metrics" / "plots" / "generated" / f"{source}.png").is_file()
    absent = {"gan", "diffusion", "edit"} - set(sources)
    assert all(merged[f"source_{source}"] == 0 for source in absent)


def test_compare_runs_two_variants_through_a_two_job_queue(baseline: tuple[Path, str]) -> None:
    """`fersynth compare`: DVC's queue runs both at once in temporary workspaces, each on its share of the cores.

    The common override makes calibrate rerun in the synthetic run: its teachers must come from the
    DVC-tracked cache checked out in that run's own workspace, not be trained again.
    """
    clone = _teammate_clone(baseline, "compare")
    compare = ["compare", "synthetic", "real-only", "--seeds", "1", "-j", "2", "-S", "calibrate.quota_per_class=10"]
    _run([_tool("fersynth"), *compare], clone)
    table = (clone / "report" / "compare.md").read_text()
    assert "Seeds vary the classifier alone" in table
    assert "| variant | n | accuracy | UAR | macro-F1 | disgust | fear | angry |" in table
    for variant in ("synthetic", "real-only"):
        assert re.search(rf"^\| {variant} \| 1 \| 0\.\d{{3}} ± 0\.000 \|", table, flags=re.MULTILINE), table
    runs = {json.loads(line)["run"]: json.loads(line) for line in (clone / "report" / "compare.jsonl").open()}
    assert list(runs) == ["synthetic-s0", "real-only-s0"]
    assert runs["synthetic-s0"]["metrics/merge.json"]["synthetic_share"] > 0
    assert runs["real-only-s0"]["metrics/merge.json"] == {"synthetic_share": 0.0}
    for name in runs:
        ref = _run(["git", "for-each-ref", "--format=%(refname)", f"refs/exps/**/{name}"], clone).strip()
        environment = json.loads(_run(["git", "show", f"{ref}:metrics/diagnostics/train.json"], clone))["environment"]
        assert environment["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)
    log = " ".join(_dvc(clone, "queue", "logs", "synthetic-s0").split())
    assert "Running stage 'calibrate'" in log and "teacher (seed 0): cache hit" in log, log[-3000:]
    assert _workers_still_running(clone, wait_seconds=60) == []


def _workers_still_running(repo: Path, wait_seconds: float) -> list[int]:
    """PIDs of the repo's DVC queue workers that have not exited after `wait_seconds` (an idle worker exits
    about 10 s after the queue empties); DVC records each worker's exit code beside its PID."""
    deadline = time.monotonic() + wait_seconds
    while True:
        worker_files = (repo / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json")
        records = [json.loads(path.read_text()) for path in worker_files]
        running = [record["pid"] for record in records if record["returncode"] is None]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(2)


def test_ganmut_editing_runs_offline_end_to_end_on_the_demo(baseline: tuple[Path, str]) -> None:
    """The preset's trained editor (shrunk to one short epoch) edits real train faces into every class."""
    clone = _teammate_clone(baseline, "ganmut-editing")
    _run([_tool("fersynth"), "preset", "apply", "ganmut-editing"], clone)
    shrink = ["fetch.source=demo", "train_editor.epochs=1", "train_editor.images_per_epoch=64"]
    run = _dvc(clone, "exp", "run", *[argument for setting in shrink for argument in ("-S", setting)])
    assert "train-editor" in _stages_run(run) and "evaluate" in _stages_run(run)
    assert (clone / "models" / "editor" / "editor.pt").is_file()
    generated = json.loads((clone / "metrics" / "diagnostics" / "generate.json").read_text())
    merged = json.loads((clone / "metrics" / "diagnostics" / "merge.json").read_text())
    assert generated["generated_editor"] > 0 and merged["source_editor"] > 0
    assert all(merged[f"source_{source}"] == 0 for source in ("gan", "diffusion", "edit"))
    grid = Image.open(clone / "metrics" / "plots" / "editor_samples.png")
    assert grid.width > 8 * 48  # the face and its seven edits per row
    # The judge grades the editor's faces in the same quality table as any source.
    assert "quality_editor_kid" in json.loads((clone / "metrics" / "calibrate.json").read_text())
