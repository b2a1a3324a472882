"""A grant revoked before the data-holding node has seen it stays revoked (PIPL Art. 15).

Both ledgers (in memory and on the store) keep a revocation by grant id whether or not the grant
is registered; a grant registered afterwards starts revoked, every use is refused, and a use
given back for an answer that never left is counted once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import insert, select, update

from node.grants import (
    Grant,
    GrantLedger,
    GrantRefusedError,
    MemoryGrantLedger,
    RecordedRevocation,
    apply_bundle_revocations,
)
from node.store import SqlGrantLedger, Store, open_store
from node.store.engine import MIGRATIONS_DIR, make_engine
from node.store.grantledger import GRANTS, REVOCATIONS

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)


def grant(grant_id: str = "g-early", *, limit: int = 3) -> Grant:
    return Grant(
        grant_id=grant_id,
        issuer="platform",
        subject_digest=hashlib.sha256(b"subject").hexdigest(),
        grantee="tax",
        purpose="staff_recruitment",
        items=frozenset({"admin_penalty"}),
        valid_from=NOW - dt.timedelta(days=1),
        valid_until=NOW + dt.timedelta(days=30),
        use_limit=limit,
        evidence_sha256=hashlib.sha256(b"evidence").hexdigest(),
        issued_at=NOW - dt.timedelta(days=1),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'credex.db'}")
    yield opened
    opened.close()


@pytest.fixture(params=["memory", "sql"])
def ledger(request: pytest.FixtureRequest, store: Store) -> GrantLedger:
    if request.param == "memory":
        return MemoryGrantLedger()
    return SqlGrantLedger(store)


def test_a_revocation_for_an_unknown_grant_is_kept_and_the_grant_starts_revoked(
    ledger: GrantLedger,
) -> None:
    assert ledger.revoke("g-early", NOW, "subject_withdrew_consent", raw=b"signed") is None
    assert ledger.revocation("g-early") == RecordedRevocation(
        "g-early", NOW, "subject_withdrew_consent"
    )
    assert ledger.get("g-early") is None  # recorded, not registered
    state = ledger.register(grant(), b"raw-grant")
    assert (state.revoked, state.revoked_at, state.revoked_reason) == (
        True,
        NOW,
        "subject_withdrew_consent",
    )
    got = ledger.get("g-early")
    assert got is not None
    assert got.revoked
    assert got.raw == b"raw-grant"  # the evidence is still kept
    with pytest.raises(GrantRefusedError) as caught:
        ledger.use("g-early", NOW)
    assert caught.value.reason == "grant_revoked"


def test_the_first_revocation_is_kept(ledger: GrantLedger) -> None:
    ledger.revoke("g-early", NOW, "subject_withdrew_consent")
    later = ledger.revoke("g-early", NOW + dt.timedelta(hours=1), "revoked_by_bundle")
    assert later is None
    ledger.register(grant(), b"raw")
    again = ledger.revoke("g-early", NOW + dt.timedelta(hours=2), "other")
    assert again is not None
    assert (again.revoked_at, again.revoked_reason) == (NOW, "subject_withdrew_consent")


def test_a_bundle_revocation_of_an_unregistered_grant_outlives_the_bundle(
    ledger: GrantLedger,
) -> None:
    # The bundle lists the grant, the next bundle no longer does: it must still start revoked.
    assert apply_bundle_revocations(ledger, frozenset({"g-early"}), NOW) == ["g-early"]
    assert apply_bundle_revocations(ledger, frozenset(), NOW) == []
    state = ledger.register(grant(), b"raw")
    assert state.revoked
    assert state.revoked_reason == "revoked_by_bundle"
    with pytest.raises(GrantRefusedError, match="grant_revoked"):
        ledger.use("g-early", NOW)


def test_a_use_given_back_is_counted_once(ledger: GrantLedger) -> None:
    ledger.register(grant(limit=1), b"raw")
    assert ledger.use("g-early", NOW).uses == 1
    ledger.refund_use("g-early")
    state = ledger.get("g-early")
    assert state is not None
    assert state.uses == 0
    ledger.refund_use("g-early")  # never below zero
    ledger.refund_use("g-unknown")  # nothing to give back
    state = ledger.get("g-early")
    assert state is not None
    assert state.uses == 0
    assert ledger.use("g-early", NOW).uses == 1
    with pytest.raises(GrantRefusedError, match="grant_exhausted"):
        ledger.use("g-early", NOW)


def test_a_revocation_recorded_beside_a_registration_still_wins(store: Store) -> None:
    # On PostgreSQL (READ COMMITTED) a registration and a revocation of the same grant on two
    # replicas can both commit without seeing each other: the grant row then says "not
    # revoked" and only the revocation row exists. Every read must still see it revoked.
    ledger = SqlGrantLedger(store)
    ledger.register(grant(), b"raw")
    with store.write("record a revocation behind the ledger's back") as conn:
        conn.execute(
            insert(REVOCATIONS).values(
                grant_id="g-early", revoked_at=NOW, reason="subject_withdrew_consent", body=None
            )
        )
    state = ledger.get("g-early")
    assert state is not None
    assert state.revoked
    assert [s.revoked for s in ledger.for_subject(grant().subject_digest)] == [True]
    assert ledger.active(NOW) == []
    with pytest.raises(GrantRefusedError, match="grant_revoked"):
        ledger.use("g-early", NOW)


def test_the_signed_revocation_is_kept_as_evidence(store: Store) -> None:
    ledger = SqlGrantLedger(store)
    ledger.revoke("g-early", NOW, "subject_withdrew_consent", raw=b"signed-envelope")
    ledger.revoke("g-bundle", NOW, "revoked_by_bundle")
    with store.read("read the revocations") as conn:
        rows = conn.execute(
            select(REVOCATIONS.c.grant_id, REVOCATIONS.c.body).order_by(REVOCATIONS.c.grant_id)
        ).all()
    assert [(r.grant_id, r.body) for r in rows] == [
        ("g-bundle", None),
        ("g-early", b"signed-envelope"),
    ]


def test_migration_0004_keeps_the_revocations_of_registered_grants(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credex.db'}"
    before = ScriptDirectory(str(MIGRATIONS_DIR)).get_revision("0004")
    assert before is not None
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, str(before.down_revision))  # the revision 0004 follows
    engine.dispose()
    store = open_store(url, migrate_schema=False)
    try:
        with store.write("a grant revoked before 0004") as conn:
            conn.execute(
                insert(GRANTS).values(
                    grant_id="g-old",
                    body=b"raw",
                    payload=grant("g-old").to_payload(),
                    subject_digest=grant().subject_digest,
                    grantee="tax",
                    purpose="staff_recruitment",
                    items='["admin_penalty"]',
                    valid_from=NOW,
                    valid_until=NOW + dt.timedelta(days=30),
                    use_limit=3,
                    uses=0,
                    revoked_at=None,
                    revoked_reason=None,
                )
            )
            conn.execute(
                update(GRANTS).values(revoked_at=NOW, revoked_reason="subject_withdrew_consent")
            )
    finally:
        store.close()
    upgraded = open_store(url)  # migrates to the newest
    try:
        assert SqlGrantLedger(upgraded).revocation("g-old") == RecordedRevocation(
            "g-old", NOW, "subject_withdrew_consent"
        )
    finally:
        upgraded.close()
