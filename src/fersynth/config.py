"""Typed pipeline parameters: one model per params.yaml section.

The library takes these objects, never the YAML file; `load_params` is the one
place that turns a mapping into them, so every stage validates the whole file
and a typo in any section fails the first stage that runs.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from yaml.error import Mark
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode

from fersynth.errors import ParamsError

CANONICAL_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# numpy refuses negative seeds and torch seeds past 64 bits; a 31-bit seed also leaves room for the offsets
# added to it (teacher ensembles use seed, seed + 1, ...) and fits every API that takes a signed 32-bit seed.
MAX_SEED = 2**31 - 1

# An extra test set's name becomes a file name (confusion/<name>.json) and a metrics key: no separators,
# whitespace or leading dot, and not the name of the held-out split itself.
TEST_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # fullmatch: `$` would let a trailing newline through
HELD_OUT_SET = "test"

# Upper bounds of counts and sizes, far beyond any real run: there so that a slip (a few zeros too many) is refused by
# its key instead of running for years or asking for terabytes. Floats are bounded by being finite (see Section).
MAX_EPOCHS = 10_000  # also epoch-valued settings: warm-up, step size, checkpoint interval
MAX_IMAGES = 10**8  # images of a split, of a class, or of an epoch (FER2013 has 35,887; the largest FER sets 10^6)
MAX_BATCH = 65_536
MAX_STEPS = 10_000  # diffusion denoising steps (25 to 50 in practice)
MAX_SIDE = 65_536  # pixels along one side of an image (JPEG's own limit is 65,535)
MAX_PIXELS = 10**12  # decoded pixels of a whole source
# Decoded bytes of one image (see ReadRules.max_image_pixels): Pillow itself refuses above 179 million pixels, which
# is 716 million bytes in RGBA or 32-bit grey, so a bound past 10^9 would never be reached.
MAX_IMAGE_PIXELS = 10**9
MAX_BYTES = 2**40  # 1 TiB: a dataset file


# Error messages list at most this many invalid keys, and quote a short rendering of each value: a list of a
# thousand bad values, or one string of 60 KB, would otherwise become a message of that size.
MAX_ERRORS_LISTED = 20
SHOWN_KEY_CHARS = 120
SHOWN_VALUE_CHARS = 80
SHOWN_MESSAGE_CHARS = 300  # a validator's message quotes the value it refuses
SHOWN_VALUE = reprlib.Repr()
SHOWN_VALUE.maxlevel = 2  # reprlib renders only what it shows, however large the value
SHOWN_VALUE.maxstring = SHOWN_VALUE.maxother = SHOWN_VALUE_CHARS


class Section(BaseModel):
    """Base of every section: unknown keys, silent type coercion and non-finite floats (.inf, .nan) are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class CommonConfig(Section):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    image_size: int = Field(48, ge=16, le=512)
    channels: Literal[1, 3] = 1
    classes: list[str] = Field(default_factory=lambda: list(CANONICAL_CLASSES))

    @field_validator("classes")
    @classmethod
    def _known_unique_classes(cls, classes: list[str]) -> list[str]:
        unknown = [name for name in classes if name not in CANONICAL_CLASSES]
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r}; expected names from {list(CANONICAL_CLASSES)}")
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError("classes must be at least two distinct names")
        return classes


FetchSource = Literal[
    "demo", "fer2013", "fer2013_csv", "legend", "imagefolder", "rafdb", "kdef", "jaffe", "ckplus", "affectnet"
]
KdefAngle = Literal["FL", "HL", "S", "HR", "FR"]  # full left, half left, straight, half right, full right


class PaperSourceOptions(Section):
    """Choices of the papers' datasets, shared by fetch and evaluate's extra test sets."""

    # KDEF views to keep; the papers' frontal protocol is the straight view only.
    kdef_angles: list[KdefAngle] = Field(default_factory=lambda: ["S"], min_length=1)
    # CK+ labels only the peak frame; the first frame of each labelled sequence adds the neutral class.
    ckplus_neutral_first_frame: bool = True


class ReadRules(Section):
    """How dataset files are read: bounds on what an input may cost, and how odd images are made uniform.

    Fetch reads within these (evaluate's extra test sets, within their defaults); every bound names its key
    when it refuses a file.
    """

    # A zip member or file is read whole (images, label lists) or streamed (CSV tables): either stops past this.
    # 512 MiB: FER2013's CSV is 287 MiB; a face photo is a few MiB at most.
    max_file_bytes: int = Field(512 * 2**20, ge=1, le=MAX_BYTES)
    # A zip member above 1 MiB may inflate to at most this many times its compressed size (zip bombs inflate
    # by 1000x and more). Smaller members are exempt: a flat 48×48 PNG or a CSV of zeros can legitimately
    # compress 500:1, and below 1 MiB no ratio can cost memory.
    max_compression_ratio: float = Field(200.0, ge=1.0, le=1e6)  # deflate itself stops near 1032:1
    # Decoded pixels of a whole source (images × side²), checked before the array is allocated (1 byte a pixel
    # and channel). 2e9 holds FER2013 (35,887 × 48²) and tens of thousands of 256×256 photos.
    max_total_pixels: int = Field(2_000_000_000, ge=1, le=MAX_PIXELS)
    # Decoded size of one image, from its header before anything is decoded: width × height × bands × bytes a
    # band (16-bit counts double). A 700 KB PNG can declare 13,300² RGBA: 2.8 GB to decode and convert, which
    # max_file_bytes and the compression ratio let through. 50 million holds a 16-megapixel RGB photo whole; a
    # JPEG above max_side decodes at 1/2..1/8 scale and counts at that size, so camera photos pass (a 100-megapixel
    # JPEG decodes to 20 million at predict's side of 2048, 5 million at fetch's 256).
    max_image_pixels: int = Field(50_000_000, ge=1, le=MAX_IMAGE_PIXELS)
    # Images with a side below this are dropped and counted (dropped_too_small): letterboxed, a 1×1 or 2×2
    # file would become a flat face. 4 drops only such degenerate files; raise it for a source of photos.
    min_side: int = Field(4, ge=1, le=MAX_SIDE)
    # Grey level (0 = black, as the letterbox padding) transparent pixels are composited onto: alpha never
    # decides the number of channels, a grey face with an alpha channel stays grey.
    alpha_background: int = Field(0, ge=0, le=255)


