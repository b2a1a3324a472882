"""A feed agreement that ends stops the records, not the news about records already shared.

令第36号 Art. 3: a repair stops sharing everywhere the record went. The platform's copy of a
record it received while the agreement held must still be withdrawn, expired or flagged when
the producer does so later, so the provider keeps serving a former subscriber its pending
events, every record withheld ("not_agreed"); a node that never subscribed is still refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node import feeds, lifecycle_ops
from node.accesslog import iter_entries
from node.cluster import LocalCluster
from node.errors import PolicyDenied
from node.runtime import NodeRuntime
from tests.node import push_support
from tests.node.exchange_support import serving
from tests.node.push_support import key


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_support.feed_cluster(tmp_path, with_hrss=True)


def _pull(provider: NodeRuntime, subscriber: NodeRuntime) -> feeds.PullResult:
    async def scenario() -> feeds.PullResult:
        async with serving(provider):
            return await feeds.pull(subscriber, provider.node_id)

    return asyncio.run(scenario())


def _copy(platform: NodeRuntime, n: int) -> tuple[str, bool]:
    (copy,) = platform.store.record_versions("market", key(n))
    return copy.state, copy.objection


def test_a_former_subscriber_still_gets_withdrawals_and_flags_but_no_records(
    cluster: LocalCluster,
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    for n in (7, 8):
        push_support.seed_entry(market, n)
    assert _pull(market, platform).stored == 2
    market.close()
    platform.close()

    cluster.reissue_bundle(agreement=[])  # the feed agreement ends
    market, platform, hrss = (cluster.runtime(n) for n in ("market", "platform", "hrss"))
    try:
        push_support.repair(market, 7)
        market.store.set_objection("row-8", True, now=market.clock())
        push_support.seed_entry(market, 9)  # queued for the platform, never to be sent
        assert [e.kind for e in market.store.events_after("platform", 2)] == [
            "withdraw",
            "objection_set",
            "upsert",
        ]
        assert feeds._followed_providers(platform) == ["market"]

        done = _pull(market, platform)
        assert (done.events, done.applied, done.stored, done.cursor) == (3, 2, 0, 5)
        assert _copy(platform, 7) == ("withdrawn", False)
        assert _copy(platform, 8) == ("active", True)
        assert platform.store.record_versions("market", key(9)) == []
        assert lifecycle_ops.propagation_report(market, key(7))["complete"] is True
        (delivery,) = [
            e
            for _i, _leaf, e in iter_entries(market.log.backend)
            if e.kind == "feed_delivery" and e.reason == "agreement_ended"
        ]
        assert (delivery.decision, delivery.items_released, delivery.result_count) == (
            "allow",
            (),
            3,
        )

        # a node that never subscribed is refused as before, and not followed
        assert feeds._followed_providers(hrss) == []
        with pytest.raises(PolicyDenied, match="no_agreement"):
            _pull(market, hrss)
    finally:
        push_support.close(market, platform, hrss)
