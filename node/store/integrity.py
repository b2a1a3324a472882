"""Store operations of the record tags (docs/decisions/0018): adoption of the rows an older
release wrote without one, and the check of every row (`credex store verify`).

Beside store.py, like lifecycle.py, so that only node/store imports SQLAlchemy. The decisions
(when to adopt, what to log) are node.record_tags'.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import Text, cast, select, update

from node.store.errors import StateChanged
from node.store.lifecycle import MAINTENANCE
from node.store.store import RECORDS, Store, _table, to_db_time
from node.store.tables import AccessLogRow, binary_value
from node.store.tags import row_intact, row_tag

__all__ = [
    "TAGS_TASK",
    "TagCheck",
    "adopt_untagged",
    "check_record_tags",
    "logged_adoptions",
    "marker_state",
]

# The maintenance row migration 0009 writes: finished_at NULL while adoption is pending.
TAGS_TASK = "record_tags"
_PAGE = 1000
_ACCESS_LOG = _table(AccessLogRow)


@dataclass(frozen=True)
class TagCheck:
    """The result of checking every `records` row against its tag: how many were checked,
    the row ids that fail (`bad`, at most the limit asked for, by row id; `more_bad` when
    there were more), and the adoption marker's state ("adopted", "pending", "missing")."""

    checked: int
    bad: tuple[str, ...]
    more_bad: bool
    marker: str


def marker_state(store: Store) -> str:
    """ "adopted" (untagged rows are tampering), "pending" (an upgraded store not adopted yet)
    or "missing" (the row migration 0009 writes is gone: deleted outside credex)."""
    with store.read("read the record-tag marker") as conn:
        row = conn.execute(
            select(MAINTENANCE.c.finished_at).where(MAINTENANCE.c.task == TAGS_TASK)
        ).first()
    if row is None:
        return "missing"
    return "pending" if row.finished_at is None else "adopted"


def logged_adoptions(store: Store, node_id: str, reason: str) -> list[int]:
    """Indexes of the access-log entries of `node_id` that record an adoption (`reason`).

    Read in the database (a LIKE over the leaves, then each hit decoded and compared field by
    field): it runs only while adoption is pending, and must not read the whole log into
    memory. A leaf edited to hide it breaks the log's own verification (`credex log verify`).
    """
    pattern = f'%"reason":"{reason}"%'
    leaf = _ACCESS_LOG.c.leaf
    # SQLite's LIKE never matches a BLOB, its text does; PostgreSQL has LIKE on bytea
    matches = (
        cast(leaf, Text).like(pattern) if store.dialect == "sqlite" else leaf.like(pattern.encode())
    )
    found = []
    with store.read("search the access log for a record-tag adoption") as conn:
        rows = conn.execute(
            select(_ACCESS_LOG.c.idx, leaf).where(matches).order_by(_ACCESS_LOG.c.idx)
        ).all()
    for idx, leaf in rows:
        try:
            doc = json.loads(binary_value(leaf))
        except ValueError:
            continue
        if (
            isinstance(doc, dict)
            and doc.get("reason") == reason
            and doc.get("kind") == "admin_read"
            and doc.get("requester") == node_id
        ):
            found.append(int(idx))
    return found


def adopt_untagged(store: Store, *, now: dt.datetime) -> int:
    """Tag every `records` row without a tag and mark adoption done, in one transaction (run
    it inside the access-log entry's, `AccessLog.append_with`). Returns how many rows were
    tagged. StateChanged (nothing written) when adoption is no longer pending: another
    process did it, or the marker is gone. Only rows without a tag are touched: a tagged row
    is never re-tagged here, whatever its values."""
    tagger = store.require_tagger()
    adopted = 0
    with store.write("adopt record tags") as conn:
        marker = conn.execute(
            select(MAINTENANCE.c.finished_at)
            .where(MAINTENANCE.c.task == TAGS_TASK)
            .with_for_update()
        ).first()
        if marker is None or marker.finished_at is not None:
            raise StateChanged("store: record-tag adoption is no longer pending")
        after = ""
        while True:
            rows = conn.execute(
                select(RECORDS)
                .where(RECORDS.c.tag.is_(None), RECORDS.c.row_id > after)
                .order_by(RECORDS.c.row_id)
                .limit(_PAGE)
                .with_for_update()
            ).all()
            if not rows:
                break
            for row in rows:
                conn.execute(
                    update(RECORDS)
                    .where(RECORDS.c.row_id == row.row_id)
                    .values(tag=row_tag(tagger, row._mapping))
                )
            adopted += len(rows)
            after = str(rows[-1].row_id)
        stamp = to_db_time(now)
        conn.execute(
            update(MAINTENANCE)
            .where(MAINTENANCE.c.task == TAGS_TASK)
            .values(finished_at=stamp, updated_at=stamp)
        )
    return adopted


def check_record_tags(store: Store, *, limit: int = 1000) -> TagCheck:
    """Check every `records` row against its tag, a page at a time, and name (up to `limit`)
    the rows that fail, untagged ones included: run it on a store the node has opened (which
    adopts an older release's rows first), where a pending marker means adoption was
    refused. Reads only."""
    tagger = store.require_tagger()
    marker = marker_state(store)
    checked = 0
    bad: list[str] = []
    more = False
    after = ""
    while True:
        with store.read("check record tags") as conn:
            rows = conn.execute(
                select(RECORDS)
                .where(RECORDS.c.row_id > after)
                .order_by(RECORDS.c.row_id)
                .limit(_PAGE)
            ).all()
        if not rows:
            break
        for row in rows:
            checked += 1
            if not row_intact(tagger, row._mapping):
                if len(bad) < limit:
                    bad.append(str(row.row_id))
                else:
                    more = True
        after = str(rows[-1].row_id)
    return TagCheck(checked, tuple(bad), more, marker)
