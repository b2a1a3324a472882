"""Store operations of the record lifecycle: objections, tasks, withdrawals, purges, pushes.

Each function is one transaction on a `Store`, like the Store methods it complements (it lives
beside store.py so that only node/store imports SQLAlchemy). Record state changes and the feed
events they cause commit together with the task or objection row that explains them, so a crash
never leaves a withdrawn record without its reason or an objection flag without its clock.
Stored windows recomputed after an upgrade commit with the progress of their pass, so a pass
killed half-way resumes after the last batch it committed (docs/decisions/0014).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from node.errors import InputError, NotFound
from node.lifecycle import CST, SHANDONG_CAP_MONTHS, StoredWindow, TaskView, purge_cutoff
from node.store.models import StoredRecord
from node.store.store import (
    EVENTS,
    RECORDS,
    SUBS,
    Store,
    _append_events,
    _not_excluded,
    _retag,
    _table,
    from_db_time,
    to_db_time,
)
from node.store.tables import (
    LifecycleTaskRow,
    MaintenanceRow,
    ObjectionRow,
    PushRow,
    binary_value,
)

__all__ = [
    "WINDOWS_TASK",
    "MaintenanceState",
    "ObjectionInfo",
    "PushInfo",
    "PushState",
    "TaskInfo",
    "active_local_versions",
    "close_objection",
    "close_task",
    "current_record",
    "finish_maintenance",
    "get_objection",
    "list_objections",
    "list_pushes",
    "list_tasks",
    "local_active_records",
    "maintenance_state",
    "open_objection",
    "open_task",
    "push_receipt",
    "push_states",
    "pushed_keys_untold",
    "record_push",
    "records_due_for_purge",
    "records_past_cap",
    "records_withheld_without_window",
    "store_windows",
    "withdraw_events",
    "withdraw_record",
]

OBJECTIONS = _table(ObjectionRow)
TASKS = _table(LifecycleTaskRow)
PUSHES = _table(PushRow)
MAINTENANCE = _table(MaintenanceRow)
# The maintenance task that recomputes stored disclosure windows (node.window_refresh).
WINDOWS_TASK = "disclosure_windows"


@dataclass(frozen=True)
class ObjectionInfo:
    """An objection and its review clock."""

    objection_id: str
    record_row_id: str
    record_key: str
    reason: str
    opened_at: dt.datetime
    due_on: dt.date
    closed_at: dt.datetime | None
    outcome: str | None


# A lifecycle task is the rules' own view of it (node.lifecycle.TaskView).
TaskInfo = TaskView


@dataclass(frozen=True)
class PushInfo:
    """A joint-punishment push and its receipt, when one came back."""

    push_id: str
    to_node: str
    record_key: str
    sent_at: dt.datetime
    receipt: bytes | None
    receipt_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PushState:
    """What deciding a send needs of a push: who, which record, and whether it is receipted
    (the receipt itself is not read)."""

    push_id: str
    record_key: str
    to_node: str
    acknowledged: bool


def _opt(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else from_db_time(value)


def _objection(row: Row[Any]) -> ObjectionInfo:
    return ObjectionInfo(
        objection_id=row.objection_id,
        record_row_id=row.record_row_id,
        record_key=row.record_key,
        reason=row.reason,
        opened_at=from_db_time(row.opened_at),
        due_on=row.due_on,
        closed_at=_opt(row.closed_at),
        outcome=row.outcome,
    )


def _task(row: Row[Any]) -> TaskInfo:
    return TaskInfo(
        task_id=row.task_id,
        kind=row.kind,
        record_key=row.record_key,
        opened_at=from_db_time(row.opened_at),
        due_on=row.due_on,
        approximate_due=bool(row.approximate_due),
        closed_at=_opt(row.closed_at),
        outcome=row.outcome,
    )


def _insert_task(
    conn: Connection,
    *,
    task_id: str,
    kind: str,
    record_key: str,
    opened_at: dt.datetime,
    due_on: dt.date,
    approximate: bool,
    closed_at: dt.datetime | None = None,
    outcome: str | None = None,
) -> None:
    if conn.execute(select(TASKS.c.task_id).where(TASKS.c.task_id == task_id)).first():
        raise InputError(f"lifecycle: task {task_id!r} already exists")
    conn.execute(
        insert(TASKS).values(
            task_id=task_id,
            kind=kind,
            record_key=record_key,
            opened_at=to_db_time(opened_at),
            due_on=due_on,
            approximate_due=approximate,
            closed_at=None if closed_at is None else to_db_time(closed_at),
            outcome=outcome,
        )
    )


_HELD = frozenset({"active", "expired"})


def _require_active(
    conn: Connection, row_id: str, verb: str, *, allowed: frozenset[str] = frozenset({"active"})
) -> None:
    """Inside a write transaction: the record must still exist and be in one of the `allowed`
    states (active by default) to be `verb`. The row stays locked (PostgreSQL): a writer that
    moved it meanwhile (the scan expiring or purging it) is waited for and its state seen,
    never overwritten by the caller's update."""
    state = conn.execute(
        select(RECORDS.c.state).where(RECORDS.c.row_id == row_id).with_for_update()
    ).scalar()
    if state is None:
        raise NotFound("lifecycle: the record no longer exists")
    if state not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise InputError(f"lifecycle: the record is {state}; only an {wanted} one is {verb}")