class FetchConfig(PaperSourceOptions, ReadRules):
    source: FetchSource = "demo"
    path: str = ""  # folder or zip; unused by the demo source
    demo_train: int = Field(2800, ge=7, le=MAX_IMAGES)
    demo_val: int = Field(600, ge=7, le=MAX_IMAGES)
    demo_test: int = Field(600, ge=7, le=MAX_IMAGES)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # carved only when the source has no val split
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # carved only when the source has no test split
    max_side: int = Field(256, ge=16, le=MAX_SIDE)  # larger photos are stored downscaled (square, letterboxed)
    label_aliases: dict[str, str] = Field(default_factory=dict)  # extra raw-name -> canonical-name mappings
    # pHash bits (of 64) a val/test image may differ in from a train image and still count as its near-duplicate;
    # 0 counts equal hashes only. The audit always runs: it takes seconds even on FER2013.
    near_duplicate_distance: int = Field(4, ge=0, le=64)
    # Pixels each val/test image is also shifted by (each way) before hashing: pHash alone misses about half of
    # FER2013's one-pixel re-crops at distance 4. 0: plain pHash; cost grows with (2 * shift + 1)².
    near_duplicate_shift: int = Field(1, ge=0, le=3)
    # Remove train images that nearly duplicate a val/test image, so no evaluation face is also trained on.
    # Off by default: the audit then only reports and the fetched data stay as the source has them.
    drop_train_near_duplicates: bool = False
    # k-fold cross-validation for small datasets: with folds >= 2 the source's splits are dropped, fold `fold`
    # (stratified by class, or whole people where the source names them) is the test split and val is carved
    # from the rest by val_fraction. `fersynth compare --folds K` runs every fold. 0: the source's own splits.
    folds: int = Field(0, ge=0, le=50)
    fold: int = Field(0, ge=0, le=49)  # below folds (at most 50)

    @model_validator(mode="after")
    def _path_given_for_files(self) -> FetchConfig:
        if self.source != "demo" and not self.path:
            raise ValueError(f"fetch.path is required when fetch.source is {self.source!r}")
        return self

    @model_validator(mode="after")
    def _fold_in_range(self) -> FetchConfig:
        if self.folds == 1:
            raise ValueError("fetch.folds must be 0 (off) or at least 2")
        if self.folds and self.fold >= self.folds:
            raise ValueError(f"fetch.fold must be below fetch.folds ({self.folds}); folds count from 0")
        return self


class FaceAlignConfig(Section):
    detector: Literal["none", "mtcnn"] = "none"
    margin: float = Field(0.25, ge=0.0, le=1.0)  # extra border around the detected box, as a share of its size
    min_confidence: float = Field(0.9, ge=0.0, le=1.0)
    on_no_face: Literal["fallback", "drop"] = "fallback"  # fallback: centre crop + resize
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    # Larger photos are shrunk to this side for detection only; 0 = never.
    detection_size: int = Field(160, ge=0, le=MAX_SIDE)


class AugmentOfflineConfig(Section):
    variants_per_image: int = Field(2, ge=0, le=1_000)  # the papers write 5
    rotation_limit: float = Field(15.0, ge=0.0, le=90.0)  # degrees
    zoom_limit: float = Field(0.1, ge=0.0, le=0.5)
    stretch_limit: float = Field(0.1, ge=0.0, le=0.5)  # independent horizontal/vertical scale
    flip_probability: float = Field(0.5, ge=0.0, le=1.0)
    brightness_limit: float = Field(0.2, ge=0.0, le=1.0)
    contrast_limit: float = Field(0.2, ge=0.0, le=1.0)


class TrainGanConfig(Section):
    mode: Literal["conditional", "per_class"] = "conditional"
    # projection: this project's networks (spectral norm, minibatch std, class projection);
    # dcgan: the PyTorch DCGAN example's pair (BatchNorm in D), unconditional, so per_class only
    arch: Literal["projection", "dcgan"] = "projection"
    latent_dim: int = Field(100, ge=1, le=4096)  # DCGAN's is 100, StyleGAN's 512
    base_channels: int = Field(16, ge=4, le=1024)  # 16 fits the demo's CPU budget; wider learns real data better
    epochs: int = Field(15, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=2, le=MAX_BATCH)
    lr_generator: float = Field(1.0e-3, gt=0.0)
    lr_discriminator: float = Field(4.0e-3, gt=0.0)  # D faster than G (TTUR): spectral norm slows D down
    beta1: float = Field(0.0, ge=0.0, lt=1.0)
    beta2: float = Field(0.99, ge=0.0, lt=1.0)
    loss: Literal["hinge", "nonsaturating"] = "hinge"
    class_loss_weight: float = Field(1.0, ge=0.0)  # auxiliary-classifier (AC-GAN) term; 0 = projection only
    spectral_norm: bool = True
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)  # 0 disables the EMA generator
    # cutout also hides the mouth or eyes that carry the expression: off by default
    diffaugment: list[Literal["translation", "cutout", "color"]] = Field(
        default_factory=lambda: ["translation", "color"]
    )
    balanced_sampling: bool = True
    use_offline: bool = False  # also train on offline-augmented variants
    checkpoint_every: int = Field(1, ge=1, le=MAX_EPOCHS)  # epochs between resumable checkpoints

    @model_validator(mode="after")
    def _dcgan_is_unconditional(self) -> TrainGanConfig:
        if self.arch == "dcgan" and self.mode == "conditional":
            raise ValueError(
                "train_gan.arch dcgan is unconditional: set train_gan.mode per_class (one GAN per class), "
                "not conditional"
            )
        return self


