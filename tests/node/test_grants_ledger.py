"""Subject grants: construction rules, canonical payloads, platform signatures, the ledger."""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass, replace
from typing import Any

import pytest

import keys
from node.errors import AuthError, InputError, PolicyDenied
from node.grants import (
    GRANT_PAYLOAD_TYPE,
    Grant,
    GrantConflictError,
    GrantRefusedError,
    GrantRevocation,
    GrantState,
    InvalidGrantError,
    MalformedGrantError,
    MemoryGrantLedger,
    apply_bundle_revocations,
    issue_grant,
    sign_revocation,
    subject_digest,
    use_refusal,
    verify_grant,
    verify_registered_grant,
    verify_revocation,
)

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
PLATFORM = keys.Signer(b"\x11" * 32)
OTHER_PLATFORM = keys.Signer(b"\x12" * 32)
DEPARTMENT = keys.Signer(b"\x13" * 32)
ROTATED_OUT = keys.Signer(b"\x14" * 32)


@dataclass(frozen=True)
class Member:
    node_id: str
    signing_key: bytes
    roles: frozenset[str]
    valid_from: dt.datetime = NOW - dt.timedelta(days=30)
    valid_until: dt.datetime = NOW + dt.timedelta(days=30)
    previous_signing_keys: tuple[tuple[bytes, dt.datetime], ...] = ()


@dataclass(frozen=True)
class Bundle:
    members: tuple[Member, ...]
    revoked_keyids: frozenset[str] = frozenset()
    revoked_grants: frozenset[str] = frozenset()

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.node_id == node_id), None)


BUNDLE = Bundle(
    members=(
        Member("zd-platform", PLATFORM.public_key, frozenset({"platform"})),
        Member("zd-platform-2", OTHER_PLATFORM.public_key, frozenset({"platform"})),
        Member("zd-tax", DEPARTMENT.public_key, frozenset({"department"})),
    )
)


def make(**changes: Any) -> Grant:
    base = Grant(
        grant_id="grant-2026-0001",
        issuer="zd-platform",
        subject_digest=subject_digest("370303200001010001"),
        grantee="zd-tax",
        purpose="staff_recruitment",
        items=frozenset({"admin_penalty", "qualification"}),
        valid_from=NOW,
        valid_until=NOW + dt.timedelta(days=30),
        use_limit=2,
        evidence_sha256="0f" * 32,
        issued_at=NOW,
        fields={"qualification": frozenset({"cert_no"})},
    )
    return replace(base, **changes)


# --- construction and payloads ---------------------------------------------------------------


def test_subject_digest_is_domain_separated_and_stable() -> None:
    d = subject_digest("370303200001010001")
    assert d == subject_digest("370303200001010001")
    assert d != subject_digest("370303200001010002")
    assert len(d) == 64
    assert "370303" not in d
    with pytest.raises(MalformedGrantError):
        subject_digest("")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"grant_id": ""}, "grant_id"),
        ({"grant_id": "has space"}, "grant_id"),
        ({"issuer": ""}, "issuer"),
        ({"grantee": ""}, "grantee"),
        ({"subject_digest": "370303200001010001"}, "subject_digest"),
        ({"evidence_sha256": "AB" * 32}, "evidence_sha256"),
        ({"purpose": "Staff Recruitment"}, "purpose"),
        ({"items": frozenset()}, "items"),
        ({"fields": {"other_item": frozenset({"x"})}}, "fields"),
        ({"valid_from": dt.datetime(2026, 1, 1)}, "valid_from"),
        ({"valid_until": NOW}, "valid_until"),
        ({"use_limit": 0}, "use_limit"),
        ({"use_limit": True}, "use_limit"),
    ],
)
def test_bad_grants_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedGrantError, match=field) as caught:
        make(**changes)
    assert "370303200001010001" not in str(caught.value)
    assert isinstance(caught.value, InputError)


