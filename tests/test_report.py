"""`fersynth report`: Markdown sections from metrics mappings, and the command on a copy of the committed demo run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from fersynth.errors import DataError, ParamsError
from fersynth.tools import report
from fersynth.tools.report_folder import check_replaceable, metric_paths, write_report
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["angry", "disgust"]


def test_headline_table_shows_both_sides_and_a_signed_change() -> None:
    current = {"metrics/evaluate.json": {"accuracy": 0.75, "recall_angry": 0.5, "extra": {"accuracy": 0.4}}}
    baseline = {"metrics/evaluate.json": {"accuracy": 0.7, "recall_angry": 0.6, "extra": {"accuracy": 0.4}}}
    section = report.headline_section(current, baseline, "main")
    assert "| `metrics/evaluate.json` accuracy | 0.7 | 0.75 | +0.05 |" in section
    assert "| `metrics/evaluate.json` recall_angry | 0.6 | 0.5 | -0.1 |" in section
    assert "| `metrics/evaluate.json` extra.accuracy | 0.4 | 0.4 | 0 |" in section  # nested sets: dotted keys


def test_headline_table_dashes_what_one_side_lacks() -> None:
    current = {"metrics/merge.json": {"synthetic_share": 0.2}, "metrics/train.json": {"best_epoch": 5}}
    baseline = {"metrics/train.json": {"best_epoch": 3, "gone": 1}}
    section = report.headline_section(current, baseline, "HEAD")
    assert f"| `metrics/merge.json` synthetic_share | {report.MISSING} | 0.2 | {report.MISSING} |" in section
    assert "| `metrics/train.json` best_epoch | 3 | 5 | +2 |" in section
    assert f"| `metrics/train.json` gone | 1 | {report.MISSING} | {report.MISSING} |" in section


def test_per_class_tables_read_their_prefixed_keys() -> None:
    evaluate = {"precision_angry": 0.8, "recall_angry": 0.9, "f1_angry": 0.85, "support_angry": 10}
    assert "| angry | 0.8 | 0.9 | 0.85 | 10 |" in report.per_class_section(CLASSES, evaluate)
    assert f"| disgust | {report.MISSING} | {report.MISSING} |" in report.per_class_section(CLASSES, evaluate)
    merge = {"before_angry": 5, "synthetic_angry": 3, "after_angry": 8, "total_before": 5, "total_after": 8}
    assert "| angry | 5 | 3 | 8 |" in report.counts_section(CLASSES, merge)


def test_calibration_section_has_acceptance_per_class_and_quality_per_source() -> None:
    generate = {"planned_angry": 12}
    calibrate = {"generated_angry": 12, "accepted_angry": 9, "acceptance_rate_angry": 0.75, "threshold_angry": 0.3}
    headline = {"quality_real_kid": 0.1, "quality_gan_kid": 3.5, "quality_gan_fd": 4.4}
    section = report.calibration_section(CLASSES, generate, calibrate, headline)
    assert "| angry | 12 | 12 | 9 | 0.75 | 0.3 |" in section
    assert "| gan | 3.5 | 4.4 |" in section
    assert report.quality_sources(headline) == ["real", "gan"]


def test_confusion_counts_put_unknown_labels_last() -> None:
    rows = [{"actual": "angry", "predicted": "angry"}, {"actual": "angry", "predicted": "odd"}]
    labels, counts = report.confusion_counts(rows, CLASSES)
    assert labels == ["angry", "disgust", "odd"]
    assert counts[0] == [1, 0, 1]


def test_model_card_names_source_licence_recall_and_weak_classes() -> None:
    fetch = {"total_train": 20, "count_train_disgust": 2, "near_duplicates_test_in_train": 3, "total_test": 8}
    evaluate = {"recall_angry": 0.9, "recall_disgust": 0.1}
    card = report.model_card_section("fer2013", CLASSES, fetch, evaluate, {"synthetic_share": 0.25})
    assert "research use only" in card and "Kaggle" in card
    assert "angry 0.9, disgust 0.1" in card
    assert "disgust (recall 0.1, 2 real training images)" in card
    assert "3 of 8 test images" in card
    assert "surveillance" in card and "0.25" in card


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    """A git repository holding the committed demo metrics, dvc.yaml and params.yaml, committed once."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    _commit(tmp_path, "baseline")
    return tmp_path


def _commit(repo: Path, message: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *identity, "commit", "-q", "-m", message], cwd=repo, check=True)


def _run_report(repo: Path, *arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["report", "--out", str(repo / "report"), "--params", str(repo / "params.yaml"), *arguments]
    )
    return result.exit_code, result.output


