"""CSV and other delimited text exports, streamed, in UTF-8 (with or without BOM) or GB18030.

Encoding: with `encoding = "auto"` the first 64 KiB decide: a UTF-8 BOM means UTF-8; bytes
that decode as strict UTF-8 mean UTF-8; otherwise bytes that decode as strict GB18030 mean
GB18030 (a superset of GBK and GB2312); anything else is refused. Every line is then decoded
strictly, so a byte sequence that is not valid in the chosen encoding anywhere in the file
stops the run with a `SourceError` naming the file, the row and the byte offset: never a
silently garbled (mojibake) value. "gbk", "gb2312" and "cp936" are read as GB18030.

The file is read as bytes and split into lines at "\\r\\n", "\\n" or a lone "\\r" (universal
newlines: old Mac-style exports end lines with CR alone). Neither byte occurs inside a UTF-8 or
GB18030 character, so byte offsets are exact and a resume can seek straight to the next row.

The delimiter, when not named, is sniffed from the lines from `header_row` on, so a title line
above the header does not hide a tab- or semicolon-separated layout.

Python's csv reader refuses a cell longer than its field size limit (128 KiB by default). Such a
row is not a reason to stop the file: the rest of the record is skipped exactly (quotes are
followed, so a long quoted cell spanning lines is skipped whole) and the row is yielded as a
`ProblemRow` with code "cell_too_large" naming the column, its other cells kept for the report.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from adapters.errors import SourceError
from adapters.source import (
    EXTRA_CELLS,
    CellProblem,
    ProblemRow,
    ResumeState,
    Row,
    check_resume,
    name_columns,
    resume_offset,
)

__all__ = ["CsvSource", "detect_encoding"]

_SAMPLE = 64 * 1024
_UTF8_BOM = codecs.BOM_UTF8
_GB18030_BOM = b"\x84\x31\x95\x33"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_ALIASES = {
    "auto": "auto",
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "utf-8-sig": "utf-8",
    "gb18030": "gb18030",
    "gbk": "gb18030",
    "gb2312": "gb18030",
    "cp936": "gb18030",
}
_DELIMITERS = (",", "\t", ";", "|")
_BLOCK = 64 * 1024
_SNIFF_LINES = 19
_TOO_LARGE = "field larger than field limit"  # the csv module's message for an oversize cell


def canonical_encoding(name: str) -> str | None:
    """Return the encoding credex reads for a name in a mapping, or None if it is unsupported."""
    return _ALIASES.get(name.strip().lower().replace("_", "-"))


def detect_encoding(sample: bytes, source: str) -> tuple[str, int]:
    """Decide the encoding from the first bytes of a file: (encoding, BOM length).

    Refuses UTF-16 and bytes that are neither UTF-8 nor GB18030 (SourceError with the offset
    of the first byte that is not UTF-8).
    """
    if sample.startswith(_UTF8_BOM):
        return "utf-8", len(_UTF8_BOM)
    if sample.startswith(_GB18030_BOM):
        return "gb18030", len(_GB18030_BOM)
    if sample.startswith(_UTF16_BOMS):
        raise SourceError(source, "UTF-16 text is not supported; save the export as UTF-8")
    try:
        # final=False: the sample may end in the middle of a character.
        codecs.getincrementaldecoder("utf-8")("strict").decode(sample, final=False)
    except UnicodeDecodeError as utf8_error:
        try:
            codecs.getincrementaldecoder("gb18030")("strict").decode(sample, final=False)
        except UnicodeDecodeError:
            raise SourceError(
                source,
                "neither UTF-8 nor GB18030; name the encoding in [source] encoding",
                byte_offset=utf8_error.start,
            ) from None
        return "gb18030", 0
    return "utf-8", 0


def physical_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The rest of a binary file as lines, each with its ending: CRLF, LF or a lone CR.

    Reads in 64 KiB blocks, so a file whose lines end in CR alone is not read whole.
    """
    pending: list[bytes] = []
    while block := handle.read(_BLOCK):
        held_cr = bool(pending) and pending[-1].endswith(b"\r")
        if not held_cr and b"\n" not in block and b"\r" not in block:
            pending.append(block)  # a long line: join once its end is found
            continue
        lines = (b"".join(pending) + block).splitlines(keepends=True)
        pending = []
        if not lines[-1].endswith(b"\n"):
            # No ending yet, or a CR whose LF may start the next block.
            pending.append(lines.pop())
        yield from lines
    if pending:
        yield b"".join(pending)


