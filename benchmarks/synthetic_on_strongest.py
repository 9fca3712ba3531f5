"""Does calibrated synthesis lift the strongest recipe, at equal training minutes? (FER2013, issue 19's protocol)

In a scratch clone of HEAD with FER2013 and the 155 dev photos imported under data/raw, seed by seed:
1. the real-only recipe at seed S, with the settings `fersynth compare fer2013-30min --seeds 1 --first-seed S`
   would queue, applied to params.yaml and run by `dvc repro` in the clone's workspace;
2. after seed 0, its classifier becomes the teacher (models/pretrained/fer2013-30min.pt, `dvc add`, committed);
3. the same for fer2013-30min-gan: the same recipe and cost with calibrated GAN faces (the GAN is trained in
   seed 0's run; DVC's run cache serves it to the others);
4. both variants in one table (PrivateTest, the dev photos, and the val figures that chose each checkpoint)
   with each gain against twice the larger std: report/strongest.md in the scratch clone, and printed.

The clone runs its own code: a venv in the clone shares this interpreter's installed packages but imports
fersynth from the clone, so edits to this checkout during the hours the protocol runs cannot leak into it.
The two variants alternate seed by seed, so each pair of runs shares the machine's state of the moment, and a
stopped protocol resumes: rerun the same command and the runs whose report/<variant>-s<S>.jsonl exists are kept,
while a run killed mid-training continues after its last finished epoch (train's persist checkpoint stays in the
workspace; `dvc exp run` would reset it).
Run it on an otherwise idle machine: a budget in minutes is only fair when the cores are not shared.
`--budget-minutes`, `--images-budget` and `--gan-epochs` rewrite the two presets in the scratch clone (a preset's
own keys win over `-S`). `--images-budget N` replaces the 30 minutes by N training images, an equal cost that
machine load cannot change: the runs repeat exactly, and the protocol may share the machine with other work.

    .venv/bin/python benchmarks/synthetic_on_strongest.py --work ../strongest --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from fersynth.tools.comparison import (
    RESULT_FILES,
    gain_verdicts,
    markdown_table,
    run_figures,
    summarise,
    table_keys,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL, SYNTHETIC = "fer2013-30min", "fer2013-30min-gan"
TEACHER = "models/pretrained/fer2013-30min.pt"
CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
HEADLINE = ("accuracy", "macro_f1", "balanced_accuracy", "recall_disgust", "recall_fear", "dev.accuracy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch clone: created, or resumed if it exists")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding the two zips")
    parser.add_argument("--budget-minutes", type=float, help="rewrite train.time_budget_minutes in both presets")
    parser.add_argument(
        "--images-budget",
        type=int,
        help="replace both presets' minutes by this many training images: equal cost under any machine load",
    )
    parser.add_argument("--gan-epochs", type=int, help="rewrite train_gan.epochs in fer2013-30min-gan")
    args = parser.parse_args()
    # This interpreter's tools (dvc, fersynth) first on PATH, then the clone's (`isolate`): DVC starts every
    # stage's `fersynth` with the caller's PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    work = args.work
    if not work.exists():
        prepare(work, args.data, args.budget_minutes, args.images_budget, args.gan_epochs)
    isolate(work)
    for seed in range(args.seeds):
        compare(work, REAL, seed)
        compare(work, SYNTHETIC, seed)
    table = combined_table(work)
    (work / "report" / "strongest.md").write_text(table + "\n")
    print(table)
    return 0


def prepare(
    work: Path, data: Path, budget_minutes: float | None, images_budget: int | None, gan_epochs: int | None
) -> None:
    run(["git", "clone", "-q", str(REPO), str(work)], REPO)
    for name in ("fer2013.zip", "facial_expressions_dev.zip"):
        run(["dvc", "import-url", "-q", str((data / name).resolve()), f"data/raw/{name}"], work)
    for preset in (REAL, SYNTHETIC):
        path = work / "presets" / f"{preset}.yaml"
        if budget_minutes is not None:
            rewrite(path, "train.time_budget_minutes", f"train.time_budget_minutes: {budget_minutes}")
        if images_budget is not None:
            rewrite(path, "train.time_budget_minutes", f"train.images_budget: {images_budget}")
    if gan_epochs is not None:
        rewrite(work / "presets" / f"{SYNTHETIC}.yaml", "train_gan.epochs", f"train_gan.epochs: {gan_epochs}")
    commit(work, "FER2013 and the dev photos; the protocol's presets")


def isolate(work: Path) -> None:
    """The clone's own venv: this interpreter's packages and the clone's code, each on the path by a .pth line.

    The shared packages are a plain path there, so their own .pth files (this checkout's editable install of
    fersynth) are not run: `fersynth` and `stages` come from the clone alone.
    """
    venv = work / ".venv"  # git-ignored
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.check_output([python, "-c", SITE_PACKAGES], text=True).strip())
    (site / "fersynth-clone.pth").write_text(f"{work / 'src'}\n{work}\n")
    (site / "shared-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for command, entry in (("fersynth", "stages.cli"), ("dvc", "dvc.cli")):
        script = venv / "bin" / command
        script.write_text(f"#!{python}\nimport sys\nfrom {entry} import main\nsys.exit(main())\n")
        script.chmod(0o755)
    os.environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"


SITE_PACKAGES = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def rewrite(preset: Path, key: str, line: str) -> None:
    """Replace the preset's line `key: ...` by `line`."""
    text, count = re.subn(rf"^{re.escape(key)}: .*$", line, preset.read_text(), flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"{preset}: no line `{key}: ...` to rewrite")
    preset.write_text(text)


