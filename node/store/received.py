"""Store reads for feeds: bulk record lookups and received copies (feeds engineer).

Beside store.py, like lifecycle.py, so that only node/store imports SQLAlchemy. Each function
is one read transaction on a `Store`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import String, select, type_coerce

from node.store.models import StoredRecord
from node.store.store import _CHUNK, RECORDS, Store, _driver_date
from node.store.tables import binary_value
from node.store.tags import led_by, row_intact

__all__ = ["FeedRecord", "feed_records", "received_records", "records_by_row_ids"]


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """What a feed batch needs of a stored record version: its state, flag and sealed body,
    and the three columns `node.lifecycle.disclosure_ended` judges on (a record past its
    disclosure end travels without its body even before the lifecycle scan marked it)."""

    row_id: str
    item_id: str
    record_key: str
    version: int
    producer: str
    state: str
    objection: bool
    body: bytes
    severity: str | None
    decided_on: dt.date | None
    disclosure_max_end: dt.date | None
    # False: the row fails its integrity tag (decision 0018); nothing of it may be sent
    intact: bool = True


# what `feed_records` unpacks, then the rest of the row for its tag
_FEED_COLUMNS = led_by(
    (
        "row_id",
        "item_id",
        "record_key",
        "version",
        "producer",
        "state",
        "objection",
        "body",
        "severity",
        "decided_on",
        "disclosure_max_end",
    )
)


def feed_records(store: Store, row_ids: Iterable[str]) -> dict[str, FeedRecord]:
    """Return row id -> FeedRecord for the ids that exist, one query per chunk.

    The dates and times come as the driver gives them (ISO text on SQLite): converting them
    for every row cost the feed provider more than reading the bodies; the two the provider
    judges on are parsed by `_driver_date`. The routing columns (item, key, version, producer)
    spare the provider parsing each record's payload for its routing copies. The rest of the
    row is read for its integrity tag (`intact`, checked when the store has a tagger).
    """
    wanted = list(dict.fromkeys(row_ids))
    found: dict[str, FeedRecord] = {}
    columns = (
        RECORDS.c.row_id,
        RECORDS.c.item_id,
        RECORDS.c.record_key,
        RECORDS.c.version,
        RECORDS.c.producer,
        RECORDS.c.state,
        RECORDS.c.objection,
        RECORDS.c.body,
        RECORDS.c.severity,
        type_coerce(RECORDS.c.decided_on, String),
        type_coerce(RECORDS.c.disclosure_max_end, String),
        RECORDS.c.catalog_version,
        RECORDS.c.subject_index,
        RECORDS.c.content_hash,
        type_coerce(RECORDS.c.disclosure_min_end, String),
        RECORDS.c.disclosure_rule,
        type_coerce(RECORDS.c.created_at, String),
        RECORDS.c.origin,
        RECORDS.c.from_source,
        RECORDS.c.tag,
    )
    tagger = store.tagger
    with store.read("read records of a feed batch") as conn:
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            for row in conn.execute(select(*columns).where(RECORDS.c.row_id.in_(chunk))):
                row_id, item, key, version, producer, state, objection, body = row[:8]
                severity, decided_on, max_end = row[8:11]
                intact = tagger is None or row_intact(
                    tagger, dict(zip(_FEED_COLUMNS, row, strict=True))
                )
                found[row_id] = FeedRecord(
                    row_id,
                    item,
                    key,
                    int(version),
                    producer,
                    state,
                    bool(objection),
                    binary_value(body),
                    severity,
                    _driver_date(decided_on),
                    _driver_date(max_end),
                    intact,
                )
    return found


def records_by_row_ids(store: Store, row_ids: Iterable[str]) -> dict[str, StoredRecord]:
    """Return row id -> stored record for the ids that exist (one query per chunk, not per row;
    building a feed batch reads hundreds)."""
    wanted = list(dict.fromkeys(row_ids))
    found: dict[str, StoredRecord] = {}
    with store.read("read records of a feed batch") as conn:
        for start in range(0, len(wanted), _CHUNK):
            rows = conn.execute(
                select(RECORDS).where(RECORDS.c.row_id.in_(wanted[start : start + _CHUNK]))
            ).all()
            for row in rows:
                found[row.row_id] = store.record(row)
    return found


def received_records(store: Store, *, producer: str | None = None) -> list[StoredRecord]:
    """Return every record version received from peers (origin "received"), optionally of one
    producer, by producer, record key and version."""
    query = select(RECORDS).where(RECORDS.c.origin == "received")
    if producer is not None:
        query = query.where(RECORDS.c.producer == producer)
    query = query.order_by(RECORDS.c.producer, RECORDS.c.record_key, RECORDS.c.version)
    with store.read("read received records") as conn:
        rows = conn.execute(query).all()
    return [store.record(r) for r in rows]
