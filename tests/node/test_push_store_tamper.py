"""A push whose store row disagrees with its signed body never leaves the producer.

Which entries are pushed, and to whom, is chosen by the row's columns (item, record key,
state). Someone who can write to market's database but has no keys can file a record of an
item no push agreement covers (a natural person's, say) under the severe-dishonesty item: the
receiver would refuse it (`item_not_agreed`), but only after opening it, so the record would
already have reached a department no agreement names. The producer checks the entry against
its signed header before sealing it: nothing is sent, the push of that record fails
`TamperDetected` naming the row, and `push_pending` goes on with the other entries.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

import keys
from node import push
from node.cluster import LocalCluster
from node.errors import TamperDetected
from node.runtime import NodeRuntime
from tests.node import push_support
from tests.node.exchange_support import serving
from tests.node.push_support import key, push_cluster
from tests.node.store_support import retag

SECRET = "N-SECRET-77"


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_cluster(tmp_path)


def _store_disguised(market: NodeRuntime, n: int) -> None:
    """Entry `n` as seed_entry stores it, but its body is a record of another item."""
    push_support.seed_entry(market, n)
    row = market.store.get_record(f"row-{n}")
    header = {
        "item": "admin_penalty",
        "catalog_version": market.catalogue.version,
        "record_key": key(n),
        "version": 1,
        "producer": market.node_id,
        "issued_at": "2026-01-05T00:00:00Z",
        "subject": f"{n:032x}",
    }
    signed = keys.sign_record(header, {"decision_no": SECRET}, market.node_keys.signing)
    # what an insider's UPDATE leaves (bodies are bound to their row id, so the insider moves
    # the columns of a row to an existing body: here the same effect, set up directly)
    db = sqlite3.connect(market.config.home / "data" / "credex.db")
    try:
        body = market.cipher.encrypt(row.row_id, signed.to_bytes())
        db.execute("UPDATE records SET body = ? WHERE row_id = ?", (body, row.row_id))
        db.commit()
    finally:
        db.close()
    # Tagged again: the check under test is the one behind the row tag (decision 0018), the
    # signed header against the columns; test_record_tags covers the tag itself.
    retag(market.store, row.row_id)


def test_a_disguised_entry_is_not_sent_and_the_others_are(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    try:
        _store_disguised(market, 5)
        push_support.seed_entry(market, 6)
        caplog.set_level(logging.ERROR)

        async def scenario() -> list[push.PushOutcome]:
            async with serving(hrss):
                with pytest.raises(TamperDetected, match="integrity"):
                    await push.push_record(market, key(5))
                return await push.push_pending(market)

        outcomes = asyncio.run(scenario())
        assert [o.receipt for o in outcomes] == [True]
        # nothing of entry 5 reached hrss: no push entry mentions it, no copy
        assert [e.reason for e in push_support.push_entries(hrss)] == [""]
        assert hrss.store.record_versions("market", key(5)) == []
        assert push_support.copy_state(hrss, 6) == "active"
        assert "row-5" in caplog.text
        assert SECRET not in caplog.text
    finally:
        push_support.close(market, hrss)
