"""Record row tags in the store (docs/decisions/0018), on SQLite and PostgreSQL: every write
path tags, and a row edited with SQL by someone without the storage key is refused by every
read that decides and by every write that would act on it, naming the row id only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from node.errors import TamperDetected
from node.lifecycle import StoredWindow
from node.store import NewRecord, Store
from node.store import lifecycle as ls
from node.store.errors import RecordTampered
from node.store.integrity import check_record_tags
from node.store.pushed import store_pushed
from node.store.received import feed_records, records_by_row_ids
from node.store.store import RECORDS
from node.store.tables import RecordRow
from node.store.tags import TAGGED_COLUMNS

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
SUBJECT = "a" * 32


def rec(
    row_id: str, key: str = "k1", version: int = 1, *, origin: str = "local", **over: Any
) -> NewRecord:
    values: dict[str, Any] = {
        "row_id": row_id,
        "producer": "node-a" if origin == "local" else "node-b",
        "record_key": key,
        "version": version,
        "item_id": "admin_penalty",
        "catalog_version": "2026.1",
        "subject_index": SUBJECT,
        "body": b"\x01sealed-" + row_id.encode(),
        "content_hash": f"h-{row_id}",
        "severity": "general",
        "decided_on": dt.date(2026, 5, 1),
        "disclosure_min_end": dt.date(2026, 8, 1),
        "disclosure_max_end": dt.date(2027, 5, 1),
        "disclosure_rule": "rule",
        "created_at": NOW,
        "origin": origin,
    }
    values.update(over)
    return NewRecord(**values)


def sql(store: Store, row_id: str, **values: Any) -> None:
    """An insider's UPDATE: the database written directly, no key."""
    with store.write("test: edit a row with SQL") as conn:
        conn.execute(update(RECORDS).where(RECORDS.c.row_id == row_id).values(**values))


def tag_of(store: Store, row_id: str) -> bytes:
    with store.read("test: a tag") as conn:
        value = conn.execute(select(RECORDS.c.tag).where(RECORDS.c.row_id == row_id)).scalar()
    assert isinstance(value, bytes)
    return value


def bad_rows(store: Store) -> tuple[str, ...]:
    return check_record_tags(store).bad


def test_tagged_columns_are_every_column_but_the_id_and_the_tag() -> None:
    # a new column is tagged, or decided not to be, here: never forgotten
    columns = [c.name for c in RecordRow.__table__.columns]  # type: ignore[attr-defined]
    assert set(TAGGED_COLUMNS) == set(columns) - {"row_id", "tag"}


def test_a_store_without_a_tagger_refuses_to_write_records(store: Store) -> None:
    keyless = Store(store.engine)
    with pytest.raises(RuntimeError, match="row tagger"):
        keyless.store_batch([rec("r1")], now=NOW)
    assert store.count_records() == 0


def test_every_write_path_leaves_every_row_intact(store: Store) -> None:
    store.ensure_subscription("platform", ["admin_penalty"], now=NOW)
    store.store_batch([rec("r1"), rec("r2", "k2"), rec("r3", "k3")], now=NOW, from_source=True)
    store.store_batch([rec("r1v2", "k1", 2)], now=NOW, from_source=True)  # supersedes r1
    r2 = store.get_record("r2")
    ls.open_objection(
        store,
        objection_id="obj-1",
        record=r2,
        reason="test",
        opened_at=NOW,
        due_on=dt.date(2026, 12, 10),
        approximate=False,
    )
    ls.close_objection(store, "obj-1", outcome="kept", now=NOW, clear_flag=True)
    store.set_objection("r2", True, now=NOW)
    ls.withdraw_record(
        store,
        store.get_record("r3"),
        task_id="rep-1",
        kind="repair",
        now=NOW,
        due_on=dt.date(2026, 12, 1),
        approximate=False,
        outcome="done",
        close=True,
    )
    ls.store_windows(
        store,
        [("r1v2", StoredWindow("serious", dt.date(2027, 1, 1), dt.date(2028, 1, 1), "new"))],
        fingerprint="f",
        resume_after="r1v2",
        now=NOW,
    )
    store.replace_bodies("node-a", [("r2", b"\x01sealed-r2", b"\x01sealed-again")])
    store.set_record_state("r3", "purged", event_kind=None, now=NOW)
    store.set_record_state("r2", "expired", event_kind="expire", now=NOW, expected="active")
    # received copies: a feed batch with its flag reconciled, and a push
    store.store_batch([rec("c1", "kc", origin="received")], now=NOW)
    store.store_batch([], now=NOW, copy_flags=[("node-b", "kc", 1, True)])
    assert store_pushed(store, rec("p1", "kp", origin="received"), now=NOW) == "stored"

    assert bad_rows(store) == ()
    assert check_record_tags(store).checked == 6
    versions = {r.row_id: r for r in store.records_by_subject(SUBJECT, states=None)}
    assert versions["r1"].state == "superseded"
    assert versions["r1v2"].severity == "serious"
    assert (versions["r2"].state, versions["r2"].objection) == ("expired", True)
    assert (versions["r3"].state, versions["r3"].body) == ("purged", b"")
    assert versions["c1"].objection


