"""Applying a mapping's field rules to one row: pure, no catalogue, no IO.

The result is the values handed to `catalog.validate_record` (empty text becomes None, i.e.
missing) and the problems the transforms found, each naming the column and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapters.mapping import FieldSpec
from adapters.transforms import TransformFailed, apply_all

__all__ = ["RowProblem", "map_row", "mapped_columns"]


@dataclass(frozen=True)
class RowProblem:
    """Why a row was rejected: the source column, the catalogue field, a code and a message.

    Messages the adapters write never repeat the cell value (the reject report carries the
    original values); messages passed on from the catalogue may quote a public field's value or
    a masked identifier (see docs/mapping.md, "Reject reports").
    """

    column: str
    field_id: str
    code: str
    message: str


def _origin(spec: FieldSpec, raw: Mapping[str, str]) -> str:
    if spec.const is not None:
        return spec.const
    if spec.column is not None:
        return raw.get(spec.column, "")
    # Concatenation joins the non-empty parts only, so a blank part leaves no stray separator.
    return spec.separator.join(p for p in (raw.get(c, "") for c in spec.concat) if p)


def map_row(
    fields: Mapping[str, FieldSpec], raw: Mapping[str, str]
) -> tuple[dict[str, str | None], list[RowProblem]]:
    """Make every field's value from a row; a field whose transform failed is left out."""
    values: dict[str, str | None] = {}
    problems: list[RowProblem] = []
    for field_id, spec in fields.items():
        column = spec.column
        # The common case (one column) inlined: this runs for every field of every row.
        value = raw.get(column, "") if column is not None else _origin(spec, raw)
        if spec.transforms:
            try:
                value = apply_all(spec.transforms, value)
            except TransformFailed as failed:
                problems.append(RowProblem(spec.where, field_id, failed.code, failed.message))
                continue
        values[field_id] = value or None
    return values, problems


def mapped_columns(fields: Mapping[str, FieldSpec]) -> tuple[str, ...]:
    """The source columns a mapping reads, in mapping order, each once."""
    seen: dict[str, None] = {}
    for spec in fields.values():
        for column in spec.columns:
            seen.setdefault(column, None)
    return tuple(seen)
