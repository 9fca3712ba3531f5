"""A tiny Stable Diffusion pipeline with random weights, built from configs alone (nothing downloaded).

It has the structure of SD 1.x (UNet, VAE, CLIP text encoder and tokenizer, DDIM scheduler) at the
sizes diffusers' own tests use, so every loading and sampling path runs in seconds on a CPU. It draws
noise: it is for tests and for wiring the demo pipeline, never for faces. The committed copy in
models/diffusion/tiny-sd was written by

    .venv/bin/python -m fersynth.diffusion.tiny models/diffusion/tiny-sd
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length; the text encoder has one position embedding per token


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every character is a token, so any prompt encodes.

    Built in code because the real CLIP vocabulary (49,408 tokens and merges) is a download and
    would be most of the tiny pipeline's size.
    """
    characters = [chr(code) for code in _byte_characters()]
    tokens = [BOS, EOS, *characters, *(f"{character}</w>" for character in characters)]
    return CLIPTokenizer(
        vocab={token: index for index, token in enumerate(tokens)}, merges=[], model_max_length=MAX_TOKENS
    )


def _byte_characters() -> list[int]:
    """The 256 code points byte-level BPE maps the bytes 0-255 to (GPT-2's `bytes_to_unicode`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [256 + offset for offset in range(256 - len(printable))]
    return printable + shifted


# Sizes of diffusers' own pipeline tests: the SD 1.x structure at a few kilobytes per component.
TINY_UNET: dict[str, Any] = {
    "block_out_channels": (4, 8),
    "layers_per_block": 1,
    "sample_size": 32,  # latent side: × the VAE's factor 2 = 64-pixel images
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "norm_num_groups": 2,  # GroupNorm's default 32 groups do not divide 4 channels
}
TINY_VAE: dict[str, Any] = {
    "block_out_channels": (4, 8),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "norm_num_groups": 2,
    "sample_size": 64,
}
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
}


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny random pipeline; the same `seed` gives the same weights."""
    return random_pipeline(TINY_UNET, TINY_VAE, TINY_TEXT, seed)


def random_pipeline(
    unet: Mapping[str, Any], vae: Mapping[str, Any], text: Mapping[str, Any], seed: int = 0
) -> StableDiffusionPipeline:
    """An SD 1.x pipeline of the given component configs, randomly initialised from `seed`.

    The tokenizer is the code-built one and the scheduler SD 1.5's; the global RNG is left as it was.
    """
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components = {
            "unet": UNet2DConditionModel(in_channels=4, out_channels=4, **unet),
            "vae": AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae),
            "text_encoder": CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=len(tokenizer),
                    max_position_embeddings=MAX_TOKENS,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **text,
                )
            ),
        }
    scheduler = DDIMScheduler(  # SD 1.5's noise schedule
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        **components,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_pipeline(directory: Path, seed: int = 0) -> None:
    """Write the tiny pipeline in diffusers layout, weights as safetensors (what load_pipeline accepts)."""
    build_tiny_pipeline(seed).save_pretrained(directory, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="where to write the pipeline (diffusers layout)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    arguments = parser.parse_args()
    save_tiny_pipeline(arguments.directory, arguments.seed)


if __name__ == "__main__":
    main()
