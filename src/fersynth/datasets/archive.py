"""Read a dataset from a folder or a .zip the same way, without extracting anything to disk.

Member names are POSIX paths relative to the folder (or the zip's top). Zip members
with absolute paths or `..` parts are refused before anything is read (zip-slip),
and OS junk (`__MACOSX/`, dot-files) is hidden so it never looks like data.

Nothing vanishes unannounced: every file is either opened by the source reading the tree, or
counted by `FileTree.skipped` under a reason (hidden, symlinked folder, extension of no image,
image its layout does not use), which fetch warns about once per reason and reports.

Every read is bounded by `ReadRules`: a member's size (and a zip member's compression
ratio) is checked against what its header or `stat` declares before it is opened, and
again while its bytes arrive, since a header can lie. Only regular files are opened:
a FIFO would block forever and a device (`/dev/zero`) never ends.
"""

from __future__ import annotations

import io
import lzma
import os
import posixpath
import re
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO

from fersynth.config import ReadRules
from fersynth.errors import DataError

# .jfif and .jpe are JPEG files under older names (Windows saves web JPEGs as .jfif): PIL reads them by content.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
)

# Why a file under a dataset folder was not read: reason (a metrics key after `skipped_`) -> what the warning says.
SKIP_REASONS: dict[str, str] = {
    "hidden": "hidden files or folders (dot-names, __MACOSX/: OS junk, not data)",
    "symlinked_folder": "symlinked folders, not followed (DVC does not hash what they hold either: copy the files in, "
    "or link each file)",
    "unknown_extension": f"files that are no image by their extension ({' '.join(sorted(IMAGE_SUFFIXES))}) "
    "and that the layout does not read",
    "unused_image": "images the layout does not use (labels outside common.classes, views or frames it leaves "
    "out, images outside its class folders)",
}

# Members up to this size are exempt from fetch.max_compression_ratio (see ReadRules).
RATIO_FREE_BYTES = 2**20

# What zipfile and its decompressors raise for a damaged member: bad CRC or header (BadZipFile), a broken
# deflate, lzma or bzip2 stream (zlib.error, LZMAError, OSError), a method it cannot inflate (NotImplementedError),
# a stream that ends early (EOFError).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, NotImplementedError, EOFError)

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class Tally:
    """Things counted by reason, each with its first example: warned once per reason, not once per file."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, example)


class FileTree:
    """Files under a folder or inside a zip, read by member name within `rules`; use as a context manager.

    A symlinked folder is not followed but counted as skipped: DVC hashes a dependency folder without following
    folder links (os.walk), so images behind one could change without fetch rerunning, and a link pointing
    inside the tree would read its images twice (or loop). Links to files are read as those files: DVC checks
    data out as such links into its cache.
    """

    def __init__(self, path: Path, rules: ReadRules) -> None:
        self.path = Path(path)
        self.rules = rules
        self._zip: zipfile.ZipFile | None = None
        self._passed_over = Tally()  # what listing left out
        self._opened: set[str] = set()
        mode = _stat(self.path, "expected a folder or a .zip file").st_mode
        if stat.S_ISDIR(mode):
            self.names = sorted(_folder_members(self.path, self._passed_over))
        else:
            _refuse_special(self.path, mode)
            self._zip = _open_zip(self.path)
            self.names = sorted(_zip_members(self._zip, self.path, self._passed_over))
        self._children = _folder_index(self.names)

    def __enter__(self) -> FileTree:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str) -> bytes:
        """The member's bytes, read whole (images, label files)."""
        with self.open(name) as stream:
            return stream.read()

    def open(self, name: str) -> IO[bytes]:
        """The member as a binary stream that raises a DataError naming it past the size rules or on damage."""
        self._opened.add(name)
        if self._zip is None:
            return open_regular_file(self.path / name, self.rules)
        return _open_zip_member(self._zip, name, self.where(name), self.rules)

    def skipped(self) -> Tally:
        """Every file not read so far, by reason (keys of SKIP_REASONS), with the first of each named by `where`."""
        skipped = Tally(Counter(self._passed_over.counts), dict(self._passed_over.examples))
        for name in self.names:
            if name not in self._opened:
                skipped.add("unused_image" if is_image(name) else "unknown_extension", self.where(name))
        return skipped

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


def open_regular_file(path: Path, rules: ReadRules) -> IO[bytes]:
    """A file on disk as a bounded binary stream; anything but a regular file is refused without opening it."""
    info = _stat(path, "expected a file")
    _refuse_special(path, info.st_mode)
    check_size(str(path), info.st_size, rules)
    try:
        raw = open(path, "rb")  # noqa: SIM115  # returned inside the stream its caller closes
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    return io.BufferedReader(_BoundedStream(raw, str(path), rules))


def byte_budget(rules: ReadRules, compressed: int | None = None) -> int:
    """The most bytes a file may hold, or a zip member of `compressed` bytes may inflate to."""
    if compressed is None:
        return rules.max_file_bytes
    return min(rules.max_file_bytes, max(RATIO_FREE_BYTES, int(rules.max_compression_ratio * compressed)))