# What an insider without keys does to a row, and what it was before.
EDITS: dict[str, Callable[[Store], None]] = {
    "withdrawn_to_active": lambda s: sql(s, "r1", state="active"),
    "objection_cleared": lambda s: sql(s, "r2", objection=False),
    "disclosure_moved": lambda s: sql(
        s, "r1", disclosure_max_end=dt.date(2035, 1, 1), disclosure_min_end=dt.date(2030, 1, 1)
    ),
    "severity_changed": lambda s: sql(s, "r2", severity="minor"),
    "origin_changed": lambda s: sql(s, "r2", origin="received"),
    "subject_moved": lambda s: sql(s, "r2", subject_index="b" * 32),
    "tag_nulled": lambda s: sql(s, "r2", tag=None),
    "tag_copied_onto_edited_values": lambda s: sql(s, "r1", state="active", tag=tag_of(s, "r2")),
}


def _two_rows(store: Store) -> None:
    store.store_batch([rec("r1"), rec("r2", "k2")], now=NOW)
    store.set_record_state("r1", "withdrawn", event_kind=None, now=NOW)
    store.set_objection("r2", True, now=NOW)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_row_is_refused_by_every_read_that_decides(store: Store, edit: str) -> None:
    _two_rows(store)
    EDITS[edit](store)
    bad = bad_rows(store)
    assert len(bad) == 1
    (row_id,) = bad
    with pytest.raises(RecordTampered, match=row_id) as raised:
        store.get_record(row_id)
    assert isinstance(raised.value, TamperDetected)  # exit 3, DATA_LOSS
    assert SUBJECT not in str(raised.value)
    with pytest.raises(RecordTampered, match=row_id):
        records_by_row_ids(store, [row_id])
    with pytest.raises(RecordTampered, match=row_id):
        store.record_versions("node-a", "k1" if row_id == "r1" else "k2")
    # the query and feed reads do not raise: they report it, and their callers refuse
    candidates = [
        c
        for subject in (SUBJECT, "b" * 32)  # where subject_moved put it
        for c in store.release_candidates(
            subject, producer="node-a", states=("active", "withdrawn")
        )
    ]
    assert {c.row_id: c.intact for c in candidates}.get(row_id, False) is False
    assert feed_records(store, [row_id])[row_id].intact is False


def test_tags_swapped_between_two_rows_fail_both(store: Store) -> None:
    _two_rows(store)
    first, second = tag_of(store, "r1"), tag_of(store, "r2")
    sql(store, "r1", tag=second)
    sql(store, "r2", tag=first)
    assert bad_rows(store) == ("r1", "r2")


@pytest.mark.parametrize(
    ("edit", "act"),
    [
        ("withdrawn_to_active", lambda s: s.set_record_state("r1", "expired", event_kind=None, now=NOW)),  # noqa: E501
        ("objection_cleared", lambda s: s.set_objection("r2", True, now=NOW)),
        ("disclosure_moved", lambda s: s.set_record_state("r1", "purged", event_kind=None, now=NOW)),  # noqa: E501
        ("tag_nulled", lambda s: ls.close_objection(s, "obj-9", outcome="x", now=NOW, clear_flag=True)),  # noqa: E501
    ],
)  # fmt: skip
def test_no_write_acts_on_an_edited_row_nor_launders_it(
    store: Store, edit: str, act: Callable[[Store], object]
) -> None:
    _two_rows(store)
    with store.write("test: an objection on r2") as conn:
        conn.execute(
            ls.OBJECTIONS.insert().values(
                objection_id="obj-9",
                record_row_id="r2",
                record_key="k2",
                reason="r",
                opened_at=NOW,
                due_on=dt.date(2026, 12, 1),
            )
        )
    EDITS[edit](store)
    (row_id,) = bad_rows(store)
    before = _raw(store, row_id)
    with pytest.raises(RecordTampered, match=row_id):
        act(store)
    assert _raw(store, row_id) == before  # nothing written, the edit not re-tagged
    assert bad_rows(store) == (row_id,)


def test_a_correction_does_not_supersede_an_edited_version(store: Store) -> None:
    store.store_batch([rec("r1")], now=NOW)
    sql(store, "r1", disclosure_max_end=dt.date(2040, 1, 1))
    with pytest.raises(RecordTampered, match="r1"):
        store.store_batch([rec("r1v2", "k1", 2)], now=NOW)
    assert store.count_records() == 1


def test_a_row_forged_with_sql_is_refused(store: Store) -> None:
    store.store_batch([rec("r1")], now=NOW)
    with store.read("test: r1") as conn:
        row = dict(conn.execute(select(RECORDS).where(RECORDS.c.row_id == "r1")).one()._mapping)
    row.update(row_id="forged", record_key="kf", tag=None)
    with store.write("test: insert a row") as conn:
        conn.execute(RECORDS.insert().values(**row))
    assert bad_rows(store) == ("forged",)
    with pytest.raises(RecordTampered, match="forged"):
        ls.current_record(store, "node-a", "kf")


def test_scans_refuse_an_edited_row(store: Store) -> None:
    store.store_batch([rec("r1", disclosure_max_end=dt.date(2030, 1, 1))], now=NOW)
    sql(store, "r1", disclosure_max_end=dt.date(2026, 1, 1))  # due now, by the edit
    with pytest.raises(RecordTampered, match="r1"):
        store.records_due_for_expiry(dt.date(2026, 11, 25))


def _raw(store: Store, row_id: str) -> tuple[Any, ...]:
    with store.read("test: raw row") as conn:
        return tuple(conn.execute(select(RECORDS).where(RECORDS.c.row_id == row_id)).one())
