"""Exchange refusals found by an audit: real runtimes and mTLS servers on loopback.

- Push: a department may push only the entries it produced itself (`not_producer`), however
  genuine the producer's signature: its push agreement is not the producer's.
- Subscribe in follow mode: the stream ends UNAUTHENTICATED once the key that signed the
  subscription is revoked, or the subscriber's roster membership is no longer valid, and the
  refusal is a denied `feed_delivery` entry.
- Item ids a caller sends reach log entries bounded and refusal messages as a few ids, so a
  huge list or id neither bloats the access log nor turns the refusal into RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import keys
from node import feeds
from node._pb.credex.v1 import exchange_pb2, exchange_pb2_grpc
from node.accesslog import LogEntry, iter_entries
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.services import exchange_service
from node.store import NewRecord
from tests.node.exchange_support import serving

FEED_ITEM = "admin_penalty"
SEVERE = "severe_dishonesty_list"


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    """market feeds the platform; tax pushes severe-dishonesty entries to hrss (market has no
    push agreement with hrss)."""
    nodes = [
        ("market", "department"),
        ("hrss", "department"),
        ("tax", "department"),
        ("platform", "platform"),
    ]
    agreements = [
        {"provider": "market", "consumer": "platform", "items": [FEED_ITEM],
         "purposes": ["feed"], "kind": "feed"},
        {"provider": "tax", "consumer": "hrss", "items": [SEVERE], "purposes": ["push"],
         "kind": "push"},
    ]  # fmt: skip
    c = LocalCluster(tmp_path, nodes, agreements)
    c.init()
    return c


def _signed(producer: NodeRuntime, n: int, item: str) -> keys.SignedRecord:
    """Record `n` of item `item`, signed by `producer` under its own name."""
    header = {
        "item": item,
        "catalog_version": producer.catalogue.version,
        "record_key": f"{n:064x}",
        "version": 1,
        "producer": producer.node_id,
        "issued_at": "2026-11-25T00:00:00Z",
        "subject": f"{n:032x}",
    }
    return keys.sign_record(header, {"decision_no": f"N{n}"}, producer.node_keys.signing)


def _store(runtime: NodeRuntime, numbers: range) -> None:
    """Store `runtime`'s own active feed records with the given numbers (`row-<n>`)."""
    now = runtime.clock()
    rows = []
    for n in numbers:
        row_id = f"row-{n}"
        rows.append(
            NewRecord(
                row_id=row_id,
                producer=runtime.node_id,
                record_key=f"{n:064x}",
                version=1,
                item_id=FEED_ITEM,
                catalog_version=runtime.catalogue.version,
                subject_index=f"{n:032x}",
                body=runtime.cipher.encrypt(row_id, _signed(runtime, n, FEED_ITEM).to_bytes()),
                content_hash=f"{n:064x}",
                severity=None,
                decided_on=None,
                disclosure_min_end=None,
                disclosure_max_end=None,
                disclosure_rule="none",
                created_at=now,
            )
        )
    runtime.store.store_batch(rows, now=now)


def _entries(runtime: NodeRuntime, kind: str) -> list[LogEntry]:
    return [e for _index, _leaf, e in iter_entries(runtime.log.backend) if e.kind == kind]