class TrainEditorConfig(Section):
    """A StarGAN/GANmut-style expression editor G(face, target expression, intensity), trained from scratch on the
    real train faces with adversarial, expression-classification and cycle-reconstruction losses."""

    epochs: int = Field(0, ge=0, le=MAX_EPOCHS)  # 0: no editor (generate.backend editor then refuses to run)
    base_channels: int = Field(32, ge=4, le=256)  # width of the generator's first block (doubled when downsampling)
    residual_blocks: int = Field(3, ge=0, le=12)
    batch_size: int = Field(32, ge=2, le=MAX_BATCH)
    lr_generator: float = Field(1.0e-4, gt=0.0)
    # D 4x G (as SAGAN): at 1e-4 the cycle loss closed the attention mask before D told expressions apart, and
    # the editor learned to return its input unchanged.
    lr_discriminator: float = Field(4.0e-4, gt=0.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    classification_weight: float = Field(1.0, ge=0.0)  # expression-classification loss of the edits
    reconstruction_weight: float = Field(10.0, ge=0.0)  # cycle: edited back to the source expression gives the face
    mask_weight: float = Field(0.1, ge=0.0)  # keeps the attention mask sparse: edit the expression, keep the rest
    # Each training edit's intensity is drawn from [intensity_min, intensity_max] (GANmut: a fixed intensity
    # hurts); the editor's condition is intensity × target + (1 − intensity) × source expression.
    intensity_min: float = Field(0.5, ge=0.0, le=1.0)
    intensity_max: float = Field(1.0, ge=0.0, le=1.0)
    # 0: one pass over the train faces; else this many (balanced classes)
    images_per_epoch: int = Field(0, ge=0, le=MAX_IMAGES)

    @model_validator(mode="after")
    def _ordered_intensities(self) -> TrainEditorConfig:
        if self.intensity_min > self.intensity_max:
            raise ValueError("train_editor.intensity_min must not exceed train_editor.intensity_max")
        return self


SynthesisBackendName = Literal["gan", "sd_text2img", "sd_img2img", "editor"]

DEFAULT_EXPRESSIONS: dict[str, str] = {
    "angry": "an angry face, furrowed brows, glaring eyes, tightly pressed lips",
    "disgust": "a disgusted face, wrinkled nose, raised upper lip",
    "fear": "a frightened face, wide open eyes, raised eyebrows, mouth open in fear",
    "happy": "a happy face, broad smile, raised cheeks",
    "neutral": "a neutral expressionless face, relaxed mouth",
    "sad": "a sad face, downturned mouth, drooping eyelids, inner eyebrows raised",
    "surprise": "a surprised face, raised eyebrows, wide open eyes, open mouth",
}
# Randomised per image for diversity, as in Roy et al. (2411.10863); one value of each list per image.
DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    "age": ["young adult", "middle-aged", "elderly", "teenage"],
    "gender": ["man", "woman"],
    "ethnicity": ["African", "East Asian", "South Asian", "European", "Hispanic", "Middle Eastern"],
    "lighting": ["soft studio lighting", "natural daylight", "dim indoor lighting", "harsh side lighting"],
    "pose": ["frontal view", "slightly turned head", "head tilted slightly"],
}


class DiffusionConfig(Section):
    """A Stable Diffusion pipeline (any diffusers can load) and how it is prompted and run."""

    # Local directory (diffusers layout, safetensors), single .safetensors/.ckpt file, or a hub id.
    model: str = "models/diffusion/tiny-sd"
    revision: str = ""  # required for a hub id: a commit hash pins what is downloaded
    allow_download: bool = False  # hub ids only; off = local_files_only (the offline default)
    allow_pickle: bool = False  # a pickled .ckpt/.bin runs code when loaded: refused unless this is true
    steps: int = Field(25, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(7.5, ge=0.0, le=100.0)  # 5 to 15 in practice; far above, images burn out
    scheduler: Literal["default", "ddim", "dpm", "euler", "pndm"] = "default"
    resolution: int = Field(0, ge=0, le=MAX_SIDE)  # 0 = the pipeline's native size (512 for SD 1.5)
    batch_size: int = Field(4, ge=1, le=MAX_BATCH)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on a GPU, fp32 on CPU
    attention_slicing: bool = False  # less GPU memory for a little speed
    prompt: str = "a close-up portrait photo of a {age} {ethnicity} {gender} with {expression}, {lighting}, {pose}"
    negative_prompt: str = "cartoon, drawing, blurry, deformed, multiple faces, text, watermark"
    expressions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EXPRESSIONS))
    attributes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ATTRIBUTES.items()}
    )
    # Generated photos are aligned like real ones; mtcnn drops images with no face (counted in the metrics).
    face_detector: Literal["mtcnn", "none"] = "mtcnn"

    @model_validator(mode="after")
    def _prompt_fields_known(self) -> DiffusionConfig:
        empty = sorted(name for name, values in self.attributes.items() if not values)
        if empty:
            raise ValueError(f"generate.diffusion.attributes.{empty[0]} lists no values")
        drawn = {name: values[0] for name, values in self.attributes.items()}  # each image draws one of each
        problem = template_problem(self.prompt, {**drawn, "expression": ""})
        if problem:
            raise ValueError(f"generate.diffusion.prompt {problem}")
        return self