def test_payload_is_canonical_and_round_trips() -> None:
    g = make()
    payload = g.to_payload()
    assert (
        payload
        == json.dumps(
            json.loads(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert Grant.from_payload(payload) == g
    assert make(valid_from=NOW.astimezone(dt.timezone(dt.timedelta(hours=8)))).to_payload() == (
        payload
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("purpose"), "missing"),
        (lambda d: d.update(extra=1), "unknown keys"),
        (lambda d: d.update(v=2), "version"),
        (lambda d: d.update(items="admin_penalty"), "items"),
        (lambda d: d.update(use_limit="2"), "use_limit"),
        (lambda d: d.update(valid_from="yesterday"), "valid_from"),
        (lambda d: d.update(valid_from="2026-11-25T09:00:00"), "timezone"),
        (lambda d: d.update(fields=[]), "fields"),
        (lambda d: d.update(grantee=7), "grantee"),
    ],
)
def test_from_payload_is_strict(mutate: Any, message: str) -> None:
    doc = json.loads(make().to_payload())
    mutate(doc)
    with pytest.raises(MalformedGrantError, match=message):
        Grant.from_payload(json.dumps(doc).encode())


@pytest.mark.parametrize("raw", [b"", b"[]", b"\xff\xfe", b"{not json"])
def test_from_payload_refuses_non_objects(raw: bytes) -> None:
    with pytest.raises(MalformedGrantError):
        Grant.from_payload(raw)


def test_from_payload_refuses_a_repeated_key() -> None:
    payload = make().to_payload()
    repeated = payload[:-1] + b',"grantee":"zd-other"}'
    assert json.loads(repeated)["grantee"] != make().grantee  # what a last-wins parser reads
    with pytest.raises(MalformedGrantError, match="twice"):
        Grant.from_payload(repeated)


# --- signatures --------------------------------------------------------------------------------


def test_issued_grant_verifies_against_the_roster() -> None:
    raw = issue_grant(make(), PLATFORM)
    assert verify_grant(raw, bundle=BUNDLE, now=NOW) == make()


def test_a_previous_platform_key_inside_its_overlap_still_verifies() -> None:
    bundle = Bundle(
        members=(
            Member(
                "zd-platform",
                PLATFORM.public_key,
                frozenset({"platform"}),
                previous_signing_keys=((ROTATED_OUT.public_key, NOW + dt.timedelta(hours=1)),),
            ),
        )
    )
    raw = issue_grant(make(), ROTATED_OUT)
    assert verify_grant(raw, bundle=bundle, now=NOW).grant_id == "grant-2026-0001"
    with pytest.raises(InvalidGrantError):
        verify_grant(raw, bundle=bundle, now=NOW + dt.timedelta(hours=1))


def _swap_payload(raw: bytes, payload: bytes) -> bytes:
    env = keys.Envelope.from_json(raw)
    return keys.Envelope(env.payload_type, payload, env.signatures).to_json().encode()


@pytest.mark.parametrize(
    ("raw_factory", "error"),
    [
        pytest.param(
            lambda: issue_grant(make(issuer="zd-tax"), DEPARTMENT),
            InvalidGrantError,
            id="signer is not a platform node",
        ),
        pytest.param(
            lambda: issue_grant(make(issuer="zd-nobody"), PLATFORM),
            InvalidGrantError,
            id="issuer not in roster",
        ),
        pytest.param(
            lambda: issue_grant(make(issuer="zd-platform-2"), PLATFORM),
            InvalidGrantError,
            id="signed by one platform, claims the other",
        ),
        pytest.param(
            lambda: _swap_payload(issue_grant(make(), PLATFORM), make(use_limit=99).to_payload()),
            InvalidGrantError,
            id="payload edited after signing",
        ),
        pytest.param(
            lambda: sign_revocation(
                GrantRevocation("grant-2026-0001", "zd-platform", NOW, "subject_withdrew_consent"),
                PLATFORM,
            ),
            InvalidGrantError,
            id="a revocation presented as a grant",
        ),
        pytest.param(lambda: b"not an envelope", MalformedGrantError, id="garbage"),
        pytest.param(
            lambda: keys.sign_envelope(GRANT_PAYLOAD_TYPE, b"[1]", PLATFORM).to_json().encode(),
            MalformedGrantError,
            id="payload without issuer",
        ),
    ],
)
def test_verify_grant_refuses(raw_factory: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify_grant(raw_factory(), bundle=BUNDLE, now=NOW)


def test_verify_grant_refuses_a_revoked_platform_key_and_an_expired_platform() -> None:
    raw = issue_grant(make(), PLATFORM)
    revoked = replace(BUNDLE, revoked_keyids=frozenset({keys.keyid(PLATFORM.public_key)}))
    with pytest.raises(InvalidGrantError):
        verify_grant(raw, bundle=revoked, now=NOW)
    with pytest.raises(InvalidGrantError) as caught:
        verify_grant(raw, bundle=BUNDLE, now=NOW + dt.timedelta(days=31))
    assert isinstance(caught.value, AuthError)


def test_revocation_round_trip_and_refusals() -> None:
    rev = GrantRevocation("grant-2026-0001", "zd-platform", NOW, "subject_withdrew_consent")
    raw = sign_revocation(rev, PLATFORM)
    assert verify_revocation(raw, bundle=BUNDLE, now=NOW) == rev
    forged = sign_revocation(replace(rev, issuer="zd-tax"), DEPARTMENT)
    with pytest.raises(InvalidGrantError):
        verify_revocation(forged, bundle=BUNDLE, now=NOW)
    with pytest.raises(InvalidGrantError):
        verify_revocation(issue_grant(make(), PLATFORM), bundle=BUNDLE, now=NOW)
    with pytest.raises(MalformedGrantError, match="reason"):
        GrantRevocation("grant-2026-0001", "zd-platform", NOW, "Because!")


# --- the ledger ----------------------------------------------------------------------------------


def test_ledger_counts_uses_up_to_the_limit() -> None:
    ledger = MemoryGrantLedger()
    g = make()
    ledger.register(g, b"raw")
    assert ledger.register(g, b"raw").uses == 0  # idempotent
    assert ledger.use(g.grant_id, NOW).uses == 1
    assert ledger.use(g.grant_id, NOW).uses == 2
    with pytest.raises(GrantRefusedError) as caught:
        ledger.use(g.grant_id, NOW)
    assert caught.value.reason == "grant_exhausted"
    assert isinstance(caught.value, PolicyDenied)
    state = ledger.get(g.grant_id)
    assert state is not None
    assert state.uses == 2


def test_ledger_refuses_a_different_grant_under_the_same_id() -> None:
    ledger = MemoryGrantLedger()
    ledger.register(make(), b"raw")
    with pytest.raises(GrantConflictError):
        ledger.register(make(use_limit=50), b"raw2")


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (NOW - dt.timedelta(seconds=1), "grant_not_yet_valid"),
        (NOW + dt.timedelta(days=30), "grant_expired"),
    ],
)
def test_ledger_refuses_outside_validity(when: dt.datetime, reason: str) -> None:
    ledger = MemoryGrantLedger()
    ledger.register(make(), b"raw")
    with pytest.raises(GrantRefusedError) as caught:
        ledger.use("grant-2026-0001", when)
    assert caught.value.reason == reason


