"""Grants at rest: a copy of the database gives away no subject's ID number.

A grant names its subject by `sha256("credex-grant\\0" + ID number)`, unkeyed: with about 10^11
possible ID numbers it is reversed in minutes. The grants table kept that digest (indexed)
and the signed grant in the clear, so a stolen database file gave away the ID number of every
subject with a grant, while its keyed blind indexes protect everyone else. A node's ledger now
keeps the signed grant and its payload under the storage key and the digest as a keyed token.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update

import keys
from node.cli.init_cmds import init_node
from node.errors import TamperDetected
from node.grants import Grant, subject_digest
from node.runtime import open_runtime
from node.store import GrantSealing, SqlGrantLedger, Store
from node.store.grantledger import GRANTS
from tests.node.test_store_grants import NOW, grant

SUBJECT = "11010519491231002X"


@pytest.fixture
def sealing() -> GrantSealing:
    return GrantSealing(keys.StorageCipher(os.urandom(32)), keys.BlindIndex(os.urandom(32)))


def _rows(store: Store) -> list[tuple[str, bytes, bytes, str]]:
    with store.read("read grant rows") as conn:
        rows = conn.execute(
            select(GRANTS.c.grant_id, GRANTS.c.body, GRANTS.c.payload, GRANTS.c.subject_digest)
        ).all()
    return [(str(r[0]), bytes(r[1]), bytes(r[2]), str(r[3])) for r in rows]


def test_a_sealed_grant_keeps_no_digest_or_payload_in_the_clear(
    store: Store, sealing: GrantSealing
) -> None:
    digest = subject_digest(SUBJECT)
    g = _with_subject(grant("g-1"), digest)
    ledger = SqlGrantLedger(store, sealing=sealing)
    raw = b'{"payloadType":"x","payload":"eA==","signatures":[]}'
    ledger.register(g, raw)
    ((grant_id, body, payload, column),) = _rows(store)
    assert grant_id == "g-1"
    for stored in (body, payload, column.encode()):
        assert digest.encode() not in stored
        assert b"payloadType" not in stored
        assert b"subject_digest" not in stored
    assert column == sealing.subject_key(digest) != digest
    # everything still works through the ledger
    state = ledger.get("g-1")
    assert state is not None
    assert (state.grant, state.raw) == (g, raw)
    assert [s.grant.grant_id for s in ledger.for_subject(digest)] == ["g-1"]
    assert ledger.use("g-1", NOW).uses == 1
    assert ledger.register(g, raw).uses == 1  # registering again is still idempotent
    assert [s.grant.grant_id for s in ledger.active(NOW)] == ["g-1"]


def test_rows_kept_in_the_clear_are_sealed_once_and_stay_readable(
    store: Store, sealing: GrantSealing
) -> None:
    digest = subject_digest(SUBJECT)
    old = SqlGrantLedger(store)  # as a release before sealing wrote them
    for n in range(3):
        old.register(_with_subject(grant(f"g-{n}"), digest), f"raw-{n}".encode())
    old.use("g-1", NOW)
    assert all(row[3] == digest for row in _rows(store))
    ledger = SqlGrantLedger(store, sealing=sealing)
    assert ledger.seal_legacy_rows() == 3
    assert ledger.seal_legacy_rows() == 0  # idempotent
    assert all(digest.encode() not in row[2] and row[3] != digest for row in _rows(store))
    states = ledger.for_subject(digest)
    assert [(s.grant.grant_id, s.raw, s.uses) for s in states] == [
        ("g-0", b"raw-0", 0),
        ("g-1", b"raw-1", 1),
        ("g-2", b"raw-2", 0),
    ]


def test_a_sealed_grant_moved_to_another_row_is_tampering(
    store: Store, sealing: GrantSealing
) -> None:
    ledger = SqlGrantLedger(store, sealing=sealing)
    ledger.register(grant("g-1"), b"raw-1")
    ledger.register(grant("g-2", limit=9), b"raw-2")
    (first, second) = sorted(_rows(store))
    with store.write("swap") as conn:
        conn.execute(
            update(GRANTS)
            .where(GRANTS.c.grant_id == "g-1")
            .values(body=second[1], payload=second[2])
        )
    with pytest.raises(TamperDetected, match="grant g-1: the stored grant does not open"):
        ledger.get("g-1")
    assert first[0] == "g-1"


def _with_subject(g: Grant, digest: str) -> Grant:
    return dataclasses.replace(g, subject_digest=digest)


def test_a_node_seals_what_an_older_release_kept_in_the_clear(tmp_path: Path) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=dt.datetime.now(dt.UTC))
    rt = open_runtime(home)
    try:
        SqlGrantLedger(rt.store).register(grant("g-old"), b"raw-old")
        assert _rows(rt.store)[0][3] == grant("g-old").subject_digest
        state = rt.grants.get("g-old")  # the node's ledger seals at first use
        assert state is not None
        assert state.raw == b"raw-old"
        ((_id, body, _payload, column),) = _rows(rt.store)
        assert body[:1] == b"\x01"
        assert column != grant("g-old").subject_digest
    finally:
        rt.close()
