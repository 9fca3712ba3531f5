"""Output paths: checked before any work, locked against another run, and landed together (fersynth.runtime.io)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer

from fersynth.errors import OutputError
from fersynth.runtime.io import (
    atomic_directory,
    atomic_write_bytes,
    check_output,
    commit_together,
    lock_file,
    lock_outputs,
)

# ---------------------------------------------------------------- checked before any work


def test_absent_paths_and_paths_of_the_right_kind_pass(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    check_output(tmp_path / "folder", folder=True, named="--out")
    check_output(tmp_path / "file", folder=False, named="--diagnostics")
    check_output(tmp_path / "not" / "yet" / "there", folder=True, named="--out")  # its folders will be made
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "folder"]  # and nothing made yet


def make_file(path: Path) -> None:
    path.write_bytes(b"x")


def make_folder(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    ("make", "given", "folder", "message"),
    [
        pytest.param(make_file, "thing", True, "--x {root}/thing: exists and is a file", id="folder-output-is-a-file"),
        pytest.param(make_folder, "thing", False, "--x {root}/thing: is a folder", id="file-output-is-a-folder"),
        pytest.param(
            make_file, "thing/out", True, "--x {root}/thing/out: {root}/thing is a file", id="parent-is-a-file"
        ),
        pytest.param(
            make_file,
            "thing/a/b.json",
            False,
            "--x {root}/thing/a/b.json: {root}/thing is a file",
            id="ancestor-is-a-file",
        ),
    ],
)
def test_an_output_of_the_wrong_kind_is_refused_by_name(
    tmp_path: Path, make: Callable[[Path], None], given: str, folder: bool, message: str
) -> None:
    make(tmp_path / "thing")
    with pytest.raises(OutputError, match="^" + message.format(root=tmp_path)):
        check_output(tmp_path / given, folder=folder, named="--x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a chmod 555 folder all the same")
def test_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    (tmp_path / "locked").mkdir(mode=0o555)
    with pytest.raises(OutputError, match="locked is not writable"):
        check_output(tmp_path / "locked" / "out", folder=True, named="--out")


def test_a_read_only_mount_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """access(2) answers EROFS on a read-only mount, to root too; simulated here, as mounting needs privileges."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    with pytest.raises(OutputError, match=f"--out {tmp_path}/out: {tmp_path} is not writable"):
        check_output(tmp_path / "out", folder=True, named="--out")


# ---------------------------------------------------------------- locked against another run