def check_size(where: str, size: int, rules: ReadRules, compressed: int | None = None) -> None:
    """Refuse `size` bytes (declared, or read so far) above the member's `byte_budget`, naming the rule: the
    compression ratio first, since raising max_file_bytes would not let a zip bomb through."""
    if size <= byte_budget(rules, compressed):
        return
    if compressed is not None and size > max(RATIO_FREE_BYTES, rules.max_compression_ratio * compressed):
        raise DataError(
            f"{where}: at least {size:,} bytes inflated from {compressed:,} (ratio {size / max(compressed, 1):,.0f}), "
            f"above fetch.max_compression_ratio={rules.max_compression_ratio:g}; refusing a likely zip bomb"
        )
    raise DataError(f"{where}: at least {size:,} bytes, above fetch.max_file_bytes={rules.max_file_bytes:,}")


class _BoundedStream(io.RawIOBase):
    """Bytes of one member that end in a DataError naming it once they pass the size rules or turn out damaged."""

    def __init__(self, raw: IO[bytes], where: str, rules: ReadRules, compressed: int | None = None) -> None:
        super().__init__()
        self._raw, self._where, self._rules, self._compressed = raw, where, rules, compressed
        self._budget = byte_budget(rules, compressed)
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer).cast("B")
        try:
            # One byte past the budget is enough to refuse: a large read(n) never buffers more than that.
            chunk = self._raw.read(min(len(view), self._budget - self._count + 1))
        except _ZIP_ERRORS as error:
            raise DataError(f"{self._where}: damaged ({error})") from None
        view[: len(chunk)] = chunk
        self._count += len(chunk)
        check_size(self._where, self._count, self._rules, self._compressed)
        return len(chunk)

    def close(self) -> None:
        self._raw.close()
        super().close()


def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _stat(path: Path, expected: str) -> os.stat_result:
    """`path`'s type, mode and size; a symlink counts as its target (DVC links data into its cache)."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: does not exist ({expected})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None


def _refuse_special(path: Path, mode: int) -> None:
    """Only regular files are opened: a FIFO blocks the read forever, a device (`/dev/zero`) never ends."""
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISDIR: "folder", stat.S_ISFIFO: "FIFO", stat.S_ISCHR: "character device"}
        kind = next((name for test, name in kinds.items() if test(mode)), "block device or socket")
        raise DataError(f"{path}: is a {kind}, not a regular file; refusing to open it")


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


def _folder_members(root: Path, passed_over: Tally) -> Iterable[str]:
    """Listing opens no file, so a FIFO or device among them is only refused if a source reads it.

    Hidden and symlinked folders are not walked (os.walk follows no folder link): each counts once in
    `passed_over`, whatever it holds.
    """
    for directory, folders, files in os.walk(root, onerror=_unlistable):
        relative = Path(directory).relative_to(root).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        folders[:] = [folder for folder in folders if _walked(root, prefix + folder, passed_over)]
        for file in files:
            if _is_junk(file):
                passed_over.add("hidden", str(root / (prefix + file)))
            else:
                yield prefix + file


def _walked(root: Path, folder: str, passed_over: Tally) -> bool:
    """Whether to list `folder`'s files; if not, it counts in `passed_over` under its reason."""
    path = root / folder
    if _is_junk(path.name):
        passed_over.add("hidden", str(path))
        return False
    if path.is_symlink():
        passed_over.add("symlinked_folder", f"{path} -> {os.readlink(path)}")
        return False
    return True


def _unlistable(error: OSError) -> None:
    """os.walk skips a folder it cannot list unless told otherwise: its images would vanish silently."""
    raise DataError(f"{error.filename}: cannot list this folder ({error.strerror})")


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, ValueError):  # ValueError: a damaged directory (a negative offset, a bad name encoding)
        raise DataError(f"{path}: not a folder or a readable .zip file") from None


def _zip_members(archive: zipfile.ZipFile, path: Path, passed_over: Tally) -> Iterable[str]:
    names = archive.namelist()
    repeated = [name for name, count in Counter(names).items() if count > 1 and not name.endswith("/")]
    if repeated:
        # zipfile reads the last of a repeated name every time: two rows would show the same image.
        raise DataError(f"{path}:{repeated[0]}: this member name occurs more than once in the zip")
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name) or ".." in parts:
            raise DataError(f"{path}: unsafe member {name!r} (absolute or '..' path); refusing to read this zip")
        if name.endswith("/"):
            continue
        if _is_junk(name):
            passed_over.add("hidden", f"{path}:{name}")
        else:
            yield name


def _open_zip_member(archive: zipfile.ZipFile, name: str, where: str, rules: ReadRules) -> IO[bytes]:
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise DataError(f"{where}: encrypted; fetch reads no password-protected zip members")
    check_size(where, info.file_size, rules, info.compress_size)
    try:
        raw = archive.open(info)
    except _ZIP_ERRORS as error:
        raise DataError(f"{where}: damaged ({error})") from None
    return io.BufferedReader(_BoundedStream(raw, where, rules, info.compress_size))
