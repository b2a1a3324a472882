"""What every source promises: streamed rows with their original column names, and a position.

A source yields `(row_number, {column: text})` one row at a time and, after each row, can say
where it is (`position()`), as a `ResumeState` a caller may save once it has stored everything
up to that row. Reading again with that state continues after the row, neither repeating nor
skipping one.

Row numbers are what a clerk sees: the spreadsheet row for CSV and Excel (the header line is a
row), the line for JSON Lines, and a running count for SQL tables. Rows whose cells are all
empty are not rows (exports pad with them) and are neither yielded nor counted.

A row the source can read only in part (a cell over the CSV reader's size limit, a JSON object
with a repeated key or nested too deeply, a database value that cannot be written as text) is
still yielded, as a `ProblemRow`: the cells that could be read plus the reasons. The run rejects
it with those reasons and goes on, so one odd row neither stops the file nor disappears.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from adapters.errors import SourceError

Row = tuple[int, dict[str, str]]

EXTRA_CELLS = "(extra cells)"
"""Key under which a CSV row's cells beyond the header are kept, so the row can be rejected."""


@dataclass(frozen=True)
class CellProblem:
    """Why a source could not read a row as it stands: the column ("" for the whole row), a
    reject code and a message that never repeats a cell value."""

    column: str
    code: str
    message: str


class ProblemRow(dict[str, str]):
    """A row the source read only in part: the cells it could read, and `problems`.

    It is a plain row for everything that reads cells; `run_mapping` rejects it with its
    problems instead of mapping it, because some of its values are missing or ambiguous.
    """

    problems: tuple[CellProblem, ...]

    def __init__(self, cells: Mapping[str, str], problems: Iterable[CellProblem]) -> None:
        super().__init__(cells)
        self.problems = tuple(problems)


@dataclass(frozen=True)
class ResumeState:
    """Where a source stopped: JSON-able, saved by the caller only after storing the batch.

    `kind` is the source kind, `source` its display name, `row_number` the last row consumed,
    `position` the source-specific rest (byte offset and fingerprint, or watermark and key).
    """

    kind: str
    source: str
    row_number: int
    position: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise as one JSON object."""
        return json.dumps(
            {
                "kind": self.kind,
                "source": self.source,
                "row_number": self.row_number,
                "position": dict(self.position),
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ResumeState:
        """Parse a saved state; refuses anything that is not a state this module wrote."""
        try:
            data = json.loads(text)
            kind, source, row = data["kind"], data["source"], data["row_number"]
            position = data.get("position", {})
        except (ValueError, KeyError, TypeError) as error:
            raise SourceError("resume state", f"not a saved resume state ({error})") from None
        if not (
            isinstance(kind, str)
            and isinstance(source, str)
            and isinstance(row, int)
            and isinstance(position, dict)
        ):
            raise SourceError("resume state", "not a saved resume state (wrong types)")
        return cls(kind=kind, source=source, row_number=row, position=position)


class Source(Protocol):
    """A streaming reader of rows (see the module docstring for the promises)."""

    kind: str
    name: str

    def columns(self) -> tuple[str, ...] | None:
        """The header's column names, or None for sources without a fixed header (JSON Lines).

        Reads the header if it has not been read yet; never reads data rows.
        """
        ...

    def rows(self, resume: ResumeState | None = None) -> Iterator[Row]:
        """Yield rows after the resume point (all rows when None)."""
        ...

    def position(self) -> ResumeState:
        """The state after the last row yielded (the start when none was)."""
        ...


def check_resume(resume: ResumeState | None, kind: str, name: str) -> None:
    """Refuse a resume state saved for another kind of source or another source."""
    if resume is not None and (resume.kind != kind or resume.source != name):
        raise SourceError(
            name, f"the resume state belongs to {resume.kind} source {resume.source!r}"
        )


def hash_prefix(path: Path, length: int, name: str) -> hashlib._Hash:
    """A SHA-256 fed with the file's first `length` bytes, to go on with the bytes after them.

    Refuses (SourceError naming the source) a file that cannot be opened.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while length > 0 and (block := handle.read(min(length, 1 << 20))):
                digest.update(block)
                length -= len(block)
    except OSError as error:
        raise SourceError(name, f"cannot open the file ({error.strerror})") from None
    return digest


