"""The access log on the store's SQLite backend: group commit, verification, and tampering done
directly in the database file (as an administrator with sqlite3 would)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import keys
from node.accesslog import AccessLog, LogBackend, LogEntry, utc_iso, verify_log
from node.store import SqlLogBackend, open_store

T0 = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
LOG_KEY = keys.Signer(b"\x51" * 32)
ORIGIN = "credex.zd-market/accesslog"
VERIFIERS = {ORIGIN: LOG_KEY.public_key}


def entry(i: int) -> LogEntry:
    return LogEntry(
        time=utc_iso(T0 + dt.timedelta(seconds=i)),
        kind="query",
        requester="zd-tax",
        officer="officer-3",
        purpose="administrative_penalty",
        legal_basis="《行政处罚法》",
        decision="allow",
        reason="statutory_duty",
        request_id=f"req-{i}",
    )


def fill(path: Path, n: int = 60) -> SqlLogBackend:
    backend = SqlLogBackend(open_store(f"sqlite:///{path}"))
    assert isinstance(backend, LogBackend)
    log = AccessLog(backend, origin=ORIGIN, signer=LOG_KEY, clock=lambda: T0)

    async def run() -> list[int]:
        return list(await asyncio.gather(*(log.append(entry(i)) for i in range(n))))

    assert asyncio.run(run()) == list(range(n))
    log.checkpoint()
    return backend


def test_sqlite_log_verifies(tmp_path: Path) -> None:
    backend = fill(tmp_path / "credex.db")
    report = verify_log(backend, VERIFIERS)
    assert report.ok, report.problems
    assert report.size == 60


def test_sqlite_edit_and_delete_are_named(tmp_path: Path) -> None:
    db = tmp_path / "credex.db"
    backend = fill(db)
    with sqlite3.connect(db) as conn:
        leaf = conn.execute("SELECT leaf FROM access_log WHERE idx = 41").fetchone()[0]
        conn.execute(
            "UPDATE access_log SET leaf = ? WHERE idx = 41",
            (bytes(leaf).replace(b"officer-3", b"officer-4"),),
        )
    assert verify_log(backend, VERIFIERS).first_bad_index == 41
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM access_log WHERE idx = 17")
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 17
    assert report.problems[0].code == "index_gap"
