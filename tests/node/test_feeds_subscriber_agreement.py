"""The subscriber stores only records its own feed agreements give it.

The provider decides what it sends by the bundle's `feed` agreements; a provider that sends
more (compromised, buggy, or an insider's row that slipped through) must not make the
platform hold a record no agreement gives it (minimisation; the platform would keep, export
and index a record it had no basis for). The subscriber checks every record's signed item
against the agreements of the bundle it holds: a batch with a record outside them stores
nothing and stops the pull (`PolicyDenied item_not_agreed`), naming the feed, the event and
the item, so the operator can install the current bundle if the agreement is new.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from node import feeds
from node.cluster import LocalCluster
from node.errors import PolicyDenied
from node.services import exchange_service
from tests.node import push_support
from tests.node.exchange_support import seed, serving
from tests.node.push_support import ITEM


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_support.feed_cluster(tmp_path)


def test_a_record_outside_the_subscribers_agreements_is_not_stored(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    real = exchange_service._agreed_items

    def generous(bundle: Any, provider: str, consumer: str, kind: str) -> set[str]:
        # a provider that serves an item no agreement names
        return real(bundle, provider, consumer, kind) | {"admin_penalty"}

    monkeypatch.setattr(exchange_service, "_agreed_items", generous)
    try:
        push_support.seed_entry(market, 1)
        seed(market, 1)  # an admin_penalty record, queued for the platform

        async def scenario() -> Any:
            async with serving(market):
                return await feeds.pull(platform, "market")

        with pytest.raises(PolicyDenied, match=r"feed of market: event \d+: .*admin_penalty") as e:
            asyncio.run(scenario())
        assert e.value.reason == "item_not_agreed"
        assert platform.store.count_records(producer="market") == 0
        assert platform.store.upstream_cursor("market") == 0
        assert ITEM  # the agreed item alone would have been stored
    finally:
        push_support.close(market, platform)
