"""SqlLogBackend: the access log's LogBackend protocol on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, select

import keys
from node import accesslog
from node.errors import InputError, LogUnavailable, TamperDetected
from node.store import SqlLogBackend, Store, StoreConflictError, logbackend, open_store
from node.store import lifecycle as ls
from node.store.errors import StoreUnavailableError
from node.store.logbackend import LOG, STATE
from node.store.store import from_db_time


def entry(n: int) -> tuple[bytes, bytes]:
    leaf = f"entry-{n}".encode()
    return leaf, hashlib.sha256(b"\x00" + leaf).digest()


def test_backend_satisfies_the_access_log_protocol(store: Store) -> None:
    assert isinstance(SqlLogBackend(store), accesslog.LogBackend)
    assert isinstance(SqlLogBackend(store), accesslog.ClaimingLogBackend)


NOW = dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC)
EXPIRES = NOW + dt.timedelta(minutes=5)


def test_nonces_and_leaves_commit_in_one_transaction(store: Store) -> None:
    backend = SqlLogBackend(store)
    nonces = [("k1", "n1", EXPIRES), ("k1", "n2", EXPIRES), ("k1", "n1", EXPIRES)]
    seen: list[list[bool]] = []

    def build(fresh: list[bool]) -> tuple[list[tuple[bytes, bytes]], bytes, int]:
        seen.append(fresh)
        return [entry(i) for i in range(len(fresh))], b"state-3", 0

    assert backend.append_claiming(nonces, now=NOW, build=build) == 0
    assert seen == [[True, True, False]]  # a repeat inside one call is a replay too
    assert backend.size() == 3

    # A conflict found after the nonces were inserted rolls them back with the leaves.
    def stale(fresh: list[bool]) -> tuple[list[tuple[bytes, bytes]], bytes, int]:
        return [entry(9)], b"stale", 0  # size 0 is stale: the log holds 3 leaves

    with pytest.raises(StoreConflictError):
        backend.append_claiming([("k1", "n3", EXPIRES)], now=NOW, build=stale)
    assert backend.size() == 3
    assert store.remember_nonces([("k1", "n3", EXPIRES)], now=NOW) == [True]  # not used up
    assert store.remember_nonces([("k1", "n1", EXPIRES)], now=NOW) == [False]  # committed


def test_append_is_gap_free_and_returns_first_index(store: Store) -> None:
    log = SqlLogBackend(store)
    assert (log.size(), log.state()) == (0, None)
    assert log.append([entry(0), entry(1)], b"state-2") == 0
    assert log.append([entry(2)], b"state-3") == 2
    assert log.append([], b"ignored") == 3  # an empty batch writes nothing
    assert (log.size(), log.state()) == (3, b"state-3")
    assert log.leaves(0, 3) == [(i, *entry(i)) for i in range(3)]
    assert log.leaf_hashes(1, 3) == [entry(1)[1], entry(2)[1]]
    assert log.leaves(1, 10) == [(i, *entry(i)) for i in (1, 2)]  # end is clamped to the size
    assert log.leaves(3, 3) == []


def test_leaves_carry_the_append_time(store: Store) -> None:
    # Leaves are inserted through the driver directly; their time stamp must read back through
    # the column type exactly as a SQLAlchemy insert would have stored it.
    stamp = dt.datetime(2026, 11, 25, 8, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    log = SqlLogBackend(store, clock=lambda: stamp)
    log.append([entry(0), entry(1)], b"s", expected_size=0)
    log.append([entry(2)], b"s")
    with store.read("check") as conn:
        stored = conn.execute(select(LOG.c.idx, LOG.c.created_at).order_by(LOG.c.idx)).all()
    assert [(i, from_db_time(t)) for i, t in stored] == [(i, stamp) for i in range(3)]
    # so must the state row's, which the usual append (expected_size) moves on the driver
    log.append([entry(3)], b"s4", expected_size=3)
    with store.read("check") as conn:
        size, state, updated = conn.execute(
            select(STATE.c.size, STATE.c.state, STATE.c.updated_at)
        ).one()
    assert (size, bytes(state), from_db_time(updated)) == (4, b"s4", stamp)


def test_expected_size_detects_a_concurrent_writer(store: Store) -> None:
    log = SqlLogBackend(store)
    log.append([entry(0)], b"s1", expected_size=0)
    with pytest.raises(StoreConflictError, match="another writer"):
        log.append([entry(1)], b"s2", expected_size=0)
    assert log.size() == 1
    assert log.state() == b"s1"


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (3, 2)])
def test_bad_ranges_are_refused(store: Store, start: int, end: int) -> None:
    with pytest.raises(InputError):
        SqlLogBackend(store).leaves(start, end)


def test_a_deleted_leaf_is_reported_as_tampering(store: Store) -> None:
    log = SqlLogBackend(store)
    log.append([entry(i) for i in range(5)], b"s")
    with store.write("tamper") as conn:
        conn.execute(delete(LOG).where(LOG.c.idx == 2))
    with pytest.raises(TamperDetected):
        log.leaves(0, 5)
    with pytest.raises(TamperDetected):
        log.leaf_hashes(2, 4)
    assert len(log.leaves(3, 5)) == 2


def test_checkpoints_and_witnesses(store: Store) -> None:
    log = SqlLogBackend(store)
    assert log.latest_checkpoint() is None
    log.save_checkpoint(2, "note-2")
    log.save_checkpoint(5, "note-5")
    log.save_checkpoint(5, "note-5")  # idempotent
    with pytest.raises(StoreConflictError):
        log.save_checkpoint(5, "another root")
    assert log.latest_checkpoint() == (5, "note-5")
    assert log.checkpoints() == [(2, "note-2"), (5, "note-5")]
    log.save_witness(5, "platform", "cosigned-a")
    log.save_witness(2, "platform", "cosigned-b")
    log.save_witness(5, "platform", "cosigned-c")  # a newer cosignature replaces the old one
    assert log.witnesses() == [(2, "platform", "cosigned-b"), (5, "platform", "cosigned-c")]


def test_concurrent_replicas_never_race(store_url: str) -> None:
    """Four "replicas" (own engines, own pools) append at once; the log stays gap-free and each
    batch is contiguous."""
    replicas = [open_store(store_url) for _ in range(4)]
    starts: dict[tuple[int, int], int] = {}
    errors: list[BaseException] = []

    def work(r: int) -> None:
        log = SqlLogBackend(replicas[r])
        try:
            for b in range(10):
                starts[(r, b)] = log.append(
                    [(f"{r}-{b}-{k}".encode(), bytes(32)) for k in range(3)], b"s"
                )
        except BaseException as error:  # surfaced below, never swallowed
            errors.append(error)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = SqlLogBackend(replicas[0])
    assert log.size() == 120
    leaves = log.leaves(0, 120)
    assert [i for i, _, _ in leaves] == list(range(120))
    for (r, b), first in starts.items():
        assert [leaf for _, leaf, _ in leaves[first : first + 3]] == [
            f"{r}-{b}-{k}".encode() for k in range(3)
        ]
    for replica in replicas:
        replica.close()


def test_the_access_log_runs_on_the_sql_backend_and_verifies(store: Store) -> None:
    """End to end with node.accesslog: entries, a signed checkpoint, verification, tampering."""
    signer = keys.Signer.generate()
    log = accesslog.AccessLog(SqlLogBackend(store), origin="zhangdian.credex/market", signer=signer)
    for n in range(5):
        log.append_sync(
            accesslog.LogEntry(
                time="2026-11-25T09:30:00Z", kind="query", requester="tax", officer="o1",
                purpose="administrative_licensing", legal_basis="行政许可法", decision="allow",
                reason="", request_id=f"r{n}",
            )
        )  # fmt: skip
    log.checkpoint()
    verifiers = {"zhangdian.credex/market": signer.public_key}
    report = accesslog.verify_log(SqlLogBackend(store), verifiers)
    assert report.ok, report.problems
    with store.write("tamper") as conn:
        conn.execute(LOG.update().where(LOG.c.idx == 3).values(leaf=b"{}"))
    assert accesslog.verify_log(SqlLogBackend(store), verifiers).first_bad_index == 3


def test_access_logs_of_several_replicas_append_without_failing_and_verify(store_url: str) -> None:
    """Three writers (own engines, as three processes would have), each with group commits in
    flight, on one store: a writer that loses the race reloads the tree and tries again, so no
    append fails, and the one log they write verifies (the audit saw 1 in 7 appends fail)."""
    signer = keys.Signer.generate()
    origin = "zhangdian.credex/market"
    replicas = [open_store(store_url) for _ in range(3)]
    logs = [accesslog.AccessLog(SqlLogBackend(r), origin=origin, signer=signer) for r in replicas]
    written: list[int] = []
    errors: list[BaseException] = []

    def work(r: int, t: int) -> None:
        try:
            for n in range(25):
                written.append(
                    logs[r].append_sync(
                        accesslog.LogEntry(
                            time="2026-11-25T09:30:00Z", kind="query", requester="tax",
                            officer="o1", purpose="administrative_licensing",
                            legal_basis="行政许可法", decision="allow", reason="",
                            request_id=f"r{r}-{t}-{n}",
                        )
                    )
                )  # fmt: skip
        except BaseException as error:  # surfaced below, never swallowed
            errors.append(error)

    threads = [threading.Thread(target=work, args=(r, t)) for r in range(3) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(written) == list(range(150))
    logs[0].checkpoint()
    report = accesslog.verify_log(SqlLogBackend(replicas[0]), {origin: signer.public_key})
    assert report.ok, report.problems
    assert report.size == 150
    for replica in replicas:
        replica.close()


def test_head_reads_state_size_and_last_leaf_together(store: Store) -> None:
    log = SqlLogBackend(store)
    assert log.head() == (None, 0, None)
    log.append([entry(0), entry(1)], b"state-2")
    assert log.head() == (b"state-2", 2, entry(1)[1])


# --- an operation and its entry in one transaction (AccessLog.append_with) -------------------

ORIGIN = "zhangdian.credex/market"
DAY = dt.date(2026, 11, 25)
MOMENT = dt.datetime(2026, 11, 25, 1, 30, tzinfo=dt.UTC)


def op_entry(n: int) -> accesslog.LogEntry:
    return accesslog.LogEntry(
        time="2026-11-25T09:30:00Z", kind="lifecycle_revoke", requester="market",
        officer="o1", purpose="lifecycle_revoke", legal_basis="山东省社会信用条例第40条",
        decision="allow", reason="", request_id=f"rev-{n}",
    )  # fmt: skip


def open_task(store: Store, task_id: str) -> None:
    ls.open_task(
        store, task_id=task_id, kind="revocation", record_key="ab" * 32, opened_at=MOMENT,
        due_on=DAY, approximate=False,
    )  # fmt: skip


def task_ids(store: Store) -> list[str]:
    return [t.task_id for t in ls.list_tasks(store)]


def test_append_with_commits_the_work_and_its_entry_together(store: Store) -> None:
    signer = keys.Signer.generate()
    log = accesslog.AccessLog(SqlLogBackend(store), origin=ORIGIN, signer=signer)
    log.append_sync(op_entry(0))

    def work() -> list[str]:
        open_task(store, "rev-1")
        return task_ids(store)  # a read inside the work sees what it wrote so far

    index, seen = log.append_with(op_entry(1), work, what="withdraw a record")
    assert (index, seen) == (1, ["rev-1"])
    assert task_ids(store) == ["rev-1"]
    assert [e.request_id for _, _, e in accesslog.iter_entries(log.backend)] == ["rev-0", "rev-1"]
    assert accesslog.verify_log(SqlLogBackend(store), {ORIGIN: signer.public_key}).ok


def test_an_entry_built_from_the_outcome_states_what_the_work_did(store: Store) -> None:
    """A received push logs whether its copy was kept: the entry is built after the work, in
    its transaction, also when another writer moved the log on meanwhile (the rebuild)."""
    signer = keys.Signer.generate()
    log = accesslog.AccessLog(SqlLogBackend(store), origin=ORIGIN, signer=signer)
    log.append_sync(op_entry(0))
    other = accesslog.AccessLog(SqlLogBackend(store), origin=ORIGIN, signer=signer)
    other.append_sync(op_entry(7))  # `log`'s chain is one entry behind now

    def work() -> int:
        open_task(store, "rev-1")
        return len(task_ids(store))

    def entry(tasks: int) -> accesslog.LogEntry:
        return dataclasses.replace(op_entry(1), reason=f"tasks_{tasks}")

    assert log.append_with(entry, work, what="withdraw a record") == (2, 1)
    logged = [(e.request_id, e.reason) for _, _, e in accesslog.iter_entries(log.backend)]
    assert logged == [("rev-0", ""), ("rev-7", ""), ("rev-1", "tasks_1")]
    assert accesslog.verify_log(SqlLogBackend(store), {ORIGIN: signer.public_key}).ok


def test_a_failing_operation_leaves_neither_its_writes_nor_its_entry(store: Store) -> None:
    signer = keys.Signer.generate()
    log = accesslog.AccessLog(SqlLogBackend(store), origin=ORIGIN, signer=signer)
    calls = 0

    def work() -> None:
        nonlocal calls
        calls += 1
        open_task(store, "rev-1")
        raise InputError("the record is not active")

    with pytest.raises(InputError, match="not active"):  # its own error, unchanged
        log.append_with(op_entry(1), work, what="withdraw a record")
    assert calls == 1  # a refusal is not retried
    assert task_ids(store) == []
    assert SqlLogBackend(store).size() == 0
    assert log.append_with(op_entry(2), lambda: open_task(store, "rev-2"), what="w")[0] == 0
    assert task_ids(store) == ["rev-2"]
    assert accesslog.verify_log(SqlLogBackend(store), {ORIGIN: signer.public_key}).ok


def test_a_failing_log_append_rolls_the_operation_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash window the append closes: before, the store change committed first and an
    append that failed (or a crash before it) left a lifecycle change no entry accounts for."""
    signer = keys.Signer.generate()
    log = accesslog.AccessLog(SqlLogBackend(store), origin=ORIGIN, signer=signer)

    def broken(*args: object, **kwargs: object) -> int:
        raise StoreUnavailableError("store: append to the access log failed: disk I/O error")

    monkeypatch.setattr(logbackend, "_append_in", broken)
    with pytest.raises(LogUnavailable, match="nothing of it was applied"):
        log.append_with(op_entry(1), lambda: open_task(store, "rev-1"), what="withdraw a record")
    monkeypatch.undo()
    assert task_ids(store) == []
    assert SqlLogBackend(store).size() == 0


