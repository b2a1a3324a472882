"""Table tests for every rule of node.policy.decide, and properties of decide/apply_decision.

The catalogue items and the trust bundle are small frozen stand-ins that satisfy the policy's
read-only views (node.policy.ItemView, BundleView), so the rules are tested on their own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.grants import Grant, subject_digest
from node.policy import (
    PURPOSES,
    SHANDONG_ART22_PURPOSES,
    STATUTORY_DUTY_PURPOSES,
    SUBJECT_KINDS,
    CandidateRecord,
    Decision,
    PolicyContext,
    QueryRequest,
    RecordState,
    ReleasedRecord,
    apply_decision,
    decide,
    grant_items_without_agreement,
    grant_scope_problems,
)

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
HOLDER = "zd-market"
REQ = "zd-tax"
REQ_KEY = b"\x01" * 32
OLD_KEY = b"\x02" * 32
SUBJECT = "370303200001010001"
DIGEST = subject_digest(SUBJECT)


def keyid(pk: bytes) -> str:
    return hashlib.sha256(pk).hexdigest()[:16]


@dataclass(frozen=True)
class F:
    id: str
    sensitivity: str = "public"


@dataclass(frozen=True)
class It:
    id: str
    share_type: str = "unconditional"
    subject_kinds: frozenset[str] = frozenset({"natural_person", "organisation"})
    fields: tuple[F, ...] = (F("decision_no"), F("subject_id", "identifier"), F("amount"))
    disclosure_modes: frozenset[str] = frozenset({"gov_sharing", "authorised_query"})
    personal: bool = True
    linked_id_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    node_id: str
    signing_key: bytes = REQ_KEY
    valid_from: dt.datetime = NOW - dt.timedelta(days=365)
    valid_until: dt.datetime = NOW + dt.timedelta(days=365)
    previous_signing_keys: tuple[tuple[bytes, dt.datetime], ...] = ()
    roles: frozenset[str] = frozenset({"department"})


@dataclass(frozen=True)
class Agr:
    provider: str
    consumer: str
    items: frozenset[str]
    purposes: frozenset[str]
    kind: str = "query"


@dataclass(frozen=True)
class Bundle:
    members: tuple[Member, ...] = (Member(REQ), Member(HOLDER, signing_key=b"\x03" * 32))
    revoked_keyids: frozenset[str] = frozenset()
    revoked_grants: frozenset[str] = frozenset()
    agreements: tuple[Agr, ...] = ()

    def member(self, node_id: str, /) -> Member | None:
        return next((m for m in self.members if m.node_id == node_id), None)


PENALTY = It("admin_penalty")
LICENCE = It("admin_licence", personal=True)
CONDITIONAL = It("utility_arrears", share_type="conditional")
SECRET = It("internal_notes", share_type="none")
ORG_ONLY = It(
    "org_basic",
    subject_kinds=frozenset({"organisation"}),
    disclosure_modes=frozenset({"public", "gov_sharing"}),
    personal=False,
)
WITH_SENSITIVE = It(
    "qualification",
    fields=(F("cert_no"), F("subject_id", "identifier"), F("health_note", "sensitive")),
)
LINKING = It(
    "severe_list",
    subject_kinds=frozenset({"organisation"}),
    personal=False,
    linked_id_fields=("legal_rep_id_number",),
)
# an item held for persons and organisations whose organisation records name further persons
ENFORCEMENT = It(
    "enforcement",
    fields=(
        F("case_no"),
        F("subject_id", "identifier"),
        F("controller_name", "personal"),
        F("controller_id_number", "sensitive"),
    ),
    linked_id_fields=("controller_id_number",),
)
ITEMS: dict[str, It] = {
    i.id: i
    for i in (PENALTY, LICENCE, CONDITIONAL, SECRET, ORG_ONLY, WITH_SENSITIVE, LINKING, ENFORCEMENT)
}


def grant(**changes: Any) -> Grant:
    base = Grant(
        grant_id="g-1",
        issuer="zd-platform",
        subject_digest=DIGEST,
        grantee=REQ,
        purpose="staff_recruitment",
        items=frozenset({"admin_penalty", "qualification"}),
        valid_from=NOW - dt.timedelta(days=1),
        valid_until=NOW + dt.timedelta(days=30),
        use_limit=3,
        evidence_sha256="ab" * 32,
        issued_at=NOW - dt.timedelta(days=1),
    )
    return replace(base, **changes)


def request(**changes: Any) -> QueryRequest:
    base = QueryRequest(
        requester=REQ,
        requester_keyid=keyid(REQ_KEY),
        officer="officer-7",
        subject_kind="organisation",
        items=frozenset({"admin_penalty"}),
        purpose="administrative_licensing",
        legal_basis="《行政许可法》第十二条",
        subject_digest=DIGEST,
    )
    return replace(base, **changes)


def context(
    *,
    bundle: Bundle | None = None,
    items: Mapping[str, It] | None = None,
    grant: Grant | None = None,
    grant_uses: int = 0,
    grant_revoked: bool = False,
    records: Sequence[RecordState] = (),
    now: dt.datetime = NOW,
) -> PolicyContext:
    return PolicyContext(
        now=now,
        node_id=HOLDER,
        bundle=bundle if bundle is not None else Bundle(),
        items=items if items is not None else ITEMS,
        grant=grant,
        grant_uses=grant_uses,
        grant_revoked=grant_revoked,
        records=records,
    )


# --- table: every denial rule -------------------------------------------------------------------

PERSON = {"subject_kind": "natural_person"}
# an identifier that is also a valid citizen ID number, asked as an organisation (the default)
ALSO_A_PERSON = {"subject_is_citizen_id": True}
RECRUIT = {"purpose": "staff_recruitment", "legal_basis": "《公务员法》第二十六条"}
GRANTED = {**PERSON, **RECRUIT, "grant_id": "g-1"}
AGREEMENT = Agr(HOLDER, REQ, frozenset({"utility_arrears"}), frozenset({"administrative_payment"}))

DENIALS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("no items", {"items": frozenset()}, {}, "no_items"),
    ("blank officer", {"officer": "  "}, {}, "officer_missing"),
    ("officer named, not a staff id", {"officer": "张三"}, {}, "officer_invalid"),
    ("officer id with a space", {"officer": "hr zhang"}, {}, "officer_invalid"),
    ("requester not in roster", {"requester": "stranger"}, {}, "requester_unknown"),
    (
        "roster entry expired",
        {},
        {"bundle": Bundle(members=(Member(REQ, valid_until=NOW),))},
        "requester_not_valid",
    ),
    (
        "roster entry not yet valid",
        {},
        {"bundle": Bundle(members=(Member(REQ, valid_from=NOW + dt.timedelta(seconds=1)),))},
        "requester_not_valid",
    ),
    (
        "signing key revoked",
        {},
        {"bundle": Bundle(revoked_keyids=frozenset({keyid(REQ_KEY)}))},
        "key_revoked",
    ),
    ("key of another node", {"requester_keyid": keyid(b"\x03" * 32)}, {}, "key_unknown"),
    (
        "previous key past its overlap",
        {"requester_keyid": keyid(OLD_KEY)},
        {"bundle": Bundle(members=(Member(REQ, previous_signing_keys=((OLD_KEY, NOW),)),))},
        "key_unknown",
    ),
    ("unknown purpose", {"purpose": "curiosity"}, {}, "purpose_unknown"),
    ("empty legal basis", {"legal_basis": " \n"}, {}, "legal_basis_missing"),
    ("unknown subject kind", {"subject_kind": "robot"}, {}, "subject_kind_unknown"),
    (
        "natural person to public disclosure",
        {**PERSON, "purpose": "public_disclosure", "items": frozenset({"admin_penalty"})},
        {},
        "natural_person_public_disclosure",
    ),
    (
        "citizen ID number asked as an organisation, to public disclosure",
        {**ALSO_A_PERSON, "purpose": "public_disclosure", "items": frozenset({"org_basic"})},
        {},
        "natural_person_public_disclosure",
    ),
    ("item not held here", {"items": frozenset({"nope"})}, {}, "item_unknown"),
    (
        "item for another subject kind",
        {**PERSON, "items": frozenset({"org_basic"})},
        {},
        "subject_kind_mismatch",
    ),
    ("share type none", {"items": frozenset({"internal_notes"})}, {}, "item_not_shareable"),
    (
        "unknown share type",
        {"items": frozenset({"odd"})},
        {"items": {**ITEMS, "odd": It("odd", share_type="maybe")}},
        "item_not_shareable",
    ),
    (
        "conditional without agreement",
        {"items": frozenset({"utility_arrears"}), "purpose": "administrative_payment"},
        {},
        "no_agreement",
    ),
    (
        "conditional, agreement for another purpose",
        {"items": frozenset({"utility_arrears"}), "purpose": "administrative_penalty"},
        {"bundle": Bundle(agreements=(AGREEMENT,))},
        "no_agreement",
    ),
    (
        "conditional, agreement for another consumer",
        {"items": frozenset({"utility_arrears"}), "purpose": "administrative_payment"},
        {"bundle": Bundle(agreements=(replace(AGREEMENT, consumer="zd-other"),))},
        "no_agreement",
    ),
    (
        "conditional, agreement of another provider",
        {"items": frozenset({"utility_arrears"}), "purpose": "administrative_payment"},
        {"bundle": Bundle(agreements=(replace(AGREEMENT, provider="zd-other"),))},
        "no_agreement",
    ),
    (
        "conditional, a feed agreement is not a query agreement",
        {"items": frozenset({"utility_arrears"}), "purpose": "administrative_payment"},
        {"bundle": Bundle(agreements=(replace(AGREEMENT, kind="feed"),))},
        "no_agreement",
    ),
    (
        "public disclosure of a non-public item",
        {"purpose": "public_disclosure", "items": frozenset({"admin_penalty"})},
        {},
        "item_not_public",
    ),
    ("person, no grant, discretionary purpose", {**PERSON, **RECRUIT}, {}, "grant_required"),
    (
        "citizen ID number asked as an organisation, no grant, discretionary purpose",
        {**ALSO_A_PERSON, **RECRUIT},
        {},
        "grant_required",
    ),
    (
        "citizen ID number asked as an individual business, no grant, discretionary purpose",
        {**ALSO_A_PERSON, **RECRUIT, "subject_kind": "individual_business"},
        {"items": {**ITEMS, "admin_penalty": replace(PENALTY, subject_kinds=SUBJECT_KINDS)}},
        "grant_required",
    ),
    (
        "person, subject's own use needs a grant",
        {**PERSON, "purpose": "subject_own_use"},
        {},
        "grant_required",
    ),
    ("grant named but not supplied", GRANTED, {}, "grant_mismatch"),
    ("grant id differs", {**GRANTED, "grant_id": "g-2"}, {"grant": grant()}, "grant_mismatch"),
    (
        "grant revoked at this node",
        GRANTED,
        {"grant": grant(), "grant_revoked": True},
        "grant_revoked",
    ),
    (
        "grant revoked by the bundle",
        GRANTED,
        {"grant": grant(), "bundle": Bundle(revoked_grants=frozenset({"g-1"}))},
        "grant_revoked",
    ),
    (
        "grant not yet valid",
        GRANTED,
        {"grant": grant(valid_from=NOW + dt.timedelta(hours=1))},
        "grant_not_yet_valid",
    ),
    ("grant expired at its end", GRANTED, {"grant": grant(valid_until=NOW)}, "grant_expired"),
    ("grant used up", GRANTED, {"grant": grant(), "grant_uses": 3}, "grant_exhausted"),
    (
        "grant for another subject",
        GRANTED,
        {"grant": grant(subject_digest="cd" * 32)},
        "grant_subject_mismatch",
    ),
    (
        "request without subject digest",
        {**GRANTED, "subject_digest": None},
        {"grant": grant()},
        "grant_subject_mismatch",
    ),
    (
        "grant for another grantee",
        GRANTED,
        {"grant": grant(grantee="zd-other")},
        "grant_mismatch",
    ),
    (
        "grant for another purpose",
        GRANTED,
        {"grant": grant(purpose="commendation")},
        "grant_purpose_mismatch",
    ),
    (
        "grant does not cover every item",
        {**GRANTED, "items": frozenset({"admin_penalty", "admin_licence"})},
        {"grant": grant()},
        "grant_items_mismatch",
    ),
    (
        "statutory purpose, but a bad grant is named anyway",
        {**PERSON, "grant_id": "g-1"},
        {"grant": grant(purpose="administrative_licensing"), "grant_uses": 3},
        "grant_exhausted",
    ),
    (
        "field that the item lacks",
        {"requested_fields": {"admin_penalty": frozenset({"blood_type"})}},
        {},
        "field_unknown",
    ),
    (
        "fields for an item not asked for",
        {"requested_fields": {"admin_licence": frozenset({"decision_no"})}},
        {},
        "field_unknown",
    ),
    (
        "sensitive field without a grant naming it",
        {
            "items": frozenset({"qualification"}),
            "requested_fields": {"qualification": frozenset({"health_note"})},
        },
        {},
        "field_not_allowed",
    ),
    (
        "field outside the grant's field list",
        {
            **GRANTED,
            "items": frozenset({"qualification"}),
            "requested_fields": {"qualification": frozenset({"subject_id"})},
        },
        {"grant": grant(fields={"qualification": frozenset({"cert_no"})})},
        "field_not_allowed",
    ),
]


@pytest.mark.parametrize(
    ("changes", "ctx", "reason"),
    [pytest.param(c, x, r, id=name) for name, c, x, r in DENIALS],
)
def test_every_rule_denies_with_its_reason(
    changes: dict[str, Any], ctx: dict[str, Any], reason: str
) -> None:
    records = (RecordState("r1", "admin_penalty"),)
    decision = decide(request(**changes), context(records=records, **ctx))
    assert not decision.allowed
    assert decision.reason == reason
    assert decision.message
    assert SUBJECT not in decision.message
    assert DIGEST not in decision.message
    assert decision.released == {}
    assert decision.records == frozenset()
    assert apply_decision(decision, [CandidateRecord("r1", "admin_penalty", {"amount": "1"})]) == []


# --- table: what is allowed, and exactly what is released ----------------------------------------

ALLOWS: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, set[str]], str]] = [
    (
        "organisation, unconditional item, default fields",
        {},
        {},
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "statutory_duty",
    ),
    (
        "organisation, discretionary purpose needs no grant",
        {"purpose": "commendation"},
        {},
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "allowed",
    ),
    (
        "person, statutory duty needs no grant (PIPL 13(3))",
        {**PERSON, "purpose": "administrative_penalty"},
        {},
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "statutory_duty",
    ),
    (
        "person with a valid grant",
        GRANTED,
        {"grant": grant(), "grant_uses": 2},
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "allowed",
    ),
    (
        "grant valid from exactly now",
        GRANTED,
        {"grant": grant(valid_from=NOW)},
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "allowed",
    ),
    (
        "conditional item under a query agreement",
        {"items": frozenset({"utility_arrears"}), "purpose": "administrative_payment"},
        {"bundle": Bundle(agreements=(AGREEMENT,))},
        {"utility_arrears": {"decision_no", "subject_id", "amount"}},
        "statutory_duty",
    ),
    (
        "request narrows the fields",
        {"requested_fields": {"admin_penalty": frozenset({"amount"})}},
        {},
        {"admin_penalty": {"amount"}},
        "statutory_duty",
    ),
    (
        "sensitive fields stay back by default",
        {"items": frozenset({"qualification"})},
        {},
        {"qualification": {"cert_no", "subject_id"}},
        "statutory_duty",
    ),
    (
        "a grant that names a sensitive field releases it, and only its fields",
        {**GRANTED, "items": frozenset({"qualification"})},
        {"grant": grant(fields={"qualification": frozenset({"cert_no", "health_note"})})},
        {"qualification": {"cert_no", "health_note"}},
        "allowed",
    ),
    (
        "an organisation entry that links persons, asked about a person (Shandong Art. 31)",
        {**PERSON, "items": frozenset({"severe_list"})},
        {},
        {"severe_list": {"decision_no", "subject_id", "amount"}},
        "statutory_duty",
    ),
    (
        "citizen ID number asked as an organisation, statutory duty needs no grant",
        ALSO_A_PERSON,
        {},
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "statutory_duty",
    ),
    (
        "citizen ID number asked as an organisation, with the subject's grant",
        {**GRANTED, **ALSO_A_PERSON, "subject_kind": "organisation"},
        {"grant": grant()},
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "allowed",
    ),
    (
        "organisation item to public disclosure",
        {"purpose": "public_disclosure", "items": frozenset({"org_basic"})},
        {},
        {"org_basic": {"decision_no", "subject_id", "amount"}},
        "allowed",
    ),
    (
        "previous key inside its overlap",
        {"requester_keyid": keyid(OLD_KEY)},
        {
            "bundle": Bundle(
                members=(
                    Member(REQ, previous_signing_keys=((OLD_KEY, NOW + dt.timedelta(seconds=1)),)),
                )
            )
        },
        {"admin_penalty": {"decision_no", "subject_id", "amount"}},
        "statutory_duty",
    ),
]


@pytest.mark.parametrize(
    ("changes", "ctx", "released", "reason"),
    [pytest.param(c, x, r, why, id=name) for name, c, x, r, why in ALLOWS],
)
def test_allowed_requests_release_exactly_the_minimised_fields(
    changes: dict[str, Any], ctx: dict[str, Any], released: dict[str, set[str]], reason: str
) -> None:
    decision = decide(request(**changes), context(**ctx))
    assert decision.allowed, decision.message
    assert decision.reason == reason
    assert {k: set(v) for k, v in decision.released.items()} == released
    assert decision.grant_used == ("grant" in ctx)


# Another requester naming a grant id must learn only that it is not theirs (or not for this
# subject or purpose), never whether it was revoked, has expired or is used up.
_STATES: dict[str, dict[str, Any]] = {
    "revoked": {"grant_revoked": True},
    "revoked_by_bundle": {"bundle": Bundle(revoked_grants=frozenset({"g-1"}))},
    "not_yet_valid": {"grant": grant(valid_from=NOW + dt.timedelta(hours=1))},
    "expired": {"grant": grant(valid_until=NOW)},
    "exhausted": {"grant_uses": 3},
}
_NOT_THEIRS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "grantee": ({}, {"grantee": "zd-other"}, "grant_mismatch"),
    "subject": ({}, {"subject_digest": "cd" * 32}, "grant_subject_mismatch"),
    "purpose": ({"purpose": "commendation"}, {}, "grant_purpose_mismatch"),
    "items": ({"items": frozenset({"admin_licence"})}, {}, "grant_items_mismatch"),
}


@pytest.mark.parametrize("state", sorted(_STATES))
@pytest.mark.parametrize("mismatch", sorted(_NOT_THEIRS))
def test_whose_grant_it_is_is_checked_before_its_state(state: str, mismatch: str) -> None:
    changes, grant_changes, reason = _NOT_THEIRS[mismatch]
    ctx = {"grant": grant(**grant_changes), **_STATES[state]}
    if "grant" in _STATES[state]:
        ctx["grant"] = replace(_STATES[state]["grant"], **grant_changes)
    decision = decide(request(**{**GRANTED, **changes}), context(**ctx))
    assert (decision.allowed, decision.reason) == (False, reason)


def test_anothers_grant_reads_exactly_like_one_never_registered() -> None:
    # grant ids may be guessable: naming one must not tell a requester that it exists
    anothers = decide(request(**GRANTED), context(grant=grant(grantee="zd-other")))
    unknown = decide(request(**GRANTED), context(grant=None))
    assert (anothers.allowed, unknown.allowed) == (False, False)
    assert (anothers.reason, anothers.message) == (unknown.reason, unknown.message)


def test_the_grantee_is_checked_before_the_subject() -> None:
    # otherwise a requester holding another's grant id could try identifiers until the
    # subject matched, and so learn whom the grant is about
    other = grant(grantee="zd-other", subject_digest="cd" * 32)
    assert decide(request(**GRANTED), context(grant=other)).reason == "grant_mismatch"


def test_a_grants_field_list_widens_only_the_subjects_own_records() -> None:
    consented = frozenset({"case_no", "controller_id_number"})
    decision = decide(
        request(**GRANTED, items=frozenset({"enforcement"})),
        context(
            grant=grant(items=frozenset({"enforcement"}), fields={"enforcement": consented}),
            records=(
                RecordState("own", "enforcement"),
                # an organisation's record naming the subject as its legal representative
                RecordState("org", "enforcement", linked=True),
            ),
        ),
    )
    assert decision.allowed, decision.message
    assert decision.records == {"own", "org"}
    assert decision.linked == {"org"}
    assert decision.fields_for("own", "enforcement") == consented
    assert decision.fields_for("org", "enforcement") == frozenset({"case_no"})
    body = {"case_no": "c-1", "controller_name": "Z", "controller_id_number": "id"}
    out = apply_decision(
        decision,
        [CandidateRecord("own", "enforcement", body), CandidateRecord("org", "enforcement", body)],
    )
    assert [(r.record_id, dict(r.fields)) for r in out] == [
        ("own", {"case_no": "c-1", "controller_id_number": "id"}),
        ("org", {"case_no": "c-1"}),
    ]


def test_linked_records_get_the_default_minimisation_without_a_field_list() -> None:
    decision = decide(
        request(**PERSON, items=frozenset({"enforcement"})),
        context(records=(RecordState("org", "enforcement", linked=True),)),
    )
    default = frozenset({"case_no", "subject_id", "controller_name"})
    assert decision.fields_for("org", "enforcement") == default
    assert decision.released["enforcement"] == default


def test_a_record_listed_both_as_own_and_linked_gets_the_linked_fields() -> None:
    decision = decide(
        request(**GRANTED, items=frozenset({"enforcement"})),
        context(
            grant=grant(
                items=frozenset({"enforcement"}),
                fields={"enforcement": frozenset({"controller_id_number"})},
            ),
            records=(
                RecordState("r", "enforcement"),
                RecordState("r", "enforcement", linked=True),
            ),
        ),
    )
    assert decision.fields_for("r", "enforcement") == frozenset()


def test_fields_for_names_nothing_for_a_denial_or_a_record_not_released() -> None:
    denial = decide(request(**PERSON, **RECRUIT), context(records=(RecordState("r", "x"),)))
    assert denial.fields_for("r", "admin_penalty") is None
    allowed = decide(request(), context(records=(RecordState("r", "admin_penalty"),)))
    assert allowed.fields_for("r", "admin_penalty") is not None
    assert allowed.fields_for("r", "admin_licence") is None
    assert allowed.fields_for("unseen", "admin_penalty") is None


def test_grant_use_is_flagged_and_statutory_duty_recorded() -> None:
    d = decide(request(**GRANTED), context(grant=grant()))
    assert d.grant_used
    assert not d.statutory_duty
    d2 = decide(request(**PERSON), context())
    assert d2.statutory_duty
    assert not d2.grant_used


def test_statutory_duty_purposes_are_a_subset_of_the_shandong_list() -> None:
    assert STATUTORY_DUTY_PURPOSES < SHANDONG_ART22_PURPOSES < PURPOSES
    assert {"subject_own_use", "public_disclosure"} <= PURPOSES - SHANDONG_ART22_PURPOSES
    assert len(SHANDONG_ART22_PURPOSES) == 14


# --- table: record states -----------------------------------------------------------------------

STATES = [
    ("clean", RecordState("r", "admin_penalty"), "administrative_penalty", "released"),
    (
        "withdrawn",
        RecordState("r", "admin_penalty", withdrawn=True),
        "administrative_penalty",
        "record_withdrawn",
    ),
    (
        "repaired",
        RecordState("r", "admin_penalty", repaired=True),
        "administrative_penalty",
        "record_repaired",
    ),
    (
        "expired",
        RecordState("r", "admin_penalty", expired=True),
        "administrative_penalty",
        "record_expired",
    ),
    (
        "objection, authorised use",
        RecordState("r", "admin_penalty", objection=True),
        "administrative_penalty",
        "flagged",
    ),
    (
        "objection, public disclosure",
        RecordState("r", "org_basic", objection=True),
        "public_disclosure",
        "record_objection",
    ),
    (
        "repaired beats objection",
        RecordState("r", "admin_penalty", repaired=True, objection=True),
        "administrative_penalty",
        "record_repaired",
    ),
    (
        "record of an item not asked",
        RecordState("r", "admin_licence"),
        "administrative_penalty",
        "item_not_requested",
    ),
]


@pytest.mark.parametrize(
    ("state", "purpose", "outcome"), [pytest.param(s, p, o, id=n) for n, s, p, o in STATES]
)
def test_record_states(state: RecordState, purpose: str, outcome: str) -> None:
    items = (
        frozenset({"org_basic"}) if purpose == "public_disclosure" else frozenset({"admin_penalty"})
    )
    decision = decide(request(purpose=purpose, items=items), context(records=(state,)))
    assert decision.allowed
    out = apply_decision(decision, [CandidateRecord("r", state.item_id, {"amount": "5"})])
    if outcome in ("released", "flagged"):
        assert [r.record_id for r in out] == ["r"]
        assert out[0].objection == (outcome == "flagged")
        assert decision.excluded == {}
    else:
        assert out == []
        assert decision.excluded == {"r": outcome}


def test_a_record_listed_twice_is_excluded_if_either_copy_is_bad() -> None:
    records = (RecordState("r", "admin_penalty"), RecordState("r", "admin_penalty", expired=True))
    decision = decide(request(), context(records=records))
    assert decision.records == frozenset()
    assert decision.excluded == {"r": "record_expired"}


def test_apply_decision_drops_unknown_records_and_fields() -> None:
    decision = decide(
        request(requested_fields={"admin_penalty": frozenset({"amount"})}),
        context(records=(RecordState("r1", "admin_penalty"),)),
    )
    out = apply_decision(
        decision,
        [
            CandidateRecord("r1", "admin_penalty", {"amount": "5", "decision_no": "X1"}),
            CandidateRecord("r2", "admin_penalty", {"amount": "6"}),  # never evaluated
            CandidateRecord("r1", "admin_licence", {"amount": "7"}),  # item not released
        ],
    )
    assert out == [ReleasedRecord("r1", "admin_penalty", {"amount": "5"}, objection=False)]


def test_decide_is_deterministic_and_pure() -> None:
    req, ctx = request(**GRANTED), context(grant=grant())
    assert decide(req, ctx) == decide(req, ctx)


def test_decision_refuses_a_reason_that_is_not_a_code() -> None:
    with pytest.raises(ValueError, match="snake_case"):
        Decision(allowed=False, reason="Not A Code", message="x")


# --- properties ---------------------------------------------------------------------------

_ITEM_IDS = sorted(ITEMS)
_FIELD_IDS = sorted({f.id for it in ITEMS.values() for f in it.fields} | {"blood_type"})
_RECORD_STATES = st.builds(
    RecordState,
    record_id=st.sampled_from(["r1", "r2", "r3", "r4"]),
    item_id=st.sampled_from(_ITEM_IDS),
    withdrawn=st.booleans(),
    repaired=st.booleans(),
    expired=st.booleans(),
    objection=st.booleans(),
    linked=st.booleans(),
)
_REQUESTS = st.builds(
    request,
    subject_kind=st.sampled_from(["natural_person", "organisation", "individual_business"]),
    subject_is_citizen_id=st.booleans(),
    subject_under_14=st.booleans(),
    items=st.frozensets(st.sampled_from(_ITEM_IDS), max_size=3),
    purpose=st.sampled_from([*sorted(PURPOSES), "bogus"]),
    grant_id=st.sampled_from([None, "g-1", "g-2"]),
    requested_fields=st.dictionaries(
        st.sampled_from(_ITEM_IDS), st.frozensets(st.sampled_from(_FIELD_IDS)), max_size=2
    ),
)


@st.composite
def _some_grant(draw: st.DrawFn) -> Grant:
    items = draw(st.frozensets(st.sampled_from(_ITEM_IDS), min_size=1))
    # a field list for some of the granted items, sensitive fields included
    fields = draw(
        st.dictionaries(
            st.sampled_from(sorted(items)), st.frozensets(st.sampled_from(_FIELD_IDS)), max_size=2
        )
    )
    return grant(
        purpose=draw(st.sampled_from(sorted(PURPOSES))),
        items=items,
        use_limit=draw(st.integers(1, 3)),
        fields=fields,
    )


_GRANTS = st.one_of(st.none(), _some_grant())
_CONTEXTS = st.builds(
    context,
    grant=_GRANTS,
    grant_uses=st.integers(0, 4),
    grant_revoked=st.booleans(),
    records=st.lists(_RECORD_STATES, max_size=6),
    bundle=st.sampled_from([Bundle(), Bundle(agreements=(AGREEMENT,))]),
)
_CANDIDATES = st.lists(
    st.builds(
        CandidateRecord,
        record_id=st.sampled_from(["r1", "r2", "r3", "r4", "r5"]),
        item_id=st.sampled_from(_ITEM_IDS),
        fields=st.dictionaries(st.sampled_from(_FIELD_IDS), st.text(max_size=3), max_size=5),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(req=_REQUESTS, ctx=_CONTEXTS, candidates=_CANDIDATES)
def test_no_field_outside_the_decision_is_ever_returned(
    req: QueryRequest, ctx: PolicyContext, candidates: list[CandidateRecord]
) -> None:
    decision = decide(req, ctx)
    out = apply_decision(decision, candidates)
    bad_records = {s.record_id for s in ctx.records if s.withdrawn or s.repaired or s.expired}
    for rec in out:
        assert rec.record_id in decision.records
        assert rec.record_id not in bad_records
        assert set(rec.fields) <= decision.released[rec.item_id]
        sensitive = {f.id for f in ITEMS[rec.item_id].fields if f.sensitivity == "sensitive"}
        if sensitive & set(rec.fields):
            # never on a record reached through a link, whatever the grant says
            assert not any(s.linked for s in ctx.records if s.record_id == rec.record_id)
            assert ctx.grant is not None
            assert decision.grant_used
            assert sensitive & set(rec.fields) <= ctx.grant.fields.get(rec.item_id, frozenset())
        if req.subject_under_14 and req.purpose not in STATUTORY_DUTY_PURPOSES:
            # a child's fields leave only as the guardian's consent names them
            assert ctx.grant is not None
            assert set(rec.fields) <= ctx.grant.fields[rec.item_id]
    for item_id in decision.released:
        assert item_id in req.items
        assert ITEMS[item_id].share_type != "none"


@settings(max_examples=300, deadline=None)
@given(req=_REQUESTS, ctx=_CONTEXTS)
def test_deny_always_has_a_reason(req: QueryRequest, ctx: PolicyContext) -> None:
    decision = decide(req, ctx)
    if decision.allowed:
        assert decision.reason in ("allowed", "statutory_duty")
        return
    assert re.fullmatch(r"[a-z][a-z0-9_]*", decision.reason)
    assert decision.message.strip()
    assert not decision.released
    assert not decision.records
    assert not decision.flagged


@settings(max_examples=200, deadline=None)
@given(req=_REQUESTS, ctx=_CONTEXTS)
def test_natural_persons_never_reach_public_disclosure(
    req: QueryRequest, ctx: PolicyContext
) -> None:
    decision = decide(replace(req, purpose="public_disclosure"), ctx)
    if req.subject_kind == "natural_person" or req.subject_is_citizen_id:
        assert not decision.allowed
    assert not any(s.record_id in decision.flagged for s in ctx.records)


_ENFORCEMENT_FIELDS = sorted(f.id for f in ENFORCEMENT.fields)


@settings(max_examples=200, deadline=None)
@given(
    consented=st.frozensets(st.sampled_from(_ENFORCEMENT_FIELDS)),
    records=st.lists(
        st.builds(
            RecordState,
            record_id=st.sampled_from(["r1", "r2", "r3"]),
            item_id=st.just("enforcement"),
            linked=st.booleans(),
        ),
        max_size=4,
    ),
)
def test_a_grant_never_releases_a_sensitive_field_of_a_linked_record(
    consented: frozenset[str], records: list[RecordState]
) -> None:
    decision = decide(
        request(**GRANTED, items=frozenset({"enforcement"})),
        context(
            grant=grant(items=frozenset({"enforcement"}), fields={"enforcement": consented}),
            records=records,
        ),
    )
    assert decision.allowed, decision.message
    body = dict.fromkeys(_ENFORCEMENT_FIELDS, "v")
    out = apply_decision(decision, [CandidateRecord(r.record_id, r.item_id, body) for r in records])
    for rec in out:
        if any(s.linked for s in records if s.record_id == rec.record_id):
            assert "controller_id_number" not in rec.fields
            assert set(rec.fields) == consented - {"controller_id_number"}
        else:
            assert set(rec.fields) == consented


# --- a child under 14: all of its data is sensitive (PIPL Arts. 28, 29, 31) ---------------------

CHILD = {**GRANTED, "subject_under_14": True, "items": frozenset({"qualification"})}


def test_a_childs_fields_leave_only_when_the_grant_names_them() -> None:
    named = grant(fields={"qualification": frozenset({"cert_no", "health_note"})})
    decision = decide(request(**CHILD), context(grant=named))
    assert decision.allowed
    assert decision.released == {"qualification": frozenset({"cert_no", "health_note"})}


def test_a_grant_naming_no_fields_releases_nothing_of_a_child() -> None:
    decision = decide(request(**CHILD), context(grant=grant()))
    assert (decision.allowed, decision.reason) == (False, "minor_consent_required")
    assert decision.released == {}
    # the same grant for an adult releases the default minimisation
    adult = decide(request(**{**CHILD, "subject_under_14": False}), context(grant=grant()))
    assert adult.released == {"qualification": frozenset({"cert_no", "subject_id"})}


def test_all_or_nothing_when_one_item_of_a_child_has_no_named_fields() -> None:
    named = grant(fields={"qualification": frozenset({"cert_no"})})
    both = {**CHILD, "items": frozenset({"qualification", "admin_penalty"})}
    decision = decide(request(**both), context(grant=named))
    assert (decision.allowed, decision.reason) == (False, "minor_consent_required")


@pytest.mark.parametrize("purpose", sorted(STATUTORY_DUTY_PURPOSES))
def test_a_statutory_duty_needs_no_consent_for_a_child_either(purpose: str) -> None:
    duty = {**CHILD, "purpose": purpose, "grant_id": None}
    decision = decide(request(**duty), context())
    assert decision.allowed, decision.message
    assert decision.released == {"qualification": frozenset({"cert_no", "subject_id"})}


# --- checking a grant before the platform signs it ---------------------------------------------


def scope_problems(g: Grant, subject_kind: str = "natural_person") -> list[str]:
    return grant_scope_problems(
        g, subject_kind=subject_kind, items=ITEMS, members=(REQ, HOLDER, "zd-platform")
    )


def test_a_grant_any_query_could_use_has_no_scope_problem() -> None:
    assert scope_problems(grant()) == []


def test_a_grant_nobody_could_use_names_every_problem() -> None:
    g = grant(grantee="zd-taxx", purpose="marketing", items=frozenset({"org_basic", "no_such"}))
    assert scope_problems(g) == [
        "grantee 'zd-taxx' is not a node of the trust bundle (nodes: zd-market, zd-platform, "
        "zd-tax)",
        f"purpose 'marketing' is not a query purpose (one of: {', '.join(sorted(PURPOSES))})",
        "item 'no_such' is not in the catalogue",
        "item 'org_basic' is not kept about natural_person subjects (only organisation)",
    ]
    assert scope_problems(grant(items=frozenset({"org_basic"})), "organisation") == []


def test_a_grant_problem_never_quotes_an_id_number() -> None:
    person = "11010519491231002X"
    g = grant(grantee=person, purpose=f"p_{person.lower()}", items=frozenset({person}))
    said = " ".join(scope_problems(g))
    assert "19491231" not in said  # the birth date: the middle of the number
    assert said.count("110105********002") == 3


def test_a_grant_for_an_item_never_shared_is_refused() -> None:
    assert scope_problems(grant(items=frozenset({"internal_notes"}))) == [
        "item 'internal_notes' is never shared (share type none)"
    ]


def test_conditional_grant_items_without_a_query_agreement_for_its_grantee_and_purpose() -> None:
    arrears, licence = "utility_arrears", "admin_licence"
    assert (ITEMS[arrears].share_type, ITEMS[licence].share_type) == (
        "conditional",
        "unconditional",
    )
    g = grant(items=frozenset({"admin_penalty", arrears, licence}))
    agreements = (
        # another purpose, another consumer, another kind: none of them lets REQ ask
        Agr(HOLDER, REQ, frozenset({arrears}), frozenset({"commendation"})),
        Agr(HOLDER, "zd-court", frozenset({arrears}), frozenset({"staff_recruitment"})),
        Agr(HOLDER, REQ, frozenset({arrears}), frozenset({"staff_recruitment"}), "feed"),
    )
    # an unconditional item needs no agreement (rule 5d)
    assert grant_items_without_agreement(g, ITEMS, agreements) == [arrears]
    agreed = Agr(HOLDER, REQ, frozenset({arrears}), frozenset({"staff_recruitment"}))
    assert grant_items_without_agreement(g, ITEMS, (*agreements, agreed)) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"items": frozenset({SUBJECT})}, "item_unknown"),
        ({"items": frozenset({f"ID{SUBJECT}"})}, "item_unknown"),
        ({"requested_fields": {SUBJECT: frozenset({"amount"})}}, "field_unknown"),
    ],
    ids=["an ID number as an item", "glued to letters", "fields of an item not asked"],
)
def test_a_denial_never_echoes_an_id_number_the_request_put_where_an_id_belongs(
    changes: dict[str, Any], reason: str
) -> None:
    # Item ids come from the requester and are checked only here: one holding an ID number
    # is denied without the number coming back in the message (it reaches the requester's
    # screen and whatever logs its errors), but still names the masked id to act on.
    decision = decide(request(**changes), context())
    assert (decision.allowed, decision.reason) == (False, reason)
    assert SUBJECT[6:14] not in decision.message
    assert "370303" in decision.message
