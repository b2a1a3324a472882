"""A received copy keeps its producer's objection flag ("存在异议") across crashes and replays.

The flag of a new copy is stored in the copy's own row, in one transaction; a version the
subscriber already holds (a replay after a crash, or a copy an older release stored without its
flag) takes the flag its event carries, in the transaction of its batch's records.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import keys
from node import feeds
from node.cluster import LocalCluster
from node.store import Store
from tests.node import push_support
from tests.node.exchange_support import serving
from tests.node.push_support import ITEM, key


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_support.feed_cluster(tmp_path)


def _copy_flag(store: Store, n: int) -> bool:
    (copy,) = store.record_versions("market", key(n))
    return copy.objection


def test_a_crash_after_the_copy_is_stored_keeps_its_flag(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    rows = [push_support.seed_entry(market, n) for n in range(2)]
    now = market.clock()
    # under objection before the platform subscribes: no objection_set event will follow
    market.store.set_objection(rows[0], True, now=now)
    market.store.ensure_subscription("platform", [ITEM], now=now)
    market.store.set_record_state(rows[1], "withdrawn", event_kind="withdraw", now=now)
    # The batch: upsert 0 (flagged), upsert 1 (withheld: withdrawn), withdraw 1. The withheld
    # upsert makes the subscriber write copy 0 before going on: kill it right after that
    # write, before the cursor moves. The batch is one transaction: nothing of it stays.
    real = platform.store.store_batch

    def crash_after_the_copy(*args: Any, **kwargs: Any) -> int:
        count = real(*args, **kwargs)
        if args[0]:
            raise RuntimeError("simulated kill -9 after the copy's write")
        return count

    monkeypatch.setattr(platform.store, "store_batch", crash_after_the_copy)

    async def scenario() -> None:
        async with serving(market):
            with pytest.raises(RuntimeError, match="simulated"):
                await feeds.pull(platform, "market")
            assert platform.store.upstream_cursor("market") == 0
            # stored with its flag, or not at all
            assert platform.store.record_versions("market", push_support.key(0)) == []
            monkeypatch.setattr(platform.store, "store_batch", real)
            again = await feeds.pull(platform, "market")
            assert (again.stored, again.cursor) == (1, 3)

    try:
        asyncio.run(scenario())
        assert _copy_flag(platform.store, 0) is True
    finally:
        market.close()
        platform.close()


@pytest.mark.parametrize("producer_flag", [True, False])
def test_a_replayed_version_takes_the_producers_flag(
    cluster: LocalCluster, producer_flag: bool
) -> None:
    """A copy held with the wrong flag (left by an older release's crash between the copy
    and its flag, or flagged since) is reconciled when its version is delivered again."""
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    row = push_support.seed_entry(market, 0)
    # flagged before the platform subscribes: its upsert is the only event that says so
    market.store.set_objection(row, producer_flag, now=market.clock())
    stored = market.store.get_record(row)
    signed = keys.SignedRecord.from_bytes(market.cipher.decrypt(row, stored.body))
    signer = market.node_keys.signing
    verified = keys.verify_record(signed, trusted={signer.keyid: signer.public_key})
    copy = feeds.received_record(platform, signed, verified, now=platform.clock())
    platform.store.store_batch([copy], now=platform.clock())  # cursor still 0
    if not producer_flag:
        platform.store.set_objection(copy.row_id, True, now=platform.clock())
    assert _copy_flag(platform.store, 0) is not producer_flag

    async def scenario() -> None:
        async with serving(market):
            done = await feeds.pull(platform, "market")
            assert (done.stored, done.skipped) == (0, 1)

    try:
        asyncio.run(scenario())
        assert _copy_flag(platform.store, 0) is producer_flag
    finally:
        market.close()
        platform.close()
