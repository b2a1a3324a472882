"""node/store/lifecycle.py: one transaction per operation, refusals change nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.errors import InputError, NotFound
from node.store import NewRecord, Store, open_store
from node.store import lifecycle as ls
from tests.node.store_support import TEST_TAGGER

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
KEY = "a" * 64


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = open_store(f"sqlite:///{tmp_path / 'credex.db'}", tagger=TEST_TAGGER)
    db.ensure_subscription("platform", ["admin_penalty"], now=NOW)
    try:
        yield db
    finally:
        db.close()


def put(store: Store, version: int, *, key: str = KEY, max_end: dt.date | None = None) -> str:
    row_id = str(uuid.uuid4())
    store.store_batch(
        [
            NewRecord(
                row_id=row_id, producer="market", record_key=key, version=version,
                item_id="admin_penalty", catalog_version="2026.1", subject_index="ab" * 16,
                body=b"sealed", content_hash=f"{version:064d}", severity="general",
                decided_on=dt.date(2020, 1, 1), disclosure_min_end=dt.date(2020, 4, 1),
                disclosure_max_end=max_end or dt.date(2021, 1, 1), disclosure_rule="t",
                created_at=NOW,
            )
        ],
        now=NOW,
    )  # fmt: skip
    return row_id


def test_history_of_a_live_record_is_never_purged(store: Store) -> None:
    old = put(store, 1)
    put(store, 2, max_end=dt.date(2030, 1, 1))
    assert store.get_record(old).state == "superseded"
    assert ls.records_due_for_purge(store, dt.date(2029, 1, 1)) == []
    gone = put(store, 1, key="b" * 64)
    store.set_record_state(gone, "expired", event_kind="expire", now=NOW)
    assert [r.row_id for r in ls.records_due_for_purge(store, dt.date(2021, 1, 2))] == [gone]
    assert ls.records_due_for_purge(store, dt.date(2021, 1, 1)) == []


def test_withdraw_is_atomic_with_its_task(store: Store) -> None:
    row = put(store, 1)
    record = store.get_record(row)
    ls.open_task(
        store, task_id="t1", kind="repair", record_key=KEY, opened_at=NOW,
        due_on=NOW.date(), approximate=False,
    )  # fmt: skip
    with pytest.raises(InputError, match="already exists"):
        ls.withdraw_record(
            store, record, task_id="t1", kind="repair", now=NOW, due_on=NOW.date(),
            approximate=False, outcome="x", close=True,
        )  # fmt: skip
    assert store.get_record(row).state == "active"
    assert [e.kind for e in store.events_after("platform", 0)] == ["upsert"]
    assert ls.withdraw_record(
        store, record, task_id="t2", kind="repair", now=NOW, due_on=NOW.date(),
        approximate=False, outcome="x", close=True,
    ) == 1  # fmt: skip
    events, cursors = ls.withdraw_events(store, row)
    assert [(s, q) for s, q, _ in events] == [("platform", 2)]
    assert cursors["platform"] == (0, None)
    with pytest.raises(InputError, match="objected"):
        ls.open_objection(
            store, objection_id="o1", record=record, reason="r", opened_at=NOW,
            due_on=NOW.date(), approximate=False,
        )  # fmt: skip


def test_objection_close_clears_only_once(store: Store) -> None:
    record = store.get_record(put(store, 1))
    assert ls.open_objection(
        store, objection_id="o1", record=record, reason="r", opened_at=NOW,
        due_on=dt.date(2026, 11, 30), approximate=False,
    ) == 1  # fmt: skip
    (task,) = ls.list_tasks(store, open_only=True)
    assert (task.task_id, task.kind, task.due_on) == ("o1", "objection", dt.date(2026, 11, 30))
    assert ls.close_objection(store, "o1", outcome="confirmed", now=NOW, clear_flag=True) == 1
    assert not store.get_record(record.row_id).objection
    with pytest.raises(InputError):
        ls.close_objection(store, "o1", outcome="again", now=NOW, clear_flag=True)
    with pytest.raises(NotFound):
        ls.get_objection(store, "nope")
    assert ls.list_tasks(store, open_only=True) == []


def test_push_receipt_first_wins(store: Store) -> None:
    assert ls.record_push(store, push_id="p1", to_node="health", record_key=KEY, sent_at=NOW)
    assert not ls.record_push(store, push_id="p1", to_node="health", record_key=KEY, sent_at=NOW)
    ls.push_receipt(store, "p1", b"first", at=NOW)
    ls.push_receipt(store, "p1", b"second", at=NOW + dt.timedelta(hours=1))
    (push,) = ls.list_pushes(store, record_key=KEY)
    assert (push.receipt, push.receipt_at) == (b"first", NOW)
    with pytest.raises(NotFound):
        ls.push_receipt(store, "p2", b"x", at=NOW)


def test_current_record_is_the_newest_version_in_any_state(store: Store) -> None:
    put(store, 1)
    row2 = put(store, 2)
    store.set_record_state(row2, "withdrawn", event_kind="withdraw", now=NOW)
    current = ls.current_record(store, "market", KEY)
    assert (current.version, current.state) == (2, "withdrawn")
    with pytest.raises(NotFound):
        ls.current_record(store, "other", KEY)
