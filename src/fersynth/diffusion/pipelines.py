"""Load a Stable Diffusion pipeline (SD 1.x/2.x, SDXL, SD3: whatever diffusers' auto pipelines know).

`generate.diffusion.model` is one of
- a local directory in diffusers layout (`model_index.json` + one folder per component), the way
  weights enter a DVC repository (`hf download ... --local-dir`, then `dvc add`);
- a single checkpoint file (`.safetensors`; `.ckpt`/`.pt` only with `allow_pickle`);
- a hub id `org/name`, pinned by `revision` and read from the local cache unless `allow_download`.
Pickled weights run code when loaded, so they are refused unless `allow_pickle` says they are trusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import diffusers
import torch
import transformers
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForText2Image,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    SchedulerMixin,
)
from diffusers.loaders.single_file_utils import fetch_diffusers_config, load_single_file_checkpoint
from huggingface_hub import snapshot_download

from fersynth.config import DiffusionConfig, is_hub_id
from fersynth.errors import DataError, ParamsError
from fersynth.runtime.device import default_device

Task = Literal["text2img", "img2img"]

MODEL_KEY = "generate.diffusion.model"
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
CONFIG_FILES = ["*.json", "*.txt", "*.model"]  # component configs, CLIP vocabularies, T5's sentencepiece model
HOW_TO_GET_WEIGHTS = (
    "download a pipeline in diffusers layout, e.g. `hf download stable-diffusion-v1-5/stable-diffusion-v1-5 "
    "--local-dir models/diffusion/sd15`, track it with `dvc add models/diffusion/sd15` and set "
    f"{MODEL_KEY}: models/diffusion/sd15 (the tiny random test pipeline is rebuilt with "
    "`python -m fersynth.diffusion.tiny models/diffusion/tiny-sd`)"
)
AUTO_PIPELINES: dict[Task, type[AutoPipelineForText2Image] | type[AutoPipelineForImage2Image]] = {
    "text2img": AutoPipelineForText2Image,
    "img2img": AutoPipelineForImage2Image,
}
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "pndm": PNDMScheduler,
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_pipeline(config: DiffusionConfig, task: Task, device: torch.device | None = None) -> DiffusionPipeline:
    """The `task` pipeline of `config.model` on `device` (default: the GPU if any), ready to sample quietly."""
    device = device or default_device()
    quiet_diffusers()
    pipe = _load(config, task, torch_dtype(config.dtype, device))
    if config.scheduler != "default":
        pipe.scheduler = _scheduler(pipe, config.scheduler)
    if config.attention_slicing:
        pipe.enable_attention_slicing()
    pipe.set_progress_bar_config(disable=True)  # fersynth's own bar counts images
    return pipe.to(device)


def resolution(pipe: DiffusionPipeline, config: DiffusionConfig) -> int:
    """Side of the generated images: `config.resolution`, or the size the pipeline was trained at."""
    if config.resolution:
        return config.resolution
    denoiser = pipe.unet if hasattr(pipe, "unet") else pipe.transformer  # SD3 denoises with a transformer
    return int(denoiser.config.sample_size * pipe.vae_scale_factor)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: half precision on a GPU (half the memory, tensor cores), full on the CPU (fp16 is slow there)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def quiet_diffusers() -> None:
    """Only errors from diffusers and transformers: their loading chatter and bars would bury the stage's log."""
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _load(config: DiffusionConfig, task: Task, dtype: torch.dtype) -> DiffusionPipeline:
    path = Path(config.model)
    if path.is_dir():
        return _from_directory(path, config, task, dtype)
    if path.is_file():
        return _from_single_file(path, config, task, dtype)
    if is_hub_id(config.model):
        return _from_hub(config, task, dtype)
    raise ParamsError(f"{MODEL_KEY}: {config.model!r} does not exist; {HOW_TO_GET_WEIGHTS}")


def _from_directory(path: Path, config: DiffusionConfig, task: Task, dtype: torch.dtype) -> DiffusionPipeline:
    if not (path / "model_index.json").is_file():
        raise ParamsError(
            f"{MODEL_KEY}: {path} has no model_index.json, so it is not a pipeline in diffusers layout; "
            f"give a single checkpoint by its file path, or {HOW_TO_GET_WEIGHTS}"
        )
    pickled = _pickled_only_components(path)
    if pickled and not config.allow_pickle:
        raise ParamsError(
            f"{MODEL_KEY}: {path} has only pickled weights (.bin/.ckpt/.pt) for {', '.join(pickled)}, and loading a "
            "pickle runs code from the file; download the .safetensors weights, or set "
            "generate.diffusion.allow_pickle: true if you trust this pipeline"
        )
    return _pretrained(task, str(path), config, dtype, local_files_only=True)


