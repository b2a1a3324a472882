"""Running a mapping: source rows in, batches of accepted records and rejected rows out.

Promises:
- every row read ends in exactly one of accepted, rejected or skipped_unchanged, so each batch
  (and the summary) adds up: read = accepted + rejected + skipped_unchanged;
- a batch carries the resume state after its last row; the caller stores the batch, THEN saves
  the state. A crash before saving replays the batch, and record keys make the replay harmless;
- memory stays flat: one batch is held at a time, whatever the size of the source.

"Unchanged" is decided by the caller, who knows the store: `seen(record_key, content_hash)`
returns True when exactly that version is already stored, and the row is then counted as
skipped_unchanged instead of being handed back again.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import catalog as cat
from adapters.check import check_mapping, check_source
from adapters.errors import MappingError, SourceError
from adapters.identity import content_hash, record_key
from adapters.mapper import RowProblem, map_row, mapped_columns
from adapters.mapping import MappingSpec
from adapters.source import EXTRA_CELLS, ProblemRow, ResumeState, Source
from adapters.sources import open_source

__all__ = ["AcceptedRecord", "Batch", "RejectedRow", "Summary", "run_mapping"]


@dataclass(frozen=True)
class RejectedRow:
    """A row that did not become a record, with every reason and its original mapped values."""

    source: str
    row_number: int
    raw: Mapping[str, str]
    problems: tuple[RowProblem, ...]


@dataclass(frozen=True)
class AcceptedRecord:
    """A validated record with its identity (see adapters.identity) and its source row."""

    row_number: int
    record: cat.NormalisedRecord
    record_key: str
    content_hash: str
    raw: Mapping[str, str]


class _MappedColumns(Mapping[str, str]):
    """A read-only view of a source row limited to the mapped columns.

    Built per row in O(1): the other columns (phone numbers, anything prohibited) are never
    reachable through it, and no copy is made for the rows that are accepted.
    """

    __slots__ = ("_order", "_row", "_set")

    def __init__(self, row: Mapping[str, str], order: tuple[str, ...], keep: frozenset[str]):
        self._row = row
        self._order = order
        self._set = keep

    def __getitem__(self, column: str) -> str:
        if column not in self._set:
            raise KeyError(column)
        return self._row.get(column, "")

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


@dataclass
class Batch:
    """One batch of a run; `resume` is saved by the caller AFTER the batch is stored."""

    accepted: list[AcceptedRecord]
    rejected: list[RejectedRow]
    read: int
    resume: ResumeState
    skipped_unchanged: int = 0


@dataclass
class Summary:
    """Totals of a run; `reasons` counts rejects by (field id, code)."""

    read: int = 0
    accepted: int = 0
    rejected: int = 0
    skipped_unchanged: int = 0
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, batch: Batch) -> None:
        """Add a batch's counts."""
        self.read += batch.read
        self.accepted += len(batch.accepted)
        self.rejected += len(batch.rejected)
        self.skipped_unchanged += batch.skipped_unchanged
        for row in batch.rejected:
            self.reasons.update((p.field_id, p.code) for p in row.problems)

    @property
    def balanced(self) -> bool:
        """True when read = accepted + rejected + skipped_unchanged."""
        return self.read == self.accepted + self.rejected + self.skipped_unchanged

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """The totals and the most frequent reject reasons, JSON-ready."""
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "skipped_unchanged": self.skipped_unchanged,
            "top_reasons": [
                {"field": f, "code": c, "count": n} for (f, c), n in self.reasons.most_common(top)
            ],
        }


def _columns_of(m: MappingSpec) -> dict[str, str]:
    return {f.field_id: f.where for f in m.fields.values()}


def _fields_of(m: MappingSpec) -> dict[str, str]:
    """The field each source column feeds (the first, should one feed several)."""
    fields: dict[str, str] = {}
    for spec in m.fields.values():
        for column in spec.columns:
            fields.setdefault(column, spec.field_id)
    return fields


