"""The node's store: typed methods over the tables, each one transaction.

Invariants kept here (docs/decisions/0004-store-schema.md):
- every version of a record is kept; a correction adds a version and marks the older active
  versions `superseded`, nothing is overwritten (a body is replaced only by the same record
  signed again with the node's current key, `replace_bodies`);
- versions ingest stores are marked `from_source` (a lifecycle correction's are not); such a
  batch never adds a version over one the lifecycle closed (withdrawn, expired, purged) and
  carries an open objection over to the new version (`store_batch(..., from_source=True)`);
- a batch of records, the feed events it causes and the adapter's resume state commit in ONE
  transaction, so a crash loses or duplicates nothing;
- each subscriber's feed sequence is gap-free: numbers are taken from the subscriber's counter
  row under a row lock in the same transaction as the events;
- feed events are derived here from the subscriptions table inside the writing transaction, so
  a subscription created concurrently with an ingest can never miss a record: either the
  ingest sees the subscription (and adds events) or the subscription's backfill sees the rows;
- only this node's own records (origin "local") enter its outgoing feeds, as events or as
  backfill: a copy received from another producer (feed, push) changes state here without
  an event, since relaying it would share that producer's record under an agreement it never
  made (and the subscriber, which verifies every record against its provider's keys, would
  refuse the batch for good);
- every `records` row is written with its integrity tag (node.store.tags, decision 0018) in
  the statement that writes its values, and a row is changed only after its tag was checked
  (RecordTampered otherwise, nothing written): a store opened without a tagger refuses to
  write records (RuntimeError, a programming error), and every StoredRecord it reads is
  checked when it has one;
- with `store_batch(..., expire_ended=True)` (ingest, pushes), a version whose disclosure is
  already over when it is stored (`node.lifecycle.disclosure_ended` on the China day of `now`)
  is stored `expired`, never `active`; its event is appended as usual and the feed provider
  delivers it without its body (docs/feeds.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

import keys
from node.errors import InputError, NotDelivered, NotFound, WriteConflict
from node.lifecycle import china_day, disclosure_ended, visible
from node.store.bulk import insert_rows
from node.store.driver import DriverStatement
from node.store.engine import WRITE, make_engine, migrate
from node.store.errors import (
    RecordTampered,
    StateChanged,
    StoreConflictError,
    redact_url,
    translate_errors,
)
from node.store.models import (
    CLOSED_STATES,
    EVENT_KINDS,
    RECORD_STATES,
    FeedEvent,
    NewRecord,
    RecordHead,
    ReleaseCandidate,
    StoredRecord,
    Subscription,
    UpstreamFeed,
)
from node.store.tables import (
    FeedEventRow,
    IngestStateRow,
    NonceRow,
    ObjectionRow,
    RecordLinkRow,
    RecordRow,
    SubscriptionRow,
    UpstreamCursorRow,
    binary_value,
)
from node.store.tags import ROW_COLUMNS, led_by, row_intact, row_tag

__all__ = ["Store", "from_db_time", "open_store", "to_db_time"]


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


RECORDS = _table(RecordRow)
LINKS = _table(RecordLinkRow)
EVENTS = _table(FeedEventRow)
SUBS = _table(SubscriptionRow)
CURSORS = _table(UpstreamCursorRow)
INGEST = _table(IngestStateRow)
NONCES = _table(NonceRow)
_OBJECTIONS = _table(ObjectionRow)

_CHUNK = 500  # bound on IN (...) lists and executemany batches

# Expired nonces are deleted in bounded chunks by `purge_expired_nonces` (a background task of
# `credex serve`), never in a request's transaction: at 500 queries/s a minute's expired
# nonces are 30,000 rows, an 80 ms DELETE every request of that group would wait for. An
# expired row left behind meanwhile is harmless, because the insert below takes it over (the
# timestamp window already refuses a request that old).
# Written as SQL text that SQLite (>= 3.35) and PostgreSQL both accept: SQLAlchemy does not
# cache the compiled form of its dialect-specific INSERT .. ON CONFLICT constructs, and
# compiling it again on every request cost more than the insert and the fsync together.
_REMEMBER_NONCE = text(
    "INSERT INTO nonces (keyid, nonce, expires_at) VALUES (:keyid, :nonce, :expires_at) "
    "ON CONFLICT (keyid, nonce) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE nonces.expires_at < :now RETURNING keyid"
).bindparams(
    bindparam("expires_at", type_=NONCES.c.expires_at.type),
    bindparam("now", type_=NONCES.c.expires_at.type),
)
# Run on the driver inside the nonce transaction (node.store.driver): once per request.
_REMEMBER_NONCE_ON_DRIVER = DriverStatement(_REMEMBER_NONCE)
# Row values (SQLite >= 3.15, PostgreSQL): the key of at most :limit expired nonces.
_PURGE_NONCES = text(
    "DELETE FROM nonces WHERE (keyid, nonce) IN "
    "(SELECT keyid, nonce FROM nonces WHERE expires_at < :now LIMIT :limit)"
).bindparams(bindparam("now", type_=NONCES.c.expires_at.type))


def _of_subject(include_linked: bool) -> ColumnElement[bool]:
    """Records of the `:subject` blind index; with `include_linked`, also those that name it
    as a linked subject (a legal representative, Shandong Art. 31)."""
    own = RECORDS.c.subject_index == bindparam("subject")
    if not include_linked:
        return own
    linked = select(LINKS.c.row_id).where(LINKS.c.subject_index == bindparam("subject"))
    return or_(own, RECORDS.c.row_id.in_(linked))


def _by_subject(include_linked: bool, by_state: bool) -> Select[Any]:
    query = select(RECORDS).where(_of_subject(include_linked))
    if by_state:
        query = query.where(RECORDS.c.state.in_(bindparam("states", expanding=True)))
    return query.order_by(RECORDS.c.producer, RECORDS.c.record_key, RECORDS.c.version)


# Built once: building the statement and its cache key each time cost more than running it.
_BY_SUBJECT = {
    (linked, by_state): _by_subject(linked, by_state)
    for linked in (True, False)
    for by_state in (True, False)
}


def _release_candidates(states: tuple[str, ...]) -> Select[Any]:
    """A producer's records of a subject (own or linked) in `states`: only what a query uses.

    The states are bound one parameter each, not as an expanding list, so the statement is
    compiled once per state set. The three columns `node.lifecycle.visible` judges on come
    next (`_driver_date` parses the dates), then the other columns the row's tag covers.
    """
    return (
        select(
            RECORDS.c.row_id,
            RECORDS.c.item_id,
            RECORDS.c.record_key,
            RECORDS.c.version,
            RECORDS.c.state,
            RECORDS.c.objection,
            RECORDS.c.body,
            RECORDS.c.subject_index,
            RECORDS.c.severity,
            RECORDS.c.decided_on,
            RECORDS.c.disclosure_max_end,
            # the rest of the row, for its integrity tag (decision 0018)
            RECORDS.c.producer,
            RECORDS.c.catalog_version,
            RECORDS.c.content_hash,
            RECORDS.c.disclosure_min_end,
            RECORDS.c.disclosure_rule,
            RECORDS.c.created_at,
            RECORDS.c.origin,
            RECORDS.c.from_source,
            RECORDS.c.tag,
        )
        .where(
            _of_subject(include_linked=True),
            RECORDS.c.producer == bindparam("producer"),
            RECORDS.c.state.in_([bindparam(f"state_{i}") for i in range(len(states))]),
        )
        .order_by(RECORDS.c.record_key, RECORDS.c.version)
    )


_RELEASE_CANDIDATES: dict[tuple[str, ...], DriverStatement] = {}

# Per thread: the write transaction that store calls join (Store.joined), by engine.
_JOINS = threading.local()

_WRITER_LOCKS: dict[str, threading.RLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def _writer_lock(engine: Engine) -> AbstractContextManager[Any]:
    """The in-process lock that queues this process's writers of one SQLite database.

    SQLite admits one writer at a time and makes the others wait in its busy handler, which
    sleeps in steps of up to 100 ms: concurrent queries (nonce, access log, grant use) would
    stall each other. Queuing them on a lock first keeps the wait to the writer ahead. Other
    processes on the same file still meet busy_timeout; PostgreSQL needs no lock here.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    key = str(engine.url)
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(key, threading.RLock())


