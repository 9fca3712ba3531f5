"""Write a pull request's report folder (`fersynth report`): README.md with its images, from a repository's files.

`fersynth.tools.report` renders sections from mappings; this module reads what they need (the metrics files
dvc.yaml declares, as they are and as committed at a baseline revision, the stages' diagnostics and figures)
and writes the folder whole, so a report is built and tested without the CLI. Unreadable inputs are DataError,
a bad baseline or output folder ParamsError.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fersynth.config import read_yaml_file
from fersynth.errors import DataError, ParamsError
from fersynth.runtime.io import atomic_directory
from fersynth.tools import report
from fersynth.tools.experiments import resolve_revision

REPORT_NAME = "README.md"  # GitHub renders a folder's README.md under its listing
TITLE = "# fersynth report"  # also marks a folder as one this command wrote, so it may replace it
CONFUSION_NAME = "confusion_test.png"

# The stages whose diagnostics (metrics/diagnostics/<stage>.json) the detail sections read.
_STAGES = ("fetch", "generate", "calibrate", "merge", "evaluate")


def write_report(
    out: Path, root: Path, baseline: str, compare: Path | None, classes: Sequence[str], source: str
) -> int:
    """Write `out`/README.md (replacing an earlier report folder whole) with its PNGs beside it; how many PNGs.

    `root` is the repository (where dvc.yaml and metrics/ are), `baseline` the git revision or DVC experiment
    the headline metrics are compared with, `compare` a `fersynth compare` table to include, and `classes` and
    `source` the validated params' common.classes and fetch.source. Every input is read, and `out` checked,
    before the folder is touched, so a bad baseline or table leaves an earlier report as it was.
    """
    paths = metric_paths(read_yaml_file(root / "dvc.yaml", "DVC pipeline file"))
    current = {path: _read_json(root / path) for path in paths if (root / path).is_file()}
    previous = baseline_metrics(root, baseline, paths)
    comparison = _read_text(compare) if compare is not None else None
    check_replaceable(out)
    with atomic_directory(out) as folder:
        images = copy_images(root / "metrics" / "plots", folder)
        confusion = _confusion(root / "metrics" / "confusion" / "test.json", classes, folder)
        sections = [
            TITLE,
            report.headline_section(current, previous, baseline),
            *([report.comparison_section(comparison)] if comparison is not None else []),
            *_detail_sections(root, classes, source, current),
            report.images_section(images, confusion),
        ]
        (folder / REPORT_NAME).write_text("\n\n".join(sections) + "\n")
    return len(images) + (confusion is not None)


def metric_paths(pipeline: Any) -> list[str]:
    """The declared metrics files of dvc.yaml (its top-level `metrics:`): what `dvc metrics diff` compares."""
    entries = pipeline.get("metrics", []) if isinstance(pipeline, Mapping) else []
    # An entry is a path, or a one-key mapping of a path to its options.
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def baseline_metrics(root: Path, revision: str, paths: Sequence[str]) -> dict[str, Any]:
    """Each metrics file as committed at `revision` (`git show`); a file the revision lacks is left out."""
    resolved = resolve_revision(root, revision)
    if resolved is None:
        raise ParamsError(f"--baseline {revision}: neither a git revision nor a DVC experiment of {root.resolve()}")
    revision = resolved
    committed = {}
    for path in paths:
        text = _git(root, "show", f"{revision}:./{path}")  # ./: relative to root, wherever the git top level is
        if text is not None:
            committed[path] = _parse_json(text, f"{path} at {revision}")
    return committed


def copy_images(plots: Path, folder: Path) -> list[report.Image]:
    """Copy the stages' figures that exist beside the report, so its relative links render anywhere."""
    wanted = [
        *(
            report.Image(f"Synthetic samples: {grid.stem}", f"generated_{grid.name}", grid)
            for grid in sorted((plots / "generated").glob("*.png"))
        ),
        report.Image("Calibration confidence", "calibrate_confidence.png", plots / "calibrate_confidence.png"),
        report.Image("Closest training faces to synthetic ones", "closest_pairs.png", plots / "closest_pairs.png"),
        report.Image("Near-duplicates across splits", "near_duplicates.png", plots / "near_duplicates.png"),
        report.Image("Grad-CAM on test faces: what the classifier looks at", "gradcam.png", plots / "gradcam.png"),
    ]
    present = [image for image in wanted if image.source.is_file()]
    for image in present:
        shutil.copyfile(image.source, folder / image.name)
    return present


def check_replaceable(out: Path) -> None:
    """Refuse an `out` this command did not write: the folder is replaced whole (`--out .` would be the repo)."""
    marker = out / REPORT_NAME
    ours = marker.is_file() and marker.read_bytes().startswith(TITLE.encode())
    if out.exists() and not (out.is_dir() and (ours or not any(out.iterdir()))):
        raise ParamsError(f"--out {out}: exists and is no fersynth report; give a new or empty folder")


def _detail_sections(root: Path, classes: Sequence[str], source: str, current: Mapping[str, Any]) -> list[str]:
    """The sections read from the stages' diagnostics; a stage that has not run yet gives dashes."""
    diagnostics = {stage: _read_optional(root / "metrics" / "diagnostics" / f"{stage}.json") for stage in _STAGES}
    return [
        report.per_class_section(classes, diagnostics["evaluate"]),
        report.counts_section(classes, diagnostics["merge"]),
        report.calibration_section(
            classes, diagnostics["generate"], diagnostics["calibrate"], current.get("metrics/calibrate.json", {})
        ),
        report.model_card_section(
            source, classes, diagnostics["fetch"], diagnostics["evaluate"], current.get("metrics/merge.json", {})
        ),
    ]


def _confusion(path: Path, classes: Sequence[str], folder: Path) -> str | None:
    if not path.is_file():
        return None
    report.write_confusion_png(_read_json(path), classes, folder / CONFUSION_NAME)
    return CONFUSION_NAME


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: not found (--compare takes the table `fersynth compare` wrote)")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None


def _read_optional(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _read_json(path: Path) -> Any:
    return _parse_json(path.read_bytes(), str(path))


def _parse_json(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no UTF-8
        raise DataError(f"{where}: not valid JSON ({error})") from None


def _git(root: Path, *arguments: str) -> str | None:
    """A git command's output, or None where it fails (no such revision or file)."""
    result = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else None