def test_revocation_is_final_and_idempotent() -> None:
    ledger = MemoryGrantLedger()
    ledger.register(make(), b"raw")
    first = ledger.revoke("grant-2026-0001", NOW, "subject_withdrew_consent")
    again = ledger.revoke("grant-2026-0001", NOW + dt.timedelta(days=1), "other")
    assert first is not None
    assert again is not None
    assert first.revoked_at == again.revoked_at == NOW
    with pytest.raises(GrantRefusedError) as caught:
        ledger.use("grant-2026-0001", NOW)
    assert caught.value.reason == "grant_revoked"
    # a grant not registered here: the revocation is recorded, there is nothing to use
    assert ledger.revoke("nope", NOW, "x") is None
    with pytest.raises(GrantRefusedError):
        ledger.use("nope", NOW)


def test_bundle_revocations_reach_registered_and_unregistered_grants() -> None:
    ledger = MemoryGrantLedger()
    ledger.register(make(), b"raw")
    ledger.register(make(grant_id="grant-2"), b"raw")
    newly = apply_bundle_revocations(ledger, frozenset({"grant-2", "never-seen"}), NOW)
    assert newly == ["grant-2", "never-seen"]
    assert apply_bundle_revocations(ledger, frozenset({"grant-2", "never-seen"}), NOW) == []
    assert ledger.get("grant-2026-0001") == GrantState(make(), b"raw", 0)
    state = ledger.get("grant-2")
    assert state is not None
    assert state.revoked_reason == "revoked_by_bundle"


def test_concurrent_uses_never_exceed_the_limit() -> None:
    ledger = MemoryGrantLedger()
    ledger.register(make(use_limit=5), b"raw")
    ok: list[int] = []
    refused: list[str] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        try:
            ok.append(ledger.use("grant-2026-0001", NOW).uses)
        except GrantRefusedError as error:
            refused.append(error.reason)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ok) == [1, 2, 3, 4, 5]
    assert refused == ["grant_exhausted"] * 11


