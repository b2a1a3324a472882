"""The receiving side of joint-punishment withdrawals: tombstones and purged copies.

In-process (real runtimes, mTLS servers on loopback). market pushes severe-dishonesty entries
to hrss (a push agreement, no feed). A withdrawal that reaches hrss before the entry it ends
leaves a tombstone, so the entry is not stored active when it lands, even if market never
hears that receipt; a purged copy at hrss never changes again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest

from node import feeds, push, scheduler
from node._pb.credex.v1 import exchange_pb2_grpc
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.server import Service, build_server
from node.services import exchange_service
from node.store import pushed as pushed_store
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


class _LostAnswer(exchange_service.ExchangeServicer):
    """hrss's Exchange: before the first notice is handled, `meanwhile` runs; that notice is
    then handled, but its answer is lost (the connection drops after the commit)."""

    def __init__(self, runtime: NodeRuntime, meanwhile: Any) -> None:
        super().__init__(runtime)
        self._meanwhile = meanwhile

    async def Push(self, request: Any, context: Any) -> Any:
        hook, self._meanwhile = self._meanwhile, None
        if hook is not None:
            await hook()
        answer = await super().Push(request, context)
        if hook is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return answer


def test_an_entry_overtaken_by_its_withdrawal_is_not_stored_though_its_receipt_is_lost(
    cluster: LocalCluster,
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    other = cluster.runtime("market")  # another process of market: the CLI, a replica
    seed_entry(market, 1)

    async def meanwhile() -> None:
        # while the entry is on its way, the other process repairs and sends the withdrawal:
        # it reaches hrss first, finds no copy, and is receipted (so it is never sent again)
        await asyncio.to_thread(repair, other, 1)
        (first,) = await push.push_withdrawal(other, key(1))
        assert first.receipt
        assert hrss.store.record_versions("market", key(1)) == []

    async def scenario() -> tuple[list[push.PushOutcome], list[push.PushOutcome]]:
        service = Service(
            name="credex.v1.Exchange",
            servicer=_LostAnswer(hrss, meanwhile),
            add=exchange_pb2_grpc.add_ExchangeServicer_to_server,
        )
        server = build_server(
            listen=hrss.config.server.listen, tls=hrss.server_tls(), services=[service]
        )
        await server.start()
        try:
            outcomes = await push.push_record(market, key(1))
            # every retry path market has
            later = await push.push_pending(market)
            later += await push.push_pending_withdrawals(market)
            return outcomes, later
        finally:
            await server.stop(None)

    try:
        outcomes, later = asyncio.run(scenario())
        assert [o.error for o in outcomes] == ["UNAVAILABLE"]  # the entry's receipt was lost
        assert later == []  # nothing is due at market any more ...
        assert hrss.store.record_versions("market", key(1)) == []  # ... and hrss punishes not
        tombstone = pushed_store.push_tombstone(hrss.store, "market", key(1))
        assert tombstone is not None
        assert (tombstone.version, tombstone.kind) == (1, "withdraw")
        # the withdrawal, then the entry: both allowed, neither releases anything
        entries = push_entries(hrss)
        assert [(e.decision, e.reason, e.result_count, e.items_released) for e in entries] == [
            ("allow", "withdraw", 0, ()),
            ("allow", "withdraw", 0, ()),
        ]
    finally:
        close(market, hrss, other)


def test_a_withdrawal_of_a_held_copy_leaves_no_tombstone(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))
            repair(market, 1)
            (sent,) = await push.push_withdrawal(market, key(1))
            assert sent.receipt

    try:
        asyncio.run(scenario())
        assert copy_state(hrss, 1) == "withdrawn"
        assert pushed_store.push_tombstone(hrss.store, "market", key(1)) is None
    finally:
        close(market, hrss)


def test_a_purged_copy_never_changes_again(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))

    try:
        asyncio.run(scenario())
        (copy,) = hrss.store.record_versions("market", key(1))
        now = hrss.clock()
        withdraw = feeds.PushWithdrawal(
            kind="withdraw", record_key=key(1), version=1, item_id=ITEM, reason="withdrawn"
        )
        assert feeds.apply_push_withdrawal(hrss, "market", withdraw, now=now) == 1
        hrss.store.set_record_state(copy.row_id, "purged", event_kind=None, now=now)  # retention
        # the same notice retried years on, or an expiry: the purged copy stays purged
        assert feeds.apply_push_withdrawal(hrss, "market", withdraw, now=now) == 0
        assert copy_state(hrss, 1) == "purged"
        expire = feeds.PushWithdrawal(
            kind="expire", record_key=key(1), version=1, item_id=ITEM, reason="expired"
        )
        assert feeds.apply_push_withdrawal(hrss, "market", expire, now=now) == 0
        assert copy_state(hrss, 1) == "purged"
        assert pushed_store.push_tombstone(hrss.store, "market", key(1)) is None  # it is held
    finally:
        close(market, hrss)


def test_the_scan_deletes_tombstones_after_the_retention(cluster: LocalCluster) -> None:
    hrss = cluster.runtime("hrss")
    now = hrss.clock()
    months = hrss.config.lifecycle.retention_months
    old = now - dt.timedelta(days=31 * months + 31)
    try:
        assert pushed_store.tombstone_unless_held(
            hrss.store, "market", key(1), 1, "withdraw", now=old
        )
        assert pushed_store.tombstone_unless_held(
            hrss.store, "market", key(2), 1, "expire", now=now
        )
        scheduler.scan(hrss)
        assert pushed_store.push_tombstone(hrss.store, "market", key(1)) is None
        assert pushed_store.push_tombstone(hrss.store, "market", key(2)) is not None
    finally:
        hrss.close()
