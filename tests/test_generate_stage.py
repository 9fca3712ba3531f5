from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fersynth.config import CANONICAL_CLASSES
from fersynth.datasets.format import read_dataset, write_dataset
from fersynth.gan.generator import GanGenerator
from fersynth.gan.models import GanArchitecture, Generator

from .conftest import REPO_ROOT, make_dataset, run_stage


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An untrained 16-pixel generator (sampling is what this stage does) and a real reference set."""
    torch.manual_seed(0)
    arch = GanArchitecture(image_size=16, channels=1, latent_dim=8, base_channels=4, num_classes=7)
    (tmp_path / "gan").mkdir()
    GanGenerator("conditional", CANONICAL_CLASSES, [Generator(arch)]).save(tmp_path / "gan" / "generator.pt")
    write_dataset(make_dataset(per_class=6, size=16), tmp_path / "aligned")
    return tmp_path


def invoke(tmp_path: Path, **generate: object) -> tuple[int, str]:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"generate": generate}))
    arguments = [
        "generate",
        "--generator", str(tmp_path / "gan"),
        "--editor", str(tmp_path / "editor"),
        "--reference", str(tmp_path / "aligned"),
        "--out", str(tmp_path / "generated"),
        "--diagnostics", str(tmp_path / "generate.json"),
        "--grids", str(tmp_path / "grids"),
        "--params", str(tmp_path / "params.yaml"),
    ]  # fmt: skip
    return run_stage(arguments)


def test_generates_the_planned_counts(workspace: Path) -> None:
    code, output = invoke(workspace, target="counts", counts={"disgust": 3, "sad": 2}, oversample=1.5, batch_size=2)
    assert code == 0, output
    generated = read_dataset(workspace / "generated", CANONICAL_CLASSES)
    assert generated.class_counts() == dict.fromkeys(CANONICAL_CLASSES, 0) | {"disgust": 5, "sad": 3}
    assert generated.images.shape == (8, 16, 16, 1) and set(generated.sources) == {"gan"}
    np.testing.assert_array_equal(generated.intended, generated.labels)
    metrics = json.loads((workspace / "generate.json").read_text())
    assert metrics["planned_disgust"] == 5 and metrics["planned_angry"] == 0 and metrics["generated_total"] == 8
    assert (workspace / "generated" / "preview.png").is_file()
    assert [path.name for path in (workspace / "grids").iterdir()] == ["gan.png"]


def test_truncation_param_reaches_the_sampler(workspace: Path) -> None:
    torch.manual_seed(1)
    arch = GanArchitecture(image_size=16, channels=1, latent_dim=8, base_channels=4, num_classes=7)
    generator = Generator(arch)
    with torch.no_grad():  # DCGAN's initial weights are too small for z to show in 8-bit pixels
        for weight in generator.parameters():
            weight.normal_(0.0, 1.0)
    GanGenerator("conditional", CANONICAL_CLASSES, [generator]).save(workspace / "gan" / "generator.pt")
    images = {}
    for truncation in (0.0, 0.5):
        code, output = invoke(workspace, target="counts", counts={"fear": 4}, truncation=truncation)
        assert code == 0, output
        images[truncation] = read_dataset(workspace / "generated", CANONICAL_CLASSES).images.copy()
    assert not np.array_equal(images[0.0], images[0.5])


def test_balanced_reference_plans_nothing_and_writes_an_empty_dataset(workspace: Path) -> None:
    code, output = invoke(workspace, target="balance_to_max")  # make_dataset has 2 train images per class
    assert code == 0, output
    assert len(read_dataset(workspace / "generated", CANONICAL_CLASSES)) == 0
    assert json.loads((workspace / "generate.json").read_text())["generated_total"] == 0
    assert [path.name for path in (workspace / "grids").iterdir()] == ["nothing_generated.png"]  # a DVC out


def test_missing_generator_names_the_file(workspace: Path) -> None:
    (workspace / "gan" / "generator.pt").unlink()
    code, output = invoke(workspace, target="per_class", per_class=1)
    assert code == 1
    assert f"{workspace / 'gan' / 'generator.pt'}:generatorfilenotfound".replace(" ", "") in output
    assert not (workspace / "generated").exists()


def test_unknown_class_in_counts_names_it(workspace: Path) -> None:
    code, output = invoke(workspace, target="counts", counts={"contempt": 2})
    assert code == 1
    assert "generate.counts:unknownclass'contempt'" in output


def test_generator_of_another_image_size_is_refused(workspace: Path) -> None:
    write_dataset(make_dataset(per_class=6, size=24), workspace / "aligned")  # the generator makes 16×16
    code, output = invoke(workspace, target="per_class", per_class=1)
    assert code == 1
    assert "makes16×16×1(H×W×C)imagesbuttherealimagesare24×24×1" in output
    assert not (workspace / "generated").exists()


# The committed tiny pipeline (random weights: it draws noise, so no face detector); two steps keep it fast.
TINY_DIFFUSION = {"model": "models/diffusion/tiny-sd", "steps": 2, "face_detector": "none"}


@pytest.fixture
def tiny_pipeline(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in the workspace as DVC runs a stage in its repository, with the tiny pipeline under models/diffusion/:
    a local pipeline elsewhere is refused, like any external input outside its tracked folder."""
    shutil.copytree(REPO_ROOT / "models" / "diffusion" / "tiny-sd", workspace / "models" / "diffusion" / "tiny-sd")
    monkeypatch.chdir(workspace)


