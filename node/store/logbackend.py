"""The access log's SQL backend: the `node.accesslog.ClaimingLogBackend` protocol over the store.

Appends are serialised in the database, not in process memory: the single `log_state` row is
locked (`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) while the next
indexes are taken, the leaves inserted and the new size and tree state written, all in one
transaction. Several `credex serve` replicas on one PostgreSQL therefore never race, and a crash
leaves either the whole batch or none of it.

Reads check that the leaves they return are gap-free: a deleted row is reported as tampering
(TamperDetected), never silently skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Select, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from node.accesslog import Head, Rebuild
from node.errors import InputError, TamperDetected
from node.store.bulk import insert_rows
from node.store.driver import DriverStatement
from node.store.errors import StoreConflictError
from node.store.store import Store, to_db_time
from node.store.tables import (
    AccessLogRow,
    CheckpointRow,
    LogStateRow,
    WitnessRow,
    binary_value,
)

__all__ = ["SqlLogBackend"]

_T = TypeVar("_T")


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


LOG = _table(AccessLogRow)
STATE = _table(LogStateRow)
CHECKPOINTS = _table(CheckpointRow)
WITNESS = _table(WitnessRow)

# Built once: appends run for every access, and building these statements each time cost
# more than executing them.
_SIZE_FOR_UPDATE = select(STATE.c.size).where(STATE.c.id == 1).with_for_update()
_HEAD = select(STATE.c.state, STATE.c.size).where(STATE.c.id == 1)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_SET_STATE = (
    update(STATE)
    .where(STATE.c.id == 1)
    .values(size=bindparam("new_size"), state=bindparam("new_state"), updated_at=bindparam("stamp"))
)
# Run on the driver cursor (node.store.driver): it runs once per group commit of the log.
# RETURNING tells whether the row moved (psycopg's rowcount is not to be relied on either).
_ADVANCE = DriverStatement(
    update(STATE)
    .where(STATE.c.id == bindparam("row"), STATE.c.size == bindparam("expected"))
    .values(size=bindparam("new_size"), state=bindparam("new_state"), updated_at=bindparam("stamp"))
    .returning(STATE.c.size)
)


_LEAF_COLUMNS = ("idx", "leaf", "leaf_hash", "created_at")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SqlLogBackend:
    """`ClaimingLogBackend` and `JoiningLogBackend` on the node's store (SQLite or
    PostgreSQL): request nonces go to the store's nonce table, in the transaction of the leaves
    (`append_claiming`), and so do the store writes of an operation logged with
    `append_with`."""

    def __init__(self, store: Store, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._store = store
        self._clock = clock

    def size(self) -> int:
        """Return the number of leaves stored."""
        with self._store.read("read the access log size") as conn:
            return int(conn.execute(select(STATE.c.size).where(STATE.c.id == 1)).scalar_one())

    def head(self) -> Head:
        """Return `(state, size, hash of the last leaf)` from one read transaction."""
        with self._store.read("read the access log head") as conn:
            return _head(conn, _HEAD)

    def append(
        self,
        entries: Sequence[tuple[bytes, bytes]],
        state: bytes,
        *,
        expected_size: int | None = None,
        rebuild: Rebuild | None = None,
    ) -> int:
        """Store `(leaf, leaf_hash)` pairs after the last leaf with the new tree `state`,
        atomically; return the index of the first one.

        `expected_size` is the size the caller computed `state` from. When another writer
        appended in between: with `rebuild`, the head is read under the row lock and what
        `rebuild(head)` returns is stored in the same transaction; without it, nothing is
        written and StoreConflictError is raised so the caller can reload the state and retry.
        An empty batch writes nothing.
        """
        stamp = to_db_time(self._clock())
        with self._store.write("append to the access log") as conn:
            return _append_in(conn, entries, state, expected_size, stamp, rebuild=rebuild)

    def append_claiming(
        self,
        nonces: Sequence[tuple[str, str, dt.datetime]],
        *,
        now: dt.datetime,
        build: Callable[[list[bool]], tuple[Sequence[tuple[bytes, bytes]], bytes, int]],
        rebuild: Rebuild | None = None,
    ) -> int:
        """Record request nonces and append leaves in ONE transaction; return the first index.

        `nonces` are `(keyid, nonce, expires_at)` judged at `now` (`Store.remember_nonces`);
        `build(fresh)` gets their freshness, in order, and returns `(entries, state,
        expected_size)` as for `append`, and `rebuild` too. Either the nonces and the leaves
        are all committed or none is.
        """
        stamp = to_db_time(self._clock())
        with self._store.write("append to the access log") as conn:
            fresh = self._store.remember_nonces_in(conn, nonces, now=now)
            entries, state, expected_size = build(fresh)
            return _append_in(conn, entries, state, expected_size, stamp, rebuild=rebuild)

    def append_with(
        self,
        work: Callable[[], _T],
        *,
        build: Callable[[], tuple[Sequence[tuple[bytes, bytes]], bytes, int]],
        rebuild: Rebuild | None = None,
        what: str = "append to the access log",
    ) -> tuple[int, _T]:
        """Run `work` and append the leaves `build()` returns, in ONE transaction; return the
        index of the first leaf and what `work` returned.

        `work` makes its calls on this backend's store: they join the transaction
        (Store.joined), so what they write commits only with the leaves, and nothing of it
        when `work`, `build` or the append raises. `build` runs after `work` and returns
        `(entries, state, expected_size)` as for `append`; `rebuild` as for `append`. `what`
        names the operation in errors.
        """
        stamp = to_db_time(self._clock())
        with self._store.write(what) as conn:
            with self._store.joined(conn):
                result = work()
            entries, state, expected_size = build()
            first = _append_in(conn, entries, state, expected_size, stamp, rebuild=rebuild)
        return first, result

    def leaves(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """Return `(index, leaf, leaf_hash)` for `start <= index < end`, in index order.

        Refuses a negative or inverted range (InputError); a gap in the stored leaves raises
        TamperDetected.
        """
        _check_range(start, end)
        with self._store.read("read access log leaves") as conn:
            size = _size(conn)
            rows = conn.execute(
                select(LOG.c.idx, LOG.c.leaf, LOG.c.leaf_hash)
                .where(LOG.c.idx >= start, LOG.c.idx < end)
                .order_by(LOG.c.idx)
            ).all()
        result = [(int(r.idx), binary_value(r.leaf), binary_value(r.leaf_hash)) for r in rows]
        _check_gap_free([i for i, _, _ in result], start, min(end, size))
        return result

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Return the stored leaf hashes for `start <= index < end`, in index order."""
        _check_range(start, end)
        with self._store.read("read access log leaf hashes") as conn:
            size = _size(conn)
            rows = conn.execute(
                select(LOG.c.idx, LOG.c.leaf_hash)
                .where(LOG.c.idx >= start, LOG.c.idx < end)
                .order_by(LOG.c.idx)
            ).all()
        _check_gap_free([int(r.idx) for r in rows], start, min(end, size))
        return [binary_value(r.leaf_hash) for r in rows]

    def first_index_from(self, start: int) -> int | None:
        """Return the smallest index of a stored leaf at or after `start`, None when there is
        none, whatever the committed size says (a row inserted beyond it shows here)."""
        with self._store.read("read access log indexes") as conn:
            value = conn.execute(select(func.min(LOG.c.idx)).where(LOG.c.idx >= start)).scalar()
        return None if value is None else int(value)

    def state(self) -> bytes | None:
        """Return the serialised CompactRange saved by the last append (None when empty)."""
        with self._store.read("read the access log state") as conn:
            value = conn.execute(select(STATE.c.state).where(STATE.c.id == 1)).scalar()
        return None if value is None else binary_value(value)

    def save_checkpoint(self, size: int, note: str) -> None:
        """Store a signed checkpoint note for tree size `size`.

        Saving the same note again is a no-op; a different note for a size that already has
        one is refused (StoreConflictError): two different checkpoints of one size mean two roots.
        """
        stamp = to_db_time(self._clock())
        with self._store.write("save a checkpoint") as conn:
            existing = conn.execute(
                select(CHECKPOINTS.c.note).where(CHECKPOINTS.c.size == size)
            ).scalar()
            if existing is not None:
                if existing != note:
                    raise StoreConflictError(
                        f"store: a different checkpoint for size {size} is already stored"
                    )
                return
            conn.execute(insert(CHECKPOINTS).values(size=size, note=note, created_at=stamp))

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """Return `(size, note)` of the checkpoint with the largest size, or None."""
        with self._store.read("read the latest checkpoint") as conn:
            row = conn.execute(
                select(CHECKPOINTS.c.size, CHECKPOINTS.c.note)
                .order_by(CHECKPOINTS.c.size.desc())
                .limit(1)
            ).first()
        return None if row is None else (int(row.size), str(row.note))

    def checkpoints(self) -> list[tuple[int, str]]:
        """Return every stored `(size, note)`, by increasing size."""
        with self._store.read("read checkpoints") as conn:
            rows = conn.execute(
                select(CHECKPOINTS.c.size, CHECKPOINTS.c.note).order_by(CHECKPOINTS.c.size)
            ).all()
        return [(int(r.size), str(r.note)) for r in rows]

    def save_witness(self, size: int, witness: str, note: str) -> None:
        """Store (or replace) the cosigned note `note` that `witness` returned for `size`."""
        stamp = to_db_time(self._clock())
        with self._store.write("save a witness cosignature") as conn:
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            statement = dialect.insert(WITNESS).values(
                size=size, witness=witness, note=note, created_at=stamp
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["size", "witness"], set_={"note": note, "created_at": stamp}
                )
            )

    def witnesses(self) -> list[tuple[int, str, str]]:
        """Return every stored `(size, witness, note)`, by increasing size then witness."""
        with self._store.read("read witness cosignatures") as conn:
            rows = conn.execute(
                select(WITNESS.c.size, WITNESS.c.witness, WITNESS.c.note).order_by(
                    WITNESS.c.size, WITNESS.c.witness
                )
            ).all()
        return [(int(r.size), str(r.witness), str(r.note)) for r in rows]