def _denials(runtime: NodeRuntime, kind: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(requester, reason, items asked) of every denied `kind` entry in `runtime`'s log."""
    return [
        (e.requester, e.reason, e.items_asked)
        for e in _entries(runtime, kind)
        if e.decision == "deny"
    ]


async def _push(sender: NodeRuntime, notice: exchange_pb2.PushNotice) -> Any:
    signed = sender.sign_request(feeds.PUSH_METHOD, notice.SerializeToString())
    channel = sender.channel("hrss")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        return await stub.Push(exchange_pb2.PushRequest(signed=signed), timeout=10)
    finally:
        await channel.close()


def _entry_notice(sender: NodeRuntime, record: keys.SignedRecord, notice_id: str) -> Any:
    member = sender.bundle().member("hrss")
    assert member is not None
    return feeds.push_request_body(
        record, sender=sender.node_id, recipient="hrss",
        recipient_key=member.encryption_key, notice_id=notice_id,
    )  # fmt: skip


def test_a_department_cannot_push_an_entry_another_produced(cluster: LocalCluster) -> None:
    # tax holds market's genuinely signed entry (say, from a feed) and has a push agreement
    # with hrss; market has none. Forwarding it would be market's record under tax's agreement.
    market, hrss, tax = (cluster.runtime(n) for n in ("market", "hrss", "tax"))
    forwarded = _signed(market, 7, SEVERE)

    async def scenario() -> None:
        async with serving(hrss):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _push(tax, _entry_notice(tax, forwarded, "forward-1"))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (caught.value.details() or "").startswith("not_producer: ")
            await _push(tax, _entry_notice(tax, _signed(tax, 8, SEVERE), "own-1"))  # its own

    try:
        asyncio.run(scenario())
        assert hrss.store.record_versions("market", f"{7:064x}") == []
        assert [r.origin for r in hrss.store.record_versions("tax", f"{8:064x}")] == ["received"]
        assert _denials(hrss, "push") == [("tax", "not_producer", (SEVERE,))]
    finally:
        for r in (market, hrss, tax):
            r.close()


async def _follow_until_refused(
    market: NodeRuntime, platform: NodeRuntime, change: Callable[[], None]
) -> tuple[list[tuple[int, int]], grpc.aio.AioRpcError]:
    """Follow market's feed as the platform; after the first batch, `change` something, store
    three more records and return the batches received and the error that ended the stream."""
    batches: list[tuple[int, int]] = []
    first = asyncio.Event()
    body = exchange_pb2.SubscribeBody(follow=True)
    signed = platform.sign_request(feeds.SUBSCRIBE_METHOD, body.SerializeToString())

    async def follow() -> grpc.aio.AioRpcError:
        channel = platform.channel("market")
        try:
            stub = exchange_pb2_grpc.ExchangeStub(channel)
            try:
                async for batch in stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed)):
                    batches.append((batch.first_seq, batch.last_seq))
                    first.set()
            except grpc.aio.AioRpcError as error:
                return error
            raise AssertionError("the follow stream ended without an error")
        finally:
            await channel.close()

    async with serving(market):
        follower = asyncio.create_task(follow())
        await asyncio.wait_for(first.wait(), timeout=10)
        change()
        _store(market, range(10, 13))  # records the platform must no longer receive
        error = await asyncio.wait_for(follower, timeout=10)
    return batches, error


def test_a_follow_stream_ends_when_its_signing_key_is_revoked(cluster: LocalCluster) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    market.store.ensure_subscription("platform", [FEED_ITEM], now=market.clock())
    _store(market, range(2))
    revoked = platform.node_keys.signing.keyid

    def revoke() -> None:
        cluster.reissue_bundle(revoked_keyids=[revoked])
        market.reload_bundle()

    try:
        batches, error = asyncio.run(_follow_until_refused(market, platform, revoke))
        assert batches == [(1, 2)]
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert revoked in (error.details() or "")
        delivered = [e for e in _entries(market, "feed_delivery") if e.decision == "allow"]
        assert [e.result_count for e in delivered] == [2]
        assert _denials(market, "feed_delivery") == [("platform", "key_revoked", (FEED_ITEM,))]
    finally:
        market.close()
        platform.close()


def test_a_follow_stream_ends_when_the_membership_is_over(cluster: LocalCluster) -> None:
    spec = cluster.spec()
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    for node in spec["node"]:
        if node["node_id"] == "platform":
            node["valid_until"] = until.isoformat().replace("+00:00", "Z")
    cluster.reissue_bundle(node=spec["node"])
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    market.store.ensure_subscription("platform", [FEED_ITEM], now=market.clock())
    _store(market, range(2))
    real = market.clock

    def later() -> None:
        # the bundle is still in force; the platform's membership in it is over
        market.clock = lambda: real() + dt.timedelta(days=3)

    try:
        batches, error = asyncio.run(_follow_until_refused(market, platform, later))
        assert batches == [(1, 2)]
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _denials(market, "feed_delivery") == [
            ("platform", "requester_not_valid", (FEED_ITEM,))
        ]
    finally:
        market.close()
        platform.close()