def test_report_on_the_demo_compares_with_the_baseline_and_links_existing_images(demo_repo: Path) -> None:
    evaluate_path = demo_repo / "metrics" / "evaluate.json"
    committed = json.loads(evaluate_path.read_text())
    evaluate_path.write_text(json.dumps({**committed, "accuracy": 0.5}))
    # Evaluate's Grad-CAM grid, written here so the test holds whether or not the committed run has one yet.
    gradcam = demo_repo / "metrics" / "plots" / "gradcam.png"
    Image.new("RGB", (8, 8), "red").save(gradcam)

    code, output = _run_report(demo_repo, "--baseline", "HEAD")
    assert code == 0, output
    markdown = (demo_repo / "report" / "README.md").read_text()
    change = f"{round(0.5 - committed['accuracy'], 4):+g}"
    assert f"| `metrics/evaluate.json` accuracy | {committed['accuracy']:g} | 0.5 | {change} |" in markdown

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert "confusion_test.png" in links and "generated_gan.png" in links
    assert all((demo_repo / "report" / link).is_file() for link in links)
    assert "gradcam.png" in links and (demo_repo / "report" / "gradcam.png").read_bytes() == gradcam.read_bytes()
    assert "### Grad-CAM on test faces" in markdown

    source = json.loads((demo_repo / "metrics" / "diagnostics" / "evaluate.json").read_text())
    assert "Source: `demo`" in markdown
    assert f"disgust {source['recall_disgust']:g}" in markdown and f"happy {source['recall_happy']:g}" in markdown


def test_report_takes_an_experiment_name_as_baseline(demo_repo: Path) -> None:
    """`fersynth compare` names its experiments (real-only-s0); DVC keeps each as refs/exps/<base>/<name>."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=demo_repo, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/real-only-s0", head], cwd=demo_repo)
    code, output = _run_report(demo_repo, "--baseline", "real-only-s0")
    assert code == 0, output
    markdown = (demo_repo / "report" / "README.md").read_text()
    assert "Against `real-only-s0`" in markdown and "| `metrics/evaluate.json` accuracy |" in markdown


def test_report_includes_a_compare_table(demo_repo: Path, tmp_path: Path) -> None:
    table = "# Comparison\n\n| variant | n | accuracy |\n|---|---|---|\n| synthetic | 3 | 0.537 ± 0.006 |\n"
    (tmp_path / "compare.md").write_text(table)
    code, output = _run_report(demo_repo, "--compare", str(tmp_path / "compare.md"))
    assert code == 0, output
    markdown = (demo_repo / "report" / "README.md").read_text()
    assert "## Over seeds: `fersynth compare`\n\n### Comparison" in markdown
    assert "| synthetic | 3 | 0.537 ± 0.006 |" in markdown
    code, output = _run_report(demo_repo, "--compare", str(tmp_path / "absent.md"))
    assert code == 1 and "absent.md: not found" in output


def test_report_dashes_a_baseline_without_the_file_and_refuses_a_foreign_folder(demo_repo: Path) -> None:
    subprocess.run(["git", "rm", "-q", "--cached", "metrics/train.json"], cwd=demo_repo, check=True)
    _commit(demo_repo, "no train metrics")
    code, output = _run_report(demo_repo)
    assert code == 0, output
    markdown = (demo_repo / "report" / "README.md").read_text()
    assert f"| `metrics/train.json` best_epoch | {report.MISSING} | 5 | {report.MISSING} |" in markdown
    assert _run_report(demo_repo)[0] == 0  # its own report folder is replaced

    code, output = _run_report(demo_repo, "--baseline", "no-such-revision")
    assert code == 1 and "neither a git revision nor a DVC experiment" in output
    (demo_repo / "elsewhere").mkdir()
    (demo_repo / "elsewhere" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(
        app, ["report", "--out", str(demo_repo / "elsewhere"), "--params", str(demo_repo / "params.yaml")]
    )
    assert result.exit_code == 1 and (demo_repo / "elsewhere" / "keep.txt").is_file()


def test_a_bad_input_leaves_an_earlier_report_as_it_was(demo_repo: Path) -> None:
    out = demo_repo / "report"
    images = write_report(out, demo_repo, "HEAD", None, ["angry", "disgust"], "demo")
    assert images == len(list(out.glob("*.png"))) and images > 0
    written = (out / "README.md").read_text()
    with pytest.raises(DataError, match=r"absent\.md: not found"):
        write_report(out, demo_repo, "HEAD", demo_repo / "absent.md", ["angry"], "demo")
    with pytest.raises(ParamsError, match="neither a git revision"):
        write_report(out, demo_repo, "no-such-revision", None, ["angry"], "demo")
    assert (out / "README.md").read_text() == written
    check_replaceable(out)  # its own
    (demo_repo / "data" / "raw" / "x.txt").write_text("mine")
    with pytest.raises(ParamsError, match="is no fersynth report"):
        check_replaceable(demo_repo / "data" / "raw")


def test_metric_paths_are_the_declared_metrics_with_or_without_options() -> None:
    assert metric_paths({"metrics": ["a.json", {"b.json": {"cache": False}}]}) == ["a.json", "b.json"]
    assert metric_paths(None) == []


def test_fersynth_help_lists_report_by_its_name() -> None:
    output = CliRunner().invoke(app, ["--help"]).output
    assert re.search(r"^\W*report\s", output, flags=re.MULTILINE), output