def current_record(store: Store, producer: str, record_key: str) -> StoredRecord:
    """The newest version of a record of `producer` (any state); NotFound if never stored."""
    with store.read("find a record by key") as conn:
        row = conn.execute(
            select(RECORDS)
            .where(RECORDS.c.producer == producer, RECORDS.c.record_key == record_key)
            .order_by(RECORDS.c.version.desc())
            .limit(1)
        ).first()
    if row is None:
        raise NotFound(f"no record with key {record_key[:12]}... from {producer!r}")
    return store.record(row)


def open_objection(
    store: Store,
    *,
    objection_id: str,
    record: StoredRecord,
    reason: str,
    opened_at: dt.datetime,
    due_on: dt.date,
    approximate: bool,
) -> int:
    """Record an objection, its review task and the record's flag with `objection_set` events,
    in one transaction. Returns the number of events. Refuses (InputError) a second open
    objection on the same record and a reused objection id; the record must still be held
    (active, or expired: PIPL Art. 46 covers what a unit holds, not only what it shows)."""
    tagger = store.require_tagger()
    stamp = to_db_time(opened_at)
    with store.write("open an objection") as conn:
        _require_active(conn, record.row_id, "objected", allowed=_HELD)
        if conn.execute(
            select(OBJECTIONS.c.objection_id).where(OBJECTIONS.c.objection_id == objection_id)
        ).first():
            raise InputError(f"lifecycle: objection {objection_id!r} already exists")
        pending = conn.execute(
            select(OBJECTIONS.c.objection_id).where(
                OBJECTIONS.c.record_key == record.record_key, OBJECTIONS.c.closed_at.is_(None)
            )
        ).first()
        if pending is not None:
            raise InputError(
                f"lifecycle: objection {pending.objection_id!r} on this record is still open"
            )
        conn.execute(
            insert(OBJECTIONS).values(
                objection_id=objection_id,
                record_row_id=record.row_id,
                record_key=record.record_key,
                reason=reason,
                opened_at=stamp,
                due_on=due_on,
                closed_at=None,
                outcome=None,
            )
        )
        _insert_task(
            conn,
            task_id=objection_id,
            kind="objection",
            record_key=record.record_key,
            opened_at=opened_at,
            due_on=due_on,
            approximate=approximate,
        )
        _retag(conn, tagger, RECORDS.c.row_id == record.row_id, {"objection": True})
        return _append_events(
            conn,
            [
                (
                    record.origin,
                    record.item_id,
                    "objection_set",
                    record.row_id,
                    record.record_key,
                    record.version,
                )
            ],
            stamp,
        )


def get_objection(store: Store, objection_id: str) -> ObjectionInfo:
    """One objection by id; NotFound otherwise."""
    with store.read("read an objection") as conn:
        row = conn.execute(
            select(OBJECTIONS).where(OBJECTIONS.c.objection_id == objection_id)
        ).first()
    if row is None:
        raise NotFound(f"no objection {objection_id!r}")
    return _objection(row)


