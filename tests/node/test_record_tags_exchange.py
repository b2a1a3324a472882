"""Feed delivery and push of a record row edited in the database by someone without the
node's keys (docs/decisions/0018): the row's integrity tag fails, so nothing of it leaves.

The feed stops at the row (DATA_LOSS, a denied `feed_delivery` entry `record_tampered`, the
row named in the provider's log) and resumes once the row is restored; a push refuses the
record. Set up as in test_feeds_store_tamper.py and test_push_store_tamper.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest

from node import lifecycle_ops as ops
from node import push
from node.accesslog import iter_entries
from node.errors import TamperDetected
from node.runtime import NodeRuntime
from node.scheduler import scan
from node.store.errors import RecordTampered
from node.store.integrity import check_record_tags
from tests.node import push_support
from tests.node.exchange_support import serving
from tests.node.push_support import ITEM, key
from tests.node.test_feeds_store_tamper import _pull, _tamper
from tests.node.test_lifecycle_ops import Clock, clock, keys_of, runtime

__all__ = ["clock", "runtime"]  # the fixtures, imported for pytest

# (what the producer did, what the insider's SQL undoes, how the operator restores the row)
EDITS = {
    "withdrawn_set_active": (
        "withdraw",
        "UPDATE records SET state = 'active' WHERE row_id = 'row-2'",
        "UPDATE records SET state = 'withdrawn' WHERE row_id = 'row-2'",
    ),
    "objection_cleared": (
        "flag",
        "UPDATE records SET objection = 0 WHERE row_id = 'row-2'",
        "UPDATE records SET objection = 1 WHERE row_id = 'row-2'",
    ),
    "tag_copied_from_another_row": (
        "flag",
        "UPDATE records SET objection = 0, tag = (SELECT tag FROM records WHERE row_id = "
        "'row-1') WHERE row_id = 'row-2'",
        "",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_row_never_leaves_on_the_feed(
    tmp_path: Path, edit: str, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = push_support.feed_cluster(tmp_path)
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    try:
        market.store.ensure_subscription("platform", [ITEM], now=market.clock())
        for n in (1, 2, 3):
            push_support.seed_entry(market, n)
        before = market.store.get_record("row-2")
        done, undo, restore = EDITS[edit]
        if done == "withdraw":
            market.store.set_record_state("row-2", "withdrawn", event_kind=None, now=market.clock())
        else:
            market.store.set_objection("row-2", True, now=market.clock())
        _tamper(cluster, undo)
        assert check_record_tags(market.store).bad == ("row-2",)

        caplog.set_level(logging.ERROR, logger="node.services.exchange_service")
        outcome = _pull(market, platform)
        assert isinstance(outcome, TamperDetected), outcome
        assert platform.store.upstream_cursor("market") == 1  # what came before still went
        assert platform.store.record_versions("market", key(2)) == []
        denied = [
            e
            for _i, _leaf, e in iter_entries(market.log.backend)
            if e.kind == "feed_delivery" and e.decision == "deny"
        ]
        assert [(e.reason, e.result_count) for e in denied] == [("record_tampered", 0)]
        assert [r for r in caplog.records if "row-2" in r.getMessage()], caplog.text
        assert before.subject_index not in caplog.text

        if restore:  # the operator restores the row's values: the feed resumes
            _tamper(cluster, restore)
            resumed = _pull(market, platform)
            assert not isinstance(resumed, Exception), resumed
            assert platform.store.record_versions("market", key(3)) != []
    finally:
        push_support.close(market, platform)


def test_an_edited_row_is_not_pushed(tmp_path: Path) -> None:
    cluster = push_support.push_cluster(tmp_path)
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    try:
        push_support.seed_entry(market, 5)
        market.store.set_record_state("row-5", "withdrawn", event_kind=None, now=market.clock())
        _tamper(cluster, "UPDATE records SET state = 'active' WHERE row_id = 'row-5'")

        async def scenario() -> None:
            async with serving(hrss):
                with pytest.raises(RecordTampered, match="row-5"):
                    await push.push_record(market, key(5))
                with pytest.raises(RecordTampered, match="row-5"):
                    await push.push_pending(market)

        asyncio.run(scenario())
        assert hrss.store.record_versions("market", key(5)) == []
    finally:
        push_support.close(market, hrss)


def test_a_whole_lifecycle_keeps_every_row_tag_intact(runtime: NodeRuntime, clock: Clock) -> None:
    """Ingest (the fixture), objection opened and resolved by a correction, another opened
    and confirmed, a revocation, expiry and purge by the scan: every row credex wrote on the
    way still matches its tag, and the records took every step."""
    general, revoked, severe = keys_of(runtime)
    clock.day(dt.date(2026, 6, 1))
    objection = ops.object_record(runtime, general, reason="wrong amount")
    corrected = ops.resolve_objection(
        runtime, objection.task_id, outcome="correct", changes={"fine_wan_yuan": "0.8"}
    )
    assert corrected.version == 2
    kept = ops.object_record(runtime, severe, reason="disputed")
    ops.resolve_objection(runtime, kept.task_id, outcome="confirm")
    ops.revoke_record(
        runtime, revoked, reason="行政复议决定书〔2026〕1号", known_on=dt.date(2026, 6, 1)
    )
    assert check_record_tags(runtime.store).bad == ()
    assert {"superseded", "withdrawn", "active"} <= _states(runtime, general, revoked, severe)
    clock.day(dt.date(2027, 5, 12))
    assert scan(runtime).expired >= 1
    assert "expired" in _states(runtime, general, revoked, severe)
    clock.day(dt.date(2032, 5, 12))
    assert scan(runtime).purged >= 1
    assert "purged" in _states(runtime, general, revoked, severe)
    report = check_record_tags(runtime.store)
    assert (report.bad, report.marker) == ((), "adopted")


def _states(runtime: NodeRuntime, *record_keys: str) -> set[str]:
    return {v.state for k in record_keys for v in runtime.store.record_versions("market", k)}