def resume_offset(resume: ResumeState, path: Path, name: str) -> tuple[int, hashlib._Hash]:
    """Where a text file source resumes: the saved byte offset, and the SHA-256 of the bytes
    before it (the digest a `position()` after the next rows must extend).

    The state records the digest of every byte read before the offset ("prefix"): a file
    rewritten since (a row removed or edited before the offset) would shift the offset into
    the wrong row, so it is refused; bytes added after the offset are new rows and welcome.
    Also refuses a state pointing past the end, and one saved by an older credex, which
    recorded only the first 64 KiB (start the run from the beginning; stored rows are skipped
    as unchanged).
    """
    offset, prefix = resume.position.get("offset"), resume.position.get("prefix")
    if not isinstance(prefix, str):
        raise SourceError(
            name,
            "the resume state does not record the bytes read before it (saved by an older "
            "credex); read the file from the start (credex ingest --restart)",
        )
    try:
        size = path.stat().st_size
    except OSError as error:
        raise SourceError(name, f"cannot open the file ({error.strerror})") from None
    if not isinstance(offset, int) or not 0 <= offset <= size:
        raise SourceError(name, "the resume state points past the end of the file")
    digest = hash_prefix(path, offset, name)
    if digest.hexdigest() != prefix:
        raise SourceError(
            name,
            f"the file changed in its first {offset} bytes (the rows already read) since the "
            "resume state was saved, so the saved position no longer starts a row; read the "
            "file from the start (credex ingest --restart)",
        )
    return offset, digest


def name_columns(cells: Sequence[str]) -> tuple[str, ...]:
    """Turn header cells into unique column names.

    Names are trimmed; a blank cell becomes "(column N)" (1-based), and a repeated name gets
    "#2", "#3" ... so no two columns share a name and no cell is silently dropped.
    """
    names: list[str] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells, start=1):
        name = cell.strip().strip("\ufeff").strip() or f"(column {index})"
        count = seen.get(name, 0) + 1
        seen[name] = count
        names.append(name if count == 1 else f"{name}#{count}")
    return tuple(names)


def cell_text(value: object) -> str:
    """Write a cell value from Excel, JSON or a database as text, losing nothing.

    None is "", booleans "true"/"false", integral floats without ".0", other floats in their
    shortest round-trip form, decimals without exponent, dates ISO (datetimes at midnight as a
    date, others "YYYY-MM-DD HH:MM:SS"), bytes as hex. Lists, tuples and dicts (database arrays
    and JSON columns) become compact JSON whose nested values are written by these same rules
    (`[Decimal("1.5")]` is `["1.5"]`).

    Raises ValueError, naming no value, for a container that cannot be JSON: a circular one,
    one nested too deeply, or a dict whose keys are not text, numbers, booleans or None.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0, 0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list | tuple):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=cell_text)
        except (TypeError, ValueError, RecursionError):
            # The messages quote keys and values; this one names neither.
            raise ValueError("a nested value that cannot be written as JSON text") from None
    return str(value)


def row_cells(values: Mapping[Any, object], columns: Iterable[str]) -> dict[str, str]:
    """The named cells of a record as text (see `cell_text`).

    A cell that cannot be written as text makes the result a `ProblemRow` naming that column
    (code "unreadable_cell"; the cell is left empty), so the row is rejected, never dropped and
    never a crash.
    """
    cells: dict[str, str] = {}
    problems: list[CellProblem] = []
    for column in columns:
        try:
            cells[column] = cell_text(values[column])
        except ValueError:
            cells[column] = ""
            kind = type(values[column]).__name__
            problems.append(
                CellProblem(
                    column, "unreadable_cell", f"a {kind} value that cannot be read as text"
                )
            )
    return ProblemRow(cells, problems) if problems else cells