def _head(conn: Connection, statement: Select[Any]) -> Head:
    """The log's head read with `statement` (plain, or locking the state row) in `conn`."""
    row = conn.execute(statement).one()
    size = int(row.size)
    last = (
        conn.execute(select(LOG.c.leaf_hash).where(LOG.c.idx == size - 1)).scalar()
        if size
        else None
    )
    return (
        None if row.state is None else binary_value(row.state),
        size,
        None if last is None else binary_value(last),
    )


def _append_in(
    conn: Connection,
    entries: Sequence[tuple[bytes, bytes]],
    state: bytes,
    expected_size: int | None,
    stamp: dt.datetime,
    *,
    rebuild: Rebuild | None = None,
) -> int:
    """SqlLogBackend.append inside the write transaction `conn`."""
    if expected_size is not None and entries:
        # The usual case, in one statement fewer: move the size on only if it is still the
        # one the caller's state was computed from. The UPDATE locks the row like SELECT ...
        # FOR UPDATE would, so a concurrent writer waits, then matches nothing.
        size = expected_size
        moved = _ADVANCE.execute(
            conn,
            {
                "row": 1,
                "expected": size,
                "new_size": size + len(entries),
                "new_state": state,
                "stamp": stamp,
            },
        )
        if len(moved) == 1:
            _insert_leaves(conn, entries, size, stamp)
            return size
        if rebuild is None:
            _conflict(expected_size, _size(conn))
        return _append_rebuilt(conn, rebuild, stamp)
    size = int(conn.execute(_SIZE_FOR_UPDATE).scalar_one())
    if expected_size is not None and expected_size != size:
        if rebuild is None:
            _conflict(expected_size, size)
        return _append_rebuilt(conn, rebuild, stamp)
    if not entries:
        return size
    _insert_leaves(conn, entries, size, stamp)
    conn.execute(_SET_STATE, {"new_size": size + len(entries), "new_state": state, "stamp": stamp})
    return size