class EditConfig(Section):
    """sd_img2img and editor: real training faces of `source_classes` edited toward each target expression."""

    source_classes: list[str] = Field(default_factory=lambda: ["neutral"])
    prompt: str = "a close-up portrait photo of a person with {expression}"  # sd_img2img
    strength: float = Field(0.6, gt=0.0, le=1.0)  # sd_img2img: share of the denoising redone (1 ignores the source)
    colour_transfer: bool = True  # match the edit's LAB mean/std to the source face's
    feather: float = Field(0.15, ge=0.0, le=0.5)  # width of the mask's soft edge, as a share of the face box
    # editor: each edit's intensity is drawn from this range (GANmut: one fixed intensity hurts); 1 = the full
    # target expression, 0 = the source face as it is.
    intensity_min: float = Field(0.6, ge=0.0, le=1.0)
    intensity_max: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered_intensities(self) -> EditConfig:
        if self.intensity_min > self.intensity_max:
            raise ValueError("generate.edit.intensity_min must not exceed generate.edit.intensity_max")
        return self

    @field_validator("source_classes")
    @classmethod
    def _known_source_classes(cls, classes: list[str]) -> list[str]:
        unknown = [name for name in classes if name not in CANONICAL_CLASSES]
        if unknown or not classes:
            raise ValueError(f"unknown class {unknown[0]!r}" if unknown else "list at least one source class")
        return classes


def template_problem(template: str, values: Mapping[str, str]) -> str | None:
    """What keeps a prompt template from being filled in with `values`, the only fields it may name; None if
    nothing. A class's prompt is built this way at generate, so a template that fails here would fail there."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as error:  # a lone { or }
        return f"is not a valid template ({error})"
    unknown = sorted(fields - set(values))
    if unknown:
        return f"names {{{unknown[0]}}}; it may only name {', '.join(f'{{{name}}}' for name in values)}"
    try:
        template.format(**values)
    except (IndexError, KeyError, ValueError, AttributeError, TypeError) as error:  # {} or {0}, a bad !r or :d
        return f"cannot be filled in ({type(error).__name__}: {error})"
    return None


# Backends that load generate.diffusion.model and prompt it with generate.diffusion.expressions; backends that edit
# real train faces of generate.edit.source_classes.
PIPELINE_BACKENDS: frozenset[str] = frozenset({"sd_text2img", "sd_img2img"})
EDIT_BACKENDS: frozenset[str] = frozenset({"sd_img2img", "editor"})
# A hub id `org/name` (how fersynth.diffusion.pipelines reads generate.diffusion.model): a model that is no
# existing file or folder and matches this names no local path.
HUB_ID = re.compile(r"[\w-][\w.-]*/[\w.-]+")


def is_hub_id(model: str) -> bool:
    """Whether generate.diffusion.model is read as a hub id: as the loader reads it, a local file or folder first."""
    return not os.path.exists(model) and HUB_ID.fullmatch(model) is not None  # os.path: False on a NUL or long name


class GenerateConfig(Section):
    backend: SynthesisBackendName | Literal["hybrid"] = "gan"
    # backend=hybrid: the share of every class's planned images each backend draws (shares sum to 1)
    hybrid: dict[SynthesisBackendName, float] = Field(default_factory=lambda: {"gan": 0.5, "sd_text2img": 0.5})
    # copy_real: every class as many images as the real train split has of it (GANmut's thesis: same shape)
    target: Literal["balance_to_max", "per_class", "counts", "copy_real"] = "balance_to_max"
    per_class: int = Field(0, ge=0, le=MAX_IMAGES)  # used by target=per_class
    counts: dict[str, Annotated[int, Field(ge=0, le=MAX_IMAGES)]] = Field(default_factory=dict)  # used by target=counts
    oversample: float = Field(1.5, ge=1.0, le=100.0)  # headroom for images calibration rejects; it multiplies counts
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    truncation: float = Field(0.0, ge=0.0)  # GAN latents redrawn beyond ±truncation (0 = none)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    edit: EditConfig = Field(default_factory=EditConfig)

    @model_validator(mode="after")
    def _usable_hybrid(self) -> GenerateConfig:
        if self.backend == "hybrid":
            if not self.hybrid or any(share <= 0 for share in self.hybrid.values()):
                raise ValueError("generate.hybrid must give every listed backend a share above 0")
            if abs(sum(self.hybrid.values()) - 1.0) > 1e-6:
                raise ValueError(f"generate.hybrid shares must sum to 1 (got {sum(self.hybrid.values()):g})")
        return self

    def backend_shares(self) -> dict[SynthesisBackendName, float]:
        """Each backend that runs and its share of every class's planned images."""
        return dict(self.hybrid) if self.backend == "hybrid" else {self.backend: 1.0}

    def reads_pipeline(self) -> bool:
        """Whether a backend that runs loads `diffusion.model` (and prompts it with `diffusion.expressions`)."""
        return not PIPELINE_BACKENDS.isdisjoint(self.backend_shares())

    def edits_real_faces(self) -> bool:
        """Whether a backend that runs edits real faces of `edit.source_classes`."""
        return not EDIT_BACKENDS.isdisjoint(self.backend_shares())


