"""SqlGrantLedger on one PostgreSQL shared by two `credex serve` replicas (docs/policy.md,
"Subject grants"): uses are counted once across replicas, and a grant presented to both at once
is registered once, without either query failing on the collision.

Each replica is its own `Store` (its own engine and connection pool), as two processes are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from node.grants import Grant, GrantConflictError, GrantRefusedError, GrantState
from node.store import SqlGrantLedger, Store, open_store
from tests.node.conftest import empty_postgres
from tests.node.test_store_grants import NOW
from tests.node.test_store_grants import grant as ledger_grant

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(pg_database: str) -> Iterator[tuple[Store, Store]]:
    empty_postgres(pg_database)
    first = open_store(pg_database, migrate_schema=False)
    second = open_store(pg_database, migrate_schema=False)
    yield first, second
    first.close()
    second.close()


def grant(grant_id: str = "g-1", *, limit: int = 3, purpose: str = "staff_recruitment") -> Grant:
    """The ledger tests' grant, with this module's defaults (three uses, another purpose)."""
    return ledger_grant(grant_id, limit=limit, purpose=purpose)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _waits_on_lock(admin: psycopg.Connection[Any]) -> bool:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    ).fetchone()
    return row is not None and int(row[0]) > 0


def _race_with_uncommitted_insert(
    url: str, other: Grant, call: Callable[[], GrantState]
) -> GrantState | BaseException:
    """Run `call` (a registration on `store`) while another replica's transaction has inserted
    `other` but not committed yet: the call's read finds no row, its insert waits on the other's
    unique key, and the other commits then. Returns the call's result or its exception."""
    outcome: list[GrantState | BaseException] = []
    holder = open_store(url, migrate_schema=False)
    try:
        with holder.engine.connect() as conn, conn.begin():
            conn.execute(
                text(
                    "INSERT INTO grants (grant_id, body, payload, subject_digest, grantee, "
                    "purpose, items, valid_from, valid_until, use_limit, uses) VALUES "
                    "(:id, :body, :payload, :digest, 'tax', :purpose, '[]', :f, :u, :n, 0)"
                ),
                {
                    "id": other.grant_id,
                    "body": b"raw-other",
                    "payload": other.to_payload(),
                    "digest": other.subject_digest,
                    "purpose": other.purpose,
                    "f": other.valid_from,
                    "u": other.valid_until,
                    "n": other.use_limit,
                },
            )

            def run() -> None:
                try:
                    outcome.append(call())
                except BaseException as error:  # handed to the test
                    outcome.append(error)

            worker = threading.Thread(target=run)
            worker.start()
            with psycopg.connect(_libpq(url), autocommit=True) as admin:
                # the registration's INSERT waits on the uncommitted row's unique key
                while not _waits_on_lock(admin) and worker.is_alive():
                    worker.join(0.01)
        worker.join()
    finally:
        holder.close()
    return outcome[0]


def test_two_replicas_registering_one_grant_at_once_both_succeed(
    pg_database: str, replicas: tuple[Store, Store]
) -> None:
    _first, second = replicas
    ledger = SqlGrantLedger(second)
    result = _race_with_uncommitted_insert(
        pg_database, grant(), lambda: ledger.register(grant(), b"raw")
    )
    # The same grant sent to two replicas at once: the second registration is idempotent, it
    # does not fail the second query on a unique-key collision.
    assert isinstance(result, GrantState), repr(result)
    assert result.grant == grant()
    assert result.uses == 0


def test_two_replicas_registering_different_grants_under_one_id_conflict(
    pg_database: str, replicas: tuple[Store, Store]
) -> None:
    _first, second = replicas
    ledger = SqlGrantLedger(second)
    mine = grant(purpose="bidding")
    result = _race_with_uncommitted_insert(
        pg_database, grant(), lambda: ledger.register(mine, b"raw")
    )
    assert isinstance(result, GrantConflictError), repr(result)
    stored = ledger.get("g-1")
    assert stored is not None
    assert stored.grant == grant()  # the first registration stands, unchanged


def test_uses_from_two_replicas_never_exceed_the_limit(replicas: tuple[Store, Store]) -> None:
    first, second = replicas
    SqlGrantLedger(first).register(grant(limit=5), b"raw")
    taken: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def work(store: Store) -> None:
        ledger = SqlGrantLedger(store)
        start.wait()
        for _ in range(5):
            try:
                uses = ledger.use("g-1", NOW).uses
                with lock:
                    taken.append(uses)
            except GrantRefusedError as error:
                with lock:
                    refused.append(error.reason)

    threads = [threading.Thread(target=work, args=(s,)) for s in (first, second) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [1, 2, 3, 4, 5]
    assert refused == ["grant_exhausted"] * 15
    state = SqlGrantLedger(second).get("g-1")
    assert state is not None
    assert state.uses == 5


def test_a_refund_on_one_replica_and_a_use_on_the_other_keep_the_count(
    replicas: tuple[Store, Store],
) -> None:
    first, second = replicas
    a, b = SqlGrantLedger(first), SqlGrantLedger(second)
    a.register(grant(limit=1), b"raw")
    a.use("g-1", NOW)
    with pytest.raises(GrantRefusedError, match="grant_exhausted"):
        b.use("g-1", NOW)
    a.refund_use("g-1")
    b.refund_use("g-1")  # never below zero
    assert b.use("g-1", NOW).uses == 1
    with pytest.raises(GrantRefusedError, match="grant_exhausted"):
        a.use("g-1", NOW)


def test_a_revocation_on_one_replica_stops_uses_on_the_other(
    replicas: tuple[Store, Store],
) -> None:
    first, second = replicas
    a, b = SqlGrantLedger(first), SqlGrantLedger(second)
    b.revoke("g-1", NOW, "subject_withdrew_consent")  # before the grant reached either
    state = a.register(grant(), b"raw")
    assert state.revoked
    with pytest.raises(GrantRefusedError, match="grant_revoked"):
        b.use("g-1", NOW)
