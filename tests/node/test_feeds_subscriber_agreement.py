"""The subscriber stores only records its own feed agreements give it.

The provider decides what it sends by the bundle's `feed` agreements; a provider that sends
more (compromised, buggy, or an insider's row that slipped through) must not make the
platform hold a record no agreement gives it (minimisation; the platform would keep, export
and index a record it had no basis for). The subscriber checks every record's signed item
against the agreements of the bundle it holds: a record outside them is not stored, skipped
as the provider would withhold it under a current bundle (not refused: while the two nodes'
bundles differ after an agreement ended, the withdrawals behind it must still arrive), and a
warning names the feed, the event and the item, never a field value.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from node import feeds
from node.cluster import LocalCluster
from node.services import exchange_service
from node.store.received import received_records
from tests.node import push_support
from tests.node.exchange_support import seed, serving
from tests.node.push_support import ITEM


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_support.feed_cluster(tmp_path)


def test_a_record_outside_the_subscribers_agreements_is_not_stored(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
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

        async def scenario() -> feeds.PullResult:
            async with serving(market):
                return await feeds.pull(platform, "market")

        caplog.set_level(logging.WARNING, logger="node.feeds")
        done = asyncio.run(scenario())
        assert (done.events, done.stored, done.skipped, done.cursor) == (2, 1, 1, 2)
        assert platform.store.record_versions("market", f"{0:064x}") == []
        assert [r.item_id for r in received_records(platform.store)] == [ITEM]
        (line,) = [r.getMessage() for r in caplog.records if "admin_penalty" in r.getMessage()]
        assert line.startswith("feed of market: ")
        assert "event 1" in line
        assert "N0" not in line
    finally:
        push_support.close(market, platform)