def test_a_joined_transaction_is_one_per_thread(store: Store) -> None:
    with store.write("outer") as conn, store.joined(conn):
        with pytest.raises(RuntimeError, match="already open"), store.joined(conn):
            pass
        open_task(store, "rev-1")
        assert task_ids(store) == ["rev-1"]
        seen_elsewhere: list[list[str]] = []
        reader = threading.Thread(target=lambda: seen_elsewhere.append(task_ids(store)))
        reader.start()
        reader.join()
        assert seen_elsewhere == [[]]  # another thread reads committed data only
    assert task_ids(store) == ["rev-1"]


def test_a_leaf_rewritten_as_text_by_sql_is_reported_as_tampering(tmp_path: Path) -> None:
    """SQLite keeps the type a value was written with: `replace()` on a leaf stores text, and
    reading it crashed every log command (`unexpected TypeError`, exit 1) instead of
    `log verify` naming the edited entry (exit 3)."""
    store = open_store(f"sqlite:///{tmp_path / 'credex.db'}")
    try:
        signer = keys.Signer.generate()
        log = accesslog.AccessLog(SqlLogBackend(store), origin=ORIGIN, signer=signer)
        for n in range(3):
            log.append_sync(op_entry(n))
        log.checkpoint()
        with store.write("tamper") as conn:
            conn.exec_driver_sql(
                "UPDATE access_log SET leaf = replace(leaf, 'rev-1', 'rev-9') WHERE idx = 1"
            )
            kind = conn.exec_driver_sql("SELECT typeof(leaf) FROM access_log WHERE idx = 1")
            assert kind.scalar() == "text"
        report = accesslog.verify_log(SqlLogBackend(store), {ORIGIN: signer.public_key})
        assert report.first_bad_index == 1
        found = [
            e.request_id
            for _i, e in accesslog.search(SqlLogBackend(store), kind="lifecycle_revoke")
        ]
        assert found == ["rev-0", "rev-9", "rev-2"]  # readable, as edited
    finally:
        store.close()
