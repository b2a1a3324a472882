"""kill -9 of ingest and of access-log writers at random points, many times over.

Children are forked from the test process (nothing imported again, so each kill costs
milliseconds) and report every commit on a pipe; the parent kills after a random number of
commits, so the kill lands anywhere in the next unit of work: reading, signing, encrypting,
inside the transaction, in its fsync, or between commit and report. After every kill the store is
reopened and checked: nothing acknowledged is lost, nothing is doubled, the log verifies.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import io
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from node.accesslog import LogEntry, NonceClaim, decode_leaf, utc_iso, verify_log
from node.cli.init_cmds import init_node
from node.config import load_config
from node.demo_data import write_demo_data
from node.ingest import run_ingest
from node.runtime import open_runtime
from node.store import SqlLogBackend, open_store
from node.store.store import NONCES
from tests.forked import start_forked

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
INGEST_KILLS = 50
LOG_KILLS = 50
_CTX = multiprocessing.get_context("fork")
CLAIM_KEY = "kill-test-key"


def _kill_after(target: Callable[..., None], args: tuple[Any, ...], commits: int) -> list[Any]:
    """Fork `target(conn, *args)`, read `commits` messages, SIGKILL it; return the messages."""
    reader, writer = _CTX.Pipe(duplex=False)
    child = start_forked(target, (writer, *args), daemon=True)
    writer.close()
    got: list[Any] = []
    try:
        for _ in range(commits):
            message = reader.recv()
            got.append(message)
            if message == "done":
                break
    except EOFError:
        pass
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join()
    reader.close()
    assert child.exitcode in (-signal.SIGKILL, 0), child.exitcode
    return got


def _ingest_child(conn: Connection, home: Path, mapping: Path, batch: int) -> None:
    run_ingest(
        load_config(home), mapping, today=TODAY, batch_size=batch,
        progress=lambda _b: conn.send("batch"), clock=lambda: NOW,
    )  # fmt: skip
    conn.send("done")


def _write_penalties(directory: Path, rows: int, *, fine: int) -> Path:
    """A CSV of `rows` penalties (the demo's mapping), fines set to `fine` 元."""
    data = write_demo_data(directory, today=TODAY, companies=rows)
    rows_in = list(csv.reader(io.StringIO(data.penalties_csv.read_bytes().decode("gb18030"))))
    # Keep the good rows only, with one fine for all, so a re-run with another fine corrects
    # every record (version 2) instead of adding new ones.
    fine_col = rows_in[0].index("罚款金额（元）")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(rows_in[0])
    for row in rows_in[1 : 1 + data.penalties_good]:
        row[fine_col] = f"{fine:,}"
        writer.writerow(row)
    data.penalties_csv.write_bytes(out.getvalue().encode("gb18030"))
    return data.penalties_mapping


@pytest.mark.slow
def test_ingest_killed_50_times_loses_and_doubles_nothing(tmp_path: Path, kills: Any) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    rows = 120
    first = _write_penalties(tmp_path / "v1", rows, fine=8000)
    second = _write_penalties(tmp_path / "v2", rows, fine=9000)  # same records, corrected

    for i in range(INGEST_KILLS):
        mapping = first if i < INGEST_KILLS // 2 else second
        _kill_after(_ingest_child, (home, mapping, rng.choice([3, 7, 13])), rng.randint(0, 4))
        kills.add("ingest")
        if i == INGEST_KILLS // 2 - 1:  # finish the first file before the corrections start
            run_ingest(load_config(home), first, today=TODAY, clock=lambda: NOW)
    final = run_ingest(load_config(home), second, today=TODAY, clock=lambda: NOW)
    assert final.balanced, f"seed {seed}"

    store = open_store(load_config(home).store.url)
    try:
        with store.read("check") as conn:
            per_key = conn.exec_driver_sql(
                "SELECT record_key, COUNT(*), COUNT(DISTINCT version), MAX(version), "
                "SUM(CASE WHEN state = 'active' THEN 1 ELSE 0 END) FROM records GROUP BY record_key"
            ).all()
        assert len(per_key) == rows, f"seed {seed}: records lost"
        for _key, count, distinct, top, active in per_key:
            # exactly versions 1 and 2, once each, and only the newest active
            assert (count, distinct, top, active) == (2, 2, 2, 1), f"seed {seed}"
    finally:
        store.close()
    again = run_ingest(load_config(home), second, today=TODAY, clock=lambda: NOW)
    assert (again.accepted, again.skipped_unchanged) == (0, rows), f"seed {seed}"


def _entry(request_id: str) -> LogEntry:
    return LogEntry(
        time=utc_iso(NOW), kind="query", requester="hrss", officer="hr-zhang",
        purpose="staff_recruitment", legal_basis="《事业单位人事管理条例》", decision="allow",
        reason="allowed", request_id=request_id, result_count=1,
        subject_masked="913703********7147",
    )  # fmt: skip


def _claimed(request_id: str) -> bool:
    """Half of the entries are written with a nonce claim; the parent can tell which."""
    return int(request_id, 16) % 2 == 0


def _claim(request_id: str) -> NonceClaim:
    denial = dataclasses.replace(_entry(request_id), decision="deny", reason="unauthenticated")
    return NonceClaim(
        keyid=CLAIM_KEY, nonce=request_id, expires_at=NOW + dt.timedelta(minutes=5), now=NOW,
        replayed=denial,
    )  # fmt: skip


def _log_child(conn: Connection, home: Path, seed: int) -> None:
    rng = random.Random(seed)
    runtime = open_runtime(home, clock=lambda: NOW)

    async def write() -> None:
        while True:
            request_id = uuid.UUID(int=rng.getrandbits(128)).hex
            if _claimed(request_id):
                # a query's entry, its request nonce claimed in the same transaction
                await runtime.log.append(_entry(request_id), claim=_claim(request_id))
            else:
                runtime.log.append_sync(_entry(request_id))
            conn.send(request_id)  # acknowledged: the entry is durably committed
            if rng.random() < 0.3:
                runtime.log.checkpoint()

    asyncio.run(write())


def _log_state(home: Path) -> tuple[Counter[str], bool, set[str], set[str]]:
    """Request ids of the logged entries, whether the log verifies, the claimed nonces, and
    the decisions logged."""
    runtime = open_runtime(home, clock=lambda: NOW)
    try:
        backend = SqlLogBackend(runtime.store)
        entries = [decode_leaf(leaf)[0] for _i, leaf, _h in backend.leaves(0, backend.size())]
        ids = Counter(e.request_id for e in entries)
        report = verify_log(
            backend, runtime.log_verifiers(), origin=runtime.config.log.origin,
            log_name=runtime.node_id,
        )  # fmt: skip
        with runtime.store.read("read the claimed nonces") as conn:
            nonces = {
                str(n)
                for (n,) in conn.execute(select(NONCES.c.nonce).where(NONCES.c.keyid == CLAIM_KEY))
            }
        return ids, report.ok, nonces, {e.decision for e in entries}
    finally:
        runtime.close()


@pytest.mark.slow
def test_access_log_writer_killed_50_times_keeps_every_acknowledged_entry_once(
    tmp_path: Path, kills: Any
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    acknowledged: list[str] = []
    for _ in range(LOG_KILLS):
        acknowledged += _kill_after(_log_child, (home, rng.randrange(1 << 30)), rng.randint(0, 6))
        kills.add("access_log")
        ids, ok, nonces, decisions = _log_state(home)
        assert ok, f"seed {seed}: the log fails verification after a kill"
        assert not [i for i, n in ids.items() if n > 1], f"seed {seed}: an entry is doubled"
        assert not set(acknowledged) - set(ids), f"seed {seed}: an acknowledged entry is lost"
        # a claimed nonce and its entry commit together, never one without the other, and no
        # claim ever found its own nonce taken (every entry is the allowed one)
        assert nonces == {i for i in ids if _claimed(i)}, f"seed {seed}: nonce without entry"
        assert decisions <= {"allow"}, f"seed {seed}: a fresh nonce was taken for a replay"
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "log", "verify", "--home", str(home)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