class ClassifierConfig(Section):
    arch: Literal["linear", "vgg", "resemotenet", "resnet18"] = "vgg"
    width: int = Field(32, ge=4, le=256)  # vgg only: channels of the first block (doubled per block)
    # The head on the body's pooled features: 0 = one linear layer to the classes; N > 0 = Linear(N), ReLU,
    # Dropout(head_dropout), Linear(classes) (the KDEF paper's Dense(256) head). head_dropout with no hidden
    # layer drops features before the linear layer.
    head_hidden: int = Field(0, ge=0, le=65_536)
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)  # with time_budget_minutes: an upper bound
    # Stop when val macro-F1 (what picks the checkpoint) has not improved for this many epochs; 0 = off. With a
    # budget, whichever comes first ends the run.
    early_stopping_patience: int = Field(0, ge=0, le=MAX_EPOCHS)
    # Train for this many minutes of wall time (training plus validation) instead of a fixed number of epochs: the
    # scheduler anneals by the elapsed share of the budget (after any warm-up epochs), and training stops when it
    # is spent, so a 30-minute recipe is 30 minutes on any machine and more images per epoch buy fewer epochs.
    # Not repeatable (the epoch reached depends on the machine's speed); 0 = off: `epochs` alone decides.
    time_budget_minutes: float = Field(0.0, ge=0.0, le=100_000.0)
    # The same, counted in training images seen instead of minutes: an equal cost that the machine's speed and
    # load cannot change, so runs repeat exactly (a comparison at equal cost on a shared machine). 0 = off.
    images_budget: int = Field(0, ge=0, le=100 * MAX_IMAGES)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1.0e-3, gt=0.0)
    weight_decay: float = Field(1.0e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd only
    # plateau: the lr × plateau_factor once val macro-F1 has not improved for more than plateau_patience epochs
    # (ResEmoteNet's reference training); it needs no warm-up and no budget.
    scheduler: Literal["cosine", "step", "none", "plateau"] = "cosine"
    # lr rises linearly over these first epochs, then follows the scheduler
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    step_size: int = Field(10, ge=1, le=MAX_EPOCHS)  # scheduler=step: epochs between lr drops
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # scheduler=step: lr factor
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)  # scheduler=plateau: lr factor
    plateau_patience: int = Field(5, ge=0, le=MAX_EPOCHS)  # scheduler=plateau: epochs without improvement
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # Batch mixing: mixup blends each image with another of its batch, cutmix pastes a box of it, the weight
    # drawn from Beta(alpha, alpha) and the loss mixed alike; 0 = off, both > 0 = one or the other per batch.
    mixup_alpha: float = Field(0.0, ge=0.0)
    cutmix_alpha: float = Field(0.0, ge=0.0)
    random_erasing: float = Field(0.0, ge=0.0, le=1.0)  # share of training images with a random box blanked
    # balanced: each class's loss is weighted by n / (k · n_class) of the training labels, so a rare class
    # (disgust is 1.5% of FER2013) weighs as much as a common one; none: plain cross-entropy.
    class_weighting: Literal["none", "balanced"] = "none"
    flip_augment: bool = True  # random horizontal flip of training batches
    shift_augment: int = Field(2, ge=0, le=16)  # random translation of training images, in pixels (0 = off)
    # How the CPU computes (results equal up to float rounding): channels_last lays tensors out as oneDNN's
    # convolutions prefer; bf16 autocasts forward passes (a GPU always trains in mixed precision).
    channels_last: bool = False
    cpu_bf16: bool = False
    weights_path: str = ""  # resnet18 only: local torchvision state dict for transfer learning
    freeze_blocks: int = Field(0, ge=0, le=4)  # resnet18 with weights: residual stages kept frozen
    backbone_lr_scale: float = Field(0.1, gt=0.0, le=1.0)  # resnet18 with weights: lr factor of the backbone
    # Two-phase fine-tuning: the first head_only_epochs train the head on a fixed body (phase 1: its weights and
    # batch-norm statistics held), then the body trains too (phase 2; a resnet18 with weights at
    # backbone_lr_scale × lr, its freeze_blocks still fixed), every rate × phase_two_lr_factor from then on.
    head_only_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    phase_two_lr_factor: float = Field(1.0, gt=0.0, le=1.0)
    # Seeds this classifier's initialisation and batch order instead of common.seed, so a comparison
    # over seeds reruns only this classifier, not the data and GAN stages that common.seed feeds.
    seed: int | None = Field(None, ge=0, le=MAX_SEED)

    def seed_or(self, common_seed: int) -> int:
        return common_seed if self.seed is None else self.seed

    @model_validator(mode="after")
    def _one_budget(self) -> ClassifierConfig:
        if self.time_budget_minutes and self.images_budget:
            raise ValueError("set time_budget_minutes or images_budget, not both")
        return self

    @model_validator(mode="after")
    def _usable_schedule(self) -> ClassifierConfig:
        if self.scheduler == "plateau" and self.warmup_epochs:
            raise ValueError("scheduler 'plateau' takes no warm-up: set warmup_epochs to 0 or choose another scheduler")
        if self.scheduler == "plateau" and (self.time_budget_minutes or self.images_budget):
            raise ValueError(
                "scheduler 'plateau' follows val macro-F1, a budget anneals by its share spent: "
                "set time_budget_minutes and images_budget to 0 or choose another scheduler"
            )
        if self.phase_two_lr_factor != 1.0 and not self.head_only_epochs:
            raise ValueError("phase_two_lr_factor has no effect without head_only_epochs (no phase 2 to start)")
        return self


