"""Exchange in-process: real runtimes and mTLS servers on loopback, no subprocesses.

Covers what the e2e files do not reach cheaply: lifecycle events on the received copy,
idempotent replay of a batch, Ack refusals, Push (happy path, retry, refusals), a log that
cannot be written (fail closed, UNAVAILABLE) and a graceful stop that ends a follow stream.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import keys
from node import feeds, wire
from node._pb.credex.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc
from node.accesslog import iter_entries, verify_log
from node.cluster import LocalCluster
from node.errors import AuthError, InputError, LogUnavailable, PeerUnavailable, WriteConflict
from node.feedcheck import RecordChecker
from node.runtime import NodeRuntime
from node.services import exchange_service
from node.store import StoredRecord
from node.store.received import received_records
from tests.node import exchange_support
from tests.node.exchange_support import serving

ITEM = "admin_penalty"


def seed(runtime: NodeRuntime, count: int) -> list[str]:
    """Store `count` signed local records at `runtime` (subscribed by the platform)."""
    return exchange_support.seed(runtime, count, fields_of=lambda i: {"decision_no": f"N{i}-1"})


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    agreements = [
        {"provider": "market", "consumer": "platform", "items": [ITEM], "purposes": ["feed"],
         "kind": "feed"},
        {"provider": "market", "consumer": "hrss", "items": [ITEM], "purposes": ["push"],
         "kind": "push"},
    ]  # fmt: skip
    c = LocalCluster(tmp_path, nodes, agreements)
    c.init()
    return c


def _signed(runtime: NodeRuntime, i: int, version: int = 1, producer: str = "market") -> Any:
    header = {
        "item": ITEM,
        "catalog_version": runtime.catalogue.version,
        "record_key": f"{i:064x}",
        "version": version,
        "producer": producer,
        "issued_at": "2026-11-25T00:00:00Z",
        "subject": f"{i:032x}",
    }
    return keys.sign_record(header, {"decision_no": f"N{i}-{version}"}, runtime.node_keys.signing)


async def raw_batches(
    client: NodeRuntime, cursor: int = 0, *, compact: bool = False, signed: Any = None
) -> list[exchange_pb2.SealedBatch]:
    """Subscribe to market as `client` and read the whole stream; `signed` replaces the
    request `client` would sign (cursor and compact are then ignored)."""
    channel = client.channel("market")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        if signed is None:
            body = exchange_pb2.SubscribeBody(cursor=cursor, compact_records=compact)
            signed = client.sign_request(feeds.SUBSCRIBE_METHOD, body.SerializeToString())
        call = stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed), timeout=10)
        return [b async for b in call]
    finally:
        await channel.close()


def _cursor_left_at(subscriber: NodeRuntime, cursor: int) -> None:
    """The stored cursor as a crash leaves it before the batch after `cursor` committed (a
    re-delivered batch continues the stored cursor; any other is another pull's)."""
    subscriber.store.store_batch([], now=subscriber.clock(), upstream_cursor=("market", cursor))


def test_lifecycle_events_reach_the_copy_and_replays_change_nothing(cluster: LocalCluster) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    rows = seed(market, 4)

    async def scenario() -> None:
        async with serving(market):
            first = await feeds.pull(platform, "market")
            assert (first.stored, first.cursor) == (4, 4)
            now = market.clock()
            market.store.set_record_state(rows[0], "withdrawn", event_kind="withdraw", now=now)
            market.store.set_objection(rows[1], True, now=now)
            market.store.set_objection(rows[2], True, now=now)
            market.store.set_objection(rows[2], False, now=now)
            (batch,) = await raw_batches(platform, cursor=4)
            done = feeds.apply_batch(platform, "market", batch, cursor=4)
            assert (done.events, done.applied, done.cursor) == (4, 4, 8)
            # a crash before the cursor moved re-delivers the batch: same end state
            # (the objection set/clear pair replays in order; the end state is checked below)
            _cursor_left_at(platform, 4)
            again = feeds.apply_batch(platform, "market", batch, cursor=4)
            assert (again.stored, again.cursor) == (0, 8)
            # and the re-delivered upserts are skipped, not stored twice
            (whole,) = await raw_batches(platform, cursor=0)
            _cursor_left_at(platform, 0)
            replay = feeds.apply_batch(platform, "market", whole, cursor=0)
            assert (replay.stored, replay.skipped) == (0, 4)

    try:
        asyncio.run(scenario())
        copies = {
            r.record_key[-1]: (r.state, r.objection)
            for k in range(4)
            for r in platform.store.record_versions("market", f"{k:064x}")
        }
        assert copies == {
            "0": ("withdrawn", False),
            "1": ("active", True),
            "2": ("active", False),
            "3": ("active", False),
        }
        assert platform.store.count_records(producer="market") == 4
    finally:
        market.close()
        platform.close()


def _batch_of(
    provider: NodeRuntime, subscriber: NodeRuntime, events: list[common_pb2.FeedEvent]
) -> exchange_pb2.SealedBatch:
    """A batch sealed by `provider` for `subscriber` exactly as Subscribe seals one."""
    first, last = events[0].seq, events[-1].seq
    member = provider.bundle().member(subscriber.node_id)
    assert member is not None
    sealed = keys.seal_batch(
        [e.SerializeToString() for e in events],
        header=feeds.feed_header(provider.node_id, subscriber.node_id, first, last),
        recipient_id=subscriber.node_id,
        recipient_public=member.encryption_key,
    )
    return exchange_pb2.SealedBatch(
        sealed=sealed, first_seq=first, last_seq=last, count=len(events), provider="market"
    )


def _events(batch: exchange_pb2.SealedBatch, runtime: NodeRuntime) -> list[common_pb2.FeedEvent]:
    _, payloads = keys.open_batch(
        batch.sealed,
        recipient_id=runtime.node_id,
        private_key=runtime.node_keys.encryption_private,
    )
    return [common_pb2.FeedEvent.FromString(p) for p in payloads]


def test_compact_and_map_records_store_the_same_copies(cluster: LocalCluster) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 3)

    async def both() -> tuple[exchange_pb2.SealedBatch, exchange_pb2.SealedBatch]:
        async with serving(market):
            (old,) = await raw_batches(platform)
            (new,) = await raw_batches(platform, compact=True)
            return old, new

    try:
        old, new = asyncio.run(both())
        sent = [e.record for e in _events(new, platform)]
        assert all(r.signed_record and not r.envelope and not r.disclosures for r in sent)
        assert all(r.envelope and r.disclosures for r in (e.record for e in _events(old, platform)))
        done = feeds.apply_batch(platform, "market", new, cursor=0)
        assert (done.stored, done.cursor) == (3, 3)
        _cursor_left_at(platform, 0)
        again = feeds.apply_batch(platform, "market", old, cursor=0)  # an older provider's form
        assert (again.stored, again.skipped) == (0, 3)
        originals = {
            r.record_key: market.cipher.decrypt(r.row_id, r.body) for r in _local_copies(market)
        }
        copies = {
            r.record_key: platform.cipher.decrypt(r.row_id, r.body)
            for r in received_records(platform.store, producer="market")
        }
        assert copies == originals  # stored exactly as the producer's node holds them
    finally:
        market.close()
        platform.close()


