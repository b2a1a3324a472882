"""CSV and other delimited text exports, streamed, in UTF-8 (with or without BOM) or GB18030.

Encoding: with `encoding = "auto"` the first 64 KiB decide: a UTF-8 BOM means UTF-8; bytes
that decode as strict UTF-8 mean UTF-8; otherwise bytes that decode as strict GB18030 mean
GB18030 (a superset of GBK and GB2312); anything else is refused. Every line is then decoded
strictly, so a byte sequence that is not valid in the chosen encoding anywhere in the file
stops the run with a `SourceError` naming the file, the row and the byte offset: never a
silently garbled (mojibake) value. "gbk", "gb2312" and "cp936" are read as GB18030.

The file is read as bytes and split on b"\\n", which never occurs inside a UTF-8 or GB18030
character, so byte offsets are exact and a resume can seek straight to the next row.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from adapters.errors import SourceError
from adapters.source import EXTRA_CELLS, ResumeState, Row, check_resume, name_columns

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
        self._fingerprint = ""
        self._offset = 0
        self._row_number = 0

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
            position={"offset": self._offset, "fingerprint": self._fingerprint},
        )

    def _open(self) -> BinaryIO:
        try:
            return self.path.open("rb")
        except OSError as error:
            raise SourceError(self.name, f"cannot open the file ({error.strerror})") from None

    def _lines(self, handle: BinaryIO, offset: int, encoding: str) -> Iterator[str]:
        for raw in handle:
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
            self._fingerprint = hashlib.sha256(sample).hexdigest()
            handle.seek(bom)
            lines = self._lines(handle, bom, encoding)
            if self._delimiter is None:
                head = sample[bom:].split(b"\n")[:20]
                text_head = [
                    line.decode(encoding, errors="replace") + "\n" for line in head[:-1]
                ] or [sample[bom:].decode(encoding, errors="replace")]
                # Replacement characters here only steer the sniffing; real rows decode strictly.
                self._delimiter = sniff_delimiter(text_head)
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
            self._header_rows_seen = self._row_number

    def rows(self, resume: ResumeState | None = None) -> Iterator[Row]:
        """Yield data rows after the header (or after the resume point).

        Refuses a resume state saved for a different file (its first 64 KiB changed) or one that
        points past the end. Rows with more cells than the header keep the extra cells under
        EXTRA_CELLS (the mapper rejects them); missing trailing cells are empty.
        """
        self._prepare()
        check_resume(resume, self.kind, self.name)
        columns = self.columns()
        assert self._encoding is not None
        assert self._delimiter is not None
        start, self._row_number = self._data_start, self._header_rows_seen
        if resume is not None:
            if resume.position.get("fingerprint") != self._fingerprint:
                raise SourceError(self.name, "the file changed since the resume state was saved")
            start, self._row_number = int(resume.position.get("offset", -1)), resume.row_number
            if not 0 <= start <= self.path.stat().st_size:
                raise SourceError(self.name, "the resume state points past the end of the file")
        self._offset = start
        width = len(columns)
        with self._open() as handle:
            handle.seek(start)
            reader = csv.reader(
                self._lines(handle, start, self._encoding), delimiter=self._delimiter, strict=True
            )
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    raise SourceError(
                        self.name, f"malformed CSV ({error})", row=self._row_number + 1
                    ) from None
                self._row_number += 1
                if not any(cells):
                    continue
                row = dict(zip(columns, cells, strict=False))
                if len(cells) < width:
                    for name in columns[len(cells) :]:
                        row[name] = ""
                elif len(cells) > width:
                    row[EXTRA_CELLS] = "\t".join(cells[width:])
                yield self._row_number, row