@runtime_checkable
class _Narrowable(Protocol):
    """A source that can read only some columns (SQL: the others are not even selected)."""

    def read_only(self, columns: Iterable[str]) -> None:
        """Read only these columns."""
        ...


def run_mapping(
    m: MappingSpec,
    *,
    today: dt.date,
    catalog: cat.Catalog | None = None,
    resume: ResumeState | None = None,
    batch_size: int = 1000,
    seen: Callable[[str, str], bool] | None = None,
    limit: int | None = None,
    source: Source | None = None,
) -> Iterator[Batch]:
    """Read the mapping's source after `resume` and yield batches of at most `batch_size` rows.

    Refuses to start (MappingError) when `check_mapping` finds an error, and (SourceError) when
    `check_source` does: a mapped column missing from the source header, or a mapped key that
    no object of a JSON Lines file holds. `limit` stops after that many rows (a
    dry run); `source` replaces the reader the mapping names (tests, or a caller that already
    opened it). A source that can read only some columns (SQL) is told to read the mapped ones.
    A row the source could read only in part (`ProblemRow`) is rejected with the source's
    reasons, without mapping it. Source errors mid-run propagate; batches already yielded stay
    valid.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    catalog = catalog or cat.default_catalog()
    errors = [p for p in check_mapping(m, catalog) if p.is_error]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise MappingError(m.path, first.key, first.message + more)
    reader = source or open_source(m.source, sql_batch_size=batch_size)
    missing = [p for p in check_source(m, reader) if p.is_error]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SourceError(reader.name, f"{missing[0].key}: {missing[0].message}{more}")
    keep = mapped_columns(m.fields)
    keep_set = frozenset(keep)
    if isinstance(reader, _Narrowable):
        reader.read_only(keep)
    where = _columns_of(m)
    field_of = _fields_of(m)
    item_id = m.item

    accepted: list[AcceptedRecord] = []
    rejected: list[RejectedRow] = []
    skipped = read = 0
    for row_number, row in reader.rows(resume):
        read += 1
        # Only the mapped columns travel on: an export's other columns (phone numbers,
        # anything prohibited) never reach a record or a reject report.
        raw = _MappedColumns(row, keep, keep_set)
        if isinstance(row, ProblemRow):
            # The source could not read the row as it stands (a cell too large, a repeated
            # JSON key ...): its values are incomplete or ambiguous, so they are not judged.
            rejected.append(
                RejectedRow(
                    reader.name,
                    row_number,
                    raw,
                    tuple(
                        RowProblem(p.column, field_of.get(p.column, ""), p.code, p.message)
                        for p in row.problems
                    ),
                )
            )
        else:
            values, problems = map_row(m.fields, row)
            if EXTRA_CELLS in row:
                problems.append(
                    RowProblem(EXTRA_CELLS, "", "extra_cells", "more cells than header columns")
                )
            result = cat.validate_record(item_id, values, today=today, catalog=catalog)
            if result.errors:
                failed = {p.field_id for p in problems}
                problems.extend(
                    RowProblem(where.get(e.field_id, ""), e.field_id, e.code, e.message)
                    for e in result.errors
                    # A field whose transform failed was left out; "required" for it is no news.
                    if e.field_id not in failed
                )
            if problems or result.record is None:
                if not problems:  # pragma: no cover - validate_record always explains a refusal
                    problems.append(RowProblem("", "", "invalid", "refused by the catalogue"))
                rejected.append(RejectedRow(reader.name, row_number, raw, tuple(problems)))
            else:
                record = result.record
                key = record_key(item_id, record.natural_key)
                digest = content_hash(record.fields)
                if seen is not None and seen(key, digest):
                    skipped += 1
                else:
                    accepted.append(AcceptedRecord(row_number, record, key, digest, raw))
        if read == batch_size or (limit is not None and read >= limit):
            yield Batch(accepted, rejected, read, reader.position(), skipped)
            if limit is not None:
                limit -= read
                if limit <= 0:
                    return
            accepted, rejected, skipped, read = [], [], 0, 0
    if read:
        yield Batch(accepted, rejected, read, reader.position(), skipped)