def _local_copies(runtime: NodeRuntime, count: int = 3) -> list[StoredRecord]:
    return [
        r for i in range(count) for r in runtime.store.record_versions(runtime.node_id, f"{i:064x}")
    ]


def _compact_batch(market: NodeRuntime, platform: NodeRuntime) -> exchange_pb2.SealedBatch:
    """The one compact batch `market` serves `platform` (everything seeded fits in it)."""

    async def fetch() -> exchange_pb2.SealedBatch:
        async with serving(market):
            (batch,) = await raw_batches(platform, compact=True)
            return batch

    return asyncio.run(fetch())


def _forged(signed_record: bytes) -> bytes:
    """The compact record with its decision_no disclosure changed (salt kept)."""
    signed = keys.SignedRecord.from_bytes(signed_record)
    changed = dict(signed.disclosures)
    salt, _ = changed["decision_no"]
    changed["decision_no"] = (salt, "N999-1")
    return keys.SignedRecord(signed.envelope, changed).to_bytes()


def test_a_forged_or_ambiguous_compact_record_stores_nothing(cluster: LocalCluster) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 2)
    try:
        batch = _compact_batch(market, platform)
        events = _events(batch, platform)
        signed = keys.SignedRecord.from_bytes(events[1].record.signed_record)
        forged = [common_pb2.FeedEvent(), common_pb2.FeedEvent()]
        for copy, event in zip(forged, events, strict=True):
            copy.CopyFrom(event)
        forged[1].record.signed_record = _forged(events[1].record.signed_record)
        with pytest.raises(keys.VerificationError):
            feeds.apply_batch(platform, "market", _batch_of(market, platform, forged), cursor=0)
        both = [common_pb2.FeedEvent(), common_pb2.FeedEvent()]
        for copy, event in zip(both, events, strict=True):
            copy.CopyFrom(event)
        both[0].record.envelope = signed.envelope.to_bytes()
        with pytest.raises(InputError, match="both"):
            feeds.apply_batch(platform, "market", _batch_of(market, platform, both), cursor=0)
        assert platform.store.count_records(producer="market") == 0
        assert platform.store.upstream_cursor("market") == 0
        done = feeds.apply_batch(platform, "market", batch, cursor=0)  # the genuine one applies
        assert (done.stored, done.cursor) == (2, 2)
    finally:
        market.close()
        platform.close()