class CalibrateConfig(Section):
    policy: Literal["filter", "relabel", "soft", "vote"] = "filter"  # how a kept image is labelled
    selection: Literal["threshold", "quota", "precision"] = "threshold"  # which images are kept
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # selection=threshold; precision's fallback
    quota_per_class: int = Field(0, ge=0, le=MAX_IMAGES)  # used by selection=quota
    target_precision: float = Field(0.9, gt=0.0, le=1.0)  # used by selection=precision
    confidence_floor: float = Field(0.0, ge=0.0, le=1.0)  # quota and precision never keep an image below it
    ensemble_size: int = Field(1, ge=1, le=100)  # each member is a classifier trained in full
    teacher: ClassifierConfig = Field(default_factory=lambda: ClassifierConfig(epochs=5))
    # One teacher per listed class weighting (each × ensemble_size seeds); empty = teacher.class_weighting only.
    # An unweighted teacher rarely predicts a rare class and a balanced one over-predicts it: averaged,
    # they are the better judge of both.
    ensemble_class_weightings: list[Literal["none", "balanced"]] = Field(default_factory=list)
    # Classifiers from earlier fersynth runs (their models/classifier/model.pt, brought in under models/pretrained/)
    # that serve as the teachers instead of training any: a recipe's own strong student (e.g. fer2013-30min's)
    # judges the faces meant to help the next student. Empty: teachers are trained from `teacher`.
    teacher_checkpoints: list[str] = Field(default_factory=list)
    # A classifier trained on the same real data that takes no part in selection, so the quality of the
    # generated faces is not graded by the model that selected them; null = no judge (saves its training).
    judge: ClassifierConfig | None = None

    @model_validator(mode="after")
    def _usable_selection(self) -> CalibrateConfig:
        if self.policy in ("relabel", "vote") and self.selection != "threshold":
            raise ValueError(
                f"calibrate.selection {self.selection!r} has no effect: "
                f"calibrate.policy {self.policy!r} keeps every image"
            )
        if self.selection == "quota" and self.quota_per_class == 0:
            raise ValueError("calibrate.quota_per_class must be at least 1 when calibrate.selection is 'quota'")
        if len(set(self.ensemble_class_weightings)) != len(self.ensemble_class_weightings):
            raise ValueError("calibrate.ensemble_class_weightings must list each weighting once")
        if len(set(self.teacher_checkpoints)) != len(self.teacher_checkpoints) or "" in self.teacher_checkpoints:
            raise ValueError("calibrate.teacher_checkpoints must list each checkpoint once, none empty")
        return self

    def teacher_configs(self) -> list[ClassifierConfig]:
        """The teacher config of every ensemble member but its seed: one per class weighting."""
        weightings = self.ensemble_class_weightings or [self.teacher.class_weighting]
        return [self.teacher.model_copy(update={"class_weighting": weighting}) for weighting in weightings]


MergeSource = Literal["real", "offline", "gan", "diffusion", "edit", "editor"]


