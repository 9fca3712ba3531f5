"""Prompts per emotion: the expression of the class, and random attributes per image for variety.

Each image's attributes (age, gender, lighting, ...) are drawn from its own seed, so a prompt is
reproducible on its own, whatever batch or order it is generated in.
"""

from __future__ import annotations

import string

import numpy as np

from fersynth.config import DiffusionConfig, EditConfig
from fersynth.errors import ParamsError


def expression(config: DiffusionConfig, class_name: str) -> str:
    """The words that describe `class_name`'s facial expression."""
    try:
        return config.expressions[class_name]
    except KeyError:
        raise ParamsError(
            f"generate.diffusion.expressions.{class_name} is missing: give the expression the prompts ask for, "
            f"e.g. {class_name}: 'a {class_name} face'"
        ) from None


def text_prompt(config: DiffusionConfig, class_name: str, seed: int) -> str:
    """`config.prompt` with the class's expression and one value of every attribute, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    # Every attribute is drawn, used in the template or not, so editing the template keeps the other draws.
    drawn = {name: str(values[rng.integers(len(values))]) for name, values in config.attributes.items()}
    return config.prompt.format(**drawn, expression=expression(config, class_name))


def edit_prompt(edit: EditConfig, diffusion: DiffusionConfig, class_name: str) -> str:
    """`edit.prompt` with the target class's expression: what the source face is edited toward."""
    unknown = sorted({name for _, name, _, _ in string.Formatter().parse(edit.prompt) if name} - {"expression"})
    if unknown:
        raise ParamsError(f"generate.edit.prompt names {{{unknown[0]}}}; it may only name {{expression}}")
    return edit.prompt.format(expression=expression(diffusion, class_name))