def test_records_checked_by_workers_are_stored_as_if_checked_in_process(
    cluster: LocalCluster,
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 4)
    try:
        batch = _compact_batch(market, platform)
        # every batch goes to two spawned workers
        platform._checker = RecordChecker(platform.catalogue, workers=2, min_pool_batch=1)
        events = _events(batch, platform)
        events[2].record.signed_record = _forged(events[2].record.signed_record)
        with pytest.raises(keys.VerificationError):
            feeds.apply_batch(platform, "market", _batch_of(market, platform, events), cursor=0)
        assert platform.store.count_records(producer="market") == 0
        done = feeds.apply_batch(platform, "market", batch, cursor=0)
        assert (done.stored, done.cursor) == (4, 4)
        originals = {
            r.record_key: market.cipher.decrypt(r.row_id, r.body) for r in _local_copies(market, 4)
        }
        copies = received_records(platform.store, producer="market")
        assert {r.record_key: platform.cipher.decrypt(r.row_id, r.body) for r in copies} == (
            originals
        )
        # indexed as in-process checking indexes them (these fields do not validate here)
        assert sorted(r.subject_index for r in copies) == sorted(
            platform.blind.token(f"market:{i:032x}") for i in range(4)
        )
    finally:
        market.close()
        platform.close()


def test_a_bad_batch_stops_the_pull_after_the_good_ones_are_stored_and_acked(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pull stores and acknowledges batch N while it opens batch N+1: a refusal of N+1 must
    # leave exactly the batches before it stored, with the cursor and the Ack at their end.
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 6)
    build = exchange_service.ExchangeServicer._event_pb

    def forge_from_seq_5(self: Any, event: Any, *args: Any) -> common_pb2.FeedEvent:
        message = build(self, event, *args)
        if event.seq >= 5:
            signed = keys.SignedRecord.from_bytes(message.record.signed_record)
            changed = {k: (salt, value + "!") for k, (salt, value) in signed.disclosures.items()}
            forged = keys.SignedRecord(signed.envelope, changed)
            message.record.signed_record = forged.to_bytes()
        return message

    monkeypatch.setattr(exchange_service.ExchangeServicer, "_event_pb", forge_from_seq_5)

    async def scenario() -> None:
        async with serving(market):
            with pytest.raises(keys.VerificationError):
                await feeds.pull(platform, "market", max_batch=2)

    try:
        asyncio.run(scenario())
        assert platform.store.upstream_cursor("market") == 4
        assert platform.store.count_records(producer="market") == 4
        sub = market.store.subscription("platform")
        assert sub is not None
        assert sub.acked_seq == 4
    finally:
        market.close()
        platform.close()


def test_withdrawn_records_are_not_sent_even_if_queued(cluster: LocalCluster) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    rows = seed(market, 3)
    market.store.set_record_state(rows[1], "withdrawn", event_kind="withdraw", now=market.clock())

    async def scenario() -> feeds.PullResult:
        async with serving(market):
            return await feeds.pull(platform, "market")

    try:
        done = asyncio.run(scenario())
        assert (done.events, done.stored, done.skipped) == (4, 2, 1)
        assert platform.store.record_versions("market", f"{1:064x}") == []
    finally:
        market.close()
        platform.close()


def test_ack_refusals(cluster: LocalCluster) -> None:
    market, platform, hrss = (cluster.runtime(n) for n in ("market", "platform", "hrss"))
    seed(market, 2)

    def receipt(signer: NodeRuntime, *, issuer: str, subject: str, cursor: int) -> Any:
        fields = wire.ReceiptFields(
            issuer=issuer, subject=subject, cursor=cursor, issued_at=signer.clock(),
            digest=hashlib.sha256(b"x").digest(),
        )  # fmt: skip
        return feeds.sign_receipt(fields, signer.node_keys.signing)

    async def ack(client: NodeRuntime, signed: Any) -> int:
        channel = client.channel("market")
        try:
            answer = await exchange_pb2_grpc.ExchangeStub(channel).Ack(signed, timeout=10)
            return int(answer.cursor)
        finally:
            await channel.close()

    async def scenario() -> None:
        async with serving(market):
            await raw_batches(platform)  # events 1..2 sent: acknowledgeable from now on
            good = receipt(platform, issuer="platform", subject="feed:market", cursor=2)
            assert await ack(platform, good) == 2
            assert await ack(platform, good) == 2  # replayed receipt: nothing moves back
            cases = [
                (hrss, receipt(platform, issuer="platform", subject="feed:market", cursor=1),
                 grpc.StatusCode.UNAUTHENTICATED),   # presented by another node
                (platform, receipt(platform, issuer="platform", subject="feed:hrss", cursor=1),
                 grpc.StatusCode.INVALID_ARGUMENT),  # another feed
                (platform, receipt(platform, issuer="platform", subject="feed:market", cursor=9),
                 grpc.StatusCode.INVALID_ARGUMENT),  # beyond the last event
                (hrss, receipt(hrss, issuer="hrss", subject="feed:market", cursor=1),
                 grpc.StatusCode.NOT_FOUND),          # no subscription
            ]  # fmt: skip
            for client, signed, code in cases:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await ack(client, signed)
                assert caught.value.code() == code

    try:
        asyncio.run(scenario())
    finally:
        for r in (market, platform, hrss):
            r.close()