def open_store(
    url: str, *, migrate_schema: bool = True, tagger: keys.RowTagger | None = None
) -> Store:
    """Open (and by default migrate to the newest schema) the store at `url`, with the row
    `tagger` records are tagged and checked with (None: a store that cannot write records).

    Refuses unsupported URLs, in-memory SQLite and unreachable databases (StoreError with a
    message that never shows a password).
    """
    engine = make_engine(url)
    if migrate_schema:
        migrate(engine)
    return Store(engine, tagger=tagger)


def to_db_time(value: dt.datetime) -> dt.datetime:
    """Normalise an aware datetime to UTC for storage; refuses naive datetimes."""
    if value.tzinfo is None:
        raise InputError("store: timestamps must carry a time zone (got a naive datetime)")
    return value.astimezone(dt.UTC)


def from_db_time(value: dt.datetime) -> dt.datetime:
    """Give back a stored timestamp as an aware UTC datetime (SQLite returns it naive)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _opt_time(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else from_db_time(value)


# what `_release_candidate` unpacks, then the rest of the row for its tag
_CANDIDATE_COLUMNS = led_by(
    (
        "row_id",
        "item_id",
        "record_key",
        "version",
        "state",
        "objection",
        "body",
        "subject_index",
        "severity",
        "decided_on",
        "disclosure_max_end",
    )
)


def _not_excluded(row_ids: Collection[str]) -> ColumnElement[bool]:
    """Rows other than `row_ids` (a lifecycle scan passes those it skipped: rows failing
    their tag)."""
    return RECORDS.c.row_id.not_in(list(row_ids)) if row_ids else true()


def _release_candidate(row: Sequence[Any], tagger: keys.RowTagger | None) -> ReleaseCandidate:
    """A `_release_candidates` row as the driver returns it (columns in select order), with
    whether its tag matches (True when the store has no tagger to check with)."""
    (row_id, item_id, record_key, version, state, objection, body, subject) = row[:8]
    severity, decided, max_end = row[8:11]
    intact = tagger is None or row_intact(tagger, dict(zip(_CANDIDATE_COLUMNS, row, strict=True)))
    return ReleaseCandidate(
        row_id,
        item_id,
        record_key,
        int(version),
        state,
        bool(objection),
        binary_value(body),
        severity,
        _driver_date(decided),
        _driver_date(max_end),
        subject_index=subject,
        intact=intact,
    )


def _driver_date(value: object) -> dt.date | None:
    """A DATE column as the driver returns it: ISO text on SQLite (SQLAlchemy's storage
    format), a date on PostgreSQL."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value)
    raise TypeError(f"a DATE column came back as {type(value).__name__}")


