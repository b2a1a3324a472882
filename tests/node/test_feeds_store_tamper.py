"""A provider's store row whose columns disagree with its signed body, on the feed.

Someone who can write to the provider's database but has no keys (threat 4 of
docs/security-model.md) cannot forge a record body, but can change the columns the provider
judges it by: file a record of an item the subscriber has no agreement for under an agreed
item, or change its record key, version or producer. The provider checks every record it is
about to put in a batch against its signed header first: the events before the row still go,
the row's record never leaves, the stream ends DATA_LOSS with a denied `feed_delivery` entry
(`record_tampered`), and the provider's log names the row for its operator. Once the row is
restored the feed resumes where it stopped, nothing lost.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

import keys
from node import feeds
from node._pb.credex.v1 import common_pb2
from node.accesslog import iter_entries
from node.cluster import LocalCluster
from node.errors import TamperDetected
from node.runtime import NodeRuntime
from node.services.exchange_service import ExchangeServicer
from node.store import NewRecord
from tests.node import push_support
from tests.node.exchange_support import serving
from tests.node.push_support import ITEM, key
from tests.node.store_support import retag

OTHER_ITEM = "admin_penalty"  # market's, never agreed with the platform
SECRET = "N-SECRET-42"


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_support.feed_cluster(tmp_path)


def _store_other(market: NodeRuntime, n: int, *, item_column: str) -> str:
    """A record of OTHER_ITEM signed by market, its row's item column set to `item_column`
    (what an insider's UPDATE leaves behind); returns its row id."""
    now = market.clock()
    header = {
        "item": OTHER_ITEM,
        "catalog_version": market.catalogue.version,
        "record_key": key(n),
        "version": 1,
        "producer": market.node_id,
        "issued_at": "2026-01-05T00:00:00Z",
        "subject": f"{n:032x}",
    }
    signed = keys.sign_record(header, {"decision_no": SECRET}, market.node_keys.signing)
    row_id = f"row-{n}"
    market.store.store_batch(
        [
            NewRecord(
                row_id=row_id,
                producer=market.node_id,
                record_key=key(n),
                version=1,
                item_id=item_column,
                catalog_version=market.catalogue.version,
                subject_index=f"{n:032x}",
                body=market.cipher.encrypt(row_id, signed.to_bytes()),
                content_hash=f"{n:064x}",
                severity=None,
                decided_on=None,
                disclosure_min_end=None,
                disclosure_max_end=None,
                disclosure_rule="none",
                created_at=now,
            )
        ],
        now=now,
    )
    return row_id


def _tamper(cluster: LocalCluster, sql: str, *params: object) -> None:
    db = sqlite3.connect(Path(cluster.home("market")) / "data" / "credex.db")
    try:
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()


def _batch_payloads(market: NodeRuntime, platform: NodeRuntime) -> list[bytes]:
    """Everything market's next batch for the platform would carry, opened as the platform."""
    servicer = ExchangeServicer(market)
    member = market.bundle().member("platform")
    assert member is not None
    try:
        built = servicer._build("platform", 0, 500, {ITEM}, member.encryption_key, compact=True)
    except TamperDetected:
        return []
    assert built is not None
    _, payloads = keys.open_batch(
        built.sealed,
        recipient_id="platform",
        private_key=platform.node_keys.encryption_private,
        expect=feeds.feed_header("market", "platform", built.first_seq, built.last_seq),
    )
    return payloads


def _pull(market: NodeRuntime, platform: NodeRuntime) -> feeds.PullResult | Exception:
    async def scenario() -> feeds.PullResult | Exception:
        async with serving(market):
            try:
                return await feeds.pull(platform, "market")
            except Exception as error:  # what the subscriber sees
                return error

    return asyncio.run(scenario())


TAMPERINGS = {
    # a record of an item the platform may not have, filed under an agreed one
    "item": ("", ""),
    # an agreed record under another record key or version
    "record_key": ("UPDATE records SET record_key = ? WHERE row_id = 'row-2'", key(99)),
    "version": ("UPDATE records SET version = ? WHERE row_id = 'row-2'", 7),
}


@pytest.mark.parametrize("column", sorted(TAMPERINGS))
def test_a_row_that_disagrees_with_its_signed_body_never_leaves(
    cluster: LocalCluster, column: str, caplog: pytest.LogCaptureFixture
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    try:
        market.store.ensure_subscription("platform", [ITEM], now=market.clock())
        push_support.seed_entry(market, 1)
        if column == "item":
            # what an insider's INSERT or UPDATE leaves: the event queued for the agreed item
            _store_other(market, 2, item_column=ITEM)
        else:
            push_support.seed_entry(market, 2)
            sql, value = TAMPERINGS[column]
            _tamper(cluster, sql, value)
        push_support.seed_entry(market, 3)

        payloads = _batch_payloads(market, platform)
        assert not any(SECRET.encode() in p for p in payloads)
        events = [common_pb2.FeedEvent.FromString(p) for p in payloads]
        assert [e.seq for e in events if e.HasField("record")] == [1]

        caplog.set_level(logging.ERROR, logger="node.services.exchange_service")
        outcome = _pull(market, platform)
        assert isinstance(outcome, TamperDetected), outcome
        assert "integrity" in str(outcome)
        # the record before the row arrived and was acknowledged; nothing of the row
        assert platform.store.upstream_cursor("market") == 1
        assert [r.record_key for r in platform.store.record_versions("market", key(1))] == [key(1)]
        assert platform.store.record_versions("market", key(2)) == []
        denied = [
            e
            for _i, _leaf, e in iter_entries(market.log.backend)
            if e.kind == "feed_delivery" and e.decision == "deny"
        ]
        assert [(e.reason, e.result_count, e.items_released) for e in denied] == [
            ("record_tampered", 0, ())
        ]
        lines = [r.getMessage() for r in caplog.records if "row-2" in r.getMessage()]
        assert lines, caplog.text
        assert SECRET not in caplog.text

        # the operator restores the row: the feed resumes where it stopped
        if column == "item":
            _tamper(cluster, "UPDATE records SET item_id = ? WHERE row_id = 'row-2'", OTHER_ITEM)
            # the row as a backup holds it, its integrity tag with it (the insider's row above
            # was tagged to reach the check behind the tag, decision 0018)
            retag(market.store, "row-2")
        elif column == "record_key":
            _tamper(cluster, "UPDATE records SET record_key = ? WHERE row_id = 'row-2'", key(2))
        else:
            _tamper(cluster, "UPDATE records SET version = 1 WHERE row_id = 'row-2'")
        done = _pull(market, platform)
        assert isinstance(done, feeds.PullResult), done
        assert platform.store.record_versions("market", key(3)) != []
        held = platform.store.record_versions("market", key(2))
        assert [r.state for r in held] == ([] if column == "item" else ["active"])
    finally:
        push_support.close(market, platform)
