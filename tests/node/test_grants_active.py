"""`SqlGrantLedger.active` (credex grant list, the risk report's grants): the limit counts
active grants only, so expired grants that sort first never hide the active ones."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from node.store import SqlGrantLedger, Store
from tests.node.test_store_grants import NOW, grant


def test_expired_grants_do_not_use_up_the_limit(store: Store) -> None:
    ledger = SqlGrantLedger(store)
    for n in range(3):  # "g-a0".."g-a2" sort before "g-z": all expired at LATER
        expired = replace(grant(f"g-a{n}"), valid_until=NOW + dt.timedelta(days=1))
        ledger.register(expired, b"raw")
    ledger.register(grant("g-z"), b"raw")  # valid 30 days
    later = NOW + dt.timedelta(days=2)
    assert [s.grant.grant_id for s in ledger.active(later, limit=2)] == ["g-z"]
    assert [s.grant.grant_id for s in ledger.active(later)] == ["g-z"]
    # the window's end is exclusive, as for a use
    end = grant("g-z").valid_until
    assert ledger.active(end) == []
    assert [s.grant.grant_id for s in ledger.active(end - dt.timedelta(microseconds=1))] == ["g-z"]
