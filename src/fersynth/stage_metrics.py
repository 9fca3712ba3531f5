"""What is a metric: the one rule that splits a stage's numbers into headline and diagnostics.

Headline figures are what a reviewer decides on (accuracy, UAR, macro-F1, per-class recall,
synthetic share, acceptance). They are declared DVC metrics, so `dvc metrics diff` and
`dvc exp show` lead with them. Everything a stage measures, headline included, also goes to
a plain JSON diagnostics file beside them: full numbers, one `dvc metrics show FILE` away.
Later figures join by adding a pattern here, nowhere else.
"""

from __future__ import annotations

import fnmatch
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

# Stage name (as in dvc.yaml) -> glob patterns of its headline keys. A stage not listed has
# no headline figures: all its numbers are diagnostics.
HEADLINE_KEYS: Mapping[str, tuple[str, ...]] = {
    "calibrate": (
        "accepted_total",
        "acceptance_rate",
        "classes_with_nothing_kept",
        "expression_accuracy",
        "frechet_distance",
        "judge_expression_accuracy",
        "teacher_val_macro_f1",
        # Per source and for the real reference (fersynth.quality); the per-class figures end in _<class>.
        "quality_*_kid",
        "quality_*_fd",
        "quality_*_expression_accuracy",
        "quality_*_memorised_share",
    ),
    "merge": ("synthetic_share",),
    "train": ("best_epoch", "best_val_accuracy", "best_val_macro_f1", "epochs_reached"),
    # Extra (cross-dataset) test sets nest the same keys under their names.
    "evaluate": ("accuracy", "balanced_accuracy", "macro_f1", "recall_*"),
    "export": ("argmax_agreement", "max_probability_difference"),
}

# Distributions whose versions decide the numbers; recorded beside the metrics.
RECORDED_PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "albumentations", "dvc")


def headline_metrics(stage: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline subset of a stage's metrics, in their original order; nested sets keep their nesting."""
    patterns = HEADLINE_KEYS.get(stage, ())
    headline: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            nested = headline_metrics(stage, value)
            if nested:
                headline[key] = nested
        elif any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            headline[key] = value
    return headline


def run_environment() -> dict[str, Any]:
    """Thread count, device and library versions: what two runs must share to be compared."""
    import torch  # only stages that already run torch record this

    versions = {name: _version(name) for name in RECORDED_PACKAGES}
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        # Two "AMD EPYC" generations gave other GAN and teacher weights from identical data and code:
        # the family/model numbers and the kernels torch picks (AVX2, AVX512) tell them apart.
        "cpu_id": cpu_identity(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        **versions,
    }


def cpu_model() -> str:
    """The processor's model name: another CPU may pick other math kernels, so other low bits."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_identity() -> str:
    """Vendor, family, model and stepping (one model name can cover several generations)."""
    info = _cpuinfo()
    fields = [info.get(key, "?") for key in ("vendor_id", "cpu family", "model", "stepping")]
    return "unknown" if not info else "{} family {} model {} stepping {}".format(*fields)


def _cpuinfo() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields (empty off Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return {}
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"