class MergeConfig(Section):
    sources: list[MergeSource] = Field(
        default_factory=lambda: ["real", "offline", "gan", "diffusion", "edit", "editor"]
    )
    policy: Literal["all", "balance_to_max", "per_class", "max_synthetic_share", "ratio"] = "balance_to_max"
    per_class: int = Field(0, ge=0, le=MAX_IMAGES)  # used by policy=per_class
    max_synthetic_share: float = Field(0.5, ge=0.0, le=1.0)  # used by policy=max_synthetic_share
    # policy=ratio: synthetic images per real train image of each class (1.0: real:synthetic 1:1, GANmut's hybrid)
    synthetic_per_real: float = Field(1.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _usable_policy(self) -> MergeConfig:
        if not self.sources or len(set(self.sources)) != len(self.sources):
            raise ValueError(
                "merge.sources must list at least one of real, offline, gan, diffusion, edit, editor, each once"
            )
        if self.policy == "per_class" and self.per_class == 0:
            raise ValueError("merge.per_class must be at least 1 when merge.policy is 'per_class'")
        if self.policy == "ratio" and "real" not in self.sources:
            raise ValueError("merge.policy 'ratio' counts synthetic images per real one: merge.sources must list real")
        return self


class ExtraTestSet(PaperSourceOptions):
    source: FetchSource
    path: str = ""
    split: Literal["all", "test"] = "all"  # which images of the source are scored
    detector: Literal["none", "mtcnn"] = "none"
    seed: int = Field(1, ge=0, le=MAX_SEED)  # demo source only: a seed other than common.seed draws new identities


class EvaluateConfig(Section):
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    # Test-time augmentation: each test image scored as the mean of the classifier's probabilities over
    # views of it. none | flip (mirror) | flip_shifts (mirror × centre and four 2-pixel shifts: 10 views).
    tta: Literal["none", "flip", "flip_shifts"] = "none"
    extra_test_sets: dict[str, ExtraTestSet] = Field(default_factory=dict)

    @field_validator("extra_test_sets")
    @classmethod
    def _names_fit_file_names(cls, extra_sets: dict[str, ExtraTestSet]) -> dict[str, ExtraTestSet]:
        for name in extra_sets:
            if name == HELD_OUT_SET or not TEST_SET_NAME.fullmatch(name):
                key = f"evaluate.extra_test_sets.{name}"  # repr: a newline in the name shows as \n
                raise ValueError(
                    f"{key!r}: a test set name must be letters, digits, '_' or '-' (a letter or digit first) "
                    f"and not {HELD_OUT_SET!r}"
                )
        return extra_sets


class Params(Section):
    common: CommonConfig = Field(default_factory=CommonConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    face_align: FaceAlignConfig = Field(default_factory=FaceAlignConfig)
    augment_offline: AugmentOfflineConfig = Field(default_factory=AugmentOfflineConfig)
    train_gan: TrainGanConfig = Field(default_factory=TrainGanConfig)
    train_editor: TrainEditorConfig = Field(default_factory=TrainEditorConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    train: ClassifierConfig = Field(default_factory=ClassifierConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @model_validator(mode="after")
    def _sections_agree(self) -> Params:
        """Checks that span sections, run by every stage: a library caller given a dataset repeats them (generation,
        editing and the diffusion backends check against the dataset's classes)."""
        problems = self._disagreements()
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
                    for loc, message, value in problems
                ],
            )
        return self

    def _disagreements(self) -> list[tuple[tuple[str, ...], str, Any]]:
        """(key, message, value) of every setting that other sections' settings make unusable."""
        classes, generate = self.common.classes, self.generate
        problems: list[tuple[tuple[str, ...], str, Any]] = []
        unknown = [name for name in generate.counts if name not in classes]
        if generate.target == "counts" and unknown:
            message = f"unknown class {unknown[0]!r}; classes are {classes} (common.classes)"
            problems.append((("generate", "counts"), message, generate.counts))
        unknown = [name for name in generate.edit.source_classes if name not in classes]
        if generate.edits_real_faces() and unknown:
            message = f"names {unknown[0]!r}, which is not in common.classes {classes}"
            problems.append((("generate", "edit", "source_classes"), message, generate.edit.source_classes))
        missing = [name for name in classes if name not in generate.diffusion.expressions]
        if generate.reads_pipeline() and missing:
            message = (
                f"no expression for {missing} of common.classes: each class's prompt asks for one, "
                f"e.g. {missing[0]}: 'a {missing[0]} face'"
            )
            problems.append((("generate", "diffusion", "expressions"), message, generate.diffusion.expressions))
        problem = template_problem(generate.edit.prompt, {"expression": ""})
        if "sd_img2img" in generate.backend_shares() and problem:  # the one backend that reads it
            problems.append((("generate", "edit", "prompt"), problem, generate.edit.prompt))
        return problems

    def external_inputs(self) -> list[ExternalInput]:
        """Every file or folder the pipeline reads from outside its own outputs, with its params key."""
        inputs = [ExternalInput("fetch.path", self.fetch.path, "dataset")]
        inputs += [
            ExternalInput(f"evaluate.extra_test_sets.{name}.path", spec.path, "dataset")
            for name, spec in self.evaluate.extra_test_sets.items()
        ]
        classifiers = {
            "train": self.train,
            "calibrate.teacher": self.calibrate.teacher,
            "calibrate.judge": self.calibrate.judge,
        }
        inputs += [
            ExternalInput(f"{key}.weights_path", classifier.weights_path, "weights")
            for key, classifier in classifiers.items()
            if classifier is not None
        ]
        inputs += [
            ExternalInput(f"calibrate.teacher_checkpoints[{index}]", path, "weights")
            for index, path in enumerate(self.calibrate.teacher_checkpoints)
        ]
        model = self.generate.diffusion.model
        # Only a local pipeline is a file DVC must see: a hub id (pinned by its revision) names no path here.
        if self.generate.reads_pipeline() and not is_hub_id(model):
            inputs.append(ExternalInput("generate.diffusion.model", model, "pipeline"))
        return [given for given in inputs if given.path]


@dataclass(frozen=True)
class ExternalInput:
    key: str  # dotted params key, for error messages
    path: str
    kind: Literal["dataset", "weights", "pipeline"]


def read_yaml_file(path: Path, what: str) -> Any:
    """A YAML file's content, read within BoundedLoader's bounds; a missing, unreadable, oversized or malformed
    file is a ParamsError naming it (and its line)."""
    if not path.is_file():
        raise ParamsError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_YAML_BYTES + 1)  # no more: a huge file costs no memory to refuse
    except OSError as error:
        raise ParamsError(f"{path}: {what} unreadable ({error.strerror})") from None
    if len(data) > MAX_YAML_BYTES:
        raise ParamsError(f"{path}: {what} is larger than {MAX_YAML_BYTES // 2**10} KiB; is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ParamsError(f"{path}:{line}: {what} is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=BoundedLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or error
        raise ParamsError(
            f"{where}: {problem}" if isinstance(error, YamlRefused) else f"{where}: not valid YAML ({problem})"
        ) from None


def load_params(raw: Mapping[str, Any], source: str = "params.yaml") -> Params:
    """Validate a whole params mapping; errors name every offending key (the first MAX_ERRORS_LISTED of them)."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        lines = [_describe(err) for err in errors[:MAX_ERRORS_LISTED]]
        if len(errors) > MAX_ERRORS_LISTED:
            lines.append(f"... and {len(errors) - MAX_ERRORS_LISTED} more")
        raise ParamsError(f"{source}: invalid parameters:\n" + "\n".join(f"  - {line}" for line in lines)) from None


def _describe(err: Mapping[str, Any]) -> str:
    location = _clipped(".".join(str(part) for part in err["loc"]), SHOWN_KEY_CHARS)
    if err["type"] == "extra_forbidden":
        return f"{location}: unknown key{_suggestion(err['loc'])}"
    value = err.get("input")
    shown = f" (got {_clipped(SHOWN_VALUE.repr(value), SHOWN_VALUE_CHARS)})" if not isinstance(value, Mapping) else ""
    return f"{location}: {_clipped(err['msg'], SHOWN_MESSAGE_CHARS)}{shown}"


def _suggestion(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------- reading YAML within bounds
#
# PyYAML's SafeLoader builds an aliased value once and shares it, but everything downstream (validation, error
# messages) walks the expanded tree: a "billion laughs" file of a few hundred bytes, nine levels of nine aliases,
# holds 387 million values. Composing recurses once per level, so 20,000 `[` end in a RecursionError.
#
# BoundedLoader refuses, with the line: nesting past MAX_YAML_DEPTH (through aliases too, so a value that contains
# itself is refused), aliases that expand the document past MAX_YAML_NODES, a key written twice in one mapping
# (YAML keeps the last silently while DVC's reader refuses the file, so the stage and `dvc params diff` would
# disagree), an integer past MAX_INT_BITS, and a scalar its tag cannot read (where PyYAML raises ValueError or
# AttributeError). read_yaml_file bounds the text itself: at most MAX_YAML_BYTES.

# 64 KiB: five times params.yaml with every key spelled out and commented (13 KB). This loader reads such a file in
# 1.5 s of CPU at worst (a flow list of zeros) on a busy 2-core machine; a larger limit would break 2 s.
MAX_YAML_BYTES = 64 * 2**10
# Levels of nested mappings and lists; params.yaml nests 4 deep.
MAX_YAML_DEPTH = 64
# Values (keys included) of the document with every alias expanded: one per byte of a file at the size limit, about
# as many as such a file spells out without aliases (`0,` is two bytes a value, `a,` in a flow mapping one), so
# aliases never make a document cost more than a file at the size limit.
MAX_YAML_NODES = MAX_YAML_BYTES
# Far past every param's range (validation names the key), and printable: repr() refuses ints past 4,300 digits,
# which a hex literal spells in 3,600 bytes.
MAX_INT_BITS = 1024

MERGE_TAG = "tag:yaml.org,2002:merge"
# How PyYAML's scalar constructors fail on text their tag cannot read, e.g. `!!int x` or the date `2001-13-45`.
UNREADABLE_SCALAR = (ValueError, TypeError, AttributeError, OverflowError)


class YamlRefused(yaml.MarkedYAMLError):
    """A document valid as YAML but past one of BoundedLoader's bounds; `problem` says which."""

    def __init__(self, problem: str, mark: Mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def _clipped(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with … when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader within the bounds above; use as `yaml.load(text, Loader=BoundedLoader)` on at most
    MAX_YAML_BYTES of text."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # Checked while composing, which recurses once per level: after it, RecursionError would have come first.
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlRefused(f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, depth=1, known={})
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if not isinstance(node, ScalarNode):
            return super().construct_object(node, deep)
        shown = _clipped(node.value, SHOWN_VALUE_CHARS)
        try:
            value = super().construct_object(node, deep)
        except UNREADABLE_SCALAR:
            raise YamlRefused(f"cannot read {shown!r} as {node.tag.rsplit(':', 1)[-1]}", node.start_mark) from None
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise YamlRefused(f"integer {shown} is beyond {MAX_INT_BITS} bits", node.start_mark)
        return value

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            # Merged keys (`<<: *base`) may be overridden: that is what merging is for. Only keys written twice
            # in this mapping are refused.
            if isinstance(key_node, ScalarNode) and key_node.tag != MERGE_TAG:
                key = self.construct_object(key_node)
                if key in first_lines:
                    shown = _clipped(repr(key), SHOWN_VALUE_CHARS)
                    problem = f"key {shown} given twice (first on line {first_lines[key]})"
                    raise YamlRefused(problem, key_node.start_mark)
                first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _expanded_size(node: Node, depth: int, known: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """Values under `node` (itself included) with aliases expanded, and their levels; refuses a document past
    the bounds when `node` sits `depth` levels deep.

    Each node is measured once (`known`, by id), so the cost is that of the file, not of the expansion. Levels
    count through aliases too, which also ends an alias that contains itself (it is never `known` in time).
    """
    if depth > MAX_YAML_DEPTH:
        raise _too_deep(node)
    if id(node) not in known:
        measured = [_expanded_size(child, depth + 1, known) for child in _children(node)]
        size = 1 + sum(size for size, _ in measured)
        if size > MAX_YAML_NODES:
            raise YamlRefused(
                f"this value holds {size:,} values with its aliases expanded, past the {MAX_YAML_NODES:,} allowed",
                node.start_mark,
            )
        known[id(node)] = (size, 1 + max((levels for _, levels in measured), default=0))
    size, levels = known[id(node)]
    if depth + levels - 1 > MAX_YAML_DEPTH:  # a node measured before, now reached deeper through an alias
        raise _too_deep(node)
    return size, levels


def _too_deep(node: Node) -> YamlRefused:
    return YamlRefused(f"nested deeper than {MAX_YAML_DEPTH} levels (through aliases)", node.start_mark)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, CollectionNode) else []
