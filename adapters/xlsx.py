"""Excel .xlsx exports, streamed with openpyxl's read-only mode.

Read-only mode does not expose merged cells, and exports often group columns under a merged
header cell. Two rules stand in for the merge information:

- one header row (`header_rows = 1`): a blank header cell after a named one belongs to the same
  merged group and is named after it with "#2", "#3" ... ("处罚机关", "处罚机关#2");
- two header rows (`header_rows = 2`): the upper row is carried to the right over blank cells
  (the merged group) and joined with the lower row by "/" ("处罚机关/名称",
  "处罚机关/统一社会信用代码"); where one of the two is blank (a cell merged vertically, or a
  column without a group) the other is the name alone.

Cells: dates and datetimes become ISO text (a datetime at midnight becomes a date); numbers
that Excel stores as serial dates without a date format stay numbers, and the `date`
transform's "excel" format (part of a plain "date" for a workbook) turns them into dates.
A cell holding an Excel error (#N/A, #REF! ...) in a column the mapping reads makes its row a
`ProblemRow` (code "cell_error", naming the column). Formulas are read as their cached values;
one saved without a value (by a program that does not calculate) cannot be told from an empty
cell in read-only mode, and reads as empty (docs/mapping.md says so).
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from adapters.errors import SourceError
from adapters.source import (
    EXTRA_CELLS,
    CellProblem,
    ProblemRow,
    ResumeState,
    Row,
    cell_text,
    check_resume,
    name_columns,
)

__all__ = ["XlsxSource", "header_names"]


def header_names(rows: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Column names from one or two header rows (see the module docstring for the rules)."""
    width = max((len(r) for r in rows), default=0)
    padded = [list(r) + [""] * (width - len(r)) for r in rows]
    if len(padded) == 1:
        carried: list[str] = []
        last = ""
        for cell in padded[0]:
            text = cell.strip()
            last = text or last
            carried.append(text or last)
        return name_columns(carried)
    upper, lower = padded[0], padded[1]
    names: list[str] = []
    group = ""
    for top_cell, bottom_cell in zip(upper, lower, strict=True):
        top, bottom = top_cell.strip(), bottom_cell.strip()
        if top:
            # A named upper cell with nothing below is merged vertically: it starts no group.
            group = top if bottom else ""
            head = top
        else:
            head = group if bottom else ""
            group = group if bottom else ""
        names.append(f"{head}/{bottom}" if head and bottom and head != bottom else head or bottom)
    return name_columns(names)


