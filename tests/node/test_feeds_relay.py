"""A department's feed carries only its own records, never a copy it received from another
producer (a joint-punishment push, a feed): relaying one would share that producer's record
under an agreement it never made, and the subscriber, which verifies every record against its
provider's keys, would refuse the batch again and again (a wedged feed).

hrss receives market's entry by push and serves its own feed to the platform.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node import feeds, push
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.store import NewRecord
from tests.node import push_support
from tests.node.exchange_support import serving
from tests.node.push_support import ITEM, key


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    agreements = [
        {"provider": "market", "consumer": "hrss", "items": [ITEM], "purposes": ["push"],
         "kind": "push"},
        {"provider": "hrss", "consumer": "platform", "items": [ITEM], "purposes": ["feed"],
         "kind": "feed"},
    ]  # fmt: skip
    c = LocalCluster(tmp_path, nodes, agreements)
    c.init()
    return c


def _received_copy(hrss: NodeRuntime) -> str:
    (copy,) = hrss.store.record_versions("market", key(42))
    assert copy.origin == "received"
    return copy.row_id


@pytest.mark.parametrize("subscribe_first", [True, False])
def test_a_received_copy_never_enters_the_receivers_feed(
    cluster: LocalCluster, subscribe_first: bool
) -> None:
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    push_support.seed_entry(market, 42)
    if subscribe_first:
        hrss.store.ensure_subscription("platform", [ITEM], now=hrss.clock())

    async def scenario() -> None:
        async with serving(hrss):
            (sent,) = await push.push_record(market, key(42))
            assert sent.receipt
            # the copy's own lifecycle (a scan expiring it, a withdraw notice, a flag) is
            # hrss's business, not its subscribers'
            row_id = _received_copy(hrss)
            assert hrss.store.set_objection(row_id, True, now=hrss.clock()) == 0
            first = await feeds.pull(platform, "hrss")
            assert (first.stored, first.events) == (0, 0)
            assert hrss.store.events_after("platform", 0) == []
            assert (
                hrss.store.set_record_state(
                    row_id, "expired", event_kind="expire", now=hrss.clock()
                )
                == 0
            )
            # the feed keeps working: hrss's own entry arrives
            push_support.seed_entry(hrss, 7)
            second = await feeds.pull(platform, "hrss")
            assert second.stored == 1

    try:
        asyncio.run(scenario())
        assert [r.state for r in platform.store.record_versions("hrss", key(7))] == ["active"]
        assert platform.store.record_versions("market", key(42)) == []
        assert platform.store.count_records(producer="market") == 0
    finally:
        push_support.close(market, hrss, platform)


def test_an_event_about_another_producers_record_travels_empty(cluster: LocalCluster) -> None:
    """Defence in depth: an event about another producer's record that is already queued (by
    an older release) is served without the record and without naming it, and the feed goes
    on past it."""
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    push_support.seed_entry(market, 42)
    hrss.store.ensure_subscription("platform", [ITEM], now=hrss.clock())
    (theirs,) = market.store.record_versions("market", key(42))
    # stored as if it were local, so the store queues it as an older release did
    hrss.store.store_batch(
        [
            NewRecord(
                row_id="relayed",
                producer="market",
                record_key=theirs.record_key,
                version=1,
                item_id=ITEM,
                catalog_version=theirs.catalog_version,
                subject_index=theirs.subject_index,
                body=hrss.cipher.encrypt("relayed", market.cipher.decrypt("row-42", theirs.body)),
                content_hash=theirs.content_hash,
                severity=theirs.severity,
                decided_on=theirs.decided_on,
                disclosure_min_end=theirs.disclosure_min_end,
                disclosure_max_end=theirs.disclosure_max_end,
                disclosure_rule=theirs.disclosure_rule,
                created_at=hrss.clock(),
            )
        ],
        now=hrss.clock(),
    )
    hrss.store.set_objection("relayed", True, now=hrss.clock())
    assert len(hrss.store.events_after("platform", 0)) == 2
    push_support.seed_entry(hrss, 7)

    async def scenario() -> None:
        async with serving(hrss):
            done = await feeds.pull(platform, "hrss")
            assert (done.events, done.stored, done.cursor) == (3, 1, 3)

    try:
        asyncio.run(scenario())
        assert platform.store.count_records(producer="market") == 0
        assert [r.state for r in platform.store.record_versions("hrss", key(7))] == ["active"]
        assert hrss.store.subscription("platform").acked_seq == 3  # type: ignore[union-attr]
    finally:
        push_support.close(market, hrss, platform)
