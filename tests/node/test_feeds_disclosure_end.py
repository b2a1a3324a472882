"""Feeds never deliver the body of a record past its disclosure end, whatever the lifecycle
scan has done so far (令第36号: not shown from the day after the maximum period; 山东省社会信用条例
Art. 38: the 5-year cap).

Real runtimes and an mTLS server on loopback, no subprocesses, and no scan unless a test runs
one: each node's clock is set, so "the next day" is one assignment, not a sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keys
from node import feeds, lifecycle_ops, scheduler
from node._pb.credex.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc
from node.cluster import LocalCluster
from node.lifecycle import china_day
from node.runtime import NodeRuntime, utc_now
from node.store import NewRecord
from tests.catalog.catalog_testdata import COMPANY_USCC, penalty_org
from tests.node import push_support
from tests.node.exchange_support import serving

ITEM = "admin_penalty"


class Clock:
    """A settable clock shared by the runtimes of one test, starting at the real time (the
    bundle was just issued); `next_day` moves it 24 hours on: the next China day."""

    def __init__(self) -> None:
        self.now = utc_now()
        self.today = china_day(self.now)

    def __call__(self) -> dt.datetime:
        return self.now

    def next_day(self) -> None:
        self.now += dt.timedelta(days=1)


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_support.feed_cluster(tmp_path, item=ITEM)


@pytest.fixture
def clock(cluster: LocalCluster) -> Clock:
    return Clock()


@pytest.fixture
def nodes(cluster: LocalCluster, clock: Clock) -> Iterator[tuple[NodeRuntime, NodeRuntime]]:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    market.clock = platform.clock = clock
    try:
        yield market, platform
    finally:
        market.close()
        platform.close()


def record(
    runtime: NodeRuntime,
    i: int,
    *,
    version: int = 1,
    max_end: dt.date | None = None,
    severity: str | None = None,
    decided_on: dt.date | None = None,
) -> NewRecord:
    """A signed local record version `i` of market (no period unless given)."""
    header = {
        "item": ITEM,
        "catalog_version": runtime.catalogue.version,
        "record_key": f"{i:064x}",
        "version": version,
        "producer": runtime.node_id,
        "issued_at": "2026-11-25T00:00:00Z",
        "subject": f"{i:032x}",
    }
    signed = keys.sign_record(header, {"decision_no": f"N{i}-{version}"}, runtime.node_keys.signing)
    row_id = f"row-{i}-{version}"
    return NewRecord(
        row_id=row_id,
        producer=runtime.node_id,
        record_key=f"{i:064x}",
        version=version,
        item_id=ITEM,
        catalog_version=runtime.catalogue.version,
        subject_index=f"{i:032x}",
        body=runtime.cipher.encrypt(row_id, signed.to_bytes()),
        content_hash=f"{i:060x}{version:04x}",
        severity=severity,
        decided_on=decided_on,
        disclosure_min_end=None,
        disclosure_max_end=max_end,
        disclosure_rule="test",
        created_at=runtime.clock(),
    )


async def delivered(client: NodeRuntime, cursor: int = 0) -> list[common_pb2.FeedEvent]:
    """Every event market's Subscribe sends `client` after `cursor`, opened."""
    channel = client.channel("market")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        body = exchange_pb2.SubscribeBody(cursor=cursor, compact_records=True)
        signed = client.sign_request(feeds.SUBSCRIBE_METHOD, body.SerializeToString())
        call = stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed), timeout=10)
        events = []
        async for batch in call:
            _, payloads = keys.open_batch(
                batch.sealed,
                recipient_id=client.node_id,
                private_key=client.node_keys.encryption_private,
            )
            events += [common_pb2.FeedEvent.FromString(p) for p in payloads]
        return events
    finally:
        await channel.close()


