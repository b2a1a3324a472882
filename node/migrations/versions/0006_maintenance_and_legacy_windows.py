"""Add `maintenance` and store the disclosure windows that the stored columns alone decide.

Releases before 2026-11-26 stored some active versions with a window the rules no longer give
(docs/decisions/0013, 0014). Two cases are decided by columns alone, without the encrypted
body or the node's keys, so they are fixed here, at upgrade, before the node serves anything:

- a penalty (items `admin_penalty`, `admin_penalty_person`, whose severity comes from the
  失信程度 field) decided before 2026-04-01 with no grade was stored with no severity and no
  window, so it never expired. It is `ungraded` now, with the 令第58号 window: 3 months to 3
  years from the decision (民法典 Arts. 201-202). Those releases had no `conduct_end_date`
  field, so the Shandong cap counts from the decision and never binds before 3 years. Those
  releases showed it until the upgrade: an end already past is stored as the day before the
  upgrade (the rule text says so), so retention, which counts from the end, starts when it
  really stopped being shown, never at once (decision 0014);
- a minor (轻微) record decided from 2026-04-01 was stored with no window; it now has the
  empty window of a withheld record (`min_end = max_end = decided_on`).

Only `active` versions change: the retention of a version that already left `active` counts
from the day it did (docs/lifecycle.md), and an end written now could purge it early. No
state changes and no feed event is written here: the lifecycle scan expires what is over,
through its usual path (an `expire` event to every subscriber).

Windows that need the record body (red-list and honour validity, revoked entries) are
recomputed by the lifecycle scan (`node.window_refresh`), which tracks its progress in the new
`maintenance` table; the row inserted here marks that pass as pending (only in a store that
holds active records of its own: a new store's windows are all stored by this release or later).

The arithmetic and the rule texts are frozen copies of catalog/periods.py as of this
revision, so the migration keeps meaning what it meant when later releases change the code.
Plain SQL and bound parameters only, for both stores credex runs on (SQLite, PostgreSQL).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import calendar
import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ORDER_36_EFFECTIVE = dt.date(2026, 4, 1)
_CST = dt.timezone(dt.timedelta(hours=8))
# the items whose severity came from a field (severity_rule "field:severity", catalogue 2026.1)
_GRADED_BY_FIELD = ("admin_penalty", "admin_penalty_person")
_UNGRADED_RULE = (
    "令第58号 (decided before 2026-04-01): 3个月-3年; 民法典第201-202条; "
    "山东省社会信用条例第38条 (≤5年, 自失信行为终止之日起)"
)
_MINOR_RULE = "令第36号: 轻微失信信息原则上不予公示 (minor: withheld, not disclosed or shared)"
_CHUNK = 1000

_records = sa.table(
    "records",
    sa.column("row_id", sa.String(36)),
    sa.column("item_id", sa.String(64)),
    sa.column("state", sa.String(16)),
    sa.column("origin", sa.String(16)),
    sa.column("severity", sa.String(16)),
    sa.column("decided_on", sa.Date()),
    sa.column("disclosure_min_end", sa.Date()),
    sa.column("disclosure_max_end", sa.Date()),
    sa.column("disclosure_rule", sa.String(200)),
)


def _add_months(start: dt.date, months: int) -> dt.date:
    """民法典 Arts. 201-202: the corresponding day of the last month, or its last day."""
    index = start.year * 12 + (start.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(start.day, last))


def upgrade() -> None:
    """Create `maintenance` (with the pending window pass when the store holds active records
    of its own), then store the windows of the legacy active versions the module docstring
    names."""
    op.create_table(
        "maintenance",
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("resume_after", sa.String(36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("task"),
    )
    bind = op.get_bind()
    r = _records.c
    held = bind.execute(
        sa.select(r.row_id).where(r.state == "active", r.origin == "local").limit(1)
    ).first()
    if held is not None:
        _schedule_window_pass(bind)
    bind.execute(
        _records.update()
        .where(
            r.state == "active",
            r.severity == "minor",
            r.disclosure_max_end.is_(None),
            r.decided_on >= _ORDER_36_EFFECTIVE,
        )
        .values(
            disclosure_min_end=r.decided_on,
            disclosure_max_end=r.decided_on,
            disclosure_rule=_MINOR_RULE,
        )
    )
    _store_ungraded_windows(bind, dt.datetime.now(_CST).date() - dt.timedelta(days=1))


def _schedule_window_pass(bind: sa.engine.Connection) -> None:
    """Mark the window pass pending for a store that holds records of an older release. An
    empty fingerprint matches no release's rules: the first scan recomputes every window. A
    store with no record gets no row: every window it will hold is stored by this release or a
    later one (node.window_refresh then records the current rules without a pass)."""
    # The server's clock stamps it, in the database's own time type.
    bind.execute(
        sa.table(
            "maintenance",
            sa.column("task", sa.String(64)),
            sa.column("fingerprint", sa.String(64)),
            sa.column("updated_at", sa.DateTime(timezone=True)),
        )
        .insert()
        .values(task="disclosure_windows", fingerprint="", updated_at=sa.func.current_timestamp())
    )


def _store_ungraded_windows(bind: sa.engine.Connection, shown_until: dt.date) -> None:
    """Ungraded penalties, in row-id order and chunks (the dates are computed here: SQLite's
    date arithmetic does not clamp to the month's last day as Art. 202 requires)."""
    r = _records.c
    stamp = (
        _records.update()
        .where(r.row_id == sa.bindparam("b_row_id"), r.state == "active")
        .values(
            severity="ungraded",
            disclosure_min_end=sa.bindparam("b_min_end", type_=sa.Date()),
            disclosure_max_end=sa.bindparam("b_max_end", type_=sa.Date()),
            disclosure_rule=sa.bindparam("b_rule", type_=sa.String(200)),
        )
    )
    after = ""
    while True:
        rows = bind.execute(
            sa.select(r.row_id, r.decided_on)
            .where(
                r.row_id > after,
                r.state == "active",
                r.item_id.in_(_GRADED_BY_FIELD),
                r.severity.is_(None),
                r.disclosure_max_end.is_(None),
                r.decided_on.is_not(None),
                r.decided_on < _ORDER_36_EFFECTIVE,
            )
            .order_by(r.row_id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        bind.execute(
            stamp,
            [_ungraded_window(row_id, decided_on, shown_until) for row_id, decided_on in rows],
        )
        after = rows[-1][0]


def _ungraded_window(row_id: str, decided_on: dt.date, shown_until: dt.date) -> dict[str, object]:
    """The bound values of one ungraded penalty: its 令第58号 window, ending no earlier than
    `shown_until` (the day before the upgrade, through which the old release showed it)."""
    min_end, max_end, rule = _add_months(decided_on, 3), _add_months(decided_on, 36), _UNGRADED_RULE
    if max_end < shown_until:
        max_end = shown_until
        min_end = min(min_end, shown_until)
        rule = f"{rule}; shown until {shown_until.isoformat()} by an earlier release"
    return {"b_row_id": row_id, "b_min_end": min_end, "b_max_end": max_end, "b_rule": rule}


def downgrade() -> None:
    """Drop `maintenance`. The windows stored by `upgrade` stay: the earlier ones let records
    be disclosed past their lawful end, and an older release reads the new ones correctly."""
    op.drop_table("maintenance")