def test_subscribe_fails_closed_when_the_log_cannot_be_written(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 2)

    async def broken(entry: Any) -> int:
        raise LogUnavailable("the access log could not be written")

    def broken_with(entry: Any, work: Any, *, what: str) -> Any:
        raise LogUnavailable("the access log could not be written")

    monkeypatch.setattr(market.log, "append", broken)
    monkeypatch.setattr(market.log, "append_with", broken_with)

    async def scenario() -> None:
        async with serving(market):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_batches(platform)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    try:
        asyncio.run(scenario())
        assert platform.store.count_records() == 0
        sub = market.store.subscription("platform")
        assert sub is not None
        assert sub.delivered_seq == 0  # nothing left, so nothing may be acknowledged
    finally:
        market.close()
        platform.close()


def test_graceful_stop_ends_a_follow_stream_cleanly(cluster: LocalCluster) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 3)

    async def scenario() -> feeds.PullResult:
        async with serving(market):
            stopping = market.stopping
            follower = asyncio.create_task(feeds.pull(platform, "market", follow=True))
            while platform.store.upstream_cursor("market") < 3:
                await asyncio.sleep(0.02)  # waiting for the first batch to be applied
            stopping.set()
            return await asyncio.wait_for(follower, timeout=10)

    try:
        done = asyncio.run(scenario())
        assert (done.stored, done.cursor) == (3, 3)
    finally:
        market.close()
        platform.close()


def _push(
    sender: NodeRuntime, receiver: str, record: keys.SignedRecord, notice_id: str
) -> tuple[exchange_pb2.PushNotice, Any]:
    member = sender.bundle().member(receiver)
    assert member is not None
    notice = feeds.push_request_body(
        record, sender=sender.node_id, recipient=receiver,
        recipient_key=member.encryption_key, notice_id=notice_id,
    )  # fmt: skip
    signed = sender.sign_request(feeds.PUSH_METHOD, notice.SerializeToString())
    return notice, signed


async def _call_push(sender: NodeRuntime, signed: Any) -> Any:
    channel = sender.channel("hrss")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        return await stub.Push(exchange_pb2.PushRequest(signed=signed), timeout=10)
    finally:
        await channel.close()


def test_push_is_verified_stored_once_and_receipted(cluster: LocalCluster) -> None:
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    record = _signed(market, 7)

    async def scenario() -> None:
        async with serving(hrss):
            notice, signed = _push(market, "hrss", record, "notice-1")
            answer = await _call_push(market, signed)
            fields = feeds.verify_receipt(
                answer, trusted=market.bundle().node_signing_keys("hrss", market.clock())
            )
            assert (fields.issuer, fields.subject) == ("hrss", "notice-1")
            assert fields.digest == hashlib.sha256(notice.sealed).digest()
            _, again = _push(market, "hrss", record, "notice-1")
            await _call_push(market, again)  # a retried push: receipted, not stored twice
            refusals = []
            _, from_platform = _push(platform, "hrss", record, "notice-2")
            refusals.append((platform, from_platform, grpc.StatusCode.PERMISSION_DENIED))
            forged = _signed(platform, 8, producer="market")  # platform's key, market's name
            _, forged_req = _push(market, "hrss", forged, "notice-3")
            refusals.append((market, forged_req, grpc.StatusCode.UNAUTHENTICATED))
            notice4, _ = _push(market, "hrss", record, "notice-4")
            bad = bytearray(notice4.sealed)
            bad[-3] ^= 1
            notice4.sealed = bytes(bad)
            tampered = market.sign_request(feeds.PUSH_METHOD, notice4.SerializeToString())
            refusals.append((market, tampered, grpc.StatusCode.UNAUTHENTICATED))
            for sender, req, code in refusals:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _call_push(sender, req)
                assert caught.value.code() == code

    try:
        asyncio.run(scenario())
        stored = hrss.store.record_versions("market", f"{7:064x}")
        assert [(r.version, r.origin) for r in stored] == [(1, "received")]
        assert hrss.store.count_records() == 1
    finally:
        for r in (market, hrss, platform):
            r.close()


