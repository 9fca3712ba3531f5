"""Every command the README and the docs pages show is valid as written (-S overrides, make targets, fersynth
commands), and every relative link in them resolves."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from fersynth.config import load_params
from stages._common import check_tracked_inputs

from .conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
DOCS = "\n".join(page.read_text() for page in PAGES)
SHELL_LINES = [
    line.split(" #")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", DOCS, flags=re.DOTALL)
    for line in block.replace("\\\n", " ").splitlines()
]
EXP_RUNS = [line for line in SHELL_LINES if line.startswith("dvc exp run")]


def test_readme_shows_experiments() -> None:
    assert len(EXP_RUNS) >= 6


@pytest.mark.parametrize("command", EXP_RUNS)
def test_every_readme_experiment_sets_valid_params(command: str, tmp_path: Path) -> None:
    """What `dvc exp run -S ...` would run: DVC's own writer on a copy of params.yaml, then validation."""
    words = shlex.split(command)
    settings = [words[index + 1] for index, word in enumerate(words) if word == "-S"]
    params_path = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params_path)
    apply_overrides(str(params_path), settings)
    check_tracked_inputs(load_params(yaml.safe_load(params_path.read_text()), source=command), repo_root=REPO_ROOT)


def test_every_make_target_in_the_readme_exists() -> None:
    targets = set(re.findall(r"^([a-z-]+):", (REPO_ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    shown = {word for line in SHELL_LINES if line.startswith("make ") for word in line.split()[1:2]}
    shown |= set(re.findall(r"`make ([a-z-]+)`", DOCS))
    assert shown and shown <= targets, shown - targets


def test_the_readme_stays_short_and_links_every_docs_page() -> None:
    readme = PAGES[0].read_text()
    assert len(readme.splitlines()) <= 200
    assert all(f"(docs/{page.name})" in readme for page in PAGES[1:])


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [target for target in targets if not re.match(r"[a-z]+://|#|mailto:", target)]
    missing = [target for target in relative if not (page.parent / target.split("#")[0]).exists()]
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_to_a_section_names_one(page: Path) -> None:
    """`page.md#anchor` links: the anchor is a heading of that page (GitHub's slug of it)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]*#[^)\s]+)\)", text):
        file, _, anchor = target.partition("#")
        linked = (page.parent / file) if file else page
        if linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text()), f"{page.name}: {target}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.DOTALL), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_every_fersynth_command_shown_exists() -> None:
    """`fersynth <command>` lines in any page name a real command (a renamed stage breaks its docs)."""
    import typer

    from stages.cli import StageGroup, app

    group = typer.main.get_command(app)
    assert isinstance(group, StageGroup)
    known = set(group.list_commands(None))  # type: ignore[arg-type]
    shown = {line.split()[1] for line in SHELL_LINES if line.startswith("fersynth ") and len(line.split()) > 1}
    assert shown and shown - {"--help"} <= known, shown - known
