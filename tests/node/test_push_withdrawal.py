"""Joint-punishment withdrawals: a repaired, revoked or expired entry stops at push receivers.

In-process (real runtimes, mTLS servers on loopback). market pushes a severe-dishonesty entry
to hrss, which has a push agreement but no feed subscription; when market withdraws or
expires the entry, `push_pending` sends a withdraw/expire notice through Exchange.Push, hrss
moves its copy out of `active` and answers a receipt, and the propagation report lists hrss.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from sqlalchemy import update

from node import feeds, lifecycle_ops, push
from node._pb.credex.v1 import exchange_pb2, exchange_pb2_grpc
from node.cluster import LocalCluster
from node.errors import InputError
from node.runtime import NodeRuntime
from node.store import lifecycle as ls
from node.store.store import RECORDS
from tests.node import push_support
from tests.node.exchange_support import serving
from tests.node.push_support import ITEM, key, push_cluster

KEY = key(42)


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_cluster(tmp_path)


def seed_entry(runtime: NodeRuntime) -> str:
    """Store one active, signed severe-dishonesty entry of `runtime`; returns its row id."""
    return push_support.seed_entry(
        runtime,
        42,
        decided_on=dt.date(2026, 6, 1),
        min_end=dt.date(2027, 6, 1),
        max_end=dt.date(2029, 6, 1),
        issued_at="2026-11-25T00:00:00Z",
    )


def copy_state(receiver: NodeRuntime) -> str:
    return push_support.copy_state(receiver, 42)


def withdraw(market: NodeRuntime, row_id: str) -> None:
    """A credit repair at market (the same store operation `lifecycle_ops.repair_record` uses)."""
    record = market.store.get_record(row_id)
    now = market.clock()
    ls.withdraw_record(
        market.store, record, task_id=f"rep-{row_id}", kind="repair", now=now,
        due_on=now.date(), approximate=False, outcome="withdrawn (repair)", close=True,
    )  # fmt: skip


def test_repair_reaches_a_push_receiver_without_a_feed(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    row_id = seed_entry(market)

    async def scenario() -> None:
        async with serving(hrss):
            (sent,) = await push.push_record(market, KEY)
            assert sent.receipt
            assert copy_state(hrss) == "active"
        withdraw(market, row_id)
        report = lifecycle_ops.propagation_report(market, KEY)
        assert report["complete"] is False
        assert [(r["to_node"], r["acknowledged"]) for r in report["push_receivers"]] == [
            ("hrss", False)
        ]
        # hrss is down: the withdrawal waits, unacknowledged, and is retried later
        (down,) = await push.push_pending(market)
        assert (down.to_node, down.receipt, down.error) == ("hrss", False, "UNAVAILABLE")
        assert push.is_withdrawal_push(down.push_id)
        async with serving(hrss):
            (done,) = await push.push_pending(market)
            assert (done.push_id, done.receipt, done.error) == (down.push_id, True, None)
            assert await push.push_pending(market) == []  # acknowledged: not sent again
            again = await push.push_withdrawal(market, KEY)  # asked again: kept receipt
            assert [o.receipt for o in again] == [True]

    try:
        asyncio.run(scenario())
        assert copy_state(hrss) == "withdrawn"
        report = lifecycle_ops.propagation_report(market, KEY)
        assert report["complete"] is True
        (row,) = report["push_receivers"]
        assert (row["to_node"], row["kind"], row["acknowledged"]) == ("hrss", "withdraw", True)
    finally:
        market.close()
        hrss.close()


def test_expiry_reaches_a_push_receiver(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    row_id = seed_entry(market)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, KEY)
            market.store.set_record_state(
                row_id, "expired", event_kind="expire", now=market.clock()
            )
            (done,) = await push.push_pending(market)
            assert done.receipt

    try:
        asyncio.run(scenario())
        assert copy_state(hrss) == "expired"
        (row,) = lifecycle_ops.propagation_report(market, KEY)["push_receivers"]
        assert (row["kind"], row["acknowledged"]) == ("expire", True)
    finally:
        market.close()
        hrss.close()


@pytest.mark.parametrize("receiver_purged", [False, True])
def test_a_revocation_after_expiry_reaches_a_push_receiver_holding_the_copy_expired(
    cluster: LocalCluster, receiver_purged: bool
) -> None:
    # Shandong Art. 40 reaches an entry whose window ended: the receiver, told "expire" then,
    # is told "withdraw" by the serving node's next pass, whoever committed the revocation (the
    # CLI commits it and sends nothing), and its expired copy becomes withdrawn; a copy it has
    # purged meanwhile stays purged, and the notice is still answered.
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    row_id = seed_entry(market)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, KEY)
            market.store.set_record_state(
                row_id, "expired", event_kind="expire", now=market.clock()
            )
            (expired,) = await push.push_pending(market)
            assert expired.receipt
            assert copy_state(hrss) == "expired"
            if receiver_purged:
                (copy,) = hrss.store.record_versions("market", KEY)
                hrss.store.set_record_state(copy.row_id, "purged", event_kind=None, now=now())
            revoked = lifecycle_ops.revoke_record(market, KEY, reason="复议撤销")
            assert revoked.state == "withdrawn"
            (told,) = await push.push_pending(market)
            assert (told.to_node, told.receipt, told.error) == ("hrss", True, None)
            assert told.push_id != expired.push_id
            assert await push.push_pending(market) == []  # acknowledged: not sent again

    def now() -> dt.datetime:
        return hrss.clock()

    try:
        asyncio.run(scenario())
        assert copy_state(hrss) == ("purged" if receiver_purged else "withdrawn")
        report = lifecycle_ops.propagation_report(market, KEY)
        (row,) = report["push_receivers"]
        assert (row["kind"], row["acknowledged"]) == ("withdraw", True)
    finally:
        market.close()
        hrss.close()


def test_a_revocation_after_expiry_reaches_the_receiver_after_the_record_was_purged(
    cluster: LocalCluster,
) -> None:
    # The receiver acknowledged "expire"; the decision is revoked while it is down, and the
    # record, its retention counted from its disclosure end, is purged before the next pass.
    # The revocation is still due to it as "withdraw": the expire notice it acknowledged
    # before does not tell it, and the pass must send what it says is due.
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    row_id = seed_entry(market)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, KEY)
            market.store.set_record_state(
                row_id, "expired", event_kind="expire", now=market.clock()
            )
            (expired,) = await push.push_pending(market)
            assert expired.receipt
        lifecycle_ops.revoke_record(market, KEY, reason="复议撤销")
        market.store.set_record_state(row_id, "purged", event_kind=None, now=market.clock())
        async with serving(hrss):
            (told,) = await push.push_pending(market)
            assert (told.to_node, told.receipt, told.error) == ("hrss", True, None)
            assert told.push_id != expired.push_id
            assert await push.push_pending(market) == []

    try:
        asyncio.run(scenario())
        assert copy_state(hrss) == "withdrawn"
    finally:
        market.close()
        hrss.close()


def test_an_active_entry_has_nothing_to_withdraw(cluster: LocalCluster) -> None:
    market = cluster.runtime("market")
    seed_entry(market)
    try:
        with pytest.raises(Exception, match="nothing to withdraw"):
            asyncio.run(push.push_withdrawal(market, KEY))
    finally:
        market.close()


def _withdrawal(sender: NodeRuntime, notice_id: str, *, kind: str = "withdraw") -> Any:
    member = sender.bundle().member("hrss")
    assert member is not None
    return feeds.push_withdrawal_body(
        feeds.PushWithdrawal(kind=kind, record_key=KEY, version=1, item_id=ITEM, reason=""),
        at=sender.clock(), sender=sender.node_id, recipient="hrss",
        recipient_key=member.encryption_key, notice_id=notice_id,
    )  # fmt: skip


async def _call(sender: NodeRuntime, notice: exchange_pb2.PushNotice) -> Any:
    signed = sender.sign_request(feeds.PUSH_METHOD, notice.SerializeToString())
    channel = sender.channel("hrss")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        return await stub.Push(exchange_pb2.PushRequest(signed=signed), timeout=10)
    finally:
        await channel.close()


def test_withdrawals_are_refused_unless_from_an_agreed_producer(cluster: LocalCluster) -> None:
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    seed_entry(market)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, KEY)
            # platform has no push agreement with hrss: refused, the copy stays
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _call(platform, _withdrawal(platform, "w-1"))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # the notice's kind is not the sealed one: the seal does not open
            notice = _withdrawal(market, "w-2")
            notice.kind = exchange_pb2.PushNotice().kind  # unset: passes for an entry
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _call(market, notice)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert copy_state(hrss) == "active"
            await _call(market, _withdrawal(market, "w-3"))
            assert copy_state(hrss) == "withdrawn"
            await _call(market, _withdrawal(market, "w-3"))  # a retry changes nothing

    try:
        asyncio.run(scenario())
        assert copy_state(hrss) == "withdrawn"
    finally:
        for r in (market, hrss, platform):
            r.close()


def test_an_entry_whose_disclosure_ended_before_the_scan_is_not_pushed(
    cluster: LocalCluster,
) -> None:
    # Still "active" until the next lifecycle scan marks it expired: a manual push in between
    # must not send it (the receiver would only store it expired, or show it if its day lags).
    market = cluster.runtime("market")
    today = market.clock().date()
    push_support.seed_entry(
        market,
        43,
        decided_on=today - dt.timedelta(days=900),
        min_end=today - dt.timedelta(days=200),
        max_end=today - dt.timedelta(days=2),
    )
    try:
        with pytest.raises(InputError, match="disclosure period is over"):
            asyncio.run(push.push_record(market, key(43)))
        assert ls.push_states(market.store, record_key=key(43)) == []
    finally:
        market.close()


def test_an_edited_row_does_not_hold_up_the_other_withdrawals(cluster: LocalCluster) -> None:
    # Two pushed entries are repaired; then one row is edited outside credex (decision 0018).
    # The withdrawal pass leaves that one alone and still tells hrss of the other: one edited
    # row must not keep joint punishment going for every repaired entry.
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    kept, edited = seed_entry(market), push_support.seed_entry(market, 43)

    async def scenario() -> list[push.PushOutcome]:
        async with serving(hrss):
            for n in (42, 43):
                (sent,) = await push.push_record(market, key(n))
                assert sent.receipt
            withdraw(market, kept)
            withdraw(market, edited)
            with market.store.write("test: edit a row with SQL") as conn:
                conn.execute(
                    update(RECORDS).where(RECORDS.c.row_id == edited).values(disclosure_rule="x")
                )
            return await push.push_pending(market)

    try:
        outcomes = asyncio.run(scenario())
        assert [(o.to_node, o.receipt) for o in outcomes] == [("hrss", True)]
        assert copy_state(hrss) == "withdrawn"
        assert push_support.copy_state(hrss, 43) == "active"  # its notice waits for the row
    finally:
        market.close()
        hrss.close()