def test_use_refusal_order_revoked_first() -> None:
    state = GrantState(make(), b"", uses=9, revoked_at=NOW)
    assert use_refusal(state, NOW + dt.timedelta(days=99)) == (
        "grant_revoked",
        "the subject's authorisation has been revoked",
    )
    assert use_refusal(GrantState(make(), b"", uses=0), NOW) is None


# --- a registered grant is verified again at every use ------------------------------------------


def _registered(grant: Grant) -> GrantState:
    return MemoryGrantLedger().register(grant, issue_grant(grant, PLATFORM))


def test_a_registered_grant_verifies_again_under_the_same_bundle() -> None:
    assert verify_registered_grant(_registered(make()), bundle=BUNDLE, now=NOW) == make()


_DEMOTED = Member("zd-platform", PLATFORM.public_key, frozenset({"department"}))


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(
            replace(BUNDLE, revoked_keyids=frozenset({keys.keyid(PLATFORM.public_key)})),
            id="issuer key revoked",
        ),
        pytest.param(Bundle(members=(_DEMOTED, *BUNDLE.members[1:])), id="platform role dropped"),
        pytest.param(Bundle(members=BUNDLE.members[1:]), id="issuer left the roster"),
        pytest.param(
            Bundle(members=(replace(_DEMOTED, roles=frozenset({"platform"}), valid_until=NOW),)),
            id="issuer no longer valid",
        ),
    ],
)
def test_a_registered_grant_is_refused_as_if_sent_afresh_once_its_issuer_is_not_trusted(
    later: Bundle,
) -> None:
    state = _registered(make())
    with pytest.raises(InvalidGrantError) as by_id:
        verify_registered_grant(state, bundle=later, now=NOW)
    with pytest.raises(InvalidGrantError) as afresh:
        verify_grant(state.raw, bundle=later, now=NOW)
    assert str(by_id.value) == str(afresh.value)


def test_a_stored_grant_that_differs_from_its_signed_copy_is_refused() -> None:
    state = replace(_registered(make()), grant=make(use_limit=99))
    with pytest.raises(InvalidGrantError, match="signed copy"):
        verify_registered_grant(state, bundle=BUNDLE, now=NOW)


def test_a_registered_grant_outlives_a_routine_rotation_of_the_platform_key() -> None:
    # signed with the key the platform has since rotated out, overlap over: still good by id,
    # refused when sent afresh; once that key is revoked, refused by id too
    rotated = Bundle(
        members=(
            Member(
                "zd-platform",
                PLATFORM.public_key,
                frozenset({"platform"}),
                previous_signing_keys=((ROTATED_OUT.public_key, NOW - dt.timedelta(days=30)),),
            ),
        )
    )
    state = MemoryGrantLedger().register(make(), issue_grant(make(), ROTATED_OUT))
    assert verify_registered_grant(state, bundle=rotated, now=NOW) == make()
    with pytest.raises(InvalidGrantError):
        verify_grant(state.raw, bundle=rotated, now=NOW)
    revoked = replace(rotated, revoked_keyids=frozenset({keys.keyid(ROTATED_OUT.public_key)}))
    with pytest.raises(InvalidGrantError):
        verify_registered_grant(state, bundle=revoked, now=NOW)


def test_a_registered_grant_whose_key_the_roster_no_longer_lists_is_taken_on_registration() -> None:
    # an earlier release dropped retired keys at the next rotation: the roster lists neither
    # the key that signed the grant nor a revocation of it
    state = MemoryGrantLedger().register(make(), issue_grant(make(), ROTATED_OUT))
    assert verify_registered_grant(state, bundle=BUNDLE, now=NOW) == make()
    # a revoked signing key still voids it, listed or not
    revoked = replace(BUNDLE, revoked_keyids=frozenset({keys.keyid(ROTATED_OUT.public_key)}))
    with pytest.raises(InvalidGrantError, match="revoked"):
        verify_registered_grant(state, bundle=revoked, now=NOW)


def test_a_registered_grant_with_a_broken_signature_from_a_listed_key_is_refused() -> None:
    raw = issue_grant(make(), PLATFORM)
    env = keys.Envelope.from_json(raw)
    ((kid, _sig),) = env.signatures
    forged = keys.Envelope(env.payload_type, env.payload, ((kid, bytes(64)),)).to_json().encode()
    state = replace(MemoryGrantLedger().register(make(), raw), raw=forged)
    with pytest.raises(InvalidGrantError, match="did not verify"):
        verify_registered_grant(state, bundle=BUNDLE, now=NOW)