def _pickled_only_components(path: Path) -> list[str]:
    """Component folders with pickled weights and no safetensors (what use_safetensors=True cannot load)."""
    pickled = []
    for component in sorted(folder for folder in path.iterdir() if folder.is_dir()):
        suffixes = {file.suffix for file in component.iterdir()}
        if suffixes & set(PICKLE_SUFFIXES) and ".safetensors" not in suffixes:
            pickled.append(component.name)
    return pickled


def _from_hub(config: DiffusionConfig, task: Task, dtype: torch.dtype) -> DiffusionPipeline:
    if not config.revision:
        raise ParamsError(
            f"{MODEL_KEY}: {config.model!r} is no local file or directory; read as a Hugging Face hub id it needs "
            "generate.diffusion.revision (a commit hash, so the weights cannot change under the pipeline); "
            f"or {HOW_TO_GET_WEIGHTS}"
        )
    try:
        return _pretrained(
            task, config.model, config, dtype, revision=config.revision, local_files_only=not config.allow_download
        )
    except OSError as error:  # diffusers' answer to files missing from the cache or the hub unreachable
        download = f"hf download {config.model} --revision {config.revision}"
        raise _hub_failure(config.model, download, config, error) from error


def _hub_failure(repo: str, download: str, config: DiffusionConfig, error: OSError) -> DataError:
    """What to do when `repo` is not at hand: `download` is the command that fetches what is missing."""
    if config.allow_download:
        problem, fix = "could not be downloaded", "check the id, the revision and the network"
    else:
        problem, fix = (
            "is not in the local Hugging Face cache",
            f"run `{download}` or set generate.diffusion.allow_download: true",
        )
    return DataError(f"{MODEL_KEY}: {repo} {problem} ({type(error).__name__}); {fix}; or {HOW_TO_GET_WEIGHTS}")


def _pretrained(
    task: Task, source: str, config: DiffusionConfig, dtype: torch.dtype, **options: Any
) -> DiffusionPipeline:
    # use_safetensors=True never falls back to a pickle; None prefers safetensors and falls back.
    safetensors_only = None if config.allow_pickle else True
    auto = AUTO_PIPELINES[task]
    return auto.from_pretrained(source, dtype=dtype, use_safetensors=safetensors_only, **options)


def _from_single_file(path: Path, config: DiffusionConfig, task: Task, dtype: torch.dtype) -> DiffusionPipeline:
    """A checkpoint in the original (CompVis/Stability) layout, with its family's diffusers configs.

    diffusers recognises the family from the weights; its configs come from the hub cache (or the hub
    with allow_download), fetched here so diffusers never goes online behind `local_files_only`.
    """
    if path.suffix not in (".safetensors", *PICKLE_SUFFIXES):
        raise ParamsError(f"{MODEL_KEY}: {path} is neither a .safetensors nor a .ckpt/.pt checkpoint")
    if path.suffix in PICKLE_SUFFIXES and not config.allow_pickle:
        raise ParamsError(
            f"{MODEL_KEY}: {path} is a pickled checkpoint, and loading a pickle runs code from the file; "
            "use a .safetensors file, or set generate.diffusion.allow_pickle: true if you trust it"
        )
    family = fetch_diffusers_config(load_single_file_checkpoint(str(path), local_files_only=True))
    family_repo = family["pretrained_model_name_or_path"]
    try:
        configs = snapshot_download(
            family_repo, allow_patterns=CONFIG_FILES, local_files_only=not config.allow_download
        )
    except OSError as error:
        download = f"hf download {family_repo} --include " + " ".join(f"'{pattern}'" for pattern in CONFIG_FILES)
        raise _hub_failure(family_repo, download, config, error) from error
    pipeline_class = getattr(diffusers, DiffusionPipeline.load_config(configs)["_class_name"])
    pipe = pipeline_class.from_single_file(str(path), config=configs, dtype=dtype, local_files_only=True)
    return AUTO_PIPELINES[task].from_pipe(pipe)  # the family's text-to-image class → the task's class


def _scheduler(pipe: DiffusionPipeline, name: str) -> SchedulerMixin:
    """`name`'s scheduler with the pipeline's noise schedule (betas, prediction type) carried over."""
    scheduler_class = SCHEDULERS[name]
    if scheduler_class not in pipe.scheduler.compatibles:
        raise ParamsError(
            f"generate.diffusion.scheduler: {name!r} does not fit this pipeline's {type(pipe.scheduler).__name__} "
            "(flow-matching models such as SD3 need theirs); use default"
        )
    return scheduler_class.from_config(pipe.scheduler.config)
