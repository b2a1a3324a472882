"""A store as the release before this one left it: what the window-rules upgrade tests start
from (docs/decisions/0014)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import insert, update

from node.runtime import NodeRuntime
from node.store import lifecycle as ls
from node.store.store import RECORDS
from tests.node.store_support import retag

Window = tuple[dt.date, dt.date, str]
"""A stored window: minimum end, maximum end, rule text."""


def store_as_previous_release(
    runtime: NodeRuntime, windows: Mapping[str, Window], *, now: dt.datetime
) -> None:
    """Give each row id in `windows` the active state and window an older release stored, and
    record that release's window pass as finished under its own rules, in one transaction."""
    with runtime.store.write("test: rows as the previous release stored them") as conn:
        for row_id, (min_end, max_end, rule) in windows.items():
            conn.execute(
                update(RECORDS)
                .where(RECORDS.c.row_id == row_id)
                .values(
                    state="active",
                    disclosure_min_end=min_end,
                    disclosure_max_end=max_end,
                    disclosure_rule=rule,
                )
            )
        stamp = now.replace(tzinfo=None)
        conn.execute(
            insert(ls.MAINTENANCE).values(
                task=ls.WINDOWS_TASK,
                fingerprint="1:rules-of-the-previous-release",
                updated_at=stamp,
                finished_at=stamp,
            )
        )
    retag(runtime.store, *windows)  # what adoption made of that release's rows
