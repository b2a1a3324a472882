"""SqlGrantLedger: the node.grants.GrantLedger protocol on the store, with atomic use counts."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from node.accesslog import MemoryLogBackend, risk_report
from node.grants import (
    Grant,
    GrantConflictError,
    GrantLedger,
    GrantRefusedError,
    GrantRevocation,
    MalformedGrantError,
)
from node.store import SqlGrantLedger, Store, open_store

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'credex.db'}")
    yield opened
    opened.close()


def grant(
    grant_id: str = "g-1", *, limit: int = 2, purpose: str = "administrative_licensing"
) -> Grant:
    return Grant(
        grant_id=grant_id,
        issuer="platform",
        subject_digest=hashlib.sha256(b"subject").hexdigest(),
        grantee="tax",
        purpose=purpose,
        items=frozenset({"admin_penalty"}),
        valid_from=NOW,
        valid_until=NOW + dt.timedelta(days=30),
        use_limit=limit,
        evidence_sha256=hashlib.sha256(b"evidence").hexdigest(),
        issued_at=NOW,
    )


def test_it_is_a_grant_ledger(store: Store) -> None:
    assert isinstance(SqlGrantLedger(store), GrantLedger)


def test_register_is_idempotent_and_refuses_a_different_grant(store: Store) -> None:
    ledger = SqlGrantLedger(store)
    first = ledger.register(grant(), b"raw-envelope")
    assert (first.uses, first.raw, first.revoked) == (0, b"raw-envelope", False)
    assert ledger.register(grant(), b"raw-envelope") == first
    with pytest.raises(GrantConflictError):
        ledger.register(grant(purpose="government_procurement"), b"other")
    got = ledger.get("g-1")
    assert got is not None
    assert got.grant == grant()
    assert ledger.get("g-404") is None


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (NOW - dt.timedelta(seconds=1), "grant_not_yet_valid"),
        (NOW + dt.timedelta(days=30), "grant_expired"),
    ],
)
def test_use_outside_validity_is_refused(store: Store, when: dt.datetime, reason: str) -> None:
    ledger = SqlGrantLedger(store)
    ledger.register(grant(), b"raw")
    with pytest.raises(GrantRefusedError, match=reason):
        ledger.use("g-1", when)


def test_uses_are_counted_capped_and_revocation_is_final(store: Store) -> None:
    ledger = SqlGrantLedger(store)
    with pytest.raises(GrantRefusedError, match="grant_unknown"):
        ledger.use("g-1", NOW)
    ledger.register(grant(limit=2), b"raw")
    assert ledger.use("g-1", NOW).uses == 1
    assert ledger.use("g-1", NOW).uses == 2
    with pytest.raises(GrantRefusedError, match="grant_exhausted"):
        ledger.use("g-1", NOW)
    ledger.register(grant("g-2"), b"raw")
    revoked = ledger.revoke("g-2", NOW, "subject_withdrew")
    again = ledger.revoke("g-2", NOW + dt.timedelta(hours=1), "later")
    assert revoked is not None
    assert again is not None
    assert (again.revoked_at, again.revoked_reason) == (revoked.revoked_at, "subject_withdrew")
    with pytest.raises(GrantRefusedError, match="grant_revoked"):
        ledger.use("g-2", NOW)
    assert [s.grant.grant_id for s in ledger.for_subject(grant().subject_digest)] == ["g-1", "g-2"]


def test_concurrent_uses_never_exceed_the_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credex.db'}"
    stores = [open_store(url) for _ in range(4)]
    SqlGrantLedger(stores[0]).register(grant(limit=5), b"raw")
    taken: list[int] = []
    refused: list[str] = []

    def work(i: int) -> None:
        ledger = SqlGrantLedger(stores[i])
        for _ in range(5):
            try:
                taken.append(ledger.use("g-1", NOW).uses)
            except GrantRefusedError as error:
                refused.append(error.reason)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [1, 2, 3, 4, 5]
    assert refused == ["grant_exhausted"] * 15
    for s in stores:
        s.close()


def test_active_grants_feed_the_risk_report(store: Store) -> None:
    ledger = SqlGrantLedger(store)
    ledger.register(grant("g-1", limit=5), b"raw")
    ledger.register(grant("g-2", limit=10), b"raw")
    ledger.register(grant("g-3"), b"raw")
    ledger.revoke("g-3", NOW, "subject_withdrew")
    for _ in range(4):
        ledger.use("g-1", NOW)  # 4 of 5 uses spent
    assert [s.grant.grant_id for s in ledger.active(NOW)] == ["g-1", "g-2"]
    assert ledger.active(NOW + dt.timedelta(days=31)) == []  # expired ones are not active
    report = risk_report(MemoryLogBackend(), NOW, grants=ledger.active(NOW))
    near = [f for f in report.findings if "g-1" in f.subject or "g-1" in f.message]
    assert near, report.findings
    assert not [f for f in report.findings if "g-2" in f.subject or "g-2" in f.message]


def test_the_longest_grant_id_fits_both_tables(store: Store) -> None:
    # node.grants accepts ids of up to 128 characters; both tables must hold them (a column
    # of 64 stores them on SQLite, which ignores lengths, but not on PostgreSQL)
    longest = "g" * 128
    GrantRevocation(grant_id=longest, issuer="platform", revoked_at=NOW, reason="withdrawn")
    with pytest.raises(MalformedGrantError):
        GrantRevocation(grant_id=longest + "g", issuer="platform", revoked_at=NOW, reason="x")
    columns = inspect(store.engine)
    for table in ("grants", "grant_revocations"):
        (grant_id,) = [c for c in columns.get_columns(table) if c["name"] == "grant_id"]
        assert getattr(grant_id["type"], "length", 0) >= len(longest), table
    ledger = SqlGrantLedger(store)
    ledger.register(grant(longest), b"raw")
    revoked = ledger.revoke(longest, NOW, "subject_withdrew")
    assert revoked is not None
    assert revoked.grant.grant_id == longest