def shape(events: list[common_pb2.FeedEvent]) -> list[tuple[int, str, int, bool, str]]:
    """(seq, record number, version, carries its record, reason) of each event."""
    return [
        (e.seq, str(int(e.record_key, 16)), e.version, e.HasField("record"), e.reason)
        for e in events
    ]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_record_past_its_end_is_held_back_before_the_scan_marks_it(
    nodes: tuple[NodeRuntime, NodeRuntime], clock: Clock
) -> None:
    market, platform = nodes
    market.store.ensure_subscription("platform", [ITEM], now=clock())
    # record 0 is shown until today inclusive; record 1 has no end; record 2 is corrected
    # today into a version shown until today
    market.store.store_batch(
        [record(market, 0, max_end=clock.today), record(market, 1), record(market, 2)], now=clock()
    )
    market.store.store_batch([record(market, 2, version=2, max_end=clock.today)], now=clock())
    clock.next_day()  # the scan has not run yet

    async def scenario() -> tuple[list[Any], feeds.PullResult, list[Any], feeds.PullResult]:
        async with serving(market):
            events = await delivered(platform)
            first = await feeds.pull(platform, "market")
            report = scheduler.scan(market)  # now it runs: expire events for 0 and 2 v2
            assert (report.expired, report.capped) == (2, 0)
            later = await delivered(platform, cursor=first.cursor)
            second = await feeds.pull(platform, "market")
            return events, first, later, second

    events, first, later, second = run(scenario())
    assert shape(events) == [
        (1, "0", 1, False, "expired"),
        (2, "1", 1, True, ""),
        (3, "2", 1, True, ""),  # superseded, and by its own dates not past its end ...
        (4, "2", 2, False, "expired"),  # ... but the record now is: the copy of v1 ends too
    ]
    assert (first.events, first.stored, first.skipped, first.applied, first.cursor) == (
        4, 2, 1, 1, 4,
    )  # fmt: skip
    assert [(e.seq, common_pb2.EventKind.Name(e.kind)) for e in later] == [
        (5, "EVENT_KIND_EXPIRE"),
        (6, "EVENT_KIND_EXPIRE"),
    ]
    # gap-free, and the scan's expire events find no copy of what was held back
    assert (second.events, second.applied, second.cursor) == (2, 0, 6)
    assert platform.store.record_versions("market", f"{0:064x}") == []
    copies = platform.store.record_versions("market", f"{2:064x}")
    assert [(r.version, r.state) for r in copies] == [(1, "expired")]


def test_a_version_stored_after_its_end_is_expired_and_never_sent(
    nodes: tuple[NodeRuntime, NodeRuntime], clock: Clock
) -> None:
    market, platform = nodes
    market.store.ensure_subscription("platform", [ITEM], now=clock())
    yesterday = clock.today - dt.timedelta(days=1)
    six_years_ago = clock.today.replace(year=clock.today.year - 6)
    market.store.store_batch(
        [
            record(market, 0, max_end=yesterday),
            # a dishonesty record past the 5-year cap, with no stored period
            record(market, 1, severity="general", decided_on=six_years_ago),
            record(market, 2, max_end=clock.today),
        ],
        now=clock(),
        expire_ended=True,  # as ingest and pushes store
    )
    states = {
        k: [r.state for r in market.store.record_versions("market", f"{k:064x}")] for k in range(3)
    }
    assert states == {0: ["expired"], 1: ["expired"], 2: ["active"]}

    async def scenario() -> list[common_pb2.FeedEvent]:
        async with serving(market):
            return await delivered(platform)

    assert shape(run(scenario())) == [
        (1, "0", 1, False, "expired"),
        (2, "1", 1, False, "expired"),
        (3, "2", 1, True, ""),
    ]
    report = scheduler.scan(market)  # nothing left to expire, so no second event for them
    assert (report.expired, report.capped) == (0, 0)
    subscription = market.store.subscription("platform")
    assert subscription is not None
    assert subscription.last_seq == 3


def test_a_new_subscription_is_not_backfilled_with_records_past_their_end(
    nodes: tuple[NodeRuntime, NodeRuntime], clock: Clock
) -> None:
    market, _platform = nodes
    market.store.store_batch(
        [
            record(market, 0, max_end=clock.today),
            record(market, 1, max_end=clock.today + dt.timedelta(1)),
        ],
        now=clock(),
    )
    clock.next_day()  # record 0 is over, still `active` until the scan runs
    subscription = market.store.ensure_subscription("platform", [ITEM], now=clock())
    assert subscription.last_seq == 1
    [event] = market.store.events_after("platform", 0)
    assert (event.kind, event.record_key) == ("upsert", f"{1:064x}")


