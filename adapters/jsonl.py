"""JSON Lines exports: one JSON object per line, UTF-8 (a leading BOM is accepted), streamed.

Numbers keep the exact text they were written with (no float rounding: 0.1 stays "0.1"),
null is an empty value, nested arrays and objects become compact JSON text. A line that is not
valid UTF-8, not valid JSON or not an object stops the run with a `SourceError` naming the file,
line and byte offset; blank lines are skipped.

Three kinds of line are valid JSON but cannot be read faithfully; each becomes a `ProblemRow`
(rejected, naming the line, and the run goes on): an object that repeats a key, at any depth
(JSON readers silently keep one of the values; code "duplicate_key", naming the key), a line
nested more deeply than the JSON reader can follow (code "too_deep"), and a value or key holding
an unpaired UTF-16 surrogate escape such as "\\ud800" (code "bad_text", naming the key of a
value): that is no character at all, and it could be neither hashed nor written as UTF-8.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from adapters.errors import SourceError
from adapters.source import (
    CellProblem,
    ProblemRow,
    ResumeState,
    Row,
    check_resume,
    resume_offset,
    row_cells,
)

__all__ = ["JsonlSource"]

# A "\\uD800".."\\uDFFF" escape; only lines holding one can decode to an unpaired surrogate,
# so the other lines skip the per-cell check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_NOT_TEXT = "an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is no character"


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _Objects:
    """An `object_pairs_hook` that builds dicts and notes the keys an object repeats.

    The hook runs innermost object first, so the line's own (outermost) object is the last call.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.repeated: list[tuple[int, str]] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        self.calls += 1
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.repeated.append((self.calls, key))
                seen.add(key)
        return obj

    def problems(self) -> list[CellProblem]:
        """One problem per repeated key (once each); a top-level key names its column."""
        found: dict[tuple[str, str], CellProblem] = {}
        for call, key in self.repeated:
            if call == self.calls:
                problem = CellProblem(key, "duplicate_key", "the key appears twice in the object")
            else:
                problem = CellProblem("", "duplicate_key", f"a nested object repeats key {key!r}")
            found.setdefault((problem.column, problem.message), problem)
        return list(found.values())


class JsonlSource:
    """A JSON Lines file read object by object (see the module docstring)."""

    kind = "jsonl"

    def __init__(self, path: Path, *, name: str | None = None) -> None:
        self.path = path
        self.name = name or path.name
        self._offset = 0
        self._row_number = 0
        self._read = hashlib.sha256()  # of the bytes before self._offset

    def columns(self) -> None:
        """JSON Lines has no fixed header: each object names its own keys."""

    def absent_keys(self, wanted: Iterable[str]) -> tuple[str, ...]:
        """The wanted keys that no object of the file holds at its top level, in wanted order.

        Reads from the start only until every wanted key has been seen (usually the first
        line). Lines `rows` would stop at or reject are passed over here; they are reported
        when read. A file without any object lacks nothing (there is nothing to lose).
        """
        remaining = dict.fromkeys(wanted)
        found_object = False
        try:
            with self.path.open("rb") as handle:
                for raw in handle:
                    if not remaining:
                        break
                    try:
                        obj = json.loads(raw.removeprefix(codecs.BOM_UTF8).decode("utf-8"))
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(obj, dict):
                        found_object = True
                        for key in obj.keys() & remaining.keys():
                            del remaining[key]
        except OSError as error:
            raise SourceError(self.name, f"cannot open the file ({error.strerror})") from None
        return tuple(remaining) if found_object else ()

    def position(self) -> ResumeState:
        """The state after the last object yielded."""
        return ResumeState(
            kind=self.kind,
            source=self.name,
            row_number=self._row_number,
            position={"offset": self._offset, "prefix": self._read.hexdigest()},
        )

    def rows(self, resume: ResumeState | None = None) -> Iterator[Row]:
        """Yield one row per non-blank line, after the resume point when given.

        Refuses a resume state when a byte before its offset changed (see `resume_offset`).
        """
        check_resume(resume, self.kind, self.name)
        self._offset, self._row_number, self._read = 0, 0, hashlib.sha256()
        if resume is not None:
            self._offset, self._read = resume_offset(resume, self.path, self.name)
            self._row_number = resume.row_number
        try:
            handle = self.path.open("rb")
        except OSError as error:
            raise SourceError(self.name, f"cannot open the file ({error.strerror})") from None
        with handle:
            handle.seek(self._offset)
            for raw in handle:
                line_offset = self._offset
                self._offset += len(raw)
                self._read.update(raw)
                self._row_number += 1
                bom = line_offset == 0 and raw.startswith(codecs.BOM_UTF8)
                data = raw[len(codecs.BOM_UTF8) :] if bom else raw
                if not data.strip():
                    continue
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise SourceError(
                        self.name,
                        "bytes that are not valid UTF-8 (JSON Lines must be UTF-8)",
                        row=self._row_number,
                        byte_offset=line_offset + error.start,
                    ) from None
                objects = _Objects()
                try:
                    obj = json.loads(
                        text,
                        parse_float=str,
                        parse_int=str,
                        parse_constant=_refuse_constant,
                        object_pairs_hook=objects,
                    )
                except RecursionError:
                    # Valid JSON, but deeper than the reader's stack: reject the line, go on.
                    why = "arrays or objects nested too deeply to read"
                    yield self._row_number, ProblemRow({}, [CellProblem("", "too_deep", why)])
                    continue
                except ValueError as error:
                    raise SourceError(
                        self.name,
                        f"not valid JSON ({type(error).__name__} at column {_column(error)})",
                        row=self._row_number,
                        byte_offset=line_offset,
                    ) from None
                if not isinstance(obj, dict):
                    raise SourceError(
                        self.name,
                        "a line that is not a JSON object",
                        row=self._row_number,
                        byte_offset=line_offset,
                    )
                cells = row_cells(obj, obj)
                found = objects.problems()
                if isinstance(cells, ProblemRow):
                    found.extend(cells.problems)
                if _SURROGATE_ESCAPE.search(text):
                    cells, broken = _without_surrogates(cells)
                    found.extend(broken)
                if found:
                    cells = ProblemRow(cells, found)
                yield self._row_number, cells


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _without_surrogates(cells: dict[str, str]) -> tuple[dict[str, str], list[CellProblem]]:
    """The cells with every unpaired surrogate gone, and one "bad_text" problem for each.

    A value holding one is emptied (its problem names the key); a key holding one is left out
    with its value (it cannot be named, and no mapping can name it either).
    """
    kept: dict[str, str] = {}
    problems: list[CellProblem] = []
    for key, value in cells.items():
        if not _is_text(key):
            problem = CellProblem("", "bad_text", f"a key holds {_NOT_TEXT}")
            if problem not in problems:
                problems.append(problem)
        elif _is_text(value):
            kept[key] = value
        else:
            kept[key] = ""
            problems.append(CellProblem(key, "bad_text", f"the value holds {_NOT_TEXT}"))
    return kept, problems


def _column(error: ValueError) -> str:
    # JSONDecodeError carries a position; its message can quote the text, so it is not used.
    pos = getattr(error, "colno", None)
    return str(pos) if pos is not None else "?"