# Holds the lock of argv[1] until killed, as a long stage run would.
HOLDER = (
    "import sys, time; from pathlib import Path; from fersynth.runtime.io import lock_outputs\n"
    "with lock_outputs([Path(sys.argv[1])]):\n"
    "    print('locked', flush=True); time.sleep(120)\n"
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of tmp_path/out."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_an_output_another_run_holds_is_refused_naming_its_process(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    refusal = rf"^{tmp_path}/out: another run \(process {holder.pid}\) is writing it"
    with pytest.raises(OutputError, match=refusal), lock_outputs([tmp_path / "first", tmp_path / "out"]):
        pass
    assert not lock_file(tmp_path / "first").exists()  # the lock taken before the refusal was released


def test_a_killed_run_blocks_no_one(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    assert lock_file(tmp_path / "out").exists()  # what a killed run leaves behind; the kernel released its lock
    with lock_outputs([tmp_path / "out"]) as locked:
        assert locked == [tmp_path / "out"]
    assert not lock_file(tmp_path / "out").exists()


def test_a_process_writes_under_the_lock_of_the_run_that_started_it(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """train under torchrun: rank 0 writes what its launcher locked."""
    with lock_outputs([tmp_path / "out"], launcher=holder.pid) as locked:
        assert locked == []


def test_a_lock_is_released_and_its_file_removed_after_the_block(tmp_path: Path) -> None:
    with lock_outputs([tmp_path / "out"]):
        assert lock_file(tmp_path / "out").read_text() == f"{os.getpid()}\n"
    with lock_outputs([tmp_path / "out"]):  # free again
        pass
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- landed together


def write_outputs(root: Path, text: str) -> None:
    with atomic_directory(root / "folder") as staging:
        (staging / "inner").write_text(text)
    atomic_write_bytes(root / "file.json", text.encode())


def contents(root: Path) -> dict[str, str]:
    """The outputs' files by path, staging (hidden) left out."""
    files = (path.relative_to(root) for path in sorted(root.rglob("*")) if path.is_file())
    return {str(path): (root / path).read_text() for path in files if not path.parts[0].startswith(".")}


@pytest.fixture
def earlier(tmp_path: Path) -> Path:
    """Two outputs of an earlier run."""
    write_outputs(tmp_path, "old")
    return tmp_path


def test_held_back_outputs_land_together_when_the_block_ends(earlier: Path) -> None:
    with commit_together([earlier / "folder", earlier / "file.json"]):
        write_outputs(earlier, "new")
        assert contents(earlier) == {"folder/inner": "old", "file.json": "old"}  # staged, not landed
    assert contents(earlier) == {"folder/inner": "new", "file.json": "new"}


def test_a_failing_block_replaces_no_output(earlier: Path) -> None:
    with pytest.raises(RuntimeError), commit_together([earlier / "folder", earlier / "file.json"]):
        write_outputs(earlier, "new")
        raise RuntimeError("the run failed after writing both")
    assert contents(earlier) == {"folder/inner": "old", "file.json": "old"}
    assert sorted(path.name for path in earlier.iterdir()) == ["file.json", "folder"]  # no staging left


def test_a_rename_that_fails_puts_every_output_back(earlier: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace
    refused: list[Path] = []

    def replace(source: str | Path, target: str | Path) -> None:
        if Path(target) == earlier / "file.json" and not refused:  # its landing; putting the old one back works
            refused.append(Path(target))
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    both = [earlier / "folder", earlier / "file.json"]
    with pytest.raises(OutputError, match=r"file\.json: cannot be written: No space left"), commit_together(both):
        write_outputs(earlier, "new")
    assert contents(earlier) == {"folder/inner": "old", "file.json": "old"}  # folder had landed: back again
    assert sorted(path.name for path in earlier.iterdir()) == ["file.json", "folder"]


def test_an_exit_the_command_chose_lands_its_outputs(earlier: Path) -> None:
    with pytest.raises(typer.Exit), commit_together([earlier / "file.json"], commit_on=(typer.Exit,)):
        atomic_write_bytes(earlier / "file.json", b"new")
        raise typer.Exit(code=1)
    assert (earlier / "file.json").read_text() == "new"


def test_a_write_not_held_back_lands_at_once(earlier: Path) -> None:
    """A resume checkpoint or cache entry must survive the run failing later."""
    with pytest.raises(RuntimeError), commit_together([earlier / "folder"]):
        write_outputs(earlier, "new")
        assert (earlier / "file.json").read_text() == "new"
        raise RuntimeError("the run failed")
    assert contents(earlier) == {"folder/inner": "old", "file.json": "new"}


def test_a_full_disk_is_an_output_error_naming_the_output(tmp_path: Path) -> None:
    refusal = f"^{tmp_path}/folder: cannot be written: No space left on device"
    with pytest.raises(OutputError, match=refusal), atomic_directory(tmp_path / "folder"):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write to an open file names no path
    assert list(tmp_path.iterdir()) == []


def test_a_refused_read_of_an_input_keeps_its_own_name(tmp_path: Path) -> None:
    refused = PermissionError(errno.EACCES, "Permission denied", "/elsewhere/input.npy")
    with pytest.raises(PermissionError) as raised, atomic_directory(tmp_path / "folder"):
        raise refused
    assert raised.value is refused


def test_a_dataset_the_disk_cannot_hold_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its size is known before the write: say so up front instead of failing minutes of writing later."""
    from collections import namedtuple

    from fersynth.datasets.format import write_dataset
    from fersynth.errors import OutputError

    from .conftest import make_dataset

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("fersynth.runtime.io.shutil.disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OutputError, match=r"needs 0\.00 GiB for its output but the disk has 0\.00 GiB free"):
        write_dataset(make_dataset(per_class=2, size=8), tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