def test_receipt_verification_refuses_other_keys(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    try:
        fields = wire.ReceiptFields(
            issuer="market", subject="feed:x", cursor=1,
            issued_at=dt.datetime(2026, 11, 25, tzinfo=dt.UTC), digest=b"\0" * 32,
        )  # fmt: skip
        signed = feeds.sign_receipt(fields, market.node_keys.signing)
        ok = {market.node_keys.signing.keyid: market.node_keys.signing.public_key}
        assert feeds.verify_receipt(signed, trusted=ok) == fields
        other = {hrss.node_keys.signing.keyid: hrss.node_keys.signing.public_key}
        with pytest.raises(AuthError):
            feeds.verify_receipt(signed, trusted=other)
    finally:
        market.close()
        hrss.close()


def denials(runtime: NodeRuntime, kind: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(requester, reason, items asked) of every denied `kind` entry in `runtime`'s log."""
    backend = runtime.log.backend
    entries = [entry for _index, _leaf, entry in iter_entries(backend)]
    return [
        (e.requester, e.reason, e.items_asked)
        for e in entries
        if e.kind == kind and e.decision == "deny"
    ]


def test_refused_subscriptions_are_logged_as_denied_feed_deliveries(
    cluster: LocalCluster,
) -> None:
    market, platform, hrss = (cluster.runtime(n) for n in ("market", "platform", "hrss"))
    seed(market, 2)

    async def subscribe(client: NodeRuntime, signed: Any) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw_batches(client, signed=signed)
        return caught.value.code()

    def body(*items: str) -> bytes:
        return exchange_pb2.SubscribeBody(items=list(items)).SerializeToString()

    async def scenario() -> list[grpc.StatusCode]:
        async with serving(market):
            no_agreement = hrss.sign_request(feeds.SUBSCRIBE_METHOD, body())
            outside = platform.sign_request(feeds.SUBSCRIBE_METHOD, body(ITEM, "red_list"))
            forged = platform.sign_request(feeds.SUBSCRIBE_METHOD, body())
            envelope = bytearray(forged.envelope)
            envelope[-5] ^= 1  # inside the signature
            forged.envelope = bytes(envelope)
            return [
                await subscribe(hrss, no_agreement),
                await subscribe(platform, outside),
                await subscribe(platform, forged),
            ]

    try:
        codes = asyncio.run(scenario())
        assert codes == [
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        ]
        assert denials(market, "feed_delivery") == [
            ("hrss", "no_agreement", ()),
            ("platform", "item_not_agreed", (ITEM, "red_list")),
            ("platform", "bad_signature", ()),  # named by its TLS certificate
        ]
        assert verify_log(market.log.backend, {}).ok
    finally:
        for r in (market, platform, hrss):
            r.close()


def test_refused_pushes_are_logged_once_each(cluster: LocalCluster) -> None:
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    record = _signed(market, 7)

    async def scenario() -> None:
        async with serving(hrss):
            _, from_platform = _push(platform, "hrss", record, "notice-2")
            forged = _signed(platform, 8, producer="market")  # platform's key, market's name
            _, forged_req = _push(market, "hrss", forged, "notice-3")
            notice4, _ = _push(market, "hrss", record, "notice-4")
            notice4.sealed = (
                notice4.sealed[:-3] + bytes([notice4.sealed[-3] ^ 1]) + notice4.sealed[-2:]
            )
            tampered = market.sign_request(feeds.PUSH_METHOD, notice4.SerializeToString())
            for sender, req in (
                (platform, from_platform),
                (market, forged_req),
                (market, tampered),
            ):
                with pytest.raises(grpc.aio.AioRpcError):
                    await _call_push(sender, req)
            _, good = _push(market, "hrss", record, "notice-5")
            await _call_push(market, good)

    try:
        asyncio.run(scenario())
        assert denials(hrss, "push") == [
            ("platform", "no_agreement", ()),
            ("market", "signer_mismatch", ()),  # the record is not signed by market's key
            ("market", "verification_failed", ()),  # the sealed notice was altered
        ]
    finally:
        for r in (market, hrss, platform):
            r.close()


def test_records_signed_before_a_rotation_are_replayed_and_pushed_after_its_overlap(
    cluster: LocalCluster,
) -> None:
    """A new subscriber replays a feed from its start, and a department pushes an entry it
    ingested long ago: the records still carry the producer's old signature, which its
    subscribers refused as forged once the rotation's overlap had closed."""
    market = cluster.runtime("market")
    seed(market, 3)
    old_record = _signed(market, 7)  # signed with the key about to be retired
    market.close()
    exchange_support.rotate_after_overlap(cluster, "market")
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))

    async def scenario() -> None:
        async with serving(market):
            pulled = await feeds.pull(platform, "market")
            assert (pulled.stored, pulled.cursor) == (3, 3)
        async with serving(hrss):
            _, signed = _push(market, "hrss", old_record, "notice-old")
            await _call_push(market, signed)

    try:
        asyncio.run(scenario())
        assert platform.store.count_records(producer="market") == 3
        stored = hrss.store.record_versions("market", f"{7:064x}")
        assert [(r.version, r.origin) for r in stored] == [(1, "received")]
    finally:
        for r in (market, hrss, platform):
            r.close()