class XlsxSource:
    """One worksheet of an .xlsx workbook read row by row (see the module docstring).

    `sheet` None means the first sheet; `header_row` is the 1-based row of the (first) header
    row and `header_rows` is 1 or 2.
    """

    kind = "xlsx"

    def __init__(
        self,
        path: Path,
        *,
        sheet: str | None = None,
        header_row: int = 1,
        header_rows: int = 1,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.name = name or path.name
        self._sheet = sheet
        self._header_row = header_row
        self._header_rows = header_rows
        self._columns: tuple[str, ...] | None = None
        self._fingerprint = ""
        self._row_number = 0
        self._only: frozenset[str] | None = None

    def _workbook(self) -> Any:
        # Imported here, not at the top: openpyxl takes ~0.1 s to import, and every `credex`
        # command imports this module (through `adapters`) while few of them read a workbook.
        import openpyxl  # noqa: PLC0415

        try:
            with warnings.catch_warnings():
                # openpyxl warns about styles and extensions it ignores; they do not touch values.
                warnings.simplefilter("ignore", UserWarning)
                return openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except OSError as error:
            raise SourceError(
                self.name, f"cannot open the file ({error.strerror or type(error).__name__})"
            ) from None
        except (zipfile.BadZipFile, KeyError, ValueError) as error:
            raise SourceError(self.name, f"not a readable .xlsx workbook ({error})") from None
        except Exception as error:
            raise SourceError(
                self.name, f"damaged .xlsx workbook ({type(error).__name__})"
            ) from None

    def _guarded(self, values: Iterable[Any]) -> Iterator[Any]:
        """Iterate openpyxl rows, turning any parser failure of a damaged file (zlib, EOF,
        malformed XML, unsupported compression) into a SourceError naming the row."""
        iterator = iter(values)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except SourceError:
                raise
            except Exception as error:
                raise SourceError(
                    self.name,
                    f"damaged .xlsx workbook near row {self._row_number + 1} "
                    f"({type(error).__name__})",
                ) from None
            yield item

    def _worksheet(self, workbook: Any) -> Any:
        if self._sheet is None:
            if not workbook.worksheets:
                raise SourceError(self.name, "the workbook has no worksheet")
            sheet = workbook.worksheets[0]
        elif self._sheet not in workbook.sheetnames:
            raise SourceError(self.name, f"no sheet named {self._sheet!r}")
        else:
            sheet = workbook[self._sheet]
        # Read-only mode trusts the sheet's <dimension> tag, and iter_rows stops at the rows and
        # columns it names. Exporters write stale ones ("A1:R3" over 11 rows), which would lose
        # rows and columns silently; without it, reading goes to the last cell really there.
        sheet.reset_dimensions()
        return sheet

    def columns(self) -> tuple[str, ...]:
        """The column names from the header row(s)."""
        if self._columns is None:
            digest = hashlib.sha256()
            try:
                with self.path.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            except OSError as error:
                # Missing, a directory, unreadable: the same clean error as CSV and JSON Lines.
                raise SourceError(
                    self.name, f"cannot open the file ({error.strerror or type(error).__name__})"
                ) from None
            self._fingerprint = digest.hexdigest()
            workbook = self._workbook()
            try:
                sheet = self._worksheet(workbook)
                last = self._header_row + self._header_rows - 1
                header = [
                    [cell_text(v) for v in row]
                    for row in self._guarded(
                        sheet.iter_rows(min_row=self._header_row, max_row=last, values_only=True)
                    )
                ]
            finally:
                workbook.close()
            if len(header) < self._header_rows or not any(any(r) for r in header):
                raise SourceError(self.name, f"no header at row {self._header_row}")
            self._columns = header_names(header)
            self._row_number = last
        return self._columns

    def read_only(self, columns: Iterable[str]) -> None:
        """Judge only these columns: an Excel error value in another column (one the mapping
        does not read) does not reject its row. Called by `run_mapping` with the mapped columns.
        """
        self._only = frozenset(columns)

    def position(self) -> ResumeState:
        """The state after the last row yielded."""
        self.columns()
        return ResumeState(
            kind=self.kind,
            source=self.name,
            row_number=self._row_number,
            position={"fingerprint": self._fingerprint},
        )

    def rows(self, resume: ResumeState | None = None) -> Iterator[Row]:
        """Yield data rows below the header, or after the resume row.

        Refuses a resume state saved for a different workbook (its SHA-256 changed).
        """
        columns = self.columns()
        check_resume(resume, self.kind, self.name)
        first = self._header_row + self._header_rows
        if resume is not None:
            if resume.position.get("fingerprint") != self._fingerprint:
                raise SourceError(self.name, "the workbook changed since the state was saved")
            first = resume.row_number + 1
        self._row_number = first - 1
        workbook = self._workbook()
        try:
            sheet = self._worksheet(workbook)
            # Cells, not bare values: only a cell's type tells an error (#N/A) from its text.
            for found in self._guarded(sheet.iter_rows(min_row=first)):
                self._row_number += 1
                cells = [cell_text(c.value) for c in found]
                if not any(cells):
                    continue
                row = dict(zip(columns, cells, strict=False))
                for name in columns[len(cells) :]:
                    row[name] = ""
                extra = [c for c in cells[len(columns) :] if c]
                if extra:
                    row[EXTRA_CELLS] = "\t".join(extra)
                problems = [
                    _cell_error(name, text)
                    for name, cell, text in zip(columns, found, cells, strict=False)
                    if cell.data_type == "e" and (self._only is None or name in self._only)
                ]
                yield self._row_number, ProblemRow(row, problems) if problems else row
        finally:
            workbook.close()


def _cell_error(column: str, text: str) -> CellProblem:
    # Excel's error codes are a fixed set, never personal data: naming one helps the clerk.
    from openpyxl.cell.cell import ERROR_CODES  # noqa: PLC0415 - see _workbook

    what = f"the Excel error {text}" if text in ERROR_CODES else "an Excel error value"
    return CellProblem(
        column, "cell_error", f"the cell holds {what}, not data (fix the formula or the value)"
    )
