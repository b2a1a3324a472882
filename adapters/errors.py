"""The adapters' error family: every message says what, where (file, row, column) and why.

Messages never carry a cell value: a value may be an ID number or a name, and these errors end
up in terminals and logs. They name the file, the key, the row, the column and the reason.
"""

from __future__ import annotations

from pathlib import Path


class AdapterError(Exception):
    """Root of every error raised by the adapters package."""


class MappingError(AdapterError):
    """A mapping file is invalid; the message names the file and the key."""

    def __init__(self, file: str | Path, key: str, why: str) -> None:
        where = f"{file}: {key}" if key else str(file)
        super().__init__(f"{where}: {why}")
        self.file = str(file)
        self.key = key
        self.why = why


class SourceError(AdapterError):
    """A source cannot be read (encoding, format, connection); names the source and row."""

    def __init__(
        self, source: str, why: str, *, row: int | None = None, byte_offset: int | None = None
    ) -> None:
        where = source
        if row is not None:
            where += f", row {row}"
        if byte_offset is not None:
            where += f", byte offset {byte_offset}"
        super().__init__(f"{where}: {why}")
        self.source = source
        self.row = row
        self.byte_offset = byte_offset
        self.why = why


class ReportError(AdapterError):
    """A reject report cannot be written (a missing directory, a directory in its place, no
    permission); names the path."""

    def __init__(self, path: str | Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = str(path)
        self.why = why
