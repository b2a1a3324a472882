"""A received push and its access-log entry commit together (decision 0015).

The receiver used to log an entry saying a pushed copy was stored, then store it: a store that
failed, or a crash in between, left an entry for a copy nobody holds, and a withdrawal that
committed in between needed a second, corrective entry. Now the copy (or the change a
withdraw notice makes) and the entry that says what happened to it are one transaction.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from node import push
from node.cluster import LocalCluster
from node.store import logbackend, pushed
from node.store.errors import StoreUnavailableError
from tests.node.exchange_support import serving
from tests.node.push_support import (
    ITEM,
    close,
    copy_state,
    key,
    push_cluster,
    push_entries,
    repair,
    seed_entry,
)


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_cluster(tmp_path)


def break_appends_of(node_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every access-log append of `node_id`'s store fail as a full disk would."""
    real = logbackend._append_in

    def broken(conn: Any, *args: Any, **kwargs: Any) -> int:
        if f"/{node_id}/" in str(conn.engine.url):
            raise StoreUnavailableError("store: append to the access log failed: disk is full")
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(logbackend, "_append_in", broken)


def test_a_pushed_entry_whose_log_entry_cannot_be_written_is_not_stored(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            break_appends_of("hrss", monkeypatch)
            (failed,) = await push.push_record(market, key(1))
            assert failed.receipt is False
            assert hrss.store.record_versions("market", key(1)) == []
            monkeypatch.undo()
            # the producer's retry lands it, once, with one entry
            (done,) = await push.push_pending(market)
            assert done.receipt

    try:
        asyncio.run(scenario())
        assert copy_state(hrss, 1) == "active"
        entries = push_entries(hrss)
        assert [(e.decision, e.result_count, e.items_released) for e in entries] == [
            ("allow", 1, (ITEM,))
        ]
    finally:
        close(market, hrss)


def test_a_pushed_entry_that_cannot_be_stored_is_not_logged_as_stored(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    def full_disk(*args: object, **kwargs: object) -> str:
        raise StoreUnavailableError("store: store a pushed record failed: disk is full")

    async def scenario() -> None:
        async with serving(hrss):
            monkeypatch.setattr(pushed, "store_pushed", full_disk)
            (failed,) = await push.push_record(market, key(1))
            assert failed.receipt is False

    try:
        asyncio.run(scenario())
        assert hrss.store.record_versions("market", key(1)) == []
        # before, an allowed entry releasing the item was logged ahead of the failed store
        assert [e for e in push_entries(hrss) if e.decision == "allow"] == []
    finally:
        close(market, hrss)


def test_a_withdraw_notice_whose_log_entry_cannot_be_written_changes_nothing(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            (sent,) = await push.push_record(market, key(1))
            assert sent.receipt
            await asyncio.to_thread(repair, market, 1)
            break_appends_of("hrss", monkeypatch)
            (failed,) = await push.push_withdrawal(market, key(1))
            assert failed.receipt is False
            assert copy_state(hrss, 1) == "active"
            monkeypatch.undo()
            (done,) = await push.push_pending(market)
            assert done.receipt

    try:
        asyncio.run(scenario())
        assert copy_state(hrss, 1) == "withdrawn"
        assert [(e.reason, e.result_count) for e in push_entries(hrss)] == [
            ("", 1),
            ("withdraw", 0),
        ]
    finally:
        close(market, hrss)