def compare(work: Path, variant: str, seed: int) -> None:
    """One run of a variant in the clone's workspace, unless an earlier protocol run has its report.

    The run is `dvc repro` of params.yaml with the run's settings applied, not a DVC experiment: `dvc exp run`
    (queued or not) force-checks out every output from dvc.lock before it reproduces, which resets train's
    persist checkpoint, so a killed experiment starts training again from zero. `dvc repro` keeps it: rerunning
    the protocol continues a killed run after its last finished epoch.
    """
    report = work / "report" / f"{variant}-s{seed}.jsonl"
    if report.exists():
        return
    name, settings = planned_run(work, variant, seed)
    run(["git", "checkout", "--", "params.yaml"], work)  # a killed run left its settings here
    python = work / ".venv" / "bin" / "python"
    run([str(python), "-c", APPLY, *settings], work)
    run(["dvc", "repro"], work)
    files = {path: json.loads((work / path).read_text()) for path in RESULT_FILES}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"run": name, "variant": variant, "overrides": settings, **files}) + "\n")
    if variant == REAL and not (work / TEACHER).exists():
        adopt_teacher(work)
    run(["git", "checkout", "--", "params.yaml"], work)


def planned_run(work: Path, variant: str, seed: int) -> tuple[str, list[str]]:
    """The run's name and `-S` settings, as the clone's own `fersynth compare` would queue them."""
    python = work / ".venv" / "bin" / "python"
    shown = subprocess.run([python, "-c", PLAN, variant, str(seed)], cwd=work, check=True, capture_output=True)
    planned: dict[str, Any] = json.loads(shown.stdout)
    return planned["name"], planned["settings"]


PLAN = """
import json, sys
from pathlib import Path
from fersynth.tools.comparison import SEED_KEYS, plan_runs, preset_variants, select_variants
from stages._common import read_raw_params
variants = select_variants([sys.argv[1]], preset_variants(Path("presets"), read_raw_params(Path("params.yaml"))))
(planned,) = plan_runs(variants, [int(sys.argv[2])], SEED_KEYS["classifier"])
print(json.dumps({"name": planned.name, "settings": planned.settings([])}))
"""
APPLY = "import sys; from dvc.utils.hydra import apply_overrides; apply_overrides('params.yaml', sys.argv[1:])"


def adopt_teacher(work: Path) -> None:
    """The first real-only run's classifier, as the teacher of the synthetic runs (a DVC-tracked file)."""
    (work / TEACHER).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "models" / "classifier" / "model.pt", work / TEACHER)
    run(["dvc", "add", "-q", TEACHER], work)
    run(["git", "add", "models/pretrained"], work)
    commit_staged(work, f"teacher: {REAL} seed 0's classifier")


def combined_table(work: Path) -> str:
    runs: dict[str, list[dict[str, float]]] = {}
    for report in sorted((work / "report").glob("*-s*.jsonl")):
        for line in report.read_text().splitlines():
            record: dict[str, Any] = json.loads(line)
            runs.setdefault(record["variant"], []).append(run_figures(record))
    keys = table_keys(CLASSES, [figures for variant_runs in runs.values() for figures in variant_runs])
    summaries = summarise(runs, keys)
    verdicts = gain_verdicts(summaries, SYNTHETIC, REAL, [key for key in HEADLINE if key in keys])
    lines = ["PrivateTest (dotted: the dev photos); val = PublicTest, which chose each checkpoint.", ""]
    lines += [markdown_table(summaries, keys), "", *(f"- {verdict}" for verdict in verdicts)]
    return "\n".join(lines)


def commit(work: Path, message: str) -> None:
    run(["git", "add", "-A"], work)
    commit_staged(work, message)


def commit_staged(work: Path, message: str) -> None:
    named = subprocess.run(["git", "config", "user.name"], cwd=work, capture_output=True, text=True).stdout.strip()
    identity = [] if named else ["-c", "user.name=fersynth", "-c", "user.email=fersynth@localhost"]
    run(["git", *identity, "commit", "-qm", message], work)


def run(command: list[str], cwd: Path) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True)


if __name__ == "__main__":
    sys.exit(main())
