"""What every case of the bad-input corpus asserts: a refusal, not a crash, and nothing lost.

A case runs one `fersynth` command in-process on an input it built itself and checks that the
command exited non-zero, that its message names the culprit (file, member, line or key), that no
traceback reached the user, and that outputs from an earlier good run are byte-for-byte intact.
A case about memory runs the command in a child process instead (`run_measured`), on a zip bomb
(`bomb_workspace`) or a params file of nested aliases (`alias_bomb`), and checks the child's peak.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from typer.testing import CliRunner

from fersynth.config import CANONICAL_CLASSES
from stages.cli import app

from .helpers import png


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    output: str  # without whitespace: rich wraps long paths at any character
    escaped: BaseException | None  # an exception that left the command (a traceback for the user)


def run_command(arguments: Sequence[str]) -> Outcome:
    result = CliRunner().invoke(app, list(arguments))
    escaped = None if result.exception is None or isinstance(result.exception, SystemExit) else result.exception
    return Outcome(result.exit_code, "".join(result.output.split()), escaped)


def assert_refused(outcome: Outcome, *culprits: str) -> None:
    """Non-zero exit, one message naming every culprit, no traceback."""
    assert outcome.escaped is None, f"traceback instead of a message: {outcome.escaped!r}"
    assert outcome.exit_code != 0, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    for culprit in culprits:
        assert "".join(culprit.split()) in outcome.output, f"{culprit!r} not named in: {outcome.output}"


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders), by path: compare before and after a failed run."""
    digests: dict[str, str] = {}
    for path in paths:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
        for file in files:
            if file.is_file():
                digests[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a stage left behind (its atomic writes stage under `.<name>.*.tmp`)."""
    return sorted(str(path) for path in Path(folder).rglob(".*.tmp"))


def write_zip_bomb(path: Path, member: str, size: int, extra: dict[str, bytes] | None = None) -> Path:
    """A zip whose `member` inflates to `size` zero bytes (1 GiB packs into about 1 MB), beside `extra` members.

    Zeros are streamed in, so building it never holds the inflated member in memory.
    """
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
        with archive.open(member, "w") as stream:
            for start in range(0, size, len(chunk)):
                stream.write(chunk[: size - start])
    return path


def alias_bomb(levels: int) -> bytes:
    """A "billion laughs" params file: each level lists nine aliases of the level before, 9**levels strings in all."""
    lines = [b'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [b"l%d: &l%d [%s]" % (level, level, b", ".join([b"*l%d" % (level - 1)] * 9)) for level in range(1, levels)]
    return b"\n".join([*lines, b"train: {arch: *l%d}" % (levels - 1)]) + b"\n"


@dataclass(frozen=True)
class Measured:
    exit_code: int
    output: str  # stdout and stderr as printed
    peak_mib: float  # the child's own peak resident memory since it started Python


# Runs the `fersynth` console script's entry point between two lines: where fersynth was imported from (so a
# run against another checkout on PYTHONPATH proves which code it measured) and, on the way out, the peak
# resident memory of this process's image (VmHWM). Not wait4's ru_maxrss: that also counts the pages of the
# forked parent before exec, over 600 MiB for a pytest process that has imported torch.
_CHILD = """
import sys, fersynth, stages.cli
print("fersynth from", fersynth.__file__, flush=True)
try:
    stages.cli.main()
finally:
    print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")), flush=True)
"""


def run_measured(arguments: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> Measured:
    """Run `fersynth <arguments>` in a child process (Linux: it reads /proc) and measure its peak memory."""
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *arguments], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    output = child.stdout + child.stderr
    peak_kib = next(int(line.split()[1]) for line in child.stdout.splitlines() if line.startswith("VmHWM:"))
    return Measured(child.returncode, output, peak_kib / 1024)


BOMB_MEMBER = "train/happy/bomb.png"


def bomb_workspace(root: Path, size: int) -> list[str]:
    """A repo-like folder whose params fetch `data/raw/bomb.zip`: one good image per class and split, and
    BOMB_MEMBER inflating to `size` bytes. Returns the `fersynth fetch` arguments, relative to `root`."""
    good = {
        f"{split}/{name}/{split}{index}.png": png(index * 3 + offset)
        for offset, split in enumerate(("train", "val", "test"))
        for index, name in enumerate(CANONICAL_CLASSES)
    }
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    write_zip_bomb(root / "data" / "raw" / "bomb.zip", BOMB_MEMBER, size, good)
    (root / "params.yaml").write_text(yaml.safe_dump({"fetch": {"source": "imagefolder", "path": "data/raw/bomb.zip"}}))
    outputs = ("--out", "fetched", "--diagnostics", "fetch.json", "--near-duplicates", "near_duplicates.png")
    return ["fetch", *outputs, "--params", "params.yaml"]