def close_objection(
    store: Store, objection_id: str, *, outcome: str, now: dt.datetime, clear_flag: bool
) -> int:
    """Close an open objection and its task; with `clear_flag`, clear the flag on the record
    version it was raised against (`objection_cleared` events). Returns the event count.
    Refuses (InputError) an objection already closed."""
    tagger = store.require_tagger()
    stamp = to_db_time(now)
    with store.write("close an objection") as conn:
        row = conn.execute(
            select(OBJECTIONS).where(OBJECTIONS.c.objection_id == objection_id)
        ).first()
        if row is None:
            raise NotFound(f"no objection {objection_id!r}")
        if row.closed_at is not None:
            raise InputError(f"lifecycle: objection {objection_id!r} is already closed")
        conn.execute(
            update(OBJECTIONS)
            .where(OBJECTIONS.c.objection_id == objection_id)
            .values(closed_at=stamp, outcome=outcome)
        )
        conn.execute(
            update(TASKS)
            .where(TASKS.c.task_id == objection_id, TASKS.c.closed_at.is_(None))
            .values(closed_at=stamp, outcome=outcome)
        )
        if not clear_flag:
            return 0
        rec = conn.execute(
            select(
                RECORDS.c.origin,
                RECORDS.c.item_id,
                RECORDS.c.record_key,
                RECORDS.c.version,
                RECORDS.c.objection,
            ).where(RECORDS.c.row_id == row.record_row_id)
        ).first()
        if rec is None or not rec.objection:
            return 0
        _retag(conn, tagger, RECORDS.c.row_id == row.record_row_id, {"objection": False})
        return _append_events(
            conn,
            [
                (
                    rec.origin,
                    rec.item_id,
                    "objection_cleared",
                    row.record_row_id,
                    rec.record_key,
                    rec.version,
                )
            ],
            stamp,
        )


def list_objections(store: Store, *, open_only: bool = False) -> list[ObjectionInfo]:
    """Objections by opening time (only the open ones with `open_only`)."""
    query = select(OBJECTIONS)
    if open_only:
        query = query.where(OBJECTIONS.c.closed_at.is_(None))
    with store.read("list objections") as conn:
        rows = conn.execute(query.order_by(OBJECTIONS.c.opened_at)).all()
    return [_objection(r) for r in rows]


def open_task(
    store: Store,
    *,
    task_id: str,
    kind: str,
    record_key: str,
    opened_at: dt.datetime,
    due_on: dt.date,
    approximate: bool,
) -> None:
    """Record an open lifecycle task; refuses a reused id (InputError)."""
    with store.write("open a lifecycle task") as conn:
        _insert_task(
            conn,
            task_id=task_id,
            kind=kind,
            record_key=record_key,
            opened_at=opened_at,
            due_on=due_on,
            approximate=approximate,
        )


def close_task(store: Store, task_id: str, *, outcome: str, now: dt.datetime) -> bool:
    """Close an open task; returns False when it was already closed. NotFound if unknown."""
    with store.write("close a lifecycle task") as conn:
        row = conn.execute(select(TASKS.c.closed_at).where(TASKS.c.task_id == task_id)).first()
        if row is None:
            raise NotFound(f"no lifecycle task {task_id!r}")
        if row.closed_at is not None:
            return False
        conn.execute(
            update(TASKS)
            .where(TASKS.c.task_id == task_id)
            .values(closed_at=to_db_time(now), outcome=outcome)
        )
        return True


def list_tasks(
    store: Store, *, open_only: bool = False, record_key: str | None = None
) -> list[TaskInfo]:
    """Lifecycle tasks by due day (only open ones with `open_only`, one record's with
    `record_key`)."""
    query = select(TASKS)
    if open_only:
        query = query.where(TASKS.c.closed_at.is_(None))
    if record_key is not None:
        query = query.where(TASKS.c.record_key == record_key)
    with store.read("list lifecycle tasks") as conn:
        rows = conn.execute(query.order_by(TASKS.c.due_on, TASKS.c.task_id)).all()
    return [_task(r) for r in rows]