def test_a_one_off_pull_from_a_provider_that_stalls_ends_with_unavailable(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's Subscribe call had no deadline: a provider that accepted the stream and
    then sent nothing hung `credex subscribe` for ever."""
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 2)

    async def stalled(self: Any, request: Any, context: Any) -> Any:
        await asyncio.Event().wait()  # never sends, never ends
        yield  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(exchange_service.ExchangeServicer, "Subscribe", stalled)
    monkeypatch.setattr(feeds, "IDLE_BATCH_S", 0.5)

    async def scenario() -> None:
        async with serving(market):
            with pytest.raises(PeerUnavailable, match=r"no batch for 0\.5 s, the stream stalled"):
                await asyncio.wait_for(feeds.pull(platform, "market"), timeout=20)

    try:
        asyncio.run(scenario())
        assert platform.store.count_records(producer="market") == 0
    finally:
        market.close()
        platform.close()


def test_a_refused_record_is_named_by_feed_and_event(cluster: LocalCluster) -> None:
    # An operator reading "record disclosure does not verify" alone cannot tell which feed or
    # which event to report to the provider; the refusal names both (and no field value).
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 2)
    try:
        events = _events(_compact_batch(market, platform), platform)
        events[1].record.signed_record = _forged(events[1].record.signed_record)
        with pytest.raises(keys.VerificationError, match=r"^feed of market: event 2: ") as refused:
            feeds.apply_batch(platform, "market", _batch_of(market, platform, events), cursor=0)
        assert "N999" not in str(refused.value)
        routed = _events(_compact_batch(market, platform), platform)
        routed[0].record.item_id = "admin_licence"
        with pytest.raises(InputError, match=r"^feed of market: event 1: .*item_id"):
            feeds.apply_batch(platform, "market", _batch_of(market, platform, routed), cursor=0)
    finally:
        market.close()
        platform.close()


def _feed_receipt(signer: NodeRuntime, cursor: int) -> Any:
    fields = wire.ReceiptFields(
        issuer=signer.node_id, subject="feed:market", cursor=cursor, issued_at=signer.clock(),
        digest=hashlib.sha256(b"x").digest(),
    )  # fmt: skip
    return feeds.sign_receipt(fields, signer.node_keys.signing)


async def _ack_market(client: NodeRuntime, cursor: int) -> int:
    channel = client.channel("market")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        answer = await stub.Ack(_feed_receipt(client, cursor), timeout=10)
        return int(answer.cursor)
    finally:
        await channel.close()


def test_a_subscriber_cannot_acknowledge_events_it_was_never_sent(cluster: LocalCluster) -> None:
    # The acknowledged cursor is the provider's evidence that the subscriber holds its events
    # (the propagation report of a withdrawal rests on it): a subscriber acking ahead of what
    # it was sent, or a sequence only another subscriber was sent, is refused and logged.
    market, platform, hrss = (cluster.runtime(n) for n in ("market", "platform", "hrss"))
    rows = seed(market, 2)
    market.store.ensure_subscription("hrss", [ITEM], now=market.clock())  # 2 events, none sent

    async def refused(client: NodeRuntime, cursor: int) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _ack_market(client, cursor)
        return caught.value

    async def scenario() -> None:
        async with serving(market):
            (batch,) = await raw_batches(platform)
            assert (batch.first_seq, batch.last_seq) == (1, 2)
            for row in rows:  # events 3 and 4, queued after the stream ended
                market.store.set_objection(row, True, now=market.clock())
            ahead = await refused(platform, 4)
            assert ahead.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "only up to event 2" in (ahead.details() or "")
            assert "stays at 0" in (ahead.details() or "")
            other = await refused(hrss, 2)  # the platform's sequence, never sent to hrss
            assert other.code() == grpc.StatusCode.OUT_OF_RANGE
            assert await _ack_market(platform, 2) == 2
            assert await _ack_market(platform, 2) == 2  # the same ack retried
            assert await _ack_market(platform, 1) == 2  # an old ack replayed: nothing moves

    try:
        asyncio.run(scenario())
        sub, other_sub = market.store.subscription("platform"), market.store.subscription("hrss")
        assert sub is not None
        assert other_sub is not None
        assert (sub.acked_seq, sub.delivered_seq) == (2, 2)
        assert (other_sub.acked_seq, other_sub.delivered_seq) == (0, 0)
        assert denials(market, "feed_ack") == [
            ("platform", "not_delivered", ()),
            ("hrss", "not_delivered", ()),
        ]
    finally:
        for r in (market, platform, hrss):
            r.close()


def test_a_subscriber_cannot_skip_ahead_to_acknowledge_what_it_skipped(
    cluster: LocalCluster,
) -> None:
    # Subscribing from a cursor past events never sent would make the first batch's Ack cover
    # them: refused like an Ack ahead (OUT_OF_RANGE, a denied feed_delivery `not_delivered`).
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 4)

    async def scenario() -> None:
        async with serving(market):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_batches(platform, cursor=3)
            assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "sent to platform (0)" in (caught.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError):
                await _ack_market(platform, 4)
            (batch,) = await raw_batches(platform)  # from its real cursor: all four
            assert (batch.first_seq, batch.last_seq) == (1, 4)
            (again,) = await raw_batches(platform, cursor=2)  # a re-delivery is fine
            assert again.first_seq == 3

    try:
        asyncio.run(scenario())
        assert denials(market, "feed_delivery") == [("platform", "not_delivered", ())]
        sub = market.store.subscription("platform")
        assert sub is not None
        assert (sub.acked_seq, sub.delivered_seq) == (0, 4)
    finally:
        market.close()
        platform.close()


def test_what_was_sent_survives_a_provider_killed_before_the_ack(cluster: LocalCluster) -> None:
    # The batch's delivery commits with its access entry before it leaves: a provider that dies
    # after sending and before the subscriber's Ack still accepts that Ack (and its retries)
    # once restarted, and still refuses one beyond it.
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    rows = seed(market, 3)

    async def sent_then_killed() -> None:
        async with serving(market):
            await raw_batches(platform)
        market.store.set_objection(rows[0], True, now=market.clock())  # event 4, never sent

    async def restarted(node: NodeRuntime) -> None:
        async with serving(node):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _ack_market(platform, 4)
            assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert await _ack_market(platform, 3) == 3
            assert await _ack_market(platform, 3) == 3

    try:
        asyncio.run(sent_then_killed())
        market.close()
        market = cluster.runtime("market")
        asyncio.run(restarted(market))
    finally:
        market.close()
        platform.close()


def test_an_ack_refusal_message_stays_short_whatever_the_receipt_says(
    cluster: LocalCluster,
) -> None:
    # The refusal travels in trailing metadata: a receipt naming a 100 kB subject or issuer
    # must still get its own status back, with a message that quotes at most a bounded part of
    # what the caller wrote (which could be anything, an ID number included).
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 1)
    long = "370303199001010001" + "x" * 100_000

    def receipt(*, issuer: str, subject: str) -> Any:
        fields = wire.ReceiptFields(
            issuer=issuer, subject=subject, cursor=1, issued_at=platform.clock(),
            digest=hashlib.sha256(b"x").digest(),
        )  # fmt: skip
        return feeds.sign_receipt(fields, platform.node_keys.signing)

    async def refusal(signed: Any) -> grpc.aio.AioRpcError:
        channel = platform.channel("market")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await exchange_pb2_grpc.ExchangeStub(channel).Ack(signed, timeout=10)
            return caught.value
        finally:
            await channel.close()

    async def scenario() -> list[grpc.aio.AioRpcError]:
        async with serving(market):
            return [
                await refusal(receipt(issuer="platform", subject="feed:" + long)),
                await refusal(receipt(issuer=long, subject="feed:market")),
            ]

    try:
        subject, issuer = asyncio.run(scenario())
        assert subject.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert issuer.code() == grpc.StatusCode.UNAUTHENTICATED
        for error in (subject, issuer):
            assert len(error.details() or "") < 400
            assert "370303199001010001" not in (error.details() or "")
    finally:
        market.close()
        platform.close()


def test_a_stale_batch_from_a_concurrent_pull_does_not_undo_a_later_one(
    cluster: LocalCluster,
) -> None:
    # Two pulls of one feed at once (the platform's `credex serve` following it while its
    # operator runs `credex subscribe`, or two serve replicas on one PostgreSQL): each holds
    # its own cursor. A batch the slower one applies after the faster one moved on must not
    # take a copy back to the flag it had then, nor the stored cursor back.
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 2)

    async def fetch(cursor: int) -> list[exchange_pb2.SealedBatch]:
        async with serving(market):
            return await raw_batches(platform, cursor, compact=True)

    try:
        (stale,) = asyncio.run(fetch(0))  # events 1-2, copies without objection
        feeds.apply_batch(platform, "market", stale, cursor=0)  # the faster pull
        market.store.set_objection("row-0", True, now=market.clock())
        (later,) = asyncio.run(fetch(2))  # event 3: objection set
        feeds.apply_batch(platform, "market", later, cursor=2)
        with pytest.raises(WriteConflict, match="another pull"):
            feeds.apply_batch(platform, "market", stale, cursor=0)  # the slower one, late
        (copy,) = platform.store.record_versions("market", f"{0:064x}")
        assert copy.objection is True
        assert platform.store.upstream_cursor("market") == 3
    finally:
        market.close()
        platform.close()


def test_a_pull_overtaken_before_its_store_gets_the_stores_refusal(
    cluster: LocalCluster,
) -> None:
    # The other pull moved the cursor before this one's batch is stored: the refusal is the
    # store's own (one message, tests/node/test_store_records.py), nothing of it is written.
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 2)

    async def fetch() -> list[exchange_pb2.SealedBatch]:
        async with serving(market):
            return await raw_batches(platform, 0, compact=True)

    try:
        (batch,) = asyncio.run(fetch())
        platform.store.store_batch([], now=platform.clock(), upstream_cursor=("market", 3))
        with pytest.raises(WriteConflict) as refused:
            feeds.apply_batch(platform, "market", batch, cursor=0)
        assert str(refused.value) == (
            "feed of market: another pull of this feed moved the cursor to 3 meanwhile (this "
            "batch continues 0); this pull stops with nothing of the batch stored, pull again"
        )
        assert platform.store.upstream_cursor("market") == 3
        assert platform.store.count_records() == 0
    finally:
        market.close()
        platform.close()


def test_a_batch_is_applied_whole_while_another_pull_waits(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch's lifecycle events are applied to the copies its records stored before them:
    # several writes. Another pull moving the cursor between them must not leave some of them
    # committed and the rest refused: the batch holds the cursor from its first write to its
    # last, and the other pull waits, then is refused with nothing written.
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 2)
    other: list[BaseException | None] = []

    def other_pull() -> None:
        try:
            platform.store.store_batch(
                [], now=platform.clock(), upstream_cursor=("market", 3), upstream_from=2
            )
            other.append(None)
        except WriteConflict as error:
            other.append(error)

    applying = feeds._apply_lifecycle

    def overtaken(*args: Any, **kwargs: Any) -> int:
        changed = applying(*args, **kwargs)
        racer = threading.Thread(target=other_pull)
        racer.start()
        racer.join(timeout=2)  # it finishes at once unless the batch holds the cursor
        return changed

    async def fetch(cursor: int) -> list[exchange_pb2.SealedBatch]:
        async with serving(market):
            return await raw_batches(platform, cursor, compact=True)

    try:
        (first,) = asyncio.run(fetch(0))
        feeds.apply_batch(platform, "market", first, cursor=0)
        market.store.set_objection("row-0", True, now=market.clock())
        (later,) = asyncio.run(fetch(2))  # event 3: objection set
        monkeypatch.setattr(feeds, "_apply_lifecycle", overtaken)
        done = feeds.apply_batch(platform, "market", later, cursor=2)
        assert (done.applied, done.cursor) == (1, 3)
        deadline = time.monotonic() + 10
        while not other and time.monotonic() < deadline:
            time.sleep(0.01)
        (refused,) = other
        assert isinstance(refused, WriteConflict)
        copy = platform.store.record_versions("market", f"{0:064x}")[0]
        assert copy.objection is True
        assert platform.store.upstream_cursor("market") == 3
    finally:
        market.close()
        platform.close()


def test_a_batch_naming_another_provider_is_refused_with_a_short_message(
    cluster: LocalCluster,
) -> None:
    # The provider field is the peer's text; it reaches the platform's node log (follow mode)
    # quoted at most 64 characters, identifiers masked.
    platform = cluster.runtime("platform")
    try:
        batch = exchange_pb2.SealedBatch(
            provider="370303199001010001" + "x" * 10_000, first_seq=1, last_seq=1
        )
        with pytest.raises(AuthError) as refused:
            feeds.apply_batch(platform, "market", batch, cursor=0)
        assert len(str(refused.value)) < 300
        assert "370303199001010001" not in str(refused.value)
    finally:
        platform.close()
