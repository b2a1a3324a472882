"""A revocation racing the purge of the expired record it withdraws (both dialects)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from sqlalchemy import select, update

from node.errors import InputError
from node.store import NewRecord, Store
from node.store import lifecycle as ls
from node.store.store import RECORDS
from node.store.tags import row_tag

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


def test_a_revocation_never_brings_back_a_record_purged_meanwhile(store: Store) -> None:
    # The purge pass takes the expired record while the revocation's transaction runs: the
    # revocation must see the purge, not turn the erased record back into `withdrawn`.
    row_id = str(uuid.uuid4())
    store.store_batch(
        [
            NewRecord(
                row_id=row_id, producer="market", record_key="a" * 64, version=1,
                item_id="admin_penalty", catalog_version="2026.1", subject_index="ab" * 16,
                body=b"sealed", content_hash="0" * 64, severity="general",
                decided_on=dt.date(2020, 1, 1), disclosure_min_end=dt.date(2020, 4, 1),
                disclosure_max_end=dt.date(2021, 1, 1), disclosure_rule="t", created_at=NOW,
            )
        ],
        now=NOW,
    )  # fmt: skip
    store.set_record_state(row_id, "expired", event_kind="expire", now=NOW)
    record = store.get_record(row_id)
    outcome: list[BaseException | int] = []

    def revoke() -> None:
        try:
            events = ls.withdraw_record(
                store, record, task_id="t1", kind="revocation", now=NOW, due_on=NOW.date(),
                approximate=False, outcome="", close=False, states=frozenset({"active", "expired"}),
            )  # fmt: skip
            outcome.append(events)
        except BaseException as error:
            outcome.append(error)

    with store.engine.connect() as purge, purge.begin():
        # the purge pass's write, tagged as the store tags it (decision 0018)
        row = dict(purge.execute(select(RECORDS).where(RECORDS.c.row_id == row_id)).one()._mapping)
        row["state"] = "purged"
        tag = row_tag(store.require_tagger(), row)
        purge.execute(
            update(RECORDS).where(RECORDS.c.row_id == row_id).values(state="purged", tag=tag)
        )
        racer = threading.Thread(target=revoke)
        racer.start()
        time.sleep(0.5)  # the revocation is waiting for the purge's row (or database) lock
    racer.join(timeout=30)
    assert store.get_record(row_id).state == "purged"
    (result,) = outcome
    assert isinstance(result, InputError)
    with pytest.raises(InputError, match="purged"):
        raise result