class _RecordScan:
    """Follows the rest of one record the csv reader gave up on, as the reader would parse it
    (quote character '"', doubled quotes inside quoted cells, no escape character).

    `feed` takes one line and says whether the record ends with it; `cells` holds the cells
    read so far, an oversize cell as "" (it is never held in memory), and `oversize` the
    indexes of the cells longer than `limit`.
    """

    _START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)

    def __init__(self, delimiter: str, limit: int) -> None:
        self._delimiter = delimiter
        self._limit = limit
        self._state = self._START
        self._parts: list[str] = []
        self._length = 0
        self.cells: list[str] = []
        self.oversize: list[int] = []

    def _add(self, text: str) -> None:
        self._length += len(text)
        if self._length > self._limit:
            if not self.oversize or self.oversize[-1] != len(self.cells):
                self.oversize.append(len(self.cells))
            self._parts = []
        else:
            self._parts.append(text)

    def _end_cell(self) -> None:
        self.cells.append("".join(self._parts))
        self._parts, self._length = [], 0

    def feed(self, line: str) -> bool:
        """Read one line of the record; True when the record ends with it."""
        i, end = 0, len(line)
        while i < end:
            if self._state == self._QUOTED:
                quote = line.find('"', i)
                if quote < 0:
                    self._add(line[i:])
                    return False
                self._add(line[i:quote])
                self._state, i = self._QUOTE_IN_QUOTED, quote + 1
                continue
            char = line[i]
            if self._state == self._QUOTE_IN_QUOTED:
                if char == '"':
                    self._add('"')
                    self._state, i = self._QUOTED, i + 1
                    continue
                self._state = self._UNQUOTED
            if char in "\r\n":
                self._end_cell()
                return True
            if char == self._delimiter:
                self._end_cell()
                self._state, i = self._START, i + 1
                continue
            if self._state == self._START and char == '"':
                self._state, i = self._QUOTED, i + 1
                continue
            stop = min(
                (j for j in (line.find(c, i) for c in (self._delimiter, "\r", "\n")) if j >= 0),
                default=end,
            )
            self._add(line[i:stop])
            self._state, i = self._UNQUOTED, stop
        if self._state == self._QUOTED:
            return False
        self._end_cell()  # the last line of the file, without an ending
        return True


def sniff_delimiter(lines: list[str]) -> str:
    """Pick the delimiter that splits the first lines into the most, equally many, fields.

    Candidates are comma, tab, semicolon and bar; falls back to comma.
    """
    best, best_width = ",", 1
    for candidate in _DELIMITERS:
        try:
            widths = {len(row) for row in csv.reader(lines, delimiter=candidate) if row}
        except csv.Error:
            # e.g. a bare CR inside a field: this candidate cannot tell; the strict read of
            # the real rows reports the malformed line with its row number
            continue
        if len(widths) == 1:
            width = widths.pop()
            if width > best_width:
                best, best_width = candidate, width
    return best


