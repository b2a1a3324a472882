"""Integrity tags of `records` rows (docs/decisions/0018-record-row-tags.md).

A row's tag is `keys.RowTagger.tag("records", row_id, columns)` over every other column of the
row, the sealed body included, written in the same statement as the values it covers. The
producer's signature covers the body and the body's AEAD binds it to the row id; the tag covers
what neither does: state, objection flag, disclosure window, severity, origin, ... on which the
policy and the lifecycle decide. Without the storage key nobody can write a matching tag.

Pure functions of a row's values (as any driver hands them back) and a tagger: no IO.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import keys
from keys.at_rest import RowValue
from node.store.tables import binary_value

__all__ = ["ROW_COLUMNS", "TAGGED_COLUMNS", "TAGGED_TABLE", "led_by", "row_intact", "row_tag"]

TAGGED_TABLE = "records"
# Every column of `records` but the row id (tagged apart) and the tag itself, in this order.
# A test holds it equal to the table's columns: a new column is tagged, or chosen not to be.
TAGGED_COLUMNS = (
    "producer",
    "record_key",
    "version",
    "item_id",
    "catalog_version",
    "subject_index",
    "body",
    "content_hash",
    "state",
    "severity",
    "decided_on",
    "disclosure_min_end",
    "disclosure_max_end",
    "disclosure_rule",
    "objection",
    "created_at",
    "origin",
    "from_source",
)
# Every column of a `records` row, in the order a new row's values are written.
ROW_COLUMNS = ("row_id", *TAGGED_COLUMNS, "tag")
_DATES = frozenset({"decided_on", "disclosure_min_end", "disclosure_max_end"})
_BOOLS = frozenset({"objection", "from_source"})


def _date(value: Any) -> dt.date | None:
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value))  # ISO text: SQLite through the driver


def _time(value: Any) -> dt.datetime:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    # SQLite keeps UTC without its zone (node.store.store.to_db_time wrote it in UTC)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def _columns(values: Mapping[Any, Any]) -> list[tuple[str, RowValue]]:
    """The tagged columns of a row in a driver-independent form (SQLite's text dates and 0/1
    flags, PostgreSQL's dates and booleans give the same values)."""
    out: list[tuple[str, RowValue]] = []
    for name in TAGGED_COLUMNS:
        value = values[name]
        if name == "body":
            value = binary_value(value)
        elif name in _DATES:
            value = _date(value)
        elif name in _BOOLS:
            value = bool(value)
        elif name == "version":
            value = int(value)
        elif name == "created_at":
            value = _time(value)
        out.append((name, value))
    return out


def led_by(head: tuple[str, ...]) -> tuple[str, ...]:
    """Every column of a `records` row, those of `head` first in its order (a reader unpacks
    them by position), then the rest in ROW_COLUMNS order: what a read needs to check the
    row's tag."""
    return head + tuple(column for column in ROW_COLUMNS if column not in head)


def row_tag(tagger: keys.RowTagger, values: Mapping[Any, Any]) -> bytes:
    """The tag of a `records` row with these column values (every TAGGED_COLUMNS name and
    `row_id`)."""
    return tagger.tag(TAGGED_TABLE, str(values["row_id"]), _columns(values))


def row_intact(tagger: keys.RowTagger, values: Mapping[Any, Any]) -> bool:
    """True when the row's stored `tag` is the tag of its values. False for a missing tag and
    for values no writer of credex stores (a date that is not a date, say)."""
    tag = values.get("tag")
    if tag is None:
        return False
    try:
        columns = _columns(values)
    except (ValueError, TypeError):
        return False
    return tagger.matches(TAGGED_TABLE, str(values["row_id"]), columns, binary_value(tag))
