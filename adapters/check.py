"""Checking a mapping against the catalogue before any data is read.

`check_mapping` returns every problem at once (so a clerk fixes the file in one go), each
naming the mapping key it is about. Errors make the mapping unusable (`run_mapping` refuses
it); warnings are worth reading but do not stop a run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import catalog as cat
from adapters.mapping import MappingSpec
from adapters.source import Source
from adapters.transforms import UNIT_FACTORS, MapTransform

__all__ = ["MappingProblem", "check_columns", "check_mapping", "check_source"]


@dataclass(frozen=True)
class MappingProblem:
    """One problem with a mapping: where (mapping key), a stable code, and why."""

    key: str
    code: str
    message: str
    severity: str = "error"  # "error" | "warning"

    @property
    def is_error(self) -> bool:
        """True when the problem makes the mapping unusable."""
        return self.severity == "error"


def _code_known(table: cat.CodeTable, value: str) -> bool:
    if table.lookup(value) is not None:
        return True
    return table.open_prefix is not None and value.startswith(table.open_prefix)


def _unit_in_name(column: str) -> str | None:
    # Longest first: "万元" contains "元".
    for unit in sorted(UNIT_FACTORS, key=len, reverse=True):
        if unit in column:
            return unit
    return None


def check_mapping(m: MappingSpec, catalog: cat.Catalog) -> list[MappingProblem]:
    """Check a mapping against a catalogue; return all problems (empty when it is sound).

    Errors: unknown item (then nothing else can be checked), unknown field, mandatory field not
    mapped, a value map whose target is not a code of the field's table, a prohibited column or
    field (with the legal reason), a column mapped by two fields, a unit conversion to another
    unit than the field's. Warnings: conditionally required fields not mapped, a money field
    whose column name states another unit and no `unit` transform converts it.
    """
    problems: list[MappingProblem] = []
    try:
        item = catalog.item(m.item)
    except cat.UnknownItem:
        return [
            MappingProblem(
                "item", "unknown_item", f"no item {m.item!r} in catalogue {catalog.version}"
            )
        ]
    known = {f.id: f for f in item.fields}
    users: dict[str, list[str]] = {}
    for field_id, spec in m.fields.items():
        key = f"fields.{field_id}"
        reason = cat.prohibited_reason(field_id)
        if reason:
            problems.append(MappingProblem(key, "prohibited", f"may not be collected: {reason}"))
        for column in spec.columns:
            users.setdefault(column, []).append(field_id)
            reason = cat.prohibited_reason(column)
            if reason:
                problems.append(
                    MappingProblem(
                        key, "prohibited", f"column {column!r} may not be collected: {reason}"
                    )
                )
        field = known.get(field_id)
        if field is None:
            problems.append(
                MappingProblem(key, "unknown_field", f"item {item.id} has no field {field_id!r}")
            )
            continue
        problems.extend(_check_codes(key, spec.value_maps(), field, catalog))
        problems.extend(_check_units(key, spec.columns, [u.to_unit for u in spec.units()], field))
    for column, fields in users.items():
        if len(fields) > 1:
            problems.append(
                MappingProblem(
                    f"fields.{fields[1]}",
                    "mapped_twice",
                    f"column {column!r} is already mapped by fields.{fields[0]}",
                )
            )
    for field in item.fields:
        if field.id in m.fields:
            continue
        if field.required == "M":
            problems.append(
                MappingProblem(
                    f"fields.{field.id}",
                    "required_unmapped",
                    f"mandatory field {field.id} ({field.name_zh}) is not mapped",
                )
            )
        elif field.required != "O":
            problems.append(
                MappingProblem(
                    f"fields.{field.id}",
                    "conditional_unmapped",
                    f"{field.id} ({field.name_zh}) is required when {field.required}; "
                    "rows that meet the condition will be rejected",
                    severity="warning",
                )
            )
    return problems


def _check_codes(
    key: str, maps: Iterable[MapTransform], field: cat.Field, catalog: cat.Catalog
) -> list[MappingProblem]:
    problems: list[MappingProblem] = []
    for value_map in maps:
        if field.code_table is None:
            problems.append(
                MappingProblem(
                    key, "map_without_codes", f"{field.id} has no code table", severity="warning"
                )
            )
            continue
        table = catalog.code_tables[field.code_table]
        for source_value, target in value_map.table.items():
            for part in target.split(";") if field.kind == "code_list" else [target]:
                if not _code_known(table, part):
                    problems.append(
                        MappingProblem(
                            f"{key}.map.{source_value}",
                            "unknown_code",
                            f"{part!r} is not a value of code table {table.id} ({table.name_zh})",
                        )
                    )
    return problems


def _check_units(
    key: str, columns: tuple[str, ...], targets: list[str], field: cat.Field
) -> list[MappingProblem]:
    if field.unit is None:
        return [
            MappingProblem(key, "unit_not_money", f"{field.id} is not an amount of money")
            for _ in targets
        ]
    problems = [
        MappingProblem(key, "unit_mismatch", f"converts to {t} but {field.id} is in {field.unit}")
        for t in targets
        if t != field.unit
    ]
    if not targets:
        for column in columns:
            stated = _unit_in_name(column)
            if stated is not None and stated != field.unit:
                problems.append(
                    MappingProblem(
                        key,
                        "unit_unconverted",
                        f"column {column!r} looks like {stated} but {field.id} is in {field.unit};"
                        f' add {{ unit = {{ from = "{stated}", to = "{field.unit}" }} }} if so',
                        severity="warning",
                    )
                )
    return problems


def check_columns(m: MappingSpec, columns: Iterable[str]) -> list[MappingProblem]:
    """Check that every column the mapping reads is in a source header (exact names)."""
    have = set(columns)
    problems: list[MappingProblem] = []
    for field_id, spec in m.fields.items():
        problems.extend(
            MappingProblem(
                f"fields.{field_id}", "unknown_column", f"the source has no column {c!r}"
            )
            for c in spec.columns
            if c not in have
        )
        for c in spec.columns:
            repeats = _repeats(c, have)
            if c in have and repeats:
                problems.append(
                    MappingProblem(
                        f"fields.{field_id}",
                        "column_repeated",
                        f"the source header has {len(repeats) + 1} columns named {c!r}; "
                        f"fields.{field_id} reads the first of them, the others are named "
                        f"{', '.join(repr(r) for r in repeats)} (map one of those to read it)",
                        severity="warning",
                    )
                )
    for column in sorted(have):
        reason = cat.prohibited_reason(column)
        if reason:
            problems.append(
                MappingProblem(
                    "source",
                    "prohibited_column_present",
                    f"the source has a column {_shown_header(column)!r} that may not be "
                    f"collected ({reason}); credex never reads it, but remove it from the export",
                    severity="warning",
                )
            )
    return problems


def _repeats(column: str, have: set[str]) -> list[str]:
    """The names `name_columns` gave the later header cells that repeat `column`."""
    found: list[str] = []
    while f"{column}#{len(found) + 2}" in have:
        found.append(f"{column}#{len(found) + 2}")
    return found


def _shown_header(column: str) -> str:
    """A source header cell as a message may show it: a data row taken for the header (a wrong
    `header_row`) may hold a person's ID number and name, so identifiers are masked and the
    text is cut to 40 characters."""
    shown = cat.redact_identifiers(column)
    return shown if len(shown) <= 40 else shown[:40] + "…"


@runtime_checkable
class _KeyedObjects(Protocol):
    """A source without a header whose rows name their own keys (JSON Lines)."""

    def absent_keys(self, wanted: Iterable[str]) -> tuple[str, ...]:
        """The wanted keys no row of the source holds."""
        ...


def check_source(m: MappingSpec, source: Source) -> list[MappingProblem]:
    """Check the mapped columns against an open source, before any row is mapped.

    A source with a header is checked by `check_columns`. JSON Lines has none, and a mapped key
    that no object of the file holds (a typo, most likely) would silently leave its field empty
    on every row, so it is an `unknown_column` error too (write the key with null to say that a
    field is empty). Raises what the source raises when it cannot be opened.
    """
    header = source.columns()
    if header is not None:
        return check_columns(m, header)
    if not isinstance(source, _KeyedObjects):
        return []
    wanted = [c for spec in m.fields.values() for c in spec.columns]
    absent = set(source.absent_keys(wanted))
    return [
        MappingProblem(
            f"fields.{field_id}", "unknown_column", f"no object in the source has key {c!r}"
        )
        for field_id, spec in m.fields.items()
        for c in spec.columns
        if c in absent
    ]