def withdraw_record(
    store: Store,
    record: StoredRecord,
    *,
    task_id: str,
    kind: str,
    now: dt.datetime,
    due_on: dt.date,
    approximate: bool,
    outcome: str,
    close: bool,
    states: frozenset[str] = frozenset({"active"}),
) -> int:
    """Withdraw a record version in one of `states` (active by default; a revocation also
    takes an expired one) to state `withdrawn`, with `withdraw` events to every subscriber
    covering its item, and record the task that explains it, in one transaction.

    `kind` is "repair" or "revocation"; `close` closes the task at once (a repair is done when
    withdrawn; a revocation stays open until the platform acknowledges). Refuses (InputError) a
    record no longer in one of `states`. Returns the number of events.
    """
    tagger = store.require_tagger()
    stamp = to_db_time(now)
    with store.write("withdraw a record") as conn:
        _require_active(conn, record.row_id, "withdrawn", allowed=states)
        _insert_task(
            conn,
            task_id=task_id,
            kind=kind,
            record_key=record.record_key,
            opened_at=now,
            due_on=due_on,
            approximate=approximate,
            closed_at=now if close else None,
            outcome=outcome if close else None,
        )
        _retag(conn, tagger, RECORDS.c.row_id == record.row_id, {"state": "withdrawn"})
        return _append_events(
            conn,
            [
                (
                    record.origin,
                    record.item_id,
                    "withdraw",
                    record.row_id,
                    record.record_key,
                    record.version,
                )
            ],
            stamp,
        )


def withdraw_events(
    store: Store, row_id: str
) -> tuple[list[tuple[str, int, dt.datetime]], dict[str, tuple[int, dt.datetime | None]]]:
    """The withdraw events sent for a record version (subscriber, seq, sent at) and every
    subscriber's acknowledged cursor (subscriber -> (acked seq, acked at))."""
    with store.read("read withdraw propagation") as conn:
        events = conn.execute(
            select(EVENTS.c.subscriber, EVENTS.c.seq, EVENTS.c.created_at)
            .where(EVENTS.c.record_row_id == row_id, EVENTS.c.kind == "withdraw")
            .order_by(EVENTS.c.subscriber, EVENTS.c.seq)
        ).all()
        subs = conn.execute(select(SUBS.c.subscriber, SUBS.c.acked_seq, SUBS.c.acked_at)).all()
    return (
        [(e.subscriber, int(e.seq), from_db_time(e.created_at)) for e in events],
        {s.subscriber: (int(s.acked_seq), _opt(s.acked_at)) for s in subs},
    )


def records_due_for_purge(
    store: Store,
    cutoff: dt.date,
    *,
    limit: int = 1000,
    exclude: Collection[str] = (),
) -> list[StoredRecord]:
    """Expired, withdrawn or superseded versions whose disclosure ended before `cutoff`, of
    records with no active version left (history of a live record is kept).

    When did disclosure end? The stored `disclosure_max_end` when there is one. A version
    stored without an end date (legacy rows: before every dishonesty record carried a period,
    or a record with no period at all) ended the day it left `active`:
    - the day of its earliest `expire` or `withdraw` feed event (written in the transaction
      that changed the state), else
    - for a withdrawn version, the day its repair or revocation task was opened (written in
      the same transaction as the withdrawal, and kept even when nobody subscribes), else
    - for a dishonesty record (one with a severity), decided_on + the Shandong 5-year cap:
      the latest day it could lawfully have been disclosed, so retention never starts early;
    - a superseded version with no end follows its record: it is due once a newer version of
      the same record has been purged.
    A version with no end and none of these facts (no severity, no event, no task) is kept;
    docs/lifecycle.md ("Retention and purge") explains the choice.
    """
    newer = RECORDS.alias("newer")
    live = exists().where(
        and_(
            newer.c.producer == RECORDS.c.producer,
            newer.c.record_key == RECORDS.c.record_key,
            newer.c.state == "active",
        )
    )
    newer_purged = exists().where(
        and_(
            newer.c.producer == RECORDS.c.producer,
            newer.c.record_key == RECORDS.c.record_key,
            newer.c.version > RECORDS.c.version,
            newer.c.state == "purged",
        )
    )
    # left_day < cutoff  <=>  the moment it left active is before 00:00 CST of the cutoff day
    before = to_db_time(dt.datetime.combine(cutoff, dt.time(), tzinfo=CST))
    left_by_event = (
        select(func.min(EVENTS.c.created_at))
        .where(
            EVENTS.c.record_row_id == RECORDS.c.row_id,
            EVENTS.c.kind.in_(["expire", "withdraw"]),
        )
        .scalar_subquery()
    )
    left_by_task = (
        select(func.min(TASKS.c.opened_at))
        .where(
            TASKS.c.record_key == RECORDS.c.record_key,
            TASKS.c.kind.in_(["repair", "revocation"]),
            TASKS.c.opened_at >= RECORDS.c.created_at,
        )
        .scalar_subquery()
    )
    # decided_on + cap < cutoff  <=>  decided_on < the cutoff stepped back by the cap
    cap_before = purge_cutoff(cutoff, SHANDONG_CAP_MONTHS)
    no_end_due = or_(
        and_(left_by_event.is_not(None), left_by_event < before),
        and_(
            left_by_event.is_(None),
            RECORDS.c.state == "withdrawn",
            left_by_task.is_not(None),
            left_by_task < before,
        ),
        and_(
            left_by_event.is_(None),
            or_(RECORDS.c.state == "expired", left_by_task.is_(None)),
            RECORDS.c.severity.is_not(None),
            RECORDS.c.decided_on < cap_before,
        ),
    )
    with store.read("find records due for purge") as conn:
        rows = conn.execute(
            select(RECORDS)
            .where(
                _not_excluded(exclude),
                ~live,
                or_(
                    and_(
                        RECORDS.c.state.in_(["expired", "withdrawn", "superseded"]),
                        RECORDS.c.disclosure_max_end < cutoff,
                    ),
                    and_(
                        RECORDS.c.state.in_(["expired", "withdrawn"]),
                        RECORDS.c.disclosure_max_end.is_(None),
                        no_end_due,
                    ),
                    and_(
                        RECORDS.c.state == "superseded",
                        RECORDS.c.disclosure_max_end.is_(None),
                        newer_purged,
                    ),
                ),
            )
            .order_by(RECORDS.c.disclosure_max_end, RECORDS.c.row_id)
            .limit(limit)
        ).all()
    return [store.record(r) for r in rows]


