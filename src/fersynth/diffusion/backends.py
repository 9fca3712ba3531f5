"""The Stable Diffusion synthesis backends of the generate stage (registered in generation.BACKENDS).

- `sd_text2img` (source "diffusion"): a portrait per image from an emotion prompt with random
  attributes, then the same face alignment as the real photos; images with no face are dropped.
- `sd_img2img` (source "edit"): real training faces of the source classes (neutral by default)
  edited toward each target expression, colour-matched and blended back onto their source.

Image i of a request depends only on its own seed (prompt attributes and a torch generator of its
own), not on how many images share a pipeline batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline

from fersynth.config import DiffusionConfig, EditConfig, FaceAlignConfig
from fersynth.datasets.format import Dataset
from fersynth.diffusion.pipelines import Task, load_pipeline, resolution
from fersynth.diffusion.prompts import edit_prompt, text_prompt
from fersynth.editing import SourceFaces, check_source_classes, source_face_margin
from fersynth.errors import ParamsError
from fersynth.faces import align_dataset, resize_images
from fersynth.generation import BackendInputs, Samples

log = logging.getLogger(__name__)


def image_seeds(seed: int, count: int) -> list[int]:
    """One seed per image of a request; the i-th is the same however many images are asked for."""
    return [int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) for index in range(count)]


class DiffusionBackend:
    """What both backends share: a loaded pipeline, run batch by batch with one generator per image."""

    source: str

    def __init__(
        self, pipe: DiffusionPipeline, config: DiffusionConfig, classes: Sequence[str], image_size: int, channels: int
    ) -> None:
        self.pipe = pipe
        self.config = config
        self.classes = tuple(classes)
        self.image_shape = (image_size, image_size, channels)
        self.resolution = resolution(pipe, config)

    def paint(
        self, prompts: Sequence[str], seeds: Sequence[int], images: np.ndarray | None = None, **options: Any
    ) -> np.ndarray:
        """RGB uint8 (n, H, W, 3), image i drawn with generator seeds[i] (and starting from images[i] if given).

        The generators live on the CPU, so a seed gives the same starting noise on any device.
        """
        drawn = [np.zeros((0, self.resolution, self.resolution, 3), dtype=np.uint8)]  # so none asked → none made
        for start in range(0, len(prompts), self.config.batch_size):
            batch = slice(start, start + self.config.batch_size)
            prompt = list(prompts[batch])
            start_images = {} if images is None else {"image": images[batch]}
            result = self.pipe(
                prompt=prompt,
                negative_prompt=[self.config.negative_prompt] * len(prompt),
                num_inference_steps=self.config.steps,
                guidance_scale=self.config.guidance_scale,
                generator=[torch.Generator().manual_seed(seed) for seed in seeds[batch]],
                output_type="np",
                **start_images,
                **options,
            )
            drawn.append(np.clip(np.rint(result.images * 255.0), 0, 255).astype(np.uint8))
        return np.concatenate(drawn)


class TextToImageBackend(DiffusionBackend):
    """Portraits from emotion prompts, aligned (and dropped when faceless) exactly like real photos."""

    source = "diffusion"

    def __init__(
        self,
        pipe: DiffusionPipeline,
        config: DiffusionConfig,
        classes: Sequence[str],
        align: FaceAlignConfig,
        image_size: int,
        channels: int,
    ) -> None:
        super().__init__(pipe, config, classes, image_size, channels)
        # The real photos' alignment, with this backend's detector; a photo with no face is useless.
        self.align = align.model_copy(update={"detector": config.face_detector, "on_no_face": "drop"})

    def sample(self, class_index: int, count: int, seed: int) -> Samples:
        class_name = self.classes[class_index]
        seeds = image_seeds(seed, count)
        prompts = [text_prompt(self.config, class_name, image_seed) for image_seed in seeds]
        photos = self.paint(prompts, seeds, height=self.resolution, width=self.resolution)
        size, _, channels = self.image_shape
        aligned = align_dataset(_photo_dataset(photos, class_index, self.classes), self.align, size, channels)
        return Samples.drawn(aligned.dataset.images)


def _photo_dataset(photos: np.ndarray, class_index: int, classes: tuple[str, ...]) -> Dataset:
    count = len(photos)
    return Dataset(
        images=photos,
        labels=np.full(count, class_index, dtype=np.int64),
        splits=np.full(count, "train", dtype=object),
        classes=classes,
        ids=np.asarray([str(index) for index in range(count)], dtype=object),
    )


class ExpressionEditBackend(DiffusionBackend):
    """Real training faces of the source classes (fersynth.editing), edited toward a target expression by
    img2img and blended back onto their source."""

    source = "edit"

    def __init__(
        self,
        pipe: DiffusionPipeline,
        config: DiffusionConfig,
        edit: EditConfig,
        real: Dataset,
        face_margin: float,
        image_size: int,
        channels: int,
    ) -> None:
        super().__init__(pipe, config, real.classes, image_size, channels)
        self.edit = edit
        self.sources = SourceFaces(real, edit, image_size, channels, face_margin)

    def sample(self, class_index: int, count: int, seed: int) -> Samples:
        picks = self.sources.pick(class_index, count, seed)
        if not len(picks):
            return Samples.drawn(np.zeros((0, *self.image_shape), dtype=np.uint8))
        start = resize_images(self.sources.pool.images[picks], self.resolution, 3).astype(np.float32) / 255.0
        prompt = edit_prompt(self.edit, self.config, self.classes[class_index])  # diffusers reads [0, 1] above
        edits = self.paint([prompt] * len(picks), image_seeds(seed, len(picks)), start, strength=self.edit.strength)
        size, _, channels = self.image_shape
        faces = self.sources.onto_sources(resize_images(edits, size, channels), picks)
        return Samples(faces, self.sources.origins(picks))


def build_text_to_image(inputs: BackendInputs) -> TextToImageBackend:
    config = inputs.config.diffusion
    for name in inputs.real.classes:  # a class without an expression fails before any image is drawn
        text_prompt(config, name, seed=0)
    pipe = _pipeline(config, "text2img")
    return TextToImageBackend(pipe, config, inputs.real.classes, inputs.align, inputs.image_size, inputs.channels)


def build_expression_edit(inputs: BackendInputs) -> ExpressionEditBackend:
    diffusion, edit = inputs.config.diffusion, inputs.config.edit
    for name in inputs.real.classes:  # a class without an expression, or a bad template, fails before drawing
        edit_prompt(edit, diffusion, name)
    check_source_classes(edit, inputs.real.classes)
    if int(diffusion.steps * edit.strength) < 1:  # img2img runs steps × strength denoising steps
        raise ParamsError(
            f"generate.diffusion.steps × generate.edit.strength = {diffusion.steps} × {edit.strength} "
            "leaves no denoising step: raise either"
        )
    pipe = _pipeline(diffusion, "img2img")
    margin = source_face_margin(inputs.align)
    return ExpressionEditBackend(pipe, diffusion, edit, inputs.real, margin, inputs.image_size, inputs.channels)


def _pipeline(config: DiffusionConfig, task: Task) -> DiffusionPipeline:
    pipe = load_pipeline(config, task)
    log.info("%s: %s (%s) at %d px", task, config.model, type(pipe).__name__, resolution(pipe, config))
    return pipe