def _append_rebuilt(conn: Connection, rebuild: Rebuild, stamp: dt.datetime) -> int:
    """Another writer appended since the caller read the head: read it again, holding the row
    lock (SQLite's BEGIN IMMEDIATE already excludes other writers), and store what `rebuild`
    chains onto it, in the same transaction."""
    head = _head(conn, _HEAD_FOR_UPDATE)
    entries, state = rebuild(head)
    size = head[1]
    if entries:
        _insert_leaves(conn, entries, size, stamp)
        conn.execute(
            _SET_STATE, {"new_size": size + len(entries), "new_state": state, "stamp": stamp}
        )
    return size


def _size(conn: Connection) -> int:
    return int(conn.execute(select(STATE.c.size).where(STATE.c.id == 1)).scalar_one())


def _conflict(expected: int, size: int) -> NoReturn:
    raise StoreConflictError(
        f"store: the access log grew from {expected} to {size} leaves "
        "meanwhile (another writer); reload its state and retry"
    )


def _insert_leaves(
    conn: Connection, entries: Sequence[tuple[bytes, bytes]], size: int, stamp: dt.datetime
) -> None:
    """Insert `(leaf, leaf_hash)` pairs at indexes `size, size + 1, ...`, stamped `stamp`."""
    insert_rows(
        conn,
        LOG,
        _LEAF_COLUMNS,
        [(size + i, leaf, digest, stamp) for i, (leaf, digest) in enumerate(entries)],
    )


def _check_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise InputError(f"access log: bad range [{start}, {end})")


def _check_gap_free(indexes: list[int], start: int, end: int) -> None:
    expected = max(0, end - start)
    if len(indexes) != expected or (indexes and indexes[0] != start):
        raise TamperDetected(
            f"access log: leaves missing in [{start}, {end}) (found {len(indexes)} of "
            f"{expected}); the stored log was altered"
        )