def records_withheld_without_window(
    store: Store,
    decided_from: dt.date,
    *,
    limit: int = 1000,
    exclude: Collection[str] = (),
) -> list[StoredRecord]:
    """Active minor (轻微) records decided on or after `decided_from` (the day 令第36号 took
    effect) and stored with no end date: rows written before withheld records got their
    explicit empty window (docs/decisions/0013). They were never to be disclosed, so the scan
    expires them; every reader already treats them as withheld."""
    with store.read("find withheld records stored without a window") as conn:
        rows = conn.execute(
            select(RECORDS)
            .where(
                _not_excluded(exclude),
                RECORDS.c.state == "active",
                RECORDS.c.severity == "minor",
                RECORDS.c.disclosure_max_end.is_(None),
                RECORDS.c.decided_on >= decided_from,
            )
            .order_by(RECORDS.c.decided_on, RECORDS.c.row_id)
            .limit(limit)
        ).all()
    return [store.record(r) for r in rows]


def local_active_records(
    store: Store, producer: str, item_ids: Sequence[str], *, limit: int = 1000
) -> list[StoredRecord]:
    """Active current versions of `producer`'s own records of the given items (oldest first)."""
    if not item_ids:
        return []
    with store.read("find active records of items") as conn:
        rows = conn.execute(
            select(RECORDS)
            .where(
                RECORDS.c.producer == producer,
                RECORDS.c.origin == "local",
                RECORDS.c.state == "active",
                RECORDS.c.item_id.in_(list(item_ids)),
            )
            .order_by(RECORDS.c.created_at, RECORDS.c.row_id)
            .limit(limit)
        ).all()
    return [store.record(r) for r in rows]


def records_past_cap(
    store: Store,
    decided_before: dt.date,
    *,
    limit: int = 1000,
    exclude: Collection[str] = (),
) -> list[StoredRecord]:
    """Active dishonesty records (with a severity) decided before `decided_before`: those past
    the Shandong 5-year cap when the caller passes today minus five years."""
    with store.read("find records past the five-year cap") as conn:
        rows = conn.execute(
            select(RECORDS)
            .where(
                _not_excluded(exclude),
                RECORDS.c.state == "active",
                RECORDS.c.severity.is_not(None),
                RECORDS.c.decided_on < decided_before,
            )
            .order_by(RECORDS.c.decided_on, RECORDS.c.row_id)
            .limit(limit)
        ).all()
    return [store.record(r) for r in rows]