def test_the_subscriber_expires_its_copy_on_the_scans_expire_event(
    nodes: tuple[NodeRuntime, NodeRuntime], clock: Clock
) -> None:
    market, platform = nodes
    market.store.ensure_subscription("platform", [ITEM], now=clock())
    market.store.store_batch([record(market, 7, max_end=clock.today)], now=clock())

    async def scenario() -> tuple[feeds.PullResult, feeds.PullResult]:
        async with serving(market):
            first = await feeds.pull(platform, "market")
            clock.next_day()
            assert scheduler.scan(market).expired == 1
            return first, await feeds.pull(platform, "market")

    first, second = run(scenario())
    assert (first.stored, second.events, second.applied) == (1, 1, 1)
    copies = platform.store.record_versions("market", f"{7:064x}")
    assert [(r.version, r.state) for r in copies] == [(1, "expired")]


def test_a_revocation_after_the_window_ended_reaches_copies_held_expired_or_purged(
    nodes: tuple[NodeRuntime, NodeRuntime], clock: Clock
) -> None:
    # Shandong Art. 40: a record whose decision is revoked is withdrawn also once its window
    # has ended. The subscriber's expired copy becomes withdrawn; a copy it already purged
    # stays purged, and the event is applied without an error, as is a second delivery.
    market, platform = nodes
    market.store.ensure_subscription("platform", [ITEM], now=clock())
    market.store.store_batch(
        [record(market, 7, max_end=clock.today), record(market, 8, max_end=clock.today)],
        now=clock(),
    )

    async def scenario() -> feeds.PullResult:
        async with serving(market):
            await feeds.pull(platform, "market")
            clock.next_day()
            assert scheduler.scan(market).expired == 2
            await feeds.pull(platform, "market")
            (eight,) = platform.store.record_versions("market", f"{8:064x}")
            platform.store.set_record_state(eight.row_id, "purged", event_kind=None, now=clock())
            for i in (7, 8):
                revoked = lifecycle_ops.revoke_record(market, f"{i:064x}", reason="复议撤销")
                assert revoked.state == "withdrawn"
            return await feeds.pull(platform, "market")

    done = run(scenario())
    assert (done.events, done.applied, done.cursor) == (2, 1, 6)
    states = {
        i: [r.state for r in platform.store.record_versions("market", f"{i:064x}")] for i in (7, 8)
    }
    assert states == {7: ["withdrawn"], 8: ["purged"]}
    # the batch delivered again (a crash before its cursor moved): nothing changes
    platform.store.store_batch([], now=clock(), upstream_cursor=("market", 4))
    again = run(_pull_served(market, platform))
    assert (again.events, again.applied) == (2, 0)
    assert platform.store.record_versions("market", f"{7:064x}")[0].state == "withdrawn"


async def _pull_served(market: NodeRuntime, platform: NodeRuntime) -> feeds.PullResult:
    async with serving(market):
        return await feeds.pull(platform, "market")


def test_a_correction_withdrawn_before_delivery_ends_the_subscribers_earlier_copy(
    nodes: tuple[NodeRuntime, NodeRuntime], clock: Clock
) -> None:
    market, platform = nodes
    market.store.ensure_subscription("platform", [ITEM], now=clock())
    market.store.store_batch([record(market, 8)], now=clock())

    async def scenario() -> tuple[feeds.PullResult, feeds.PullResult]:
        async with serving(market):
            first = await feeds.pull(platform, "market")
            market.store.store_batch([record(market, 8, version=2)], now=clock())
            market.store.set_record_state(
                "row-8-2", "withdrawn", event_kind="withdraw", now=clock()
            )
            second = await feeds.pull(platform, "market")
            # delivered again (at least once): nothing changes a second time
            again = await feeds.pull(platform, "market")
            assert again.events == 0
            return first, second

    first, second = run(scenario())
    assert first.stored == 1
    # the correction travels without its body (withdrawn), then market's withdraw event
    assert (second.events, second.stored, second.applied) == (2, 0, 1)
    copies = platform.store.record_versions("market", f"{8:064x}")
    assert [(r.version, r.state) for r in copies] == [(1, "withdrawn")]


