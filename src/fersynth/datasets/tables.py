"""Text files of a dataset (CSV tables, label lists) read line by line, every failure naming `file:line`.

Label files come from spreadsheets and old tools: Latin-1 exports, stray bytes, a field holding a whole
image. Each line is decoded as UTF-8 on its own, so a bad byte is reported at its line rather than at the
buffer it happened to fall in, and the csv module's own complaints (an over-long field, a bad quote) are
DataErrors too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import IO

from fersynth.errors import DataError

Row = dict[str, str | None]  # column -> value; None where a row is shorter than the header


def utf8_lines(stream: IO[bytes], where: str) -> Iterator[str]:
    """The stream's lines as UTF-8 text (a leading BOM dropped), with their line endings, split as
    `open(newline="")` splits them (\\n, \\r\\n or a lone \\r), so csv still sees quoted line breaks.

    Latin-1 maps each byte to one character: it splits lines without ever failing and gives each line's
    bytes back intact for the strict UTF-8 decode (no UTF-8 multi-byte character holds \\n or \\r bytes).
    """
    for number, line in enumerate(io.TextIOWrapper(stream, encoding="latin-1", newline=""), start=1):
        try:
            yield line.encode("latin-1").decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{where}:{number}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def csv_table(stream: IO[bytes], where: str) -> tuple[list[str], Iterator[tuple[int, Row]]]:
    """The header of a UTF-8 CSV, and its rows with the line each ends on (for `where:line` in messages)."""
    reader = csv.DictReader(utf8_lines(stream, where))
    try:
        header = list(reader.fieldnames or ())
    except csv.Error as error:
        raise DataError(f"{where}:1: not a readable CSV header ({error})") from None
    return header, _rows(reader, where)


def _rows(reader: csv.DictReader[str], where: str) -> Iterator[tuple[int, Row]]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # csv counts a line once parsed: the one it failed on is the next
            raise DataError(f"{where}:{reader.line_num + 1}: not a readable CSV row ({error})") from None
        yield reader.line_num, row
