"""Store reads for feeds: bulk record lookups and received copies (feeds engineer).

Beside store.py, like lifecycle.py, so that only node/store imports SQLAlchemy. Each function
is one read transaction on a `Store`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from node.store.models import StoredRecord
from node.store.store import _CHUNK, RECORDS, Store, _stored

__all__ = ["FeedRecord", "feed_records", "received_records", "records_by_row_ids"]


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """What a feed batch needs of a stored record version: its state, flag and sealed body."""

    row_id: str
    item_id: str
    record_key: str
    version: int
    producer: str
    state: str
    objection: bool
    body: bytes


def feed_records(store: Store, row_ids: Iterable[str]) -> dict[str, FeedRecord]:
    """Return row id -> FeedRecord for the ids that exist, one query per chunk.

    Reads eight columns, not the whole row: converting the dates and times of every row cost
    the feed provider more than reading the bodies. The routing columns (item, key, version,
    producer) spare the provider parsing each record's payload for its routing copies.
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
    )
    with store.read("read records of a feed batch") as conn:
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            for row_id, item, key, version, producer, state, objection, body in conn.execute(
                select(*columns).where(RECORDS.c.row_id.in_(chunk))
            ):
                found[row_id] = FeedRecord(
                    row_id, item, key, int(version), producer, state, bool(objection), bytes(body)
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
                found[row.row_id] = _stored(row)
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
    return [_stored(r) for r in rows]
