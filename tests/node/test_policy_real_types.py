"""decide() over the shipped catalogue and a real keys.TrustBundle (the structural views fit)."""

from __future__ import annotations

import datetime as dt

import pytest

import catalog
import keys
from node.grants import Grant, subject_digest
from node.policy import PolicyContext, QueryRequest, decide

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
DEPT = keys.Signer(b"\x61" * 32)
HOLDER = keys.Signer(b"\x62" * 32)
DIGEST = subject_digest("370303200001010001")


def member(node_id: str, signer: keys.Signer) -> keys.RosterEntry:
    return keys.RosterEntry(
        node_id=node_id,
        name=node_id,
        roles=frozenset({"department"}),
        endpoint="127.0.0.1:7443",
        signing_key=signer.public_key,
        encryption_key=b"\x00" * 32,
        tls_fingerprint="00" * 32,
        valid_from=NOW - dt.timedelta(days=1),
        valid_until=NOW + dt.timedelta(days=365),
    )


BUNDLE = keys.TrustBundle(
    version=1,
    issued_at=NOW,
    expires_at=NOW + dt.timedelta(days=30),
    root_keyid="00" * 8,
    roster=(member("zd-hr", DEPT), member("zd-market", HOLDER)),
    revoked_keyids=frozenset(),
    revoked_grants=frozenset(),
    catalog_version="2026.1",
    agreements=(
        keys.Agreement(
            provider="zd-market",
            consumer="zd-hr",
            items=frozenset({"admin_penalty_person"}),
            purposes=frozenset({"staff_recruitment"}),
            kind="query",
        ),
    ),
)


def ctx(grant: Grant | None = None) -> PolicyContext:
    return PolicyContext(
        now=NOW,
        node_id="zd-market",
        bundle=BUNDLE,
        items=catalog.default_catalog().items,
        grant=grant,
    )


def req(
    items: set[str], subject_kind: str, purpose: str, grant_id: str | None = None
) -> QueryRequest:
    return QueryRequest(
        requester="zd-hr",
        requester_keyid=keys.keyid(DEPT.public_key),
        officer="hr-officer-2",
        subject_kind=subject_kind,
        items=frozenset(items),
        purpose=purpose,
        legal_basis="《公务员录用规定》",
        grant_id=grant_id,
        subject_digest=DIGEST,
    )


def test_person_penalties_for_recruitment_need_the_agreement_and_a_grant() -> None:
    request = req({"admin_penalty_person"}, "natural_person", "staff_recruitment")
    assert decide(request, ctx()).reason == "grant_required"
    grant = Grant(
        grant_id="g-7",
        issuer="zd-platform",
        subject_digest=DIGEST,
        grantee="zd-hr",
        purpose="staff_recruitment",
        items=frozenset({"admin_penalty_person"}),
        valid_from=NOW - dt.timedelta(hours=1),
        valid_until=NOW + dt.timedelta(days=7),
        use_limit=1,
        evidence_sha256="12" * 32,
        issued_at=NOW - dt.timedelta(hours=1),
    )
    decision = decide(
        req({"admin_penalty_person"}, "natural_person", "staff_recruitment", "g-7"), ctx(grant)
    )
    assert decision.allowed, decision.message
    item = catalog.default_catalog().item("admin_penalty_person")
    assert decision.released["admin_penalty_person"] == frozenset(
        f.id for f in item.fields if f.sensitivity != "sensitive"
    )


@pytest.mark.parametrize(
    ("items", "kind", "purpose", "reason"),
    [
        ({"utility_account"}, "organisation", "administrative_payment", "item_not_shareable"),
        ({"qualification"}, "organisation", "administrative_licensing", "no_agreement"),
        ({"admin_penalty"}, "organisation", "public_disclosure", "allowed"),
        ({"admin_penalty"}, "organisation", "administrative_penalty", "statutory_duty"),
        (
            {"admin_penalty_person"},
            "natural_person",
            "public_disclosure",
            "natural_person_public_disclosure",
        ),
    ],
)
def test_shipped_items(items: set[str], kind: str, purpose: str, reason: str) -> None:
    assert decide(req(items, kind, purpose), ctx()).reason == reason
