"""Store operations of the receiving side of joint-punishment pushes: storing a pushed entry,
and the tombstones of withdraw/expire notices that arrived before their entry.

Beside store.py, like lifecycle.py, so that only node/store imports SQLAlchemy. Each function
is one transaction on a `Store`.

Why tombstones: two processes of a producer (the serving node and the CLI, or two replicas)
may send an entry and its withdrawal at the same time; the withdrawal can reach us first, find
no copy to end and be receipted, so the producer never sends it again. The entry, landing
after it, must then not be stored as an active copy. `tombstone_unless_held` (the notice) and
`store_pushed` (the entry) each decide in one write transaction that holds a per-record lock
(PostgreSQL: an advisory transaction lock on (producer, record_key); SQLite: every write
transaction is already exclusive), so whichever commits second sees the other: the notice sees
the copy and ends it, or the entry sees the tombstone and is not stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Connection

from node.lifecycle import china_day
from node.store.models import NewRecord
from node.store.store import (
    RECORDS,
    Store,
    _check_new,
    _table,
    _write_records,
    from_db_time,
    to_db_time,
)
from node.store.tables import PushTombstoneRow

__all__ = [
    "PushTombstone",
    "purge_push_tombstones",
    "push_tombstone",
    "store_pushed",
    "tombstone_unless_held",
]

TOMBSTONES = _table(PushTombstoneRow)
# The first key of the two-key advisory locks taken here ("push"): two-key locks never meet the
# one-key lock migrations take.
_PG_LOCK_SPACE = 0x70757368
_LOCK = text("SELECT pg_advisory_xact_lock(:space, :key)")


@dataclass(frozen=True)
class PushTombstone:
    """A withdraw/expire notice of `producer` that found no copy of `version` to end."""

    producer: str
    record_key: str
    version: int
    kind: str
    created_at: dt.datetime


def _lock_record(conn: Connection, producer: str, record_key: str) -> None:
    """Hold (until the transaction ends) the lock that serialises the decisions about our copy
    of one producer's record; SQLite's write transactions are exclusive already."""
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{producer}\0{record_key}".encode()).digest()
    key = int.from_bytes(digest[:4], "big", signed=True)
    conn.execute(_LOCK, {"space": _PG_LOCK_SPACE, "key": key})


def _tombstone(conn: Connection, producer: str, record_key: str) -> PushTombstone | None:
    row = conn.execute(
        select(TOMBSTONES).where(
            TOMBSTONES.c.producer == producer, TOMBSTONES.c.record_key == record_key
        )
    ).first()
    if row is None:
        return None
    return PushTombstone(
        producer=row.producer,
        record_key=row.record_key,
        version=int(row.version),
        kind=row.kind,
        created_at=from_db_time(row.created_at),
    )


def push_tombstone(store: Store, producer: str, record_key: str) -> PushTombstone | None:
    """The tombstone of `producer`'s record `record_key`, if a notice left one."""
    with store.read("read a push tombstone") as conn:
        return _tombstone(conn, producer, record_key)


def tombstone_unless_held(
    store: Store, producer: str, record_key: str, version: int, kind: str, *, now: dt.datetime
) -> bool:
    """For a verified withdraw/expire notice (`kind`) of `producer`'s record at `version`:
    unless we hold a copy of that very version, record a tombstone so that a later pushed
    entry of this version or an earlier one is not stored active (`store_pushed`). A copy of an
    earlier version does not count: the notice ends it, but the entry it names may still land.
    Keeps the highest version per record (an equal one keeps the first kind). Returns True when
    no copy of `version` is held (a tombstone now covers it)."""
    stamp = to_db_time(now)
    with store.write("record a push tombstone") as conn:
        _lock_record(conn, producer, record_key)
        held = conn.execute(
            select(RECORDS.c.row_id).where(
                RECORDS.c.producer == producer,
                RECORDS.c.record_key == record_key,
                RECORDS.c.version == version,
            )
        ).first()
        if held is not None:
            return False
        known = _tombstone(conn, producer, record_key)
        if known is None:
            conn.execute(
                insert(TOMBSTONES).values(
                    producer=producer,
                    record_key=record_key,
                    version=version,
                    kind=kind,
                    created_at=stamp,
                )
            )
        elif version > known.version:
            conn.execute(
                update(TOMBSTONES)
                .where(TOMBSTONES.c.producer == producer, TOMBSTONES.c.record_key == record_key)
                .values(version=version, kind=kind, created_at=stamp)
            )
        return True


def store_pushed(
    store: Store, record: NewRecord, *, now: dt.datetime
) -> Literal["stored", "held", "ended"]:
    """Store a verified pushed entry as a received copy, in one transaction with the checks
    that decide whether to: "held" (this version or a newer one is stored already: a retried
    push; nothing written), "ended" (a withdraw/expire notice of this version or a later one
    arrived first: `tombstone_unless_held`; nothing written), else "stored" (like
    `Store.store_batch(..., expire_ended=True)`: a version past its disclosure end is stored
    expired, never active)."""
    _check_new(record)
    tagger = store.require_tagger()
    stamp = to_db_time(now)
    with store.write("store a pushed record") as conn:
        _lock_record(conn, record.producer, record.record_key)
        newest = conn.execute(
            select(RECORDS.c.version)
            .where(RECORDS.c.producer == record.producer, RECORDS.c.record_key == record.record_key)
            .order_by(RECORDS.c.version.desc())
            .limit(1)
        ).scalar()
        if newest is not None and int(newest) >= record.version:
            return "held"
        ended = _tombstone(conn, record.producer, record.record_key)
        if ended is not None and ended.version >= record.version:
            return "ended"
        _write_records(conn, [record], stamp, china_day(now), from_source=False, tagger=tagger)
        return "stored"


def purge_push_tombstones(store: Store, before: dt.datetime) -> int:
    """Delete the tombstones recorded before `before` (the receiver's retention: an entry
    still on its way that long after its withdrawal is not expected); returns how many."""
    with store.write("purge push tombstones") as conn:
        result = conn.execute(
            delete(TOMBSTONES).where(TOMBSTONES.c.created_at < to_db_time(before))
        )
        return int(result.rowcount or 0)