class Store:
    """The node's database. Every public method is one transaction; errors are StoreError."""

    def __init__(self, engine: Engine, *, tagger: keys.RowTagger | None = None) -> None:
        """A store on `engine`; `tagger` (the node's, from its storage key) tags every record
        row written and checks every one read. Without it records cannot be written."""
        self._engine = engine
        self._writer = _writer_lock(engine)
        self._tagger = tagger

    def with_tagger(self, tagger: keys.RowTagger) -> Store:
        """This store (same engine, same connections) with the row tagger `tagger`."""
        return Store(self._engine, tagger=tagger)

    @property
    def tagger(self) -> keys.RowTagger | None:
        """The row tagger records are tagged and checked with (None: opened without keys)."""
        return self._tagger

    def require_tagger(self) -> keys.RowTagger:
        """The row tagger; RuntimeError when the store was opened without one: writing a
        record row without its tag would turn it into a tampering alarm (decision 0018)."""
        if self._tagger is None:
            raise RuntimeError(
                "store: records are written only by a store opened with the node's row tagger "
                "(open_store(url, tagger=...))"
            )
        return self._tagger

    def record(self, row: Row[Any]) -> StoredRecord:
        """A full `records` row as a StoredRecord, checked against its tag when this store
        has a tagger (RecordTampered naming the row otherwise). For node.store modules."""
        if self._tagger is not None and not row_intact(self._tagger, row._mapping):
            raise RecordTampered(str(row.row_id))
        return _stored(row)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for node.store internals and tests only)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The store URL with any password hidden."""
        return redact_url(self._engine.url.render_as_string(hide_password=True))

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @contextmanager
    def write(self, what: str) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite): commit on success, else roll back.

        Inside `joined(conn)` on this thread, the caller's transaction `conn` instead: what is
        written commits or rolls back with it.
        """
        joined = self._joined_connection()
        if joined is not None:
            with translate_errors(what):
                yield joined
            return
        with self._writer, translate_errors(what), self._engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def read(self, what: str) -> Iterator[Connection]:
        """A read-only transaction; inside `joined(conn)` on this thread, `conn` itself, so
        that a read sees what the joined transaction wrote so far."""
        joined = self._joined_connection()
        if joined is not None:
            with translate_errors(what):
                yield joined
            return
        with translate_errors(what), self._engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def joined(self, conn: Connection) -> Iterator[None]:
        """Make every `write` and `read` of this store on this thread, until the block ends,
        run in the open write transaction `conn` (one taken from `write`), so that several
        store calls commit or roll back as one: a lifecycle operation and its access-log entry
        (node.accesslog.AccessLog.append_with). Other threads are not affected."""
        joins: dict[int, Connection] = _JOINS.__dict__.setdefault("by_engine", {})
        key = id(self._engine)
        if key in joins:
            raise RuntimeError("store: a joined transaction is already open on this thread")
        joins[key] = conn
        try:
            yield
        finally:
            del joins[key]

    def _joined_connection(self) -> Connection | None:
        joins: dict[int, Connection] | None = getattr(_JOINS, "by_engine", None)
        return None if not joins else joins.get(id(self._engine))

    # ----------------------------------------------------------------- records

    def store_batch(
        self,
        records: Sequence[NewRecord],
        *,
        now: dt.datetime,
        ingest_state: tuple[str, Any] | None = None,
        upstream_cursor: tuple[str, int] | None = None,
        upstream_head: int | None = None,
        upstream_from: int | None = None,
        expire_ended: bool = False,
        from_source: bool = False,
        copy_flags: Sequence[tuple[str, str, int, bool]] = (),
    ) -> int:
        """Store record versions, their feed events and resume state in ONE transaction.

        For each record: older active versions of the same (producer, record_key) become
        `superseded`; for a record of this node's own (origin "local"), every subscription
        whose items include the record's item gets an event (`upsert` for version 1, `correct`
        after) with the next gap-free sequence number; a received copy gets none. With
        `expire_ended`, a version whose disclosure has ended by the China day of `now` (past
        its maximum period or the Shandong cap) is stored `expired` rather than `active`: it
        is never disclosed, answered or delivered, and the lifecycle scan has nothing left to
        do for it (without it, such a version waits `active` for the scan, and every reader
        holds it back meanwhile).
        `ingest_state` is (source key, JSON-able state) saved with the batch; `upstream_cursor`
        is (peer, cursor) for records received from a peer's feed, stamped `now` (the time of
        the last batch); `upstream_head` is the head the peer reported with that batch (None
        keeps the one stored); with `upstream_from`, the stored cursor must still be that
        (WriteConflict, nothing written, if another pull of the feed moved it meanwhile),
        checked under the cursor row's lock, also for a feed's first batch (two concurrent
        callers: one commits, the other is refused).
        Returns the number of events. Refuses (StoreConflictError, nothing written) a version
        that already exists.

        A received copy is stored with the objection flag its `NewRecord` carries; `copy_flags`
        (producer, record key, version, flag) set the flag of received copies already held
        (not purged ones), after the records: a subscriber replaying a batch reconciles a copy
        with the flag its producer sent, in the same transaction as its cursor. Refuses
        (InputError) a flagged local record (a local flag comes with its objection).

        `from_source` (ingest) marks the versions as the producer's source rows, and then, in
        the same transaction: refuses (StoreConflictError, nothing written) a new version of a
        record whose newest stored version the lifecycle has closed (withdrawn, expired,
        purged) since ingest planned the batch, so a repair racing an ingest never comes back;
        and carries an open objection over: the new version is flagged too and the objection
        moves to it (its review clock is unchanged), so closing it clears the current flag.
        """
        for rec in records:
            _check_new(rec)
        tagger = self.require_tagger()
        stamp = to_db_time(now)
        today = china_day(now) if expire_ended else None
        with self.write("store a batch of records") as conn:
            if upstream_cursor is not None and upstream_from is not None:
                # Before anything is written, under the cursor row's lock.
                _lock_cursor_at(conn, upstream_cursor[0], upstream_from, stamp)
            count = _write_records(
                conn, records, stamp, today, from_source=from_source, tagger=tagger
            )
            for producer, key, version, flag in copy_flags:
                # a received copy's flag, reconciled with its producer's; a purged copy never
                # changes again
                _retag(
                    conn,
                    tagger,
                    (RECORDS.c.producer == producer)
                    & (RECORDS.c.record_key == key)
                    & (RECORDS.c.version == version)
                    & (RECORDS.c.origin == "received")
                    & (RECORDS.c.state != "purged"),
                    {"objection": flag},
                )
            if ingest_state is not None:
                key, state = ingest_state
                _upsert(
                    conn,
                    INGEST,
                    {
                        "source_key": key,
                        "state": json.dumps(state, sort_keys=True),
                        "updated_at": stamp,
                    },
                    ("source_key",),
                )
            if upstream_cursor is not None:
                peer, cursor = upstream_cursor
                upstream: dict[str, Any] = {"peer": peer, "cursor": cursor, "updated_at": stamp}
                if upstream_head is not None:
                    upstream["head_seq"] = upstream_head
                _upsert(conn, CURSORS, upstream, ("peer",))
        return count

    def current_version(self, producer: str, record_key: str) -> tuple[int, str] | None:
        """Return (newest version, its content hash) of a record, or None if never stored."""
        found = self.current_versions(producer, [record_key])
        return found.get(record_key)

    def record_heads(self, producer: str, record_keys: Iterable[str]) -> dict[str, RecordHead]:
        """Return record_key -> RecordHead (newest version, its hash and state, and the hash
        of the newest version that came from the source) for the keys that exist."""
        keys = list(dict.fromkeys(record_keys))
        newest: dict[str, tuple[int, str, str]] = {}
        source: dict[str, tuple[int, str]] = {}
        with self.read("look up current record versions") as conn:
            for start in range(0, len(keys), _CHUNK):
                rows = conn.execute(
                    select(
                        RECORDS.c.record_key,
                        RECORDS.c.version,
                        RECORDS.c.content_hash,
                        RECORDS.c.state,
                        RECORDS.c.from_source,
                    ).where(
                        RECORDS.c.producer == producer,
                        RECORDS.c.record_key.in_(keys[start : start + _CHUNK]),
                    )
                )
                for key, version, content_hash, state, from_source in rows:
                    if key not in newest or newest[key][0] < version:
                        newest[key] = (int(version), str(content_hash), str(state))
                    if from_source and (key not in source or source[key][0] < version):
                        source[key] = (int(version), str(content_hash))
        return {
            key: RecordHead(version, content_hash, state, source[key][1] if key in source else None)
            for key, (version, content_hash, state) in newest.items()
        }

    def current_versions(
        self, producer: str, record_keys: Iterable[str]
    ) -> dict[str, tuple[int, str]]:
        """Return record_key -> (newest version, content hash) for the keys that exist."""
        keys = list(dict.fromkeys(record_keys))
        found: dict[str, tuple[int, str]] = {}
        with self.read("look up current record versions") as conn:
            for start in range(0, len(keys), _CHUNK):
                rows = conn.execute(
                    select(RECORDS.c.record_key, RECORDS.c.version, RECORDS.c.content_hash).where(
                        RECORDS.c.producer == producer,
                        RECORDS.c.record_key.in_(keys[start : start + _CHUNK]),
                    )
                )
                for key, version, content_hash in rows:
                    if key not in found or found[key][0] < version:
                        found[key] = (int(version), str(content_hash))
        return found

    def get_record(self, row_id: str) -> StoredRecord:
        """Return one stored record version by row id; NotFound if there is none."""
        with self.read("read a record") as conn:
            row = conn.execute(select(RECORDS).where(RECORDS.c.row_id == row_id)).first()
        if row is None:
            raise NotFound("store: no record with that row id")
        return self.record(row)

    def record_versions(self, producer: str, record_key: str) -> list[StoredRecord]:
        """Return every stored version of one record, oldest first."""
        with self.read("read record versions") as conn:
            rows = conn.execute(
                select(RECORDS)
                .where(RECORDS.c.producer == producer, RECORDS.c.record_key == record_key)
                .order_by(RECORDS.c.version)
            ).all()
        return [self.record(r) for r in rows]

    def local_bodies_after(
        self, producer: str, after_row: str, *, limit: int
    ) -> list[tuple[str, bytes]]:
        """Return up to `limit` `(row_id, body)` of `producer`'s own records (origin local)
        that still hold a body (every state but purged), with row ids after `after_row`, by
        row id: pages for a pass over the whole store (`node.resign`)."""
        with self.read("read stored records") as conn:
            rows = conn.execute(
                select(RECORDS.c.row_id, RECORDS.c.body)
                .where(
                    RECORDS.c.producer == producer,
                    RECORDS.c.origin == "local",
                    RECORDS.c.state != "purged",
                    RECORDS.c.row_id > after_row,
                )
                .order_by(RECORDS.c.row_id)
                .limit(limit)
            ).all()
        return [(str(row_id), binary_value(body)) for row_id, body in rows]

    def replace_bodies(self, producer: str, bodies: Sequence[tuple[str, bytes, bytes]]) -> int:
        """Store `(row_id, old body, new body)` in one transaction and return how many rows
        changed: only rows of `producer`'s own that still hold `old body` (a row purged or
        changed meanwhile is left as it is). The one write that replaces a version's body in
        place, for a body that says the same in other bytes: a record signed again with the
        node's current key (`node.resign`)."""
        if not bodies:
            return 0
        tagger = self.require_tagger()
        changed = 0
        with self.write("store re-signed records") as conn:
            for row_id, old, new in bodies:
                changed += _retag(
                    conn,
                    tagger,
                    (RECORDS.c.row_id == row_id)
                    & (RECORDS.c.producer == producer)
                    & (RECORDS.c.origin == "local")
                    & (RECORDS.c.state != "purged")
                    & (RECORDS.c.body == old),
                    {"body": new},
                )
        return changed

    def records_by_subject(
        self,
        subject_index: str,
        *,
        include_linked: bool = True,
        states: Iterable[str] | None = ("active",),
    ) -> list[StoredRecord]:
        """Return the records of a subject (by blind index), by producer, key and version.

        With `include_linked`, records where the subject is a linked subject (a legal
        representative, Shandong Art. 31) are included. `states=None` returns every state.
        """
        statement = _BY_SUBJECT[(include_linked, states is not None)]
        params: dict[str, Any] = {"subject": subject_index}
        if states is not None:
            params["states"] = list(states)
        with self.read("read records by subject") as conn:
            rows = conn.execute(statement, params).all()
        return [self.record(r) for r in rows]

    def release_candidates(
        self, subject_index: str, *, producer: str, states: Sequence[str]
    ) -> list[ReleaseCandidate]:
        """The records `producer` holds about a subject (by blind index, linked subjects
        included, as records_by_subject), in `states`, by record key and version; only the
        columns a query decides and releases on, so the query path reads nothing it drops."""
        wanted = tuple(states)
        if not wanted:
            return []
        read = _RELEASE_CANDIDATES.get(wanted)
        if read is None:
            read = DriverStatement(_release_candidates(wanted))
            if len(_RELEASE_CANDIDATES) < 16:
                _RELEASE_CANDIDATES[wanted] = read
        params: dict[str, Any] = {"subject": subject_index, "producer": producer}
        params.update((f"state_{i}", state) for i, state in enumerate(wanted))
        # Through the driver (node.store.driver): this read runs on every query. Inside
        # `joined` it must run on the joined transaction like every `read`: a pooled
        # connection would not see what that transaction wrote so far.
        joined = self._joined_connection()
        with translate_errors("read records by subject"):
            rows = (
                read.rows(self._engine, params) if joined is None else read.execute(joined, params)
            )
        return [_release_candidate(row, self._tagger) for row in rows]

    def linked_subjects(self, row_id: str) -> list[str]:
        """Return the blind indexes linked to a record version (sorted)."""
        with self.read("read linked subjects") as conn:
            rows = conn.execute(
                select(LINKS.c.subject_index)
                .where(LINKS.c.row_id == row_id)
                .order_by(LINKS.c.subject_index)
            ).scalars()
            return [str(s) for s in rows]

    def count_records(self, *, state: str | None = None, producer: str | None = None) -> int:
        """Count stored record versions, optionally of one state and/or producer."""
        query = select(func.count()).select_from(RECORDS)
        if state is not None:
            query = query.where(RECORDS.c.state == state)
        if producer is not None:
            query = query.where(RECORDS.c.producer == producer)
        with self.read("count records") as conn:
            return int(conn.execute(query).scalar_one())

    def records_due_for_expiry(
        self, today: dt.date, *, limit: int = 1000, exclude: Collection[str] = ()
    ) -> list[StoredRecord]:
        """Return active records whose maximum disclosure period ended before `today`, but
        those in `exclude` (row ids a scan skipped); RecordTampered for a row failing its tag."""
        with self.read("find expired records") as conn:
            rows = conn.execute(
                select(RECORDS)
                .where(
                    RECORDS.c.state == "active",
                    RECORDS.c.disclosure_max_end < today,
                    _not_excluded(exclude),
                )
                .order_by(RECORDS.c.disclosure_max_end, RECORDS.c.row_id)
                .limit(limit)
            ).all()
        return [self.record(r) for r in rows]

    def set_record_state(
        self,
        row_id: str,
        state: str,
        *,
        event_kind: str | None,
        now: dt.datetime,
        expected: str | None = None,
    ) -> int:
        """Move a record version to `state` and append `event_kind` events for its subscribers
        (none for a received copy: only this node's own records are in its feeds).

        With `expected`, only a version still in that state moves: one another writer already
        moved raises StateChanged and nothing is written. Refuses an unknown state or event kind
        (InputError) and an unknown row (NotFound). Returns the number of feed events appended.
        A `purged` record's body is erased.
        """
        if state not in RECORD_STATES:
            raise InputError(f"store: unknown record state {state!r}")
        if event_kind is not None and event_kind not in EVENT_KINDS:
            raise InputError(f"store: unknown feed event kind {event_kind!r}")
        tagger = self.require_tagger()
        stamp = to_db_time(now)
        with self.write("change a record's state") as conn:
            # FOR UPDATE: replicas on one PostgreSQL scan at once, each from its own earlier
            # read of what is due; the row lock makes the second wait for the first's commit and
            # then see the state it left (SQLite's BEGIN IMMEDIATE already serialises writers).
            row = conn.execute(
                select(
                    RECORDS.c.origin,
                    RECORDS.c.item_id,
                    RECORDS.c.record_key,
                    RECORDS.c.version,
                    RECORDS.c.state,
                )
                .where(RECORDS.c.row_id == row_id)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFound("store: no record with that row id")
            if expected is not None and row.state != expected:
                raise StateChanged(
                    f"store: the record version is {row.state}, no longer {expected} "
                    "(another writer changed it)"
                )
            values: dict[str, Any] = {"state": state}
            if state == "purged":
                values["body"] = b""
            _retag(conn, tagger, RECORDS.c.row_id == row_id, values)
            if event_kind is None:
                return 0
            return _append_events(
                conn,
                [(row.origin, row.item_id, event_kind, row_id, row.record_key, row.version)],
                stamp,
            )

    def set_objection(self, row_id: str, flag: bool, *, now: dt.datetime) -> int:
        """Set or clear a record's objection flag; appends objection_set/cleared events (none
        for a received copy: only this node's own records are in its feeds).

        Setting a flag that is already set (or clearing a clear one) changes nothing and
        appends no event. Returns the number of events appended.
        """
        tagger = self.require_tagger()
        stamp = to_db_time(now)
        with self.write("flag a record's objection") as conn:
            row = conn.execute(
                select(
                    RECORDS.c.origin,
                    RECORDS.c.item_id,
                    RECORDS.c.record_key,
                    RECORDS.c.version,
                    RECORDS.c.objection,
                ).where(RECORDS.c.row_id == row_id)
            ).first()
            if row is None:
                raise NotFound("store: no record with that row id")
            if bool(row.objection) == flag:
                return 0
            _retag(conn, tagger, RECORDS.c.row_id == row_id, {"objection": flag})
            kind = "objection_set" if flag else "objection_cleared"
            return _append_events(
                conn, [(row.origin, row.item_id, kind, row_id, row.record_key, row.version)], stamp
            )

    # ------------------------------------------------------------------- feeds

    def ensure_subscription(
        self, subscriber: str, items: Iterable[str], *, now: dt.datetime
    ) -> Subscription:
        """Create or widen a subscriber's feed to `items` and backfill it, atomically.

        Items not covered before get one `upsert` event per record version of this node's own
        (origin "local"; never a copy received from another producer) visible on the
        China day of `now` (`node.lifecycle.visible`: active and its disclosure not over, even
        if the lifecycle scan has not marked it expired yet), in creation order, in the same
        transaction. Items are never removed here (a narrower agreement stops new events
        through the caller's policy, not by rewriting history).
        """
        wanted = frozenset(items)
        stamp = to_db_time(now)
        today = china_day(now)
        with self.write("create a subscription") as conn:
            row = conn.execute(
                select(SUBS).where(SUBS.c.subscriber == subscriber).with_for_update()
            ).first()
            old: frozenset[str] = (
                frozenset() if row is None else frozenset(json.loads(row._mapping["items"]))
            )
            if row is None:
                conn.execute(
                    insert(SUBS).values(
                        subscriber=subscriber,
                        items=json.dumps(sorted(wanted)),
                        last_seq=0,
                        acked_seq=0,
                        delivered_seq=0,
                        acked_at=None,
                        created_at=stamp,
                    )
                )
            added = sorted(wanted - old)
            if row is not None and added:
                conn.execute(
                    update(SUBS)
                    .where(SUBS.c.subscriber == subscriber)
                    .values(items=json.dumps(sorted(old | wanted)))
                )
            if added:
                backlog = conn.execute(
                    select(
                        RECORDS.c.row_id,
                        RECORDS.c.record_key,
                        RECORDS.c.version,
                        RECORDS.c.state,
                        RECORDS.c.severity,
                        RECORDS.c.decided_on,
                        RECORDS.c.disclosure_max_end,
                    )
                    .where(
                        RECORDS.c.item_id.in_(added),
                        RECORDS.c.state == "active",
                        RECORDS.c.origin == "local",
                    )
                    .order_by(RECORDS.c.created_at, RECORDS.c.row_id)
                ).all()
                _append_for(
                    conn,
                    subscriber,
                    [
                        ("upsert", r.row_id, r.record_key, r.version)
                        for r in backlog
                        if visible(
                            state=r.state,
                            severity=r.severity,
                            decided_on=r.decided_on,
                            disclosure_max_end=r.disclosure_max_end,
                            today=today,
                        )
                    ],
                    stamp,
                )
            current = conn.execute(select(SUBS).where(SUBS.c.subscriber == subscriber)).one()
        return _subscription(current)

    def subscription(self, subscriber: str) -> Subscription | None:
        """Return a subscriber's feed state, or None."""
        with self.read("read a subscription") as conn:
            row = conn.execute(select(SUBS).where(SUBS.c.subscriber == subscriber)).first()
        return None if row is None else _subscription(row)

    def subscriptions(self) -> list[Subscription]:
        """Return every subscription, by subscriber."""
        with self.read("read subscriptions") as conn:
            rows = conn.execute(select(SUBS).order_by(SUBS.c.subscriber)).all()
        return [_subscription(r) for r in rows]

    def events_after(self, subscriber: str, seq: int, limit: int = 1000) -> list[FeedEvent]:
        """Return up to `limit` events of `subscriber` with sequence above `seq`, in order."""
        if limit <= 0:
            raise InputError("store: limit must be positive")
        with self.read("read feed events") as conn:
            rows = conn.execute(
                select(EVENTS)
                .where(EVENTS.c.subscriber == subscriber, EVENTS.c.seq > seq)
                .order_by(EVENTS.c.seq)
                .limit(limit)
            ).all()
        return [
            FeedEvent(
                subscriber=r.subscriber,
                seq=int(r.seq),
                kind=r.kind,
                record_row_id=r.record_row_id,
                record_key=r.record_key,
                version=int(r.version),
                created_at=from_db_time(r.created_at),
            )
            for r in rows
        ]

    def mark_delivered(self, subscriber: str, seq: int) -> None:
        """Record that the batches sent to `subscriber` reach `seq`, the last event of the one
        about to leave (monotonic: a batch sent again never lowers it). Call it in the
        transaction of the batch's access entry, before the batch leaves: an acknowledgement
        up to it is then accepted after a restart too (`ack`)."""
        with self.write("record a feed delivery") as conn:
            conn.execute(
                update(SUBS)
                .where(SUBS.c.subscriber == subscriber, SUBS.c.delivered_seq < seq)
                .values(delivered_seq=seq)
            )

    def ack(self, subscriber: str, seq: int, *, now: dt.datetime) -> int:
        """Record that `subscriber` has applied its feed up to `seq`; return the acked cursor.

        Acks are monotonic (an older or repeated ack is accepted and changes nothing, since
        delivery is at least once). Refuses an unknown subscriber (NotFound), a cursor beyond
        the last event (InputError) and one beyond the last event sent to it (NotDelivered,
        `mark_delivered`): a subscriber cannot acknowledge what it never received. A refusal
        moves nothing.
        """
        stamp = to_db_time(now)
        with self.write("acknowledge a feed cursor") as conn:
            row = conn.execute(
                select(SUBS.c.last_seq, SUBS.c.acked_seq, SUBS.c.delivered_seq)
                .where(SUBS.c.subscriber == subscriber)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"store: no subscription for {subscriber!r}")
            if seq > row.last_seq or seq < 0:
                raise InputError(
                    f"store: ack {seq} for {subscriber!r} is beyond the last event {row.last_seq}"
                )
            if seq > row.delivered_seq:
                raise NotDelivered(
                    f"Ack: the receipt acknowledges event {seq} of {subscriber}'s feed, but this "
                    f"node has sent it events only up to event {row.delivered_seq}; acknowledge "
                    "the last event of a batch you applied (the acknowledged cursor stays at "
                    f"{row.acked_seq})"
                )
            if seq <= row.acked_seq:
                return int(row.acked_seq)
            conn.execute(
                update(SUBS)
                .where(SUBS.c.subscriber == subscriber)
                .values(acked_seq=seq, acked_at=stamp)
            )
            return seq

    def upstream_cursor(self, peer: str) -> int:
        """Return how far this node has applied `peer`'s feed (0 before anything)."""
        with self.read("read an upstream cursor") as conn:
            value = conn.execute(select(CURSORS.c.cursor).where(CURSORS.c.peer == peer)).scalar()
        return 0 if value is None else int(value)

    def upstream_feed(self, peer: str) -> UpstreamFeed | None:
        """Return `peer`'s feed as applied here (cursor, reported head, time of the last
        batch), or None before its first batch."""
        with self.read("read an upstream cursor") as conn:
            row = conn.execute(select(CURSORS).where(CURSORS.c.peer == peer)).first()
        if row is None:
            return None
        return UpstreamFeed(
            peer=row.peer,
            cursor=int(row.cursor),
            head=None if row.head_seq is None else int(row.head_seq),
            last_batch_at=from_db_time(row.updated_at),
        )

    # ------------------------------------------------------------ ingest state

    def load_ingest_state(self, source_key: str) -> Any | None:
        """Return the JSON state saved with the last committed batch of a source, or None."""
        with self.read("read ingest state") as conn:
            value = conn.execute(
                select(INGEST.c.state).where(INGEST.c.source_key == source_key)
            ).scalar()
        return None if value is None else json.loads(value)

    def clear_ingest_state(self, source_key: str) -> None:
        """Forget a source's resume state (the next run starts from the first row)."""
        with self.write("clear ingest state") as conn:
            conn.execute(delete(INGEST).where(INGEST.c.source_key == source_key))

    # ------------------------------------------------------------------ nonces

    def remember_nonce(
        self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
    ) -> bool:
        """Record a request nonce; return False when (keyid, nonce) was already seen.

        Nonces past `expires_at` are forgotten (the timestamp window then rejects a replay).
        Safe under concurrency: the primary key decides, never a read-then-write. The nonce is
        committed (durable) before this returns True.
        """
        return self.remember_nonces([(keyid, nonce, expires_at)], now=now)[0]

    def remember_nonces(
        self, nonces: Sequence[tuple[str, str, dt.datetime]], *, now: dt.datetime
    ) -> list[bool]:
        """Record `(keyid, nonce, expires_at)` triples in ONE transaction (one commit).

        Returns, in order, True for each nonce recorded now and False for one already seen and
        not yet expired (including a repeat earlier in the same batch). Nothing is returned
        before the commit, so an accepted nonce survives a crash.
        """
        if not nonces:
            return []
        with self.write("remember a request nonce") as conn:
            return self.remember_nonces_in(conn, nonces, now=now)

    def remember_nonces_in(
        self,
        conn: Connection,
        nonces: Sequence[tuple[str, str, dt.datetime]],
        *,
        now: dt.datetime,
    ) -> list[bool]:
        """`remember_nonces` inside the caller's write transaction `conn` (node.store only):
        the nonces commit or roll back with whatever else that transaction writes."""
        stamp = to_db_time(now)
        # Inserted in key order (stable, so of two equal nonces the earlier one wins): two
        # PostgreSQL replicas sent the same nonces in different orders then wait for each
        # other in one order instead of deadlocking.
        order = sorted(range(len(nonces)), key=lambda i: nonces[i][:2])
        fresh = [False] * len(nonces)
        for i in order:
            keyid, nonce, expires_at = nonces[i]
            values = {
                "keyid": keyid,
                "nonce": nonce,
                "expires_at": to_db_time(expires_at),
                "now": stamp,
            }
            # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT
            fresh[i] = bool(_REMEMBER_NONCE_ON_DRIVER.execute(conn, values))
        return fresh

    def purge_expired_nonces(self, now: dt.datetime, *, limit: int) -> int:
        """Delete at most `limit` nonces whose expiry is before `now`, in one short transaction;
        return how many went. Call again while it returns `limit` to delete them all."""
        if limit < 1:
            raise InputError("store: a nonce purge needs a limit of at least 1")
        with self.write("purge expired request nonces") as conn:
            result = conn.execute(_PURGE_NONCES, {"now": to_db_time(now), "limit": limit})
            return int(result.rowcount)


# ---------------------------------------------------------------------- helpers


def _write_records(
    conn: Connection,
    records: Sequence[NewRecord],
    stamp: dt.datetime,
    today: dt.date | None,
    *,
    from_source: bool,
    tagger: keys.RowTagger,
) -> int:
    """`Store.store_batch`'s records, links, superseding updates and feed events, inside the
    caller's write transaction (`today`: the China day past whose end a version is stored
    expired, None to store every version active); returns the number of events. Every row
    is written with its tag; a superseded row is checked against its tag first."""
    flagged: set[str] = set()
    if from_source:
        flagged = _source_checks(conn, records)
    for start in range(0, len(records), _CHUNK):
        chunk = records[start : start + _CHUNK]
        rows = (
            _record_row(
                rec,
                today,
                objection=rec.objection or rec.row_id in flagged,
                from_source=from_source,
                tagger=tagger,
            )
            for rec in chunk
        )
        insert_rows(conn, RECORDS, _RECORD_COLUMNS, rows)
        links = [(r.row_id, s) for r in chunk for s in dict.fromkeys(r.linked_subject_indexes)]
        insert_rows(conn, LINKS, ("row_id", "subject_index"), links)
    _supersede(conn, tagger, [r for r in records if r.version > 1])
    events = [
        (
            r.origin,
            r.item_id,
            "upsert" if r.version == 1 else "correct",
            r.row_id,
            r.record_key,
            r.version,
        )
        for r in records
    ]
    return _append_events(conn, events, stamp)


def _check_new(rec: NewRecord) -> None:
    if rec.version < 1:
        raise InputError("store: record versions start at 1")
    if rec.origin not in ("local", "received"):
        raise InputError(f"store: unknown record origin {rec.origin!r}")
    if rec.objection and rec.origin == "local":
        raise InputError("store: a local record is flagged by an objection, not when stored")


_RECORD_COLUMNS = ROW_COLUMNS


def _source_checks(conn: Connection, records: Sequence[NewRecord]) -> set[str]:
    """Inside `store_batch(from_source=True)`'s transaction: refuse a new version of a record
    the lifecycle closed, move open objections to the newest new version of their record and
    return the row ids of the new versions to flag (see store_batch)."""
    keys = list(dict.fromkeys((r.producer, r.record_key) for r in records if r.version > 1))
    if not keys:
        return set()
    newest: dict[tuple[str, str], tuple[int, str, str]] = {}
    for producer in dict.fromkeys(p for p, _ in keys):
        mine = [k for p, k in keys if p == producer]
        for start in range(0, len(mine), _CHUNK):
            # FOR UPDATE (PostgreSQL): a withdrawal of one of these versions waits for this
            # transaction, then finds the version superseded and refuses
            rows = conn.execute(
                select(RECORDS.c.record_key, RECORDS.c.version, RECORDS.c.state, RECORDS.c.row_id)
                .where(
                    RECORDS.c.producer == producer,
                    RECORDS.c.record_key.in_(mine[start : start + _CHUNK]),
                )
                .with_for_update()
            )
            for key, version, state, row_id in rows:
                known = newest.get((producer, key))
                if known is None or known[0] < version:
                    newest[(producer, key)] = (int(version), str(state), str(row_id))
    if any(state in CLOSED_STATES for _, state, _ in newest.values()):
        raise StoreConflictError(
            "store: a record of this batch was withdrawn, expired or purged while the batch "
            "was prepared; nothing was written, run the ingest again"
        )
    current = {row_id: pk for pk, (_, _, row_id) in newest.items()}
    last: dict[tuple[str, str], str] = {}
    for rec in records:
        last[(rec.producer, rec.record_key)] = rec.row_id
    flagged: set[str] = set()
    ids = list(current)
    for start in range(0, len(ids), _CHUNK):
        open_rows = conn.execute(
            select(_OBJECTIONS.c.objection_id, _OBJECTIONS.c.record_row_id).where(
                _OBJECTIONS.c.record_row_id.in_(ids[start : start + _CHUNK]),
                _OBJECTIONS.c.closed_at.is_(None),
            )
        ).all()
        for objection_id, row_id in open_rows:
            pk = current[row_id]
            flagged.update(r.row_id for r in records if (r.producer, r.record_key) == pk)
            conn.execute(
                update(_OBJECTIONS)
                .where(_OBJECTIONS.c.objection_id == objection_id)
                .values(record_row_id=last[pk])
            )
    return flagged


def _record_row(
    rec: NewRecord,
    today: dt.date | None,
    *,
    objection: bool = False,
    from_source: bool = False,
    tagger: keys.RowTagger,
) -> tuple[Any, ...]:
    """The values of a new record's row, in the order of _RECORD_COLUMNS, its tag last;
    `expired` instead of `active` when its disclosure is already over on `today` (None: not
    judged). `objection` flags it (an open objection carried over); `from_source` marks a
    version from ingest."""
    ended = today is not None and disclosure_ended(
        severity=rec.severity,
        decided_on=rec.decided_on,
        disclosure_max_end=rec.disclosure_max_end,
        today=today,
    )
    values = (
        rec.row_id,
        rec.producer,
        rec.record_key,
        rec.version,
        rec.item_id,
        rec.catalog_version,
        rec.subject_index,
        rec.body,
        rec.content_hash,
        "expired" if ended else "active",
        rec.severity,
        rec.decided_on,
        rec.disclosure_min_end,
        rec.disclosure_max_end,
        rec.disclosure_rule,
        objection,
        to_db_time(rec.created_at),
        rec.origin,
        from_source,
    )
    return (*values, row_tag(tagger, dict(zip(_RECORD_COLUMNS, values, strict=False))))


# Supersedes older active versions, each row with its new tag, in one executemany.
_SUPERSEDE_TAGGED = (
    update(RECORDS)
    .where(RECORDS.c.row_id == bindparam("p_row"))
    .values(state="superseded", tag=bindparam("p_tag"))
)


def _supersede(conn: Connection, tagger: keys.RowTagger, records: Sequence[NewRecord]) -> None:
    """Inside `_write_records`: mark superseded the active versions older than each new
    version in `records` (this batch's included), as if in record order: a key corrected twice
    in one batch supersedes version 1, then version 2. Each row is checked against its tag
    first (RecordTampered naming it, the transaction rolls back). One read per chunk of keys
    and one executemany, not a statement pair per record: ingest corrects in bulk."""
    if not records:
        return
    wanted = list(dict.fromkeys((r.producer, r.record_key) for r in records))
    held: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for producer in dict.fromkeys(p for p, _ in wanted):
        mine = [k for p, k in wanted if p == producer]
        for start in range(0, len(mine), _CHUNK):
            rows = conn.execute(
                select(RECORDS)
                .where(
                    RECORDS.c.producer == producer,
                    RECORDS.c.record_key.in_(mine[start : start + _CHUNK]),
                    RECORDS.c.state == "active",
                )
                .order_by(RECORDS.c.row_id)
                .with_for_update()
            ).all()
            for row in rows:
                held.setdefault((producer, row.record_key), []).append(dict(row._mapping))
    changed: dict[str, dict[str, Any]] = {}
    for rec in records:
        for version in held.get((rec.producer, rec.record_key), ()):
            if version["version"] < rec.version and version["row_id"] not in changed:
                if not row_intact(tagger, version):
                    raise RecordTampered(str(version["row_id"]))
                changed[version["row_id"]] = version
    if changed:
        conn.execute(
            _SUPERSEDE_TAGGED,
            [
                {"p_row": row_id, "p_tag": row_tag(tagger, {**old, "state": "superseded"})}
                for row_id, old in changed.items()
            ],
        )


def _retag(
    conn: Connection, tagger: keys.RowTagger, where: ColumnElement[bool], values: Mapping[str, Any]
) -> int:
    """Inside a write transaction: set `values` on the `records` rows `where` selects, each
    with its new tag, and return how many changed. Each row is checked against its tag first:
    RecordTampered (naming it) for one written outside credex, which the caller's transaction
    then rolls back, so a legitimate change never launders an edit into a fresh tag. Row by
    row: a set-based UPDATE could not compute each row's tag."""
    rows = conn.execute(
        select(RECORDS).where(where).order_by(RECORDS.c.row_id).with_for_update()
    ).all()
    for row in rows:
        current = row._mapping
        if not row_intact(tagger, current):
            raise RecordTampered(str(row.row_id))
        tag = row_tag(tagger, {**current, **values})
        conn.execute(
            update(RECORDS).where(RECORDS.c.row_id == row.row_id).values(**values, tag=tag)
        )
    return len(rows)


def _stored(row: Row[Any]) -> StoredRecord:
    return StoredRecord(
        row_id=row.row_id,
        producer=row.producer,
        record_key=row.record_key,
        version=int(row.version),
        item_id=row.item_id,
        catalog_version=row.catalog_version,
        subject_index=row.subject_index,
        body=binary_value(row.body),
        content_hash=row.content_hash,
        state=row.state,
        severity=row.severity,
        decided_on=row.decided_on,
        disclosure_min_end=row.disclosure_min_end,
        disclosure_max_end=row.disclosure_max_end,
        disclosure_rule=row.disclosure_rule,
        objection=bool(row.objection),
        created_at=from_db_time(row.created_at),
        origin=row.origin,
        from_source=bool(row.from_source),
    )


def _subscription(row: Row[Any]) -> Subscription:
    return Subscription(
        subscriber=row.subscriber,
        items=frozenset(json.loads(row._mapping["items"])),
        last_seq=int(row.last_seq),
        acked_seq=int(row.acked_seq),
        acked_at=_opt_time(row.acked_at),
        created_at=from_db_time(row.created_at),
        delivered_seq=int(row.delivered_seq),
    )


def _append_events(
    conn: Connection, events: Sequence[tuple[str, str, str, str, str, int]], stamp: dt.datetime
) -> int:
    """Append (origin, item, kind, row id, record key, version) events to every covering
    subscriber; events of rows not of origin "local" are dropped (see the module docstring).
    Every caller names the row's origin, so none can relay a received copy by forgetting to."""
    events = [e for e in events if e[0] == "local"]
    if not events:
        return 0
    subs = conn.execute(select(SUBS.c.subscriber, SUBS.c["items"])).all()
    total = 0
    for sub in subs:
        items = frozenset(json.loads(sub._mapping["items"]))
        mine = [
            (kind, row_id, key, ver)
            for _origin, item, kind, row_id, key, ver in events
            if item in items
        ]
        total += _append_for(conn, sub.subscriber, mine, stamp)
    return total


_EVENT_COLUMNS = (
    "subscriber",
    "seq",
    "kind",
    "record_row_id",
    "record_key",
    "version",
    "created_at",
)


def _append_for(
    conn: Connection,
    subscriber: str,
    events: Sequence[tuple[str, str, str, int]],
    stamp: dt.datetime,
) -> int:
    """Append events to one subscriber, numbering them from its counter under a row lock."""
    if not events:
        return 0
    last = conn.execute(
        select(SUBS.c.last_seq).where(SUBS.c.subscriber == subscriber).with_for_update()
    ).scalar_one()
    rows = [
        (subscriber, int(last) + i, kind, row_id, key, ver, stamp)
        for i, (kind, row_id, key, ver) in enumerate(events, start=1)
    ]
    for start in range(0, len(rows), _CHUNK):
        insert_rows(conn, EVENTS, _EVENT_COLUMNS, rows[start : start + _CHUNK])
    conn.execute(
        update(SUBS).where(SUBS.c.subscriber == subscriber).values(last_seq=int(last) + len(rows))
    )
    return len(rows)


def _lock_cursor_at(conn: Connection, peer: str, expected: int, stamp: dt.datetime) -> None:
    """Lock the upstream cursor row of `peer`'s feed for the caller's transaction and refuse
    (WriteConflict) when it is not `expected`: another pull of the feed moved it."""
    # PostgreSQL locks no row that does not exist: two pulls applying a feed's first batch
    # would both pass. Creating the row first makes the later one wait for the earlier one's
    # commit, then read the cursor it wrote (and a refusal rolls the row back with the rest).
    _insert_missing(conn, CURSORS, {"peer": peer, "cursor": 0, "updated_at": stamp})
    held = conn.execute(
        select(CURSORS.c.cursor).where(CURSORS.c.peer == peer).with_for_update()
    ).scalar_one()
    if held != expected:
        raise _cursor_moved(peer, int(held), expected)


def _cursor_moved(peer: str, held: int, expected: int) -> WriteConflict:
    """The refusal of a batch of `peer`'s feed continuing `expected` when the stored cursor is
    `held` (the one message of every check of it)."""
    return WriteConflict(
        f"feed of {peer}: another pull of this feed moved the cursor to {held} meanwhile (this "
        f"batch continues {expected}); this pull stops with nothing of the batch stored, pull "
        "again"
    )


def _insert_missing(conn: Connection, table: Table, values: Mapping[str, Any]) -> None:
    """Insert `values` unless a row with the same primary key exists (then nothing changes)."""
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    conn.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


def _upsert(
    conn: Connection, table: Table, values: Mapping[str, Any], keys: tuple[str, ...]
) -> None:
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    statement = dialect.insert(table).values(**values)
    changed = {k: v for k, v in values.items() if k not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changed))