class CsvSource:
    """A delimited text file read row by row (see the module docstring).

    `header_row` is the 1-based record holding the column names (records above it, such as a
    title line, are skipped); `delimiter` None means sniffed from the first lines.
    """

    kind = "csv"

    def __init__(
        self,
        path: Path,
        *,
        encoding: str = "auto",
        delimiter: str | None = None,
        header_row: int = 1,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.name = name or path.name
        wanted = canonical_encoding(encoding)
        if wanted is None:
            raise SourceError(self.name, f"unsupported encoding {encoding!r}")
        self._wanted = wanted
        self._delimiter = delimiter
        self._header_row = header_row
        self._encoding: str | None = None
        self._columns: tuple[str, ...] | None = None
        self._data_start = 0
        self._header_rows_seen = 0
        self._read = hashlib.sha256()  # of the bytes before self._offset
        self._header_read = hashlib.sha256()  # of the bytes before the first data row
        self._offset = 0
        self._row_number = 0
        self._record: list[str] = []  # the lines of the record being read

    @property
    def encoding(self) -> str:
        """The encoding in use (after detection)."""
        self._prepare()
        assert self._encoding is not None
        return self._encoding

    def columns(self) -> tuple[str, ...]:
        """The header's column names."""
        self._prepare()
        assert self._columns is not None
        return self._columns

    def position(self) -> ResumeState:
        """The state after the last row yielded."""
        self._prepare()
        return ResumeState(
            kind=self.kind,
            source=self.name,
            row_number=self._row_number,
            position={"offset": self._offset, "prefix": self._read.hexdigest()},
        )

    def _open(self) -> BinaryIO:
        try:
            return self.path.open("rb")
        except OSError as error:
            raise SourceError(self.name, f"cannot open the file ({error.strerror})") from None

    def _lines(self, handle: BinaryIO, offset: int, encoding: str) -> Iterator[str]:
        for raw in physical_lines(handle):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as error:
                hint = (
                    " (the encoding was detected from the first 64 KiB; name it in "
                    "[source] encoding)"
                    if self._wanted == "auto"
                    else ""
                )
                raise SourceError(
                    self.name,
                    f"bytes that are not valid {encoding.upper()}{hint}",
                    row=self._row_number + 1,
                    byte_offset=offset + error.start,
                ) from None
            offset += len(raw)
            self._offset = offset
            self._read.update(raw)
            self._record.append(text)
            yield text

    def _prepare(self) -> None:
        if self._columns is not None:
            return
        with self._open() as handle:
            sample = handle.read(_SAMPLE)
            if self._wanted == "auto":
                encoding, bom = detect_encoding(sample, self.name)
            else:
                encoding = self._wanted
                bom = len(_UTF8_BOM) if sample.startswith(_UTF8_BOM) else 0
            self._encoding = encoding
            self._read = hashlib.sha256(sample[:bom])
            handle.seek(bom)
            lines = self._lines(handle, bom, encoding)
            if self._delimiter is None:
                # The last line of the sample may be cut short; lines above header_row (a
                # title) would make every candidate split unevenly, so both are left out.
                lines_of_sample = sample[bom:].splitlines(keepends=True)
                skip = self._header_row - 1
                head = lines_of_sample[:-1][skip : skip + _SNIFF_LINES] or lines_of_sample[skip:]
                # Replacement characters here only steer the sniffing; real rows decode strictly.
                self._delimiter = sniff_delimiter(
                    [line.decode(encoding, errors="replace") for line in head]
                )
            reader = csv.reader(lines, delimiter=self._delimiter, strict=True)
            header: list[str] | None = None
            try:
                for _ in range(self._header_row):
                    header = next(reader)
                    self._row_number += 1
            except StopIteration:
                raise SourceError(
                    self.name, f"the file ends before header row {self._header_row}"
                ) from None
            except csv.Error as error:
                raise SourceError(
                    self.name, f"malformed CSV ({error})", row=self._row_number + 1
                ) from None
            assert header is not None
            self._columns = name_columns(header)
            self._data_start = self._offset
            self._header_read = self._read.copy()
            self._header_rows_seen = self._row_number

    def rows(self, resume: ResumeState | None = None) -> Iterator[Row]:
        """Yield data rows after the header (or after the resume point).

        Refuses a resume state when a byte before its offset changed (see `resume_offset`) or
        when it points past the end. Rows with more cells than the header keep the extra cells under
        EXTRA_CELLS (the mapper rejects them); missing trailing cells are empty.
        """
        self._prepare()
        check_resume(resume, self.kind, self.name)
        columns = self.columns()
        assert self._encoding is not None
        assert self._delimiter is not None
        start, self._row_number = self._data_start, self._header_rows_seen
        self._read = self._header_read.copy()
        if resume is not None:
            start, self._read = resume_offset(resume, self.path, self.name)
            self._row_number = resume.row_number
        self._offset = start
        with self._open() as handle:
            handle.seek(start)
            lines = self._lines(handle, start, self._encoding)
            reader = csv.reader(lines, delimiter=self._delimiter, strict=True)
            while True:
                self._record = []
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    if not str(error).startswith(_TOO_LARGE):
                        raise SourceError(
                            self.name, f"malformed CSV ({error})", row=self._row_number + 1
                        ) from None
                    self._row_number += 1
                    yield self._row_number, self._oversize_row(lines, columns)
                    continue
                self._row_number += 1
                if not any(cells):
                    continue
                yield self._row_number, _row(columns, cells)

    def _oversize_row(self, lines: Iterator[str], columns: tuple[str, ...]) -> ProblemRow:
        """Finish the record the csv reader refused for a cell over its size limit.

        The reader has consumed the record's lines up to the oversize cell; the rest is read
        here (never by the reader, which would take it for new records).
        """
        assert self._delimiter is not None
        limit = csv.field_size_limit()
        scan = _RecordScan(self._delimiter, limit)
        ended = False
        for text in self._record:
            ended = scan.feed(text)
        while not ended:
            more = next(lines, None)
            if more is None:
                break
            ended = scan.feed(more)
        width = len(columns)
        why = f"a cell longer than {limit} characters (the CSV reader's limit)"
        problems = [
            CellProblem(columns[i] if i < width else EXTRA_CELLS, "cell_too_large", why)
            for i in scan.oversize
        ]
        return ProblemRow(_row(columns, scan.cells), problems)


def _row(columns: tuple[str, ...], cells: list[str]) -> dict[str, str]:
    """A row from a record's cells: missing trailing cells are empty, extra ones kept apart."""
    width = len(columns)
    row = dict(zip(columns, cells, strict=False))
    if len(cells) < width:
        for name in columns[len(cells) :]:
            row[name] = ""
    elif len(cells) > width:
        row[EXTRA_CELLS] = "\t".join(cells[width:])
    return row
