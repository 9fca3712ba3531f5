"""What every file source yields before decoding: one labelled image member, plus the lookups they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from fersynth.datasets.archive import FileTree
from fersynth.errors import DataError
from fersynth.registry import Registry

if TYPE_CHECKING:
    from fersynth.datasets.labels import LabelMapper
    from fersynth.datasets.papers import PaperOptions

Box = tuple[int, int, int, int]  # left, top, right, bottom in the file's pixels


@dataclass(frozen=True)
class Member:
    """One labelled image file of a source, before decoding."""

    name: str  # member path in the FileTree
    id: str
    label: int
    split: str | None  # None: the source does not say
    box: Box | None = None  # face box to crop before resizing (AffectNet gives one per image)
    group: str | None = None  # the person shown: carved splits never put one person on both sides


# A source's folder layout: the labelled image members of a folder or zip, listed before any decoding.
MemberLister = Callable[[FileTree, "LabelMapper", "PaperOptions"], Iterable["Member"]]
# Every fetch.source read from a folder or zip of image files (not `demo`, drawn; not `fer2013_csv`, pixel rows).
LAYOUTS: Registry[MemberLister] = Registry("dataset layout", "fetch.source")


def images_by_file_name(tree: FileTree) -> dict[str, list[str]]:
    """File name -> the image members of that name (label files name images without their folders)."""
    index: dict[str, list[str]] = {}
    for name in tree.images():
        index.setdefault(PurePosixPath(name).name, []).append(name)
    return index


def coded_name(code: str, table: Mapping[str, str], where: str, what: str) -> str:
    """The raw label name a dataset's `code` stands for; an unknown code is an error naming `where`.

    Codes for classes with no canonical twin (contempt, AffectNet's none/uncertain) are in the
    tables too, so `LabelMapper` drops them and counts them by name instead of failing.
    """
    name = table.get(code.strip().upper())
    if name is None:
        raise DataError(f"{where}: {what} {code.strip()!r} is not one of {sorted(table)}")
    return name
