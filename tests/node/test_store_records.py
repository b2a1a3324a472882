"""The store on SQLite and PostgreSQL: records and versions, feeds, nonces, grants, errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from node.errors import InputError, NotDelivered, NotFound, WriteConflict
from node.store import (
    NewRecord,
    Store,
    StoreConflictError,
    StoreError,
    StoreUnavailableError,
    open_store,
    pushed,
)
from node.store.store import NONCES, from_db_time
from tests.node.store_support import TEST_TAGGER

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)


def rec(
    key: str = "k1",
    version: int = 1,
    *,
    item: str = "admin_penalty",
    subject: str = "s" * 32,
    content: str = "h1",
    producer: str = "market",
    links: tuple[str, ...] = (),
    max_end: dt.date | None = dt.date(2027, 5, 11),
) -> NewRecord:
    return NewRecord(
        row_id=str(uuid.uuid4()),
        producer=producer,
        record_key=key,
        version=version,
        item_id=item,
        catalog_version="2026.1",
        subject_index=subject,
        body=b"\x00ciphertext" + key.encode(),
        content_hash=content,
        severity="general",
        decided_on=dt.date(2026, 5, 11),
        disclosure_min_end=dt.date(2026, 8, 11),
        disclosure_max_end=max_end,
        disclosure_rule="令第36号 一般: 3 months to 1 year",
        created_at=NOW,
        linked_subject_indexes=links,
    )


def test_batch_roundtrip_keeps_every_field(store: Store) -> None:
    first = rec("k1", links=("l" * 32,))
    store.store_batch([first, rec("k2", subject="t" * 32)], now=NOW)
    got = store.get_record(first.row_id)
    assert got.body == first.body
    assert got.state == "active"
    assert got.objection is False
    assert got.decided_on == dt.date(2026, 5, 11)
    assert got.disclosure_max_end == dt.date(2027, 5, 11)
    assert got.created_at == NOW
    assert got.origin == "local"
    assert store.linked_subjects(first.row_id) == ["l" * 32]
    assert store.count_records() == 2


def test_correction_adds_a_version_and_supersedes_never_overwrites(store: Store) -> None:
    v1 = rec("k1", 1, content="h1")
    store.store_batch([v1], now=NOW)
    v2 = rec("k1", 2, content="h2")
    store.store_batch([v2], now=NOW)
    versions = store.record_versions("market", "k1")
    assert [(r.version, r.state, r.content_hash) for r in versions] == [
        (1, "superseded", "h1"),
        (2, "active", "h2"),
    ]
    assert versions[0].body == v1.body
    assert store.current_version("market", "k1") == (2, "h2")
    assert store.current_version("market", "nope") is None
    assert store.current_version("other", "k1") is None


def test_duplicate_version_is_refused_and_the_batch_rolls_back(store: Store) -> None:
    store.store_batch([rec("k1")], now=NOW)
    with pytest.raises(StoreConflictError):
        store.store_batch([rec("k9"), rec("k1")], now=NOW, ingest_state=("src", {"row": 2}))
    assert store.current_version("market", "k9") is None  # nothing of the failed batch
    assert store.load_ingest_state("src") is None


def test_ingest_state_commits_with_its_batch(store: Store) -> None:
    store.store_batch([rec("a")], now=NOW, ingest_state=("src", {"offset": 10, "n": [1]}))
    assert store.load_ingest_state("src") == {"n": [1], "offset": 10}
    store.store_batch([], now=NOW, ingest_state=("src", {"offset": 20}))
    assert store.load_ingest_state("src") == {"offset": 20}
    store.clear_ingest_state("src")
    assert store.load_ingest_state("src") is None


def test_records_by_subject_includes_linked_representatives(store: Store) -> None:
    org, rep = "o" * 32, "r" * 32
    own = rec("own", subject=rep)
    company = rec("company", subject=org, links=(rep,))
    store.store_batch([own, company, rec("other", subject="x" * 32)], now=NOW)
    assert {r.record_key for r in store.records_by_subject(rep)} == {"own", "company"}
    assert {r.record_key for r in store.records_by_subject(rep, include_linked=False)} == {"own"}
    assert store.records_by_subject("z" * 32) == []


def test_records_by_subject_filters_states(store: Store) -> None:
    store.store_batch([rec("k", 1, content="a")], now=NOW)
    store.store_batch([rec("k", 2, content="b")], now=NOW)
    assert [r.version for r in store.records_by_subject("s" * 32)] == [2]
    assert [r.version for r in store.records_by_subject("s" * 32, states=None)] == [1, 2]


def test_release_candidates_are_the_producers_records_in_the_states_asked(store: Store) -> None:
    # The query path reads release_candidates instead of records_by_subject: the same records
    # (own and linked, one producer, the states asked, by key and version), fewer columns.
    org, rep = "o" * 32, "r" * 32
    own_v1, own_v2 = rec("own", 1, subject=rep, content="a"), rec("own", 2, subject=rep)
    company = rec("company", subject=org, links=(rep,))
    withdrawn = rec("withdrawn", subject=rep)
    peers = rec("peer", subject=rep, producer="courts")
    store.store_batch([own_v1, company, withdrawn, peers], now=NOW)
    store.store_batch([own_v2], now=NOW)
    store.set_record_state(withdrawn.row_id, "withdrawn", event_kind=None, now=NOW)
    store.set_objection(company.row_id, True, now=NOW)
    states = ("active", "withdrawn", "expired")

    got = store.release_candidates(rep, producer="market", states=states)

    want = [r for r in store.records_by_subject(rep, states=states) if r.producer == "market"]
    assert [
        (c.row_id, c.item_id, c.record_key, c.version, c.state, c.objection, c.body) for c in got
    ] == [
        (r.row_id, r.item_id, r.record_key, r.version, r.state, r.objection, r.body) for r in want
    ]
    assert [c.row_id for c in got] == [company.row_id, own_v2.row_id, withdrawn.row_id]
    assert [c.objection for c in got] == [True, False, False]
    assert got[2].state == "withdrawn"
    active = store.release_candidates(rep, producer="market", states=("active",))
    assert [c.row_id for c in active] == [company.row_id, own_v2.row_id]
    assert [c.row_id for c in store.release_candidates(rep, producer="courts", states=states)] == [
        peers.row_id
    ]
    assert store.release_candidates(rep, producer="market", states=()) == []
    assert store.release_candidates("z" * 32, producer="market", states=states) == []


def test_a_failing_driver_read_is_a_store_error(tmp_path: Path) -> None:
    # release_candidates runs on the driver, not through SQLAlchemy: its errors must still
    # come out as StoreError naming the operation, never as a raw sqlite3 exception.
    opened = open_store(f"sqlite:///{tmp_path / 'credex.db'}", tagger=TEST_TAGGER)
    try:
        with opened.write("break the schema") as conn:
            conn.exec_driver_sql("ALTER TABLE record_links RENAME TO record_links_gone")
        with pytest.raises(StoreError, match="read records by subject"):
            opened.release_candidates("s" * 32, producer="market", states=("active",))
    finally:
        opened.close()


def test_feed_backfills_then_follows_ingest_gap_free(store: Store) -> None:
    store.store_batch([rec("k1"), rec("k2", item="red_list")], now=NOW)
    sub = store.ensure_subscription("tax", ["admin_penalty"], now=NOW)
    assert sub.last_seq == 1  # only the covered item was backfilled
    store.store_batch([rec("k1", 2, content="h2"), rec("k3", item="red_list")], now=NOW)
    events = store.events_after("tax", 0)
    assert [(e.seq, e.kind, e.record_key, e.version) for e in events] == [
        (1, "upsert", "k1", 1),
        (2, "correct", "k1", 2),
    ]
    # widening the agreement backfills the new item's active records once
    sub = store.ensure_subscription("tax", ["admin_penalty", "red_list"], now=NOW)
    assert sub.items == frozenset({"admin_penalty", "red_list"})
    assert sorted(e.record_key for e in store.events_after("tax", 2)) == ["k2", "k3"]
    assert store.ensure_subscription("tax", ["red_list"], now=NOW).last_seq == 4  # no-op
    assert [e.seq for e in store.events_after("tax", 1, limit=2)] == [2, 3]


def test_ack_is_monotonic_and_bounded(store: Store) -> None:
    store.store_batch([rec("k1"), rec("k2")], now=NOW)
    store.ensure_subscription("tax", ["admin_penalty"], now=NOW)
    store.mark_delivered("tax", 2)
    assert store.ack("tax", 2, now=NOW) == 2
    assert store.ack("tax", 1, now=NOW) == 2  # redelivery: an older ack changes nothing
    with pytest.raises(InputError):
        store.ack("tax", 3, now=NOW)
    with pytest.raises(NotFound):
        store.ack("nobody", 0, now=NOW)
    sub = store.subscription("tax")
    assert sub is not None
    assert (sub.acked_seq, sub.acked_at) == (2, NOW)


def test_an_ack_of_events_never_delivered_is_refused_and_moves_nothing(
    store_url: str, store: Store
) -> None:
    store.store_batch([rec("k1"), rec("k2"), rec("k3")], now=NOW)
    store.ensure_subscription("tax", ["admin_penalty"], now=NOW)
    store.ensure_subscription("court", ["admin_penalty"], now=NOW)
    with pytest.raises(NotDelivered) as refused:
        store.ack("tax", 1, now=NOW)  # queued, but no batch of it was sent yet
    assert "up to event 0" in str(refused.value)
    store.mark_delivered("tax", 2)
    store.mark_delivered("tax", 1)  # an older batch sent again: never lowers it
    with pytest.raises(NotDelivered):
        store.ack("tax", 3, now=NOW)  # ahead of the batches sent
    with pytest.raises(NotDelivered):
        store.ack("court", 2, now=NOW)  # what another subscriber was sent
    assert store.ack("tax", 2, now=NOW) == 2
    assert store.ack("tax", 2, now=NOW) == 2  # a retried ack: same answer, nothing moves
    assert store.ack("tax", 1, now=NOW) == 2  # a replayed older one
    store.close()
    reopened = open_store(store_url)  # what was sent is durable: a restart keeps it
    try:
        sub = reopened.subscription("tax")
        assert sub is not None
        assert (sub.acked_seq, sub.delivered_seq, sub.last_seq) == (2, 2, 3)
        assert reopened.ack("tax", 2, now=NOW) == 2
        court = reopened.subscription("court")
        assert court is not None
        assert (court.acked_seq, court.delivered_seq) == (0, 0)
    finally:
        reopened.close()


def test_state_changes_and_objections_emit_events(store: Store) -> None:
    r = rec("k1")
    store.store_batch([r], now=NOW)
    store.ensure_subscription("tax", ["admin_penalty"], now=NOW)
    assert store.set_objection(r.row_id, True, now=NOW) == 1
    assert store.set_objection(r.row_id, True, now=NOW) == 0
    assert store.set_objection(r.row_id, False, now=NOW) == 1
    assert store.set_record_state(r.row_id, "withdrawn", event_kind="withdraw", now=NOW) == 1
    kinds = [e.kind for e in store.events_after("tax", 0)]
    assert kinds == ["upsert", "objection_set", "objection_cleared", "withdraw"]
    store.set_record_state(r.row_id, "purged", event_kind=None, now=NOW)
    assert store.get_record(r.row_id).body == b""
    with pytest.raises(InputError):
        store.set_record_state(r.row_id, "deleted", event_kind=None, now=NOW)
    with pytest.raises(NotFound):
        store.set_objection("no-such-row", True, now=NOW)


def test_records_due_for_expiry(store: Store) -> None:
    old = rec("old", max_end=dt.date(2026, 1, 1))
    store.store_batch([old, rec("new"), rec("none", max_end=None)], now=NOW)
    assert [r.record_key for r in store.records_due_for_expiry(dt.date(2026, 6, 1))] == ["old"]


def test_nonce_replay_is_refused_until_expiry(store: Store) -> None:
    exp = NOW + dt.timedelta(minutes=10)
    assert store.remember_nonce("key1", "n1", exp, now=NOW) is True
    assert store.remember_nonce("key1", "n1", exp, now=NOW) is False
    assert store.remember_nonce("key2", "n1", exp, now=NOW) is True  # per signer
    later = NOW + dt.timedelta(minutes=11)
    assert store.remember_nonce("key1", "n1", later + dt.timedelta(minutes=10), now=later)


def test_expired_nonces_are_purged_in_bounded_chunks(store: Store) -> None:
    soon, late = NOW + dt.timedelta(minutes=1), NOW + dt.timedelta(minutes=10)
    nonces = [("key1", f"old{i}", soon) for i in range(5)] + [("key1", "new", late)]
    store.remember_nonces(nonces, now=NOW)
    later = NOW + dt.timedelta(minutes=2)
    assert store.purge_expired_nonces(later, limit=2) == 2
    assert store.purge_expired_nonces(later, limit=2) == 2
    assert store.purge_expired_nonces(later, limit=2) == 1
    assert store.purge_expired_nonces(later, limit=2) == 0
    with store.read("what is left") as conn:
        assert [n for (n,) in conn.execute(select(NONCES.c.nonce))] == ["new"]
    assert store.remember_nonce("key1", "new", late, now=later) is False  # still refused
    with pytest.raises(InputError, match="limit"):
        store.purge_expired_nonces(later, limit=0)


def test_an_expired_nonce_left_between_purges_is_taken_over(store: Store) -> None:
    exp = NOW + dt.timedelta(seconds=10)
    assert store.remember_nonce("key1", "n1", exp, now=NOW) is True
    # 20 s later: expired, but not purged yet, so its row is still there
    later = NOW + dt.timedelta(seconds=20)
    assert store.remember_nonce("key1", "n1", later + dt.timedelta(minutes=10), now=later)
    assert store.remember_nonce("key1", "n1", later + dt.timedelta(minutes=10), now=later) is False


def test_nonces_are_stored_exactly_as_sqlalchemy_stores_them(store: Store) -> None:
    # remember_nonces runs its INSERT on the driver (node.store.driver): the expiry must be
    # converted as SQLAlchemy converts it, or the expiry comparisons and purges would drift.
    exp = dt.datetime(2026, 11, 25, 9, 35, 0, 123456, tzinfo=dt.UTC)
    assert store.remember_nonces([("key1", "stored", exp)], now=NOW) == [True]
    with store.write("store one the SQLAlchemy way") as conn:
        conn.execute(
            NONCES.insert().values(keyid="key1", nonce="reference", expires_at=exp.replace())
        )
    with store.read("read both back") as conn:
        typed = conn.execute(select(NONCES.c.nonce, NONCES.c.expires_at)).all()
        as_text = conn.exec_driver_sql(
            "SELECT nonce, CAST(expires_at AS TEXT) FROM nonces WHERE keyid = 'key1'"
        ).all()
    rows: dict[str, dt.datetime] = {row[0]: row[1] for row in typed}
    raw: dict[str, str] = {row[0]: row[1] for row in as_text}
    assert from_db_time(rows["stored"]) == exp
    assert raw["stored"] == raw["reference"]


def test_a_batch_of_nonces_commits_together_and_refuses_repeats(store: Store) -> None:
    exp = NOW + dt.timedelta(minutes=10)
    assert store.remember_nonce("key1", "seen", exp, now=NOW) is True
    batch = [("key1", "a", exp), ("key1", "seen", exp), ("key2", "a", exp), ("key1", "a", exp)]
    assert store.remember_nonces(batch, now=NOW) == [True, False, True, False]
    assert store.remember_nonces([], now=NOW) == []
    assert store.remember_nonce("key2", "a", exp, now=NOW) is False


def test_naive_timestamps_are_refused(store: Store) -> None:
    with pytest.raises(InputError, match="time zone"):
        store.store_batch([rec("k")], now=dt.datetime(2026, 1, 1))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("batch"), st.lists(st.sampled_from("abcdef"), max_size=4)),
            st.tuples(st.just("sub"), st.sampled_from(["p", "q"])),
        ),
        max_size=8,
    )
)
def test_every_feed_is_gap_free_and_complete(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, object]]
) -> None:
    """Property: whatever the interleaving of ingests and subscriptions, each subscriber's
    sequence is 1..last with no gap, and every active record has an event in every feed."""
    db = tmp_path_factory.mktemp("prop") / "p.db"
    store = open_store(f"sqlite:///{db}", tagger=TEST_TAGGER)
    versions: dict[str, int] = {}
    for op, arg in ops:
        if op == "batch":
            assert isinstance(arg, list)
            batch = []
            for key in dict.fromkeys(arg):
                versions[key] = versions.get(key, 0) + 1
                batch.append(rec(key, versions[key], content=f"{key}{versions[key]}"))
            store.store_batch(batch, now=NOW)
        else:
            store.ensure_subscription(str(arg), ["admin_penalty"], now=NOW)
    for sub in store.subscriptions():
        events = store.events_after(sub.subscriber, 0, limit=10_000)
        assert [e.seq for e in events] == list(range(1, sub.last_seq + 1))
        seen = {(e.record_key, e.version) for e in events}
        assert set(versions.items()) <= seen
    store.close()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path / 'nope' / 'credex.db'}")


def test_unreachable_postgres_is_a_clear_error_without_password() -> None:
    with pytest.raises(StoreUnavailableError) as info:
        open_store("postgresql+psycopg://credex:s3cret@127.0.0.1:1/credex")
    assert "s3cret" not in str(info.value)
    assert "database unavailable" in str(info.value)


def test_unsupported_url_is_refused_without_password() -> None:
    with pytest.raises(StoreUnavailableError) as info:
        open_store("mysql://root:hunter2@db/credex")
    assert "hunter2" not in str(info.value)


def test_driver_messages_with_data_never_leak(store: Store) -> None:
    secret_subject = "370303199001010011"
    store.store_batch([rec("k1", subject=secret_subject)], now=NOW)
    with pytest.raises(StoreConflictError) as info:
        store.store_batch([rec("k1", subject=secret_subject)], now=NOW)
    assert secret_subject not in str(info.value)
    assert info.value.__cause__ is None


def test_a_push_withdrawal_before_its_entry_keeps_the_entry_out(store: Store) -> None:
    # the notice of version 2 arrives first: no copy of it here, a tombstone is kept
    assert pushed.tombstone_unless_held(store, "market", "k1", 2, "withdraw", now=NOW)
    assert pushed.store_pushed(store, rec("k1", 1), now=NOW) == "ended"
    assert pushed.store_pushed(store, rec("k1", 2), now=NOW) == "ended"
    assert store.record_versions("market", "k1") == []
    # a lower version does not lower it; the first kind of a version stays
    assert pushed.tombstone_unless_held(store, "market", "k1", 1, "expire", now=NOW)
    assert pushed.tombstone_unless_held(store, "market", "k1", 2, "expire", now=NOW)
    kept = pushed.push_tombstone(store, "market", "k1")
    assert kept is not None
    assert (kept.version, kept.kind, kept.created_at) == (2, "withdraw", NOW)
    # a later version is not covered; once held, a notice of it leaves no tombstone
    assert pushed.store_pushed(store, rec("k1", 3), now=NOW) == "stored"
    assert pushed.store_pushed(store, rec("k1", 3), now=NOW) == "held"  # a retried push
    assert not pushed.tombstone_unless_held(store, "market", "k1", 3, "withdraw", now=NOW)
    assert [(r.version, r.state) for r in store.record_versions("market", "k1")] == [(3, "active")]
    # another producer's record of the same key is another record
    assert pushed.store_pushed(store, rec("k1", 1, producer="hrss"), now=NOW) == "stored"


def test_push_tombstones_are_purged_after_the_retention(store: Store) -> None:
    pushed.tombstone_unless_held(store, "market", "k1", 1, "withdraw", now=NOW)
    assert pushed.purge_push_tombstones(store, NOW) == 0
    assert pushed.purge_push_tombstones(store, NOW + dt.timedelta(seconds=1)) == 1
    assert pushed.push_tombstone(store, "market", "k1") is None


def test_an_entry_and_its_withdrawal_arriving_together_never_leave_an_active_copy(
    store: Store,
) -> None:
    def withdrawal(key: str) -> None:
        # what feeds.apply_push_withdrawal does: the tombstone decision, then the copy's end
        pushed.tombstone_unless_held(store, "market", key, 1, "withdraw", now=NOW)
        for copy in store.record_versions("market", key):
            if copy.state == "active":
                store.set_record_state(copy.row_id, "withdrawn", event_kind=None, now=NOW)

    def entry(key: str) -> None:
        pushed.store_pushed(store, rec(key, 1), now=NOW)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for n in range(30):
            key = f"race{n}"
            start = threading.Barrier(2)

            def together(step: Callable[[str], None], key: str, start: threading.Barrier) -> None:
                start.wait()
                step(key)

            done = [pool.submit(together, step, key, start) for step in (withdrawal, entry)]
            for future in done:
                future.result()
            assert [r.state for r in store.record_versions("market", key)] in ([], ["withdrawn"])


def _waiting_on_locks(store: Store) -> int:
    """PostgreSQL backends of this database waiting for a lock another transaction holds."""
    with store.read("count lock waits") as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).scalar_one()
        )


def test_two_pulls_racing_on_a_feeds_first_batch_store_one_and_refuse_the_other(
    store: Store,
) -> None:
    # Two pulls of market's feed at once (the platform's `credex serve` and its operator's
    # `credex subscribe`, or two serve replicas on one PostgreSQL), both applying the feed's
    # very first batch: no cursor row exists yet for either to lock. Exactly one may commit,
    # the other is refused (WriteConflict) with nothing of its batch written.
    results: dict[str, str] = {}

    def first_batch(key: str, cursor: int) -> None:
        copy = dataclasses.replace(rec(key), origin="received")
        try:
            store.store_batch([copy], now=NOW, upstream_cursor=("market", cursor), upstream_from=0)
        except WriteConflict as error:
            results[key] = f"refused: {error}"
        else:
            results[key] = "stored"

    gate = None
    if store.dialect == "postgresql":
        # A third transaction holds an uncommitted cursor row until both pulls wait inside
        # their own transactions: they then overlap whatever the thread scheduling does.
        gate = store.engine.connect()
        gate.begin()
        gate.exec_driver_sql(
            "INSERT INTO upstream_cursors (peer, cursor, updated_at) VALUES ('market', 0, now())"
        )
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(first_batch, key, n) for key, n in (("a", 5), ("b", 3))]
        if gate is not None:
            deadline = time.monotonic() + 20
            while _waiting_on_locks(store) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            gate.rollback()
            gate.close()
        for future in done:
            future.result()
    assert sorted(r.split(":")[0] for r in results.values()) == ["refused", "stored"]
    (winner,) = [key for key, r in results.items() if r == "stored"]
    (loser,) = [key for key, r in results.items() if r != "stored"]
    assert "another pull of this feed moved the cursor" in results[loser]
    assert store.upstream_cursor("market") == {"a": 5, "b": 3}[winner]
    assert store.current_version("market", winner) is not None
    assert store.current_version("market", loser) is None  # nothing of it was written


def test_a_moved_cursor_is_refused_with_one_message_and_nothing_written(store: Store) -> None:
    # feeds locks and checks the cursor before a batch's first write (a store_batch without
    # records) and again where the cursor moves: the operator sees the same refusal whichever
    # caught the other pull, and nothing of the batch is written.
    store.store_batch([], now=NOW, upstream_cursor=("market", 3))
    store.store_batch([], now=NOW, upstream_cursor=("market", 3), upstream_from=3)
    with pytest.raises(WriteConflict) as before:
        store.store_batch([], now=NOW, upstream_cursor=("market", 0), upstream_from=0)
    with pytest.raises(WriteConflict) as moving:
        store.store_batch([rec("k1")], now=NOW, upstream_cursor=("market", 5), upstream_from=0)
    assert str(before.value) == str(moving.value) == MOVED
    assert store.upstream_cursor("market") == 3
    assert store.current_version("market", "k1") is None


MOVED = (
    "feed of market: another pull of this feed moved the cursor to 3 meanwhile (this batch "
    "continues 0); this pull stops with nothing of the batch stored, pull again"
)
