"""Reject reports: every refused row, why, and its original values, for the clerk to fix.

Two formats, both written incrementally (flat memory) and both listing the same facts:

- CSV (UTF-8 with BOM, so Excel on a Chinese desktop opens it correctly): one line per
  problem, columns `source, row, column, field, code, message`, then one column per mapped
  source column with the row's original value. A row with two problems has two lines.
- JSON Lines: one object per rejected row:
  `{"source", "row", "problems": [{"column", "field", "code", "message"}], "values": {...}}`.

Text that a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage
return) gets a leading apostrophe in the CSV report only (CSV injection), unless the whole text
is a plain number such as -5 or -1.25; JSON keeps every value as is. `-2+3+cmd|' /C calc'!A0`
starts with a minus and a digit but is no number, so it is defused too.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self

from adapters.errors import ReportError
from adapters.run import RejectedRow

__all__ = ["CsvRejectWriter", "JsonlRejectWriter", "RejectWriter", "open_reject_writer"]

CSV_COLUMNS = ("source", "row", "column", "field", "code", "message")


class RejectWriter(Protocol):
    """Something that records rejected rows; `close` flushes everything to disk."""

    def write(self, row: RejectedRow) -> None:
        """Record one rejected row."""
        ...

    def close(self) -> None:
        """Flush and close."""
        ...


_FORMULA_START = frozenset("=+-@\t\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _safe_cell(value: str) -> str:
    """The text with a leading apostrophe if a spreadsheet could run it as a formula."""
    if value[:1] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


class _Base:
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # backslashreplace: a value no source should hand over (an unpaired surrogate) must
            # still not stop the report; it is written as its escape, as JSON would show it.
            self._handle: IO[str] = path.open(
                "w", encoding="utf-8", errors="backslashreplace", newline=""
            )
        except OSError as error:
            raise ReportError(
                path,
                f"cannot write the reject report ({error.strerror or type(error).__name__})",
            ) from None
        self.path = path
        self.rows = 0

    def close(self) -> None:
        """Flush and close the report (the file is complete after this)."""
        if not self._handle.closed:
            self._handle.flush()
            self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class CsvRejectWriter(_Base):
    """CSV reject report; `columns` are the mapped source columns, in mapping order."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        """Create (or empty) the report at `path` and write its header line.

        Refuses (`ReportError`, naming the path) a path that cannot be written.
        """
        super().__init__(path)
        self._columns = tuple(columns)
        self._handle.write("\ufeff")
        self._writer = csv.writer(self._handle)
        self._writer.writerow([_safe_cell(c) for c in (*CSV_COLUMNS, *self._columns)])

    def write(self, row: RejectedRow) -> None:
        """Write one line per problem of the row."""
        originals = [_safe_cell(row.raw.get(c, "")) for c in self._columns]
        for problem in row.problems:
            # Names and messages are defused too: a column name or a catalogue message can
            # start with any character.
            self._writer.writerow(
                [
                    _safe_cell(row.source),
                    row.row_number,
                    _safe_cell(problem.column),
                    _safe_cell(problem.field_id),
                    problem.code,
                    _safe_cell(problem.message),
                    *originals,
                ]
            )
        self.rows += 1


class JsonlRejectWriter(_Base):
    """JSON Lines reject report: one object per rejected row."""

    def write(self, row: RejectedRow) -> None:
        """Write the row's object on one line."""
        obj = {
            "source": row.source,
            "row": row.row_number,
            "problems": [
                {"column": p.column, "field": p.field_id, "code": p.code, "message": p.message}
                for p in row.problems
            ],
            "values": dict(row.raw),
        }
        self._handle.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.rows += 1


def open_reject_writer(path: Path, columns: Sequence[str]) -> CsvRejectWriter | JsonlRejectWriter:
    """A writer chosen by the file suffix: .csv or .jsonl (ValueError for anything else).

    Refuses (`ReportError`, naming the path) a path that cannot be written.
    """
    if path.suffix == ".csv":
        return CsvRejectWriter(path, columns)
    if path.suffix == ".jsonl":
        return JsonlRejectWriter(path)
    raise ValueError(f"reject reports are .csv or .jsonl, not {path.suffix!r}")