def record_push(
    store: Store, *, push_id: str, to_node: str, record_key: str, sent_at: dt.datetime
) -> bool:
    """Record a push about to be sent; returns False when (push id) was already recorded
    (a retry of the same notice)."""
    with store.write("record a push") as conn:
        if conn.execute(select(PUSHES.c.push_id).where(PUSHES.c.push_id == push_id)).first():
            return False
        conn.execute(
            insert(PUSHES).values(
                push_id=push_id,
                to_node=to_node,
                record_key=record_key,
                sent_at=to_db_time(sent_at),
                receipt=None,
                receipt_at=None,
            )
        )
        return True


def push_receipt(store: Store, push_id: str, receipt: bytes, *, at: dt.datetime) -> None:
    """Store the signed receipt of a push (the first one wins; a repeat changes nothing)."""
    with store.write("store a push receipt") as conn:
        row = conn.execute(select(PUSHES.c.receipt).where(PUSHES.c.push_id == push_id)).first()
        if row is None:
            raise NotFound(f"no push {push_id!r}")
        if row.receipt is not None:
            return
        conn.execute(
            update(PUSHES)
            .where(PUSHES.c.push_id == push_id)
            .values(receipt=receipt, receipt_at=to_db_time(at))
        )


def list_pushes(store: Store, *, record_key: str | None = None) -> list[PushInfo]:
    """Pushes by sending time (one record's with `record_key`)."""
    query = select(PUSHES)
    if record_key is not None:
        query = query.where(PUSHES.c.record_key == record_key)
    with store.read("list pushes") as conn:
        rows = conn.execute(query.order_by(PUSHES.c.sent_at, PUSHES.c.push_id)).all()
    return [
        PushInfo(
            push_id=r.push_id,
            to_node=r.to_node,
            record_key=r.record_key,
            sent_at=from_db_time(r.sent_at),
            receipt=None if r.receipt is None else binary_value(r.receipt),
            receipt_at=_opt(r.receipt_at),
        )
        for r in rows
    ]


def push_states(store: Store, *, record_key: str | None = None) -> list[PushState]:
    """Every push (one record's with `record_key`), by push id, without its receipt or times:
    the withdrawal pass reads them all every few seconds."""
    query = select(
        PUSHES.c.push_id,
        PUSHES.c.record_key,
        PUSHES.c.to_node,
        PUSHES.c.receipt.is_not(None).label("acknowledged"),
    )
    if record_key is not None:
        query = query.where(PUSHES.c.record_key == record_key)
    with store.read("list push states") as conn:
        rows = conn.execute(query.order_by(PUSHES.c.push_id)).all()
    return [PushState(r[0], r[1], r[2], bool(r[3])) for r in rows]


def pushed_keys_untold(
    store: Store, producer: str, *, notice_prefix: str, states: Sequence[str]
) -> list[str]:
    """Keys (sorted) of `producer`'s records that have a version in one of `states` and none
    active, and were pushed to a node (a push whose id does not start with `notice_prefix`)
    that has no receipted notice about them (a push whose id does) sent since the record's
    last repair or revocation (a record revoked after it expired is due its withdrawal).

    Decided in the database, so a pass over a long history reads one row per such record, not
    every push and every pushed record's head: a thread reading row after row stalls the event
    loop beside it (decision 0004, bulk writes).
    """
    notice = PUSHES.alias("notice")
    # An expired record whose decision is revoked later is withdrawn then (Shandong Art. 40):
    # the expire notice its receivers acknowledged before does not tell them of that.
    withdrawn_since = exists().where(
        TASKS.c.record_key == PUSHES.c.record_key,
        TASKS.c.kind.in_(["repair", "revocation"]),
        TASKS.c.opened_at > notice.c.sent_at,
    )
    told = exists().where(
        notice.c.record_key == PUSHES.c.record_key,
        notice.c.to_node == PUSHES.c.to_node,
        notice.c.push_id.startswith(notice_prefix, autoescape=True),
        notice.c.receipt.is_not(None),
        ~withdrawn_since,
    )
    left = exists().where(
        RECORDS.c.producer == producer,
        RECORDS.c.record_key == PUSHES.c.record_key,
        RECORDS.c.state.in_(list(states)),
    )
    live = exists().where(
        RECORDS.c.producer == producer,
        RECORDS.c.record_key == PUSHES.c.record_key,
        RECORDS.c.state == "active",
    )
    query = (
        select(PUSHES.c.record_key)
        .where(~PUSHES.c.push_id.startswith(notice_prefix, autoescape=True), ~told, left, ~live)
        .distinct()
        .order_by(PUSHES.c.record_key)
    )
    with store.read("find pushed records with an untold receiver") as conn:
        return [str(k) for k in conn.execute(query).scalars()]


