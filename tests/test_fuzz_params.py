"""Property test of the params reader, which meets whatever a user (or a copied file) puts in params.yaml: random
documents with aliases (some of them of themselves), deep nesting, repeated keys and non-finite numbers give
valid params or a ParamsError with a short message, each within a deadline and in bounded memory. Examples are
derandomized so CI sees the same ones every run.
"""

from __future__ import annotations

import itertools
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fersynth.config import MAX_ERRORS_LISTED, Params
from fersynth.errors import ParamsError
from stages._common import read_params

from .bad_inputs import alias_bomb

FUZZ = settings(
    max_examples=100,
    deadline=None,  # the test times the untraced read itself
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What reading params may cost (the bound for any file up to the size limit). The slowest document here,
# 20,000 `[`, takes about 0.6 s on a busy 2-core machine.
MAX_SECONDS = 2.0
MAX_PEAK_BYTES = 200 * 2**20

SECTION_KEYS = {name: list(field.annotation.model_fields) for name, field in Params.model_fields.items()}  # type: ignore[union-attr]
NUMBERS = [".inf", "-.inf", ".nan", "1.0e+400", "1.0e+30", "1.0e-3", "0.5", "-1", "0", "3", "10000", "10000000000000"]
OTHERS = ["0x" + "f" * 300, "2001-13-45", "vgg", "linear", "demo", "null", "'x'", "[]", "{}"]
SCALARS = st.sampled_from(NUMBERS + OTHERS)
# Kinds of value, by frequency; deep: brackets nested up to past the limit.
KINDS = ["scalar"] * 5 + ["alias"] * 3 + ["list"] * 2 + ["mapping"] * 2 + ["deep"]


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A params-like YAML document: real section and key names, random values (their own keys may repeat)."""
    anchors: list[str] = []
    value = _value_drawer(draw, anchors)
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(SECTION_KEYS)), max_size=4, unique=True)):
        keys = draw(st.lists(st.sampled_from(SECTION_KEYS[section]), max_size=4, unique=True))
        lines.append(f"{section}: {{{', '.join(f'{key}: {value(2)}' for key in keys)}}}")
    return "\n".join(lines) + "\n"


def _value_drawer(draw: st.DrawFn, anchors: list[str]) -> Callable[[int], str]:
    """Draws a value at a depth: a scalar, an alias of an earlier anchor, nested brackets, or a list or mapping,
    some anchored (a few named before their content, which may then contain itself)."""
    names = itertools.count()

    def value(depth: int) -> str:
        kind = draw(st.sampled_from(KINDS if depth < 8 else ["scalar"]))
        if kind == "alias":
            return f"*{draw(st.sampled_from(anchors))}" if anchors else draw(SCALARS)
        if kind == "deep":
            levels = draw(st.sampled_from([1, 2, 10, 40, 70]))  # 70 reaches past the 64 levels allowed
            return "[" * levels + draw(SCALARS) + "]" * levels
        if kind == "scalar":
            return draw(SCALARS)
        anchor = f"a{next(names)}" if draw(st.booleans()) else None
        if anchor and draw(st.integers(0, 9)) == 0:
            anchors.append(anchor)  # named before its content: the content may alias it
        items = range(draw(st.integers(0, 9)))
        if kind == "list":
            text = "[" + ", ".join(value(depth + 1) for _ in items) + "]"
        else:
            text = "{" + ", ".join(f"k{draw(st.integers(0, 3))}: {value(depth + 1)}" for _ in items) + "}"
        if anchor and anchor not in anchors:
            anchors.append(anchor)
        return f"&{anchor} {text}" if anchor else text

    return value


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    return tmp_path / "params.yaml"


def read_checked(path: Path) -> None:
    """Read `path` as a stage does: valid params, or a ParamsError naming the file in a message of a few short lines."""
    try:
        read_params(path)
    except ParamsError as error:
        lines = str(error).splitlines()
        assert str(path) in lines[0]
        assert len(lines) <= MAX_ERRORS_LISTED + 2 and max(map(len, lines)) < 600, str(error)[:2000]


@FUZZ
@given(documents())
@example(alias_bomb(9).decode())
@example("train: &a {arch: [*a]}\n")
@example("train: {arch: " + "[" * 20_000 + "]" * 20_000 + "}\n")
@example("train: {lr: .inf}\n")
@example("train: {lr: 1.0e-3, lr: 1.0e-2}\n")
@example("train: {lr: 1.0e-3, epochs: 3}\n")
def test_params_reader_on_random_documents(params_file: Path, document: str) -> None:
    params_file.write_text(document)
    started = time.perf_counter()
    read_checked(params_file)
    seconds = time.perf_counter() - started
    tracemalloc.start()  # a second read, traced: tracing slows allocation-heavy code several times over
    try:
        read_checked(params_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < MAX_SECONDS, f"{seconds:.1f} s"
    assert peak < MAX_PEAK_BYTES, f"{peak / 2**20:.0f} MiB"
