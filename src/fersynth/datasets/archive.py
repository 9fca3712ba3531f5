"""Read a dataset from a folder or a .zip the same way, without extracting anything to disk.

Member names are POSIX paths relative to the folder (or the zip's top). Zip members
with absolute paths or `..` parts are refused before anything is read (zip-slip),
and OS junk (`__MACOSX/`, dot-files) is hidden so it never looks like data.
"""

from __future__ import annotations

import os
import posixpath
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO

from fersynth.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class FileTree:
    """Files under a folder or inside a zip, read by member name; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self.names = sorted(_folder_members(self.path))
        elif self.path.is_file():
            self._zip = _open_zip(self.path)
            self.names = sorted(_zip_members(self._zip, self.path))
        else:
            raise DataError(f"{self.path}: does not exist (expected a folder or a .zip file)")
        self._children = _folder_index(self.names)

    def __enter__(self) -> FileTree:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(name)
        return open(self.path / name, "rb")

    def where(self, name: str) -> str:
        """How error messages name a member: `archive.zip:inner/path` or the file's path."""
        return f"{self.path}:{name}" if self._zip is not None else str(self.path / name)

    def images(self, under: str = "") -> list[str]:
        """Image members below the folder `under` ("" = everywhere), sorted."""
        prefix = f"{under}/" if under else ""
        return [name for name in self.names if name.startswith(prefix) and is_image(name)]

    def child_folders(self, folder: str) -> set[str]:
        """Names of the folders directly inside `folder` ("" = the top)."""
        return self._children.get(folder, set())

    def shallowest_folder(self, accept: Callable[[str], bool]) -> str | None:
        """The least deep folder (ties: first by name) that `accept` says is the dataset root."""
        for folder in sorted(self._children, key=lambda folder: (folder.count("/") + bool(folder), folder)):
            if accept(folder):
                return folder
        return None


def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _folder_index(names: Iterable[str]) -> dict[str, set[str]]:
    """Every folder ("" = the top) -> the names of the folders directly inside it."""
    children: dict[str, set[str]] = {"": set()}
    for name in names:
        parent = ""
        for part in name.split("/")[:-1]:
            children[parent].add(part)
            parent = posixpath.join(parent, part)
            children.setdefault(parent, set())
    return children


def _is_junk(name: str) -> bool:
    return any(part == "__MACOSX" or part.startswith(".") for part in name.split("/"))


def _folder_members(root: Path) -> Iterable[str]:
    for directory, folders, files in os.walk(root):
        folders[:] = [folder for folder in folders if not _is_junk(folder)]
        relative = Path(directory).relative_to(root).as_posix()
        for file in files:
            if not _is_junk(file):
                yield file if relative == "." else f"{relative}/{file}"


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a folder or a readable .zip file") from None


def _zip_members(archive: zipfile.ZipFile, path: Path) -> Iterable[str]:
    for name in archive.namelist():
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name) or ".." in parts:
            raise DataError(f"{path}: unsafe member {name!r} (absolute or '..' path); refusing to read this zip")
        if not name.endswith("/") and not _is_junk(name):
            yield name
