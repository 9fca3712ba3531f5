"""Seconds per image of the Stable Diffusion backends, on a randomly initialised SD 1.5-sized pipeline.

Random weights cost the same arithmetic as trained ones, so the figures are those of SD 1.5 at
the same steps, resolution and dtype, without a download (SD 1.5's safety checker, which the
real pipeline also runs, is not included). Each backend draws one warm-up image, then
`--images` timed ones through its `sample` (text-to-image with face_detector none; editing at
strength 0.6, which runs int(0.6 × steps) denoising steps). Example (minutes on a CPU):

    .venv/bin/python benchmarks/bench_diffusion.py --images 1 --steps 25 --resolution 512
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoPipelineForImage2Image, DiffusionPipeline

from fersynth.config import CANONICAL_CLASSES, DiffusionConfig, EditConfig, FaceAlignConfig
from fersynth.datasets.format import Dataset
from fersynth.diffusion.backends import DiffusionBackend, ExpressionEditBackend, TextToImageBackend
from fersynth.diffusion.pipelines import quiet_diffusers, torch_dtype
from fersynth.diffusion.tiny import random_pipeline
from fersynth.runtime.device import default_device

SD15_UNET = {  # UNet2DConditionModel's defaults are SD 1.5's; spelled out so the benchmark says what it times
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "sample_size": 64,
}
SD15_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "sample_size": 512,
}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12}
IMAGE_SIZE = 48  # FER2013's; the backends shrink their output to it after drawing at --resolution
STRENGTH = 0.6


def sd15_pipelines(device: torch.device) -> tuple[DiffusionPipeline, DiffusionPipeline]:
    """Text-to-image and image-to-image pipelines sharing one set of random SD 1.5-sized components."""
    text = random_pipeline(SD15_UNET, SD15_VAE, SD15_TEXT).to(device, torch_dtype("auto", device))
    image = AutoPipelineForImage2Image.from_pipe(text)
    for pipe in (text, image):
        pipe.set_progress_bar_config(disable=True)
    return text, image


def faces(count: int) -> Dataset:
    """Random 'real' train faces of the edit's source class."""
    neutral = CANONICAL_CLASSES.index("neutral")
    return Dataset(
        images=np.random.default_rng(0).integers(0, 256, size=(count, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8),
        labels=np.full(count, neutral, dtype=np.int64),
        splits=np.full(count, "train", dtype=object),
        classes=CANONICAL_CLASSES,
        ids=np.array([f"real{i}" for i in range(count)], dtype=object),
    )


def seconds_per_image(backend: DiffusionBackend, images: int) -> float:
    happy = CANONICAL_CLASSES.index("happy")
    backend.sample(happy, 1, seed=0)  # warm-up: first-call allocations and kernel selection
    started = time.perf_counter()
    backend.sample(happy, images, seed=1)
    return (time.perf_counter() - started) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1, help="timed images per backend")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if int(args.steps * STRENGTH) < 1:
        parser.error(f"--steps must be at least 2: editing runs steps × {STRENGTH} denoising steps")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    quiet_diffusers()
    device = default_device()
    config = DiffusionConfig(steps=args.steps, resolution=args.resolution, batch_size=1, face_detector="none")
    text, image = sd15_pipelines(device)
    edit = EditConfig(strength=STRENGTH)
    backends: dict[str, DiffusionBackend] = {
        "text2img": TextToImageBackend(text, config, CANONICAL_CLASSES, FaceAlignConfig(), IMAGE_SIZE, 1),
        f"img2img (strength {STRENGTH})": ExpressionEditBackend(image, config, edit, faces(8), 0.25, IMAGE_SIZE, 1),
    }
    print(
        f"# {Path(__file__).name}: random SD 1.5-sized pipeline, {args.steps} steps, {args.resolution} px, "
        f"{args.images} image(s), {device}, {torch_dtype('auto', device)}, torch threads {torch.get_num_threads()}"
    )
    for name, backend in backends.items():
        seconds = seconds_per_image(backend, args.images)
        print(f"{name:24s} {seconds:8.2f} s/image  {seconds * 100 / 60:8.1f} min/100 images")


if __name__ == "__main__":
    main()