@pytest.mark.usefixtures("tiny_pipeline")
def test_text_to_image_backend_writes_aligned_diffusion_rows(workspace: Path) -> None:
    counts = {"disgust": 3, "fear": 2}
    code, output = invoke(
        workspace, backend="sd_text2img", target="counts", counts=counts, oversample=1.0, diffusion=TINY_DIFFUSION
    )
    assert code == 0, output
    generated = read_dataset(workspace / "generated", CANONICAL_CLASSES)
    assert generated.images.shape == (5, 16, 16, 1) and set(generated.sources) == {"diffusion"}
    metrics = json.loads((workspace / "generate.json").read_text())
    assert metrics["generated_diffusion"] == 5 and metrics["dropped_diffusion"] == 0
    assert (workspace / "grids" / "diffusion.png").is_file()


@pytest.mark.usefixtures("tiny_pipeline")
def test_faceless_diffusion_images_are_dropped_and_counted(workspace: Path) -> None:
    code, output = invoke(
        workspace,
        backend="sd_text2img",
        target="counts",
        counts={"sad": 2},
        oversample=1.0,
        diffusion={**TINY_DIFFUSION, "face_detector": "mtcnn"},
    )
    assert code == 0, output
    metrics = json.loads((workspace / "generate.json").read_text())
    assert metrics["generated_total"] == 0 and metrics["dropped_diffusion"] == 2
    assert "sad" in output and "notmade" in output.replace(" ", "")


@pytest.mark.usefixtures("tiny_pipeline")
def test_hybrid_draws_each_backends_share_and_edits_keep_their_origin(workspace: Path) -> None:
    code, output = invoke(
        workspace,
        backend="hybrid",
        hybrid={"gan": 0.5, "sd_img2img": 0.5},
        target="counts",
        counts={"happy": 4, "sad": 3},
        oversample=1.0,
        diffusion=TINY_DIFFUSION,
    )
    assert code == 0, output
    generated = read_dataset(workspace / "generated", CANONICAL_CLASSES)
    real = read_dataset(workspace / "aligned", CANONICAL_CLASSES)
    edits = generated.sources == "edit"
    assert int(edits.sum()) == 3 and int((generated.sources == "gan").sum()) == 4  # largest remainder: 2+2, 1+2
    train_neutral = set(real.ids[(real.splits == "train") & (real.labels == CANONICAL_CLASSES.index("neutral"))])
    assert set(generated.origins[edits]) <= train_neutral
    assert sorted(path.name for path in (workspace / "grids").iterdir()) == ["edit.png", "gan.png"]


@pytest.mark.usefixtures("tiny_pipeline")
def test_missing_diffusion_model_says_how_to_get_one(workspace: Path) -> None:
    missing = {**TINY_DIFFUSION, "model": "models/diffusion/sd15"}
    code, output = invoke(workspace, backend="sd_text2img", target="per_class", per_class=1, diffusion=missing)
    assert code == 1
    flat = output.replace(" ", "").replace("\n", "")
    assert "generate.diffusion.model" in flat and "hfdownload" in flat
    assert not (workspace / "generated").exists()


def test_a_local_pipeline_outside_models_diffusion_is_refused_before_loading(workspace: Path) -> None:
    elsewhere = {**TINY_DIFFUSION, "model": str(REPO_ROOT / "models" / "diffusion" / "tiny-sd")}  # not this repo's
    code, output = invoke(workspace, backend="sd_text2img", target="per_class", per_class=1, diffusion=elsewhere)
    assert code == 1
    assert "generate.diffusion.model:" in output and "isoutsidemodels/diffusion/" in output
    assert not (workspace / "generated").exists()