def test_a_received_copy_ends_with_the_producers_shandong_cap(
    nodes: tuple[NodeRuntime, NodeRuntime],
) -> None:
    """The subscriber computes its copy's window as the producer's sealer does, with the
    失信行为终止日期: five years from the end of the conduct may end a copy before the grade's
    maximum (Shandong Art. 38), and a copy must not be disclosed past the original's end."""
    market, platform = nodes
    fields = {k: v for k, v in penalty_org().items() if v is not None}
    fields["conduct_end_date"] = "2022-01-01"  # cap 2027-01-01; 一般 alone ends 2027-05-11
    header = {
        "item": ITEM, "catalog_version": market.catalogue.version, "record_key": "cap" * 10,
        "version": 1, "producer": "market", "issued_at": "2026-05-12T00:00:00Z",
        "subject": "x" * 32,
    }  # fmt: skip
    signer = market.node_keys.signing
    trusted = {signer.keyid: signer.public_key}
    signed = keys.sign_record(header, fields, signer)
    verified = keys.verify_record(signed, trusted=trusted)
    row = feeds.received_record(platform, signed, verified, now=platform.clock())
    assert (row.severity, row.decided_on) == ("general", dt.date(2026, 5, 11))
    assert row.disclosure_max_end == dt.date(2027, 1, 1)
    without = dict(fields, conduct_end_date="")
    signed = keys.sign_record(header, without, signer)
    verified = keys.verify_record(signed, trusted=trusted)
    row = feeds.received_record(platform, signed, verified, now=platform.clock())
    assert row.disclosure_max_end == dt.date(2027, 5, 11)


def _decided_on(runtime: NodeRuntime, day: dt.date, n: int) -> NewRecord:
    """Market's penalty `n`, decided on `day`, with its real fields (so it re-validates)."""
    fields = {
        k: v
        for k, v in penalty_org(
            decision_no=f"张市监罚〔2026〕{n}号",
            decision_date=day.isoformat(),
            penalty_valid_until=(day + dt.timedelta(days=365)).isoformat(),
        ).items()
        if v is not None
    }
    header = {
        "item": ITEM, "catalog_version": runtime.catalogue.version, "record_key": f"{n:064x}",
        "version": 1, "producer": runtime.node_id, "issued_at": "2026-05-12T00:00:00Z",
        "subject": f"{n:032x}",
    }  # fmt: skip
    signed = keys.sign_record(header, fields, runtime.node_keys.signing)
    row_id = f"row-{n}"
    return NewRecord(
        row_id=row_id,
        producer=runtime.node_id,
        record_key=f"{n:064x}",
        version=1,
        item_id=ITEM,
        catalog_version=runtime.catalogue.version,
        subject_index=f"{n:032x}",
        body=runtime.cipher.encrypt(row_id, signed.to_bytes()),
        content_hash=f"{n:064x}",
        severity="general",
        decided_on=day,
        disclosure_min_end=None,
        disclosure_max_end=day + dt.timedelta(days=365),
        disclosure_rule="test",
        created_at=runtime.clock(),
    )


def test_a_copy_is_revalidated_on_the_china_day(
    nodes: tuple[NodeRuntime, NodeRuntime], clock: Clock
) -> None:
    """Between 00:00 and 08:00 China Standard Time the UTC day is still yesterday: a record
    decided today in China must not look decided in the future at the subscriber and lose its
    severity, window and subject index (docs/feeds.md, "Subject index of received records")."""
    market, platform = nodes
    # the next 16:30 UTC: 00:30 the following day in Zibo
    moment = clock.now.replace(hour=16, minute=30, second=0, microsecond=0)
    clock.now = moment if moment > clock.now else moment + dt.timedelta(days=1)
    today = china_day(clock.now)
    assert today != clock.now.date()
    market.store.ensure_subscription("platform", [ITEM], now=clock())
    market.store.store_batch([_decided_on(market, today, 1)], now=clock())

    async def scenario() -> None:
        async with serving(market):
            assert (await feeds.pull(platform, "market")).stored == 1

    run(scenario())
    # the batch path (checked by the record checker) and a single received record (pushes)
    (pulled,) = platform.store.record_versions("market", f"{1:064x}")
    record = _decided_on(market, today, 2)
    signed = keys.SignedRecord.from_bytes(market.cipher.decrypt(record.row_id, record.body))
    signer = market.node_keys.signing
    verified = keys.verify_record(signed, trusted={signer.keyid: signer.public_key})
    received = feeds.received_record(platform, signed, verified, now=clock())
    for copy in (pulled, received):
        assert (copy.severity, copy.decided_on) == ("general", today)
        assert copy.disclosure_max_end is not None
    assert pulled.subject_index == platform.blind.token(COMPANY_USCC)