def test_huge_item_lists_and_ids_stay_small_in_messages_and_the_log(
    cluster: LocalCluster,
) -> None:
    market, platform, hrss, tax = (
        cluster.runtime(n) for n in ("market", "platform", "hrss", "tax")
    )
    asked = [f"x{i:06d}" + "y" * 40 for i in range(20_000)]
    huge_id = "Z" * 1_000_000
    member = tax.bundle().member("hrss")
    assert member is not None

    async def subscribe() -> grpc.aio.AioRpcError:
        body = exchange_pb2.SubscribeBody(items=asked)
        signed = platform.sign_request(feeds.SUBSCRIBE_METHOD, body.SerializeToString())
        channel = platform.channel("market")
        try:
            stub = exchange_pb2_grpc.ExchangeStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _batch in stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed)):
                    pass
            return caught.value
        finally:
            await channel.close()

    async def push(notice: exchange_pb2.PushNotice) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _push(tax, notice)
        return caught.value

    async def scenario() -> list[grpc.aio.AioRpcError]:
        async with serving(market):
            refused_subscription = await subscribe()
        withdrawal = feeds.push_withdrawal_body(
            feeds.PushWithdrawal(
                kind="withdraw", record_key="ab" * 32, version=1, item_id=huge_id, reason=""
            ),
            at=tax.clock(), sender="tax", recipient="hrss",
            recipient_key=member.encryption_key, notice_id="w-huge",
        )  # fmt: skip
        entry = _entry_notice(tax, _signed(tax, 9, "Q" * 100_000), "e-huge")
        async with serving(hrss):
            return [refused_subscription, await push(withdrawal), await push(entry)]

    try:
        errors = asyncio.run(scenario())
        assert [e.code() for e in errors] == [grpc.StatusCode.PERMISSION_DENIED] * 3
        assert all(len(e.details() or "") < 400 for e in errors)
        assert f"… and {len(asked) - 3} more;" in (errors[0].details() or "")
        assert _denials(market, "feed_delivery") == [
            ("platform", "item_not_agreed", tuple(sorted(asked))[:64])
        ]
        assert _denials(hrss, "push") == [
            ("tax", "item_not_agreed", ("Z" * 64,)),
            ("tax", "item_not_agreed", ("Q" * 64,)),
        ]
        assert all(len(leaf) < 2_000 for _index, leaf, _entry in iter_entries(hrss.log.backend))
    finally:
        for r in (market, platform, hrss, tax):
            r.close()


def test_a_withdrawal_with_an_oversized_record_key_is_refused_as_malformed(
    cluster: LocalCluster,
) -> None:
    hrss, tax = cluster.runtime("hrss"), cluster.runtime("tax")
    member = tax.bundle().member("hrss")
    assert member is not None
    notice = feeds.push_withdrawal_body(
        feeds.PushWithdrawal(
            kind="withdraw", record_key="k" * 100_000, version=1, item_id=SEVERE, reason=""
        ),
        at=tax.clock(), sender="tax", recipient="hrss",
        recipient_key=member.encryption_key, notice_id="w-long-key",
    )  # fmt: skip

    async def scenario() -> grpc.aio.AioRpcError:
        async with serving(hrss):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _push(tax, notice)
            return caught.value

    try:
        error = asyncio.run(scenario())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _denials(hrss, "push")[-1][:2] == ("tax", "malformed_request")
        assert all(len(leaf) < 2_000 for _index, leaf, _entry in iter_entries(hrss.log.backend))
    finally:
        hrss.close()
        tax.close()


def test_item_ids_a_refusal_lists_are_cut_and_never_show_an_id_number() -> None:
    # the item ids come from the caller's request: one may hold a subject's ID number
    person = "11010519491231002X"
    listed = exchange_service._listed([f"item-{person}", "y" * 100, "b", "c"])
    assert "19491231" not in listed
    assert "110105********002X" in listed
    assert "y" * 64 in listed
    assert "y" * 65 not in listed
    assert listed.endswith("… and 1 more")
