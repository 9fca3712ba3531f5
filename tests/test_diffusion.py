"""The Stable Diffusion backends on the tiny random pipeline: loading, sampling, prompts, blending.

Every pipeline is built from configs and loaded from tmp_path through `load_pipeline`, so nothing
is downloaded; the tiny pipeline draws noise at 64 px in a few milliseconds per step.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import huggingface_hub
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from fersynth import faces
from fersynth.config import DiffusionConfig, EditConfig, FaceAlignConfig, GenerateConfig
from fersynth.datasets.format import Dataset
from fersynth.diffusion.backends import (
    ExpressionEditBackend,
    TextToImageBackend,
    build_expression_edit,
    build_text_to_image,
    image_seeds,
)
from fersynth.diffusion.pipelines import load_pipeline, resolution, torch_dtype
from fersynth.diffusion.prompts import edit_prompt, text_prompt
from fersynth.diffusion.tiny import build_tiny_pipeline, save_tiny_pipeline
from fersynth.editing import (
    aligned_face_box,
    alpha_blend,
    feathered_mask,
    lab_colour_transfer,
)
from fersynth.errors import DataError, ParamsError
from fersynth.faces import Detection
from fersynth.generation import BACKENDS, BackendInputs, generate_dataset

from .conftest import REPO_ROOT, make_dataset

CPU = torch.device("cpu")
UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-sd")
    save_tiny_pipeline(directory)
    return directory


@pytest.fixture(autouse=True)
def _empty_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub looks in an empty cache, so SD configs cached on this machine change no outcome."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def diffusion(model: Path | str, **changes: object) -> DiffusionConfig:
    """The default diffusion params, shrunk: 2 steps, no detector (noise has no face)."""
    return DiffusionConfig.model_validate({"model": str(model), "steps": 2, "face_detector": "none", **changes})


def inputs(config: GenerateConfig, real: Dataset | None = None, channels: int = 1, size: int = 48) -> BackendInputs:
    real = real if real is not None else make_dataset(per_class=6, size=size, channels=channels)
    return BackendInputs(config, FaceAlignConfig(), Path("unused"), Path("unused"), real, channels, size)


# --- the tiny pipeline and loading ---------------------------------------------------------------


def test_tiny_pipeline_weights_are_a_function_of_the_seed() -> None:
    first, again, other = (build_tiny_pipeline(seed).unet.state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_committed_tiny_pipeline_is_what_the_builder_makes() -> None:
    committed = load_file(REPO_ROOT / "models" / "diffusion" / "tiny-sd" / UNET_WEIGHTS)
    built = build_tiny_pipeline().unet.state_dict()
    assert committed.keys() == built.keys()
    assert all(torch.equal(committed[name], built[name]) for name in built)


def test_load_pipeline_reads_a_diffusers_directory_for_both_tasks(tiny_dir: Path) -> None:
    config = diffusion(tiny_dir)
    text = load_pipeline(config, "text2img", CPU)
    image = load_pipeline(config, "img2img", CPU)
    assert type(text) is StableDiffusionPipeline and type(image) is StableDiffusionImg2ImgPipeline
    assert text.unet.dtype == torch.float32
    assert resolution(text, config) == 64  # latent 32 × the VAE's factor 2
    assert resolution(text, diffusion(tiny_dir, resolution=48)) == 48


def test_scheduler_and_attention_slicing_are_applied(tiny_dir: Path) -> None:
    pipe = load_pipeline(diffusion(tiny_dir, scheduler="euler", attention_slicing=True), "text2img", CPU)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.scheduler.config.beta_end == 0.012  # the pipeline's noise schedule carried over


def test_dtype_auto_is_half_on_a_gpu_and_full_on_the_cpu() -> None:
    assert torch_dtype("auto", CPU) == torch.float32
    assert torch_dtype("auto", torch.device("cuda")) == torch.float16
    assert torch_dtype("bfloat16", CPU) == torch.bfloat16


def test_missing_model_says_how_to_get_weights(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"generate\.diffusion\.model") as error:
        load_pipeline(diffusion(tmp_path / "models" / "sd15"), "text2img", CPU)
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in str(error.value)
    assert "dvc add" in str(error.value)


def test_directory_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"no model_index\.json"):
        load_pipeline(diffusion(tmp_path), "text2img", CPU)


def test_pickled_weights_are_refused_unless_allowed(tiny_dir: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    weights = pickled / UNET_WEIGHTS
    torch.save(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(ParamsError, match=r"only pickled weights .* for unet.*allow_pickle: true"):
        load_pipeline(diffusion(pickled), "text2img", CPU)
    assert type(load_pipeline(diffusion(pickled, allow_pickle=True), "text2img", CPU)) is StableDiffusionPipeline


def test_pickled_single_file_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, checkpoint)
    with pytest.raises(ParamsError, match=r"pickled checkpoint.*allow_pickle"):
        load_pipeline(diffusion(checkpoint), "text2img", CPU)


def test_single_file_without_its_family_configs_offline_is_a_clear_error(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(1)}, checkpoint)  # unrecognised keys read as SD 1.x
    with pytest.raises(DataError, match=r"stable-diffusion-v1-5 is not in the local Hugging Face cache.*hf download"):
        load_pipeline(diffusion(checkpoint), "text2img", CPU)


def test_hub_id_needs_a_pinned_revision() -> None:
    with pytest.raises(ParamsError, match=r"generate\.diffusion\.revision"):
        load_pipeline(diffusion("fersynth-tests/no-such-pipeline"), "text2img", CPU)


def test_hub_id_not_in_the_cache_without_download_is_a_clear_error() -> None:
    config = diffusion("fersynth-tests/no-such-pipeline", revision="0123abc")
    with pytest.raises(DataError, match=r"not in the local Hugging Face cache.*hf download fersynth-tests/"):
        load_pipeline(config, "text2img", CPU)


# --- text-to-image ---------------------------------------------------------------------------------


def test_text_to_image_makes_aligned_images_deterministic_in_the_seed(tiny_dir: Path) -> None:
    backend = build_text_to_image(inputs(GenerateConfig(diffusion=diffusion(tiny_dir, batch_size=2))))
    assert isinstance(backend, TextToImageBackend) and backend.source == "diffusion"
    first = backend.sample(3, 3, seed=7)
    assert first.images.shape == (3, 48, 48, 1) and first.images.dtype == np.uint8
    assert backend.image_shape == (48, 48, 1)
    assert list(first.origins) == ["", "", ""]
    np.testing.assert_array_equal(backend.sample(3, 3, seed=7).images, first.images)
    assert not np.array_equal(backend.sample(3, 3, seed=8).images, first.images)
    assert len({image.tobytes() for image in first.images}) == 3  # every image has its own noise


def test_text_to_image_does_not_depend_on_the_batch_size(tiny_dir: Path) -> None:
    made = [
        build_text_to_image(inputs(GenerateConfig(diffusion=diffusion(tiny_dir, batch_size=size)))).sample(0, 3, 11)
        for size in (1, 3)
    ]
    difference = np.abs(made[0].images.astype(int) - made[1].images.astype(int))
    assert difference.max() <= 1  # batched kernels may round differently, by one grey level at most


def test_text_to_image_in_rgb(tiny_dir: Path) -> None:
    backend = build_text_to_image(inputs(GenerateConfig(diffusion=diffusion(tiny_dir)), channels=3, size=32))
    assert backend.sample(0, 2, 1).images.shape == (2, 32, 32, 3)


def test_mtcnn_drops_noise_with_no_face(tiny_dir: Path) -> None:
    config = GenerateConfig(diffusion=diffusion(tiny_dir, face_detector="mtcnn"))
    assert len(build_text_to_image(inputs(config)).sample(0, 2, 0).images) == 0


def test_photos_with_a_face_are_kept_and_aligned(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    face = Detection(np.array([16.0, 16.0, 48.0, 48.0]), np.array([24.0, 28.0]), np.array([40.0, 28.0]), 0.99)
    monkeypatch.setattr(faces, "detect_faces", lambda images, *_: [None, face, None][: len(images)])
    config = GenerateConfig(diffusion=diffusion(tiny_dir, face_detector="mtcnn", batch_size=3))
    backend = build_text_to_image(inputs(config))
    kept = backend.sample(0, 3, 5)
    assert kept.images.shape == (1, 48, 48, 1)
    seed = image_seeds(5, 3)[1]
    photo = backend.paint([text_prompt(backend.config, backend.classes[0], seed)], [seed], height=64, width=64)[0]
    expected = faces.convert_channels(faces.align_face(photo, face, FaceAlignConfig().margin, 48), 1)
    assert np.abs(kept.images[0].astype(int) - expected.astype(int)).max() <= 2  # the second photo's face crop


def test_class_without_expression_names_the_key(tiny_dir: Path) -> None:
    expressions = {name: text for name, text in DiffusionConfig().expressions.items() if name != "disgust"}
    config = GenerateConfig(diffusion=diffusion(tiny_dir, expressions=expressions))
    with pytest.raises(ParamsError, match=r"generate\.diffusion\.expressions\.disgust"):
        build_text_to_image(inputs(config))


# --- expression editing ----------------------------------------------------------------------------


def edit_config(tiny_dir: Path, **changes: object) -> GenerateConfig:
    return GenerateConfig(diffusion=diffusion(tiny_dir), edit=EditConfig(**changes))  # type: ignore[arg-type]


def test_edits_start_from_real_train_faces_of_the_source_classes_only(tiny_dir: Path) -> None:
    real = make_dataset(per_class=6)
    backend = build_expression_edit(inputs(edit_config(tiny_dir, source_classes=["neutral", "sad"]), real))
    assert isinstance(backend, ExpressionEditBackend) and backend.source == "edit"
    samples = backend.sample(real.classes.index("happy"), 12, seed=3)  # more than the 4 eligible faces
    assert samples.images.shape == (12, 48, 48, 1)
    eligible = real.ids[(real.splits == "train") & np.isin(real.labels, [4, 5])]
    assert len(eligible) == 4 and set(samples.origins) <= set(eligible)
    np.testing.assert_array_equal(backend.sample(real.classes.index("happy"), 12, seed=3).images, samples.images)


def test_an_edit_keeps_its_source_outside_the_face(tiny_dir: Path) -> None:
    real = make_dataset(per_class=6, size=32, channels=3)
    backend = build_expression_edit(inputs(edit_config(tiny_dir), real, channels=3, size=32))
    samples = backend.sample(real.classes.index("angry"), 2, seed=0)
    row = {image_id: index for index, image_id in enumerate(real.ids)}
    sources = real.images[[row[origin] for origin in samples.origins]]
    outside = backend.sources.mask == 0
    np.testing.assert_array_equal(samples.images[:, outside], sources[:, outside])
    assert not np.array_equal(samples.images, sources)


def test_a_target_with_no_other_source_class_warns_and_makes_nothing(
    tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = make_dataset(per_class=6)
    backend = build_expression_edit(inputs(edit_config(tiny_dir, source_classes=["neutral"]), real))
    with caplog.at_level(logging.WARNING, logger="fersynth.diffusion.backends"):
        samples = backend.sample(real.classes.index("neutral"), 5, seed=0)
    assert samples.images.shape == (0, 48, 48, 1) and len(samples.origins) == 0
    assert "no real training face" in caplog.text


def test_edit_params_that_cannot_work_are_refused(tiny_dir: Path) -> None:
    real = make_dataset(per_class=6)
    without_neutral = replace(real, labels=real.labels % 2, classes=("angry", "happy"))
    with pytest.raises(ParamsError, match=r"generate\.edit\.source_classes names 'neutral'"):
        build_expression_edit(inputs(edit_config(tiny_dir), without_neutral))
    no_steps = GenerateConfig(diffusion=diffusion(tiny_dir, steps=1), edit=EditConfig(strength=0.6))
    with pytest.raises(ParamsError, match="leaves no denoising step"):
        build_expression_edit(inputs(no_steps))


def test_both_backends_through_the_registry_and_generate_dataset(tiny_dir: Path) -> None:
    config = GenerateConfig(
        backend="hybrid", hybrid={"sd_text2img": 0.5, "sd_img2img": 0.5}, diffusion=diffusion(tiny_dir)
    )
    real = make_dataset(per_class=6)
    backends = {name: BACKENDS[name](inputs(config, real)) for name in config.backend_shares()}
    plans = {name: {"happy": 2} for name in backends}
    generated = generate_dataset(backends, plans, seed=0, batch_size=8)
    assert generated.metrics()["generated_diffusion"] == 2 and generated.metrics()["generated_edit"] == 2
    edits = generated.dataset.subset(generated.dataset.sources == "edit")
    assert set(edits.origins) <= set(real.ids[real.splits == "train"])


# --- prompts ---------------------------------------------------------------------------------------


def test_text_prompt_is_deterministic_per_seed_and_varied_over_seeds() -> None:
    config = DiffusionConfig()
    prompts = [text_prompt(config, "happy", seed) for seed in image_seeds(0, 20)]
    assert prompts == [text_prompt(config, "happy", seed) for seed in image_seeds(0, 20)]
    assert len(set(prompts)) > 10
    assert all("a happy face, broad smile" in prompt and "{" not in prompt for prompt in prompts)


def test_image_seeds_do_not_depend_on_the_count() -> None:
    assert image_seeds(5, 3) == image_seeds(5, 10)[:3]


def test_edit_prompt_names_the_target_expression_and_refuses_other_fields() -> None:
    assert edit_prompt(EditConfig(prompt="a person with {expression}"), DiffusionConfig(), "sad").startswith(
        "a person with a sad face"
    )
    with pytest.raises(ParamsError, match=r"generate.edit.prompt names \{age\}"):
        edit_prompt(EditConfig(prompt="a {age} person with {expression}"), DiffusionConfig(), "sad")


# --- blending --------------------------------------------------------------------------------------


def lab_statistics(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    return lab.mean(axis=(0, 1)), lab.std(axis=(0, 1))


def test_colour_transfer_gives_the_edit_the_sources_lab_statistics() -> None:
    rng = np.random.default_rng(0)
    edit = rng.normal((90, 140, 110), 20, size=(64, 64, 3)).clip(0, 255).astype(np.uint8)
    source = rng.normal((160, 120, 100), 12, size=(64, 64, 3)).clip(0, 255).astype(np.uint8)
    moved = lab_colour_transfer(edit, source)
    (moved_mean, moved_std), (source_mean, source_std) = lab_statistics(moved), lab_statistics(source)
    np.testing.assert_allclose(moved_mean, source_mean, atol=0.3)
    np.testing.assert_allclose(moved_std, source_std, rtol=0.03)


def test_colour_transfer_of_gray_matches_intensity_mean_and_spread() -> None:
    rng = np.random.default_rng(1)
    edit = rng.normal(60, 30, size=(48, 48, 1)).clip(0, 255).astype(np.uint8)
    source = rng.normal(150, 10, size=(48, 48, 1)).clip(0, 255).astype(np.uint8)
    moved = lab_colour_transfer(edit, source).astype(np.float64)
    assert moved.mean() == pytest.approx(source.mean(), abs=0.1)
    assert moved.std() == pytest.approx(source.std(), rel=0.03)


def test_feathered_mask_is_one_at_the_centre_zero_outside_and_monotone_between() -> None:
    mask = feathered_mask(64, 64, (8, 8, 56, 56), feather=0.2)
    assert mask.dtype == np.float32 and mask[32, 32] == 1.0
    assert mask[0, 0] == mask[63, 63] == mask[32, 4] == 0.0  # corners and outside the box
    ramp = mask[32, 32:]
    assert np.all(np.diff(ramp) <= 0) and 0 < ramp[22] < 1  # falls off smoothly near the box edge
    assert set(np.unique(feathered_mask(64, 64, (8, 8, 56, 56), feather=0.0))) == {0.0, 1.0}


def test_aligned_face_box_is_the_crop_without_its_margin() -> None:
    assert aligned_face_box(100, 0.25) == (10.0, 10.0, 90.0, 90.0)  # the crop is the box side × 1.25
    assert aligned_face_box(48, 0.0) == (0.0, 0.0, 48.0, 48.0)


def test_alpha_blend_takes_the_edit_where_the_mask_is_one_and_the_source_where_zero() -> None:
    edit, source = np.full((4, 4, 3), 200, np.uint8), np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), np.float32)
    mask[0], mask[1] = 1.0, 0.5
    blended = alpha_blend(edit, source, mask)
    assert (blended[0] == 200).all() and (blended[1] == 150).all() and (blended[2:] == 100).all()