# ------------------------------------------------- maintenance: stored windows


@dataclass(frozen=True)
class MaintenanceState:
    """Where a maintenance task stands: the rules it last ran for, the row id an interrupted
    pass resumes after (None: from the start) and when its pass finished (None: not yet)."""

    task: str
    fingerprint: str
    resume_after: str | None
    finished_at: dt.datetime | None


def maintenance_state(store: Store, task: str) -> MaintenanceState | None:
    """The state of a maintenance task; None when it has never run nor been scheduled."""
    with store.read("read a maintenance task") as conn:
        row = conn.execute(select(MAINTENANCE).where(MAINTENANCE.c.task == task)).first()
    if row is None:
        return None
    return MaintenanceState(row.task, row.fingerprint, row.resume_after, _opt(row.finished_at))


def _save_maintenance(
    conn: Connection,
    task: str,
    *,
    fingerprint: str,
    resume_after: str | None,
    finished_at: dt.datetime | None,
    now: dt.datetime,
) -> None:
    values = {
        "fingerprint": fingerprint,
        "resume_after": resume_after,
        "updated_at": to_db_time(now),
        "finished_at": None if finished_at is None else to_db_time(finished_at),
    }
    found = conn.execute(select(MAINTENANCE.c.task).where(MAINTENANCE.c.task == task)).first()
    if found is None:  # a store created by this release has no row until its first pass
        conn.execute(insert(MAINTENANCE).values(task=task, **values))
    else:
        conn.execute(update(MAINTENANCE).where(MAINTENANCE.c.task == task).values(**values))


def active_local_versions(
    store: Store, producer: str, *, after: str | None, limit: int = 500
) -> list[StoredRecord]:
    """Active versions of `producer`'s own records (origin local) with a row id after `after`,
    in row-id order: the stable order a resumable pass over them walks."""
    query = select(RECORDS).where(
        RECORDS.c.producer == producer,
        RECORDS.c.origin == "local",
        RECORDS.c.state == "active",
    )
    if after is not None:
        query = query.where(RECORDS.c.row_id > after)
    with store.read("find active versions for a window pass") as conn:
        rows = conn.execute(query.order_by(RECORDS.c.row_id).limit(limit)).all()
    return [store.record(r) for r in rows]


def store_windows(
    store: Store,
    windows: Sequence[tuple[str, StoredWindow]],
    *,
    fingerprint: str,
    resume_after: str,
    now: dt.datetime,
) -> int:
    """Store recomputed windows (row id, window) and the pass's progress in ONE transaction;
    returns how many versions changed.

    Only a version still `active` is changed: one superseded, withdrawn or expired meanwhile
    keeps the window it left `active` with (its retention counts from it). Never changes a
    state and writes no feed event: the lifecycle scan expires what is over.
    """
    tagger = store.require_tagger()
    changed = 0
    with store.write("store recomputed disclosure windows") as conn:
        for row_id, window in windows:
            changed += _retag(
                conn,
                tagger,
                (RECORDS.c.row_id == row_id) & (RECORDS.c.state == "active"),
                {
                    "severity": window.severity,
                    "disclosure_min_end": window.min_end,
                    "disclosure_max_end": window.max_end,
                    "disclosure_rule": window.rule[:200],
                },
            )
        _save_maintenance(
            conn,
            WINDOWS_TASK,
            fingerprint=fingerprint,
            resume_after=resume_after,
            finished_at=None,
            now=now,
        )
    return changed


def finish_maintenance(store: Store, task: str, *, fingerprint: str, now: dt.datetime) -> None:
    """Mark the pass of `task` for `fingerprint` finished at `now` (the next one starts over)."""
    with store.write("finish a maintenance task") as conn:
        _save_maintenance(
            conn, task, fingerprint=fingerprint, resume_after=None, finished_at=now, now=now
        )
