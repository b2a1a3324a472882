"""The access policy: one pure function, `decide(request, context) -> Decision`.

Like a TUF client's trust logic, it is a function of verified inputs and nothing else: no IO, no
clock (the time is `context.now`), no randomness. The server verifies the request signature, the
trust bundle and the grant at the boundary, gathers the candidate records' states, calls
`decide`, logs the decision durably, and only then releases what `apply_decision` lets through.

Rules, in the order they are checked (reason codes are stable; docs/policy.md gives the legal
source of each):

1. the request names items and an officer, by a staff id        no_items, officer_missing,
   (never a name: node.officers)                                 officer_invalid
2. the requester is a roster member, valid now, and signed with one of its current (or
   still-overlapping previous) keys that is not revoked         requester_unknown,
                                                                 requester_not_valid,
                                                                 key_unknown, key_revoked
3. the purpose is a known code and a legal basis is given       purpose_unknown,
                                                                 legal_basis_missing
4. natural persons' data is never for public disclosure         natural_person_public_disclosure
   (the natural-person rules, here and in rule 6, also apply when the identifier asked
   about is a valid citizen ID number whatever kind the request names: records are found by
   the identifier alone, so privacy wins)
5. each item is held here, fits the subject kind (or, for a natural person, links persons
   such as the legal representative: Shandong Art. 31), and may go to this requester:
   `none` never; `conditional` only under a query agreement (provider = this node, consumer =
   requester, item and purpose covered); `unconditional` to any member; for
   `public_disclosure` the item must be disclosable publicly    item_unknown,
                                                                 subject_kind_mismatch,
                                                                 item_not_shareable,
                                                                 no_agreement, item_not_public
6. a natural person's non-public items need a valid subject grant unless the purpose is a
   statutory duty (PIPL Art. 13(3)); a grant named by the request is always checked: first
   whose it is (grantee, subject, purpose, items), only then its state, so a requester
   naming another's grant learns nothing of that grant, not even that it exists
                                                                 grant_required, grant_mismatch,
                                                                 grant_subject_mismatch,
                                                                 grant_purpose_mismatch,
                                                                 grant_items_mismatch,
                                                                 grant_revoked, grant_not_yet_valid,
                                                                 grant_expired, grant_exhausted
7. fields (minimisation): the grant's field list for the item when it names one, else every
   field that is not `sensitive`; a request may narrow this, never widen it. A grant speaks
   only for its subject: records reached through a link (another subject's record naming the
   subject, rule 5) never carry a field the default minimisation holds back. A child under
   14 (by the birth date in the ID number): every field is sensitive (PIPL Art. 28), so
   unless the purpose is a statutory duty only the fields a grant names for the item leave
   (the guardian's separate consent, Arts. 29 and 31), and an item it names none for denies
                                                                 field_unknown, field_not_allowed,
                                                                 minor_consent_required
8. records: withdrawn, repaired or expired records are never released; objection-flagged
   records are released with the flag, except for public disclosure (excluded)

Rules 1-7 are all-or-nothing: one failing item denies the whole request, so an officer never
receives a silently partial answer. Rule 8 excludes single records and never denies.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import catalog
import keys
from node.grants import Grant
from node.officers import OFFICER_ID_RULE, is_officer_id

# Shandong 社会信用条例 Art. 22: the uses for which departments may query public credit data.
SHANDONG_ART22_PURPOSES: frozenset[str] = frozenset(
    {
        "administrative_licensing",
        "administrative_penalty",
        "administrative_enforcement",
        "administrative_payment",
        "government_procurement",
        "bidding",
        "fund_support",
        "land_transfer",
        "qualification_certification",
        "research_management",
        "staff_recruitment",
        "appointment_promotion",
        "commendation",
        "other_management",
    }
)
PURPOSES: frozenset[str] = SHANDONG_ART22_PURPOSES | {"subject_own_use", "public_disclosure"}

# PIPL Art. 13(3): processing "necessary to perform a statutory duty" needs no consent. Only the
# purposes where a statute itself orders the authority to examine the subject's credit count:
# licensing, penalty, enforcement and payment decisions (行政许可法, 行政处罚法, 行政强制法 and the
# payment rules), government procurement (政府采购法 Art. 22 supplier conditions) and
# qualification certification (itself a licensing act). Recruitment, promotion, commendation,
# funding, research, bidding, land transfer and "other management" are discretionary uses where
# the subject takes part and can authorise; they need a grant for a natural person.
STATUTORY_DUTY_PURPOSES: frozenset[str] = frozenset(
    {
        "administrative_licensing",
        "administrative_penalty",
        "administrative_enforcement",
        "administrative_payment",
        "government_procurement",
        "qualification_certification",
    }
)

SUBJECT_KINDS: frozenset[str] = frozenset({"natural_person", "organisation", "individual_business"})

_REASON = re.compile(r"^[a-z][a-z0-9_]*$")


# --- the parts of catalog and keys types the policy reads (structural, read-only) ----------


class FieldView(Protocol):
    """Read-only view of catalog.Field."""

    @property
    def id(self) -> str: ...
    @property
    def sensitivity(self) -> str: ...


class ItemView(Protocol):
    """Read-only view of catalog.Item."""

    @property
    def id(self) -> str: ...
    @property
    def subject_kinds(self) -> frozenset[str]: ...
    @property
    def fields(self) -> tuple[FieldView, ...]: ...
    @property
    def share_type(self) -> str: ...
    @property
    def disclosure_modes(self) -> frozenset[str]: ...
    @property
    def personal(self) -> bool: ...
    @property
    def linked_id_fields(self) -> tuple[str, ...]: ...


class MemberView(Protocol):
    """Read-only view of keys.RosterEntry."""

    @property
    def node_id(self) -> str: ...
    @property
    def signing_key(self) -> bytes: ...
    @property
    def valid_from(self) -> dt.datetime: ...
    @property
    def valid_until(self) -> dt.datetime: ...
    @property
    def previous_signing_keys(self) -> tuple[tuple[bytes, dt.datetime], ...]: ...


class AgreementView(Protocol):
    """Read-only view of keys.Agreement."""

    @property
    def provider(self) -> str: ...
    @property
    def consumer(self) -> str: ...
    @property
    def items(self) -> frozenset[str]: ...
    @property
    def purposes(self) -> frozenset[str]: ...
    @property
    def kind(self) -> str: ...


class BundleView(Protocol):
    """Read-only view of a verified keys.TrustBundle."""

    @property
    def revoked_keyids(self) -> frozenset[str]: ...
    @property
    def revoked_grants(self) -> frozenset[str]: ...
    @property
    def agreements(self) -> Sequence[AgreementView]: ...
    def member(self, node_id: str, /) -> MemberView | None: ...


# --- inputs and output ------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRequest:
    """A verified query: the server has checked its signature, nonce and timestamp.

    `subject_digest` is `node.grants.subject_digest(normalised identifier)` of the subject asked
    about (used only to match a grant); `requested_fields` optionally narrows the fields per item.
    `subject_is_citizen_id` says the identifier also passes the GB 11643 citizen ID number check
    (the caller computes it, whatever `subject_kind` says): the records it finds may then be a
    natural person's, and the natural-person rules apply. `subject_under_14` says that ID
    number's birth date makes its holder a child under 14 today (`catalog.ric_full_age`).
    """

    requester: str
    requester_keyid: str
    officer: str
    subject_kind: str
    items: frozenset[str]
    purpose: str
    legal_basis: str
    grant_id: str | None = None
    subject_digest: str | None = None
    requested_fields: Mapping[str, frozenset[str]] = field(default_factory=dict)
    subject_is_citizen_id: bool = False
    subject_under_14: bool = False


@dataclass(frozen=True)
class RecordState:
    """Lifecycle state of one candidate record (from the store).

    `linked` says the record is another subject's (an organisation's) and was found because it
    names the subject asked about as a linked person (legal representative, principal,
    controller: Shandong Art. 31), not because it is the subject's own.
    """

    record_id: str
    item_id: str
    withdrawn: bool = False
    repaired: bool = False
    expired: bool = False
    objection: bool = False
    linked: bool = False


@dataclass(frozen=True)
class PolicyContext:
    """Everything `decide` may look at, gathered and verified by the caller."""

    now: dt.datetime
    node_id: str
    bundle: BundleView
    items: Mapping[str, ItemView]
    grant: Grant | None = None
    grant_uses: int = 0
    grant_revoked: bool = False
    records: Sequence[RecordState] = ()


@dataclass(frozen=True)
class Decision:
    """The policy's answer.

    `released` maps each requested item to the exact field ids that may leave on the subject's
    own records; `linked_released` maps it to the fields that may leave on records reached
    through a link (never more than `released`, never a field the default minimisation holds
    back); `records` are the record ids that may leave (objection-flagged ones also in
    `flagged`, those reached through a link also in `linked`); `excluded` maps record ids held
    back to a reason code. `fields_for` gives one record's fields. A denial has `allowed=False`,
    empty release sets, a stable snake_case `reason` and a `message` without personal data.
    `grant_used` tells the caller to count one use of the grant in its ledger before answering.
    """

    allowed: bool
    reason: str
    message: str
    released: Mapping[str, frozenset[str]] = field(default_factory=dict)
    records: frozenset[str] = frozenset()
    flagged: frozenset[str] = frozenset()
    excluded: Mapping[str, str] = field(default_factory=dict)
    statutory_duty: bool = False
    grant_used: bool = False
    linked_released: Mapping[str, frozenset[str]] = field(default_factory=dict)
    linked: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not _REASON.match(self.reason):
            raise ValueError("Decision.reason must be a snake_case code")

    def fields_for(self, record_id: str, item_id: str) -> frozenset[str] | None:
        """The fields that may leave on record `record_id` of item `item_id`; None when the
        record may not leave at all (a denial, a record not released, an item not released)."""
        if not self.allowed or record_id not in self.records:
            return None
        if record_id in self.linked:
            return self.linked_released.get(item_id)
        return self.released.get(item_id)


class _DenyError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


def _check_requester(request: QueryRequest, context: PolicyContext) -> None:
    member = context.bundle.member(request.requester)
    if member is None:
        raise _DenyError(
            "requester_unknown", "the requesting node is not in the trust bundle roster"
        )
    if not member.valid_from <= context.now < member.valid_until:
        raise _DenyError(
            "requester_not_valid", "the requesting node's roster entry is not valid now"
        )
    if request.requester_keyid in context.bundle.revoked_keyids:
        raise _DenyError("key_revoked", "the requesting node signed with a revoked key")
    accepted = {keys.keyid(member.signing_key)}
    accepted |= {
        keys.keyid(pk) for pk, until in member.previous_signing_keys if context.now < until
    }
    if request.requester_keyid not in accepted:
        raise _DenyError(
            "key_unknown", "the signing key is not a current key of the requesting node"
        )


def _check_purpose(request: QueryRequest) -> None:
    if request.purpose not in PURPOSES:
        raise _DenyError("purpose_unknown", "the purpose code is not one of the permitted purposes")
    if not request.legal_basis.strip():
        raise _DenyError("legal_basis_missing", "the request states no legal basis")


def _has_query_agreement(request: QueryRequest, context: PolicyContext, item_id: str) -> bool:
    return any(
        a.kind == "query"
        and a.provider == context.node_id
        and a.consumer == request.requester
        and item_id in a.items
        and request.purpose in a.purposes
        for a in context.bundle.agreements
    )


def _check_items(request: QueryRequest, context: PolicyContext) -> dict[str, ItemView]:
    items: dict[str, ItemView] = {}
    for item_id in sorted(request.items):
        item = context.items.get(item_id)
        if item is None:
            raise _DenyError(
                "item_unknown", f"item {catalog.shown_text(item_id)} is not held by this node"
            )
        # Shandong Art. 31: an organisation's entry names its legal representative (principal,
        # controller), so a question about that person may ask for the items that link them.
        linked = request.subject_kind == "natural_person" and bool(item.linked_id_fields)
        if request.subject_kind not in item.subject_kinds and not linked:
            raise _DenyError("subject_kind_mismatch", f"item {item_id} holds no such subject kind")
        if item.share_type == "none":
            raise _DenyError(
                "item_not_shareable", f"item {item_id} is not shared (share type none)"
            )
        if item.share_type == "conditional":
            if not _has_query_agreement(request, context, item_id):
                raise _DenyError(
                    "no_agreement",
                    f"item {item_id} is shared conditionally and no query agreement covers "
                    "this requester and purpose",
                )
        elif item.share_type != "unconditional":
            raise _DenyError("item_not_shareable", f"item {item_id} has an unknown share type")
        if request.purpose == "public_disclosure" and "public" not in item.disclosure_modes:
            raise _DenyError("item_not_public", f"item {item_id} may not be disclosed publicly")
        items[item_id] = item
    return items


def _person_rules(request: QueryRequest) -> bool:
    # The store finds records by the identifier's blind index alone, whatever kind is asked:
    # an identifier that is also a citizen ID number may reach a person's records, so the
    # stricter rules win over the kind the requester names.
    return request.subject_kind == "natural_person" or request.subject_is_citizen_id


def _needs_grant(request: QueryRequest, items: Mapping[str, ItemView]) -> bool:
    if not _person_rules(request) or request.purpose in STATUTORY_DUTY_PURPOSES:
        return False
    return any(it.personal and "public" not in it.disclosure_modes for it in items.values())


def _check_grant(request: QueryRequest, context: PolicyContext, needed: bool) -> Grant | None:
    grant = context.grant
    if request.grant_id is None:
        if not needed:
            return None
        if request.subject_kind != "natural_person":
            raise _DenyError(
                "grant_required",
                "the identifier is also a valid citizen ID number, so natural-person rules "
                "apply: ask as natural_person with the subject's authorisation, or for a "
                "statutory-duty purpose",
            )
        raise _DenyError(
            "grant_required",
            "a natural person's non-public data needs the subject's authorisation for this purpose",
        )
    # Whose grant it is comes before its state, and another's grant reads exactly like one never
    # registered: a requester naming a grant id that is not theirs must not learn that it
    # exists, nor whether it was revoked, has expired or is used up.
    if grant is None or grant.grant_id != request.grant_id or grant.grantee != request.requester:
        raise _DenyError(
            "grant_mismatch", "no authorisation by that id is registered here for this requester"
        )
    if request.subject_digest is None or grant.subject_digest != request.subject_digest:
        raise _DenyError("grant_subject_mismatch", "the authorisation is for a different subject")
    if grant.purpose != request.purpose:
        raise _DenyError("grant_purpose_mismatch", "the authorisation is for a different purpose")
    if not grant.covers(request.items):
        raise _DenyError(
            "grant_items_mismatch", "the authorisation does not cover every item asked"
        )
    now = context.now
    if context.grant_revoked or grant.grant_id in context.bundle.revoked_grants:
        raise _DenyError("grant_revoked", "the subject's authorisation has been revoked")
    if now < grant.valid_from:
        raise _DenyError("grant_not_yet_valid", "the subject's authorisation is not valid yet")
    if now >= grant.valid_until:
        raise _DenyError("grant_expired", "the subject's authorisation has expired")
    if context.grant_uses >= grant.use_limit:
        raise _DenyError("grant_exhausted", "the subject's authorisation has no uses left")
    return grant


def _default_fields(item: ItemView) -> frozenset[str]:
    return frozenset(f.id for f in item.fields if f.sensitivity != "sensitive")


def _fields(
    request: QueryRequest, items: Mapping[str, ItemView], grant: Grant | None
) -> dict[str, frozenset[str]]:
    released: dict[str, frozenset[str]] = {}
    # A child's data is sensitive personal information as a whole (PIPL Art. 28): without a
    # statutory duty, only what the guardian's separate consent names may leave.
    consent_only = request.subject_under_14 and request.purpose not in STATUTORY_DUTY_PURPOSES
    for item_id in sorted(items):
        item = items[item_id]
        known = frozenset(f.id for f in item.fields)
        if grant is not None and item_id in grant.fields:
            # The subject's consent names the fields, sensitive ones included (PIPL Art. 29).
            allowed = grant.fields[item_id] & known
        elif consent_only:
            raise _DenyError(
                "minor_consent_required",
                f"item {item_id}: the subject is a child under 14, whose data is all sensitive: "
                "it leaves only under a statutory duty or a grant naming the item's fields",
            )
        else:
            allowed = _default_fields(item)
        wanted = request.requested_fields.get(item_id)
        if wanted is None:
            released[item_id] = allowed
            continue
        if wanted - known:
            raise _DenyError("field_unknown", f"item {item_id} has no field named in the request")
        if wanted - allowed:
            raise _DenyError(
                "field_not_allowed",
                f"item {item_id}: a requested field is sensitive or outside the authorisation",
            )
        released[item_id] = frozenset(wanted)
    for item_id in request.requested_fields:
        if item_id not in items:
            raise _DenyError(
                "field_unknown",
                f"fields were requested for item {catalog.shown_text(item_id)} not asked for",
            )
    return released


def _linked_fields(
    items: Mapping[str, ItemView], released: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    # A grant is one subject's consent: it cannot release the sensitive fields of a record
    # that is another subject's and names further persons (an organisation's actual
    # controller's ID number), so those records keep the default minimisation.
    return {
        item_id: fields & _default_fields(items[item_id]) for item_id, fields in released.items()
    }


def _records(
    request: QueryRequest, context: PolicyContext
) -> tuple[frozenset[str], frozenset[str], dict[str, str], frozenset[str]]:
    released: set[str] = set()
    flagged: set[str] = set()
    excluded: dict[str, str] = {}
    public = request.purpose == "public_disclosure"
    for rec in context.records:
        if rec.item_id not in request.items:
            excluded[rec.record_id] = "item_not_requested"
        elif rec.withdrawn:
            excluded[rec.record_id] = "record_withdrawn"
        elif rec.repaired:
            excluded[rec.record_id] = "record_repaired"
        elif rec.expired:
            excluded[rec.record_id] = "record_expired"
        elif rec.objection and public:
            excluded[rec.record_id] = "record_objection"
        else:
            released.add(rec.record_id)
            if rec.objection:
                flagged.add(rec.record_id)
    # A record id listed twice with different states must not slip through on the good copy,
    # and one listed as both own and linked gets the narrower linked fields.
    released -= excluded.keys()
    flagged &= released
    linked = frozenset(r.record_id for r in context.records if r.linked) & released
    return frozenset(released), frozenset(flagged), excluded, linked


def decide(request: QueryRequest, context: PolicyContext) -> Decision:
    """Decide what of `request` may be released, given the verified `context`.

    Promises: pure and deterministic; a denial always carries a stable snake_case reason and a
    sentence without personal data, and releases nothing; an allow names every field and record
    that may leave, and nothing else may. Refuses (denies) every case in the module docstring.
    """
    try:
        if not request.items:
            raise _DenyError("no_items", "the request names no items")
        if not request.officer.strip():
            raise _DenyError("officer_missing", "the request names no responsible officer")
        if not is_officer_id(request.officer):
            raise _DenyError("officer_invalid", f"the officer must be {OFFICER_ID_RULE}")
        _check_requester(request, context)
        _check_purpose(request)
        if request.subject_kind not in SUBJECT_KINDS:
            raise _DenyError("subject_kind_unknown", "the subject kind is not known")
        if request.purpose == "public_disclosure" and _person_rules(request):
            raise _DenyError(
                "natural_person_public_disclosure",
                "a natural person's credit information is never disclosed publicly"
                if request.subject_kind == "natural_person"
                else "the identifier is also a valid citizen ID number and may name a natural "
                "person, whose credit information is never disclosed publicly",
            )
        items = _check_items(request, context)
        statutory = request.purpose in STATUTORY_DUTY_PURPOSES
        grant = _check_grant(request, context, _needs_grant(request, items))
        released = _fields(request, items, grant)
    except _DenyError as deny:
        return Decision(allowed=False, reason=deny.reason, message=deny.message)
    records, flagged, excluded, linked = _records(request, context)
    return Decision(
        allowed=True,
        reason="statutory_duty" if statutory and grant is None else "allowed",
        message="",
        released=released,
        records=records,
        flagged=flagged,
        excluded=excluded,
        statutory_duty=statutory,
        grant_used=grant is not None,
        linked_released=_linked_fields(items, released),
        linked=linked,
    )


# --- applying a decision ----------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateRecord:
    """A decrypted record the store found for the query, before the policy filters it."""

    record_id: str
    item_id: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class ReleasedRecord:
    """A record as it may leave the node: only the released fields, and the objection flag."""

    record_id: str
    item_id: str
    fields: Mapping[str, str]
    objection: bool


def apply_decision(decision: Decision, records: Iterable[CandidateRecord]) -> list[ReleasedRecord]:
    """Filter `records` down to what `decision` releases.

    Promises: nothing for a denial; only records the decision names (never one it excluded or
    never saw), each with only the fields released for it (`Decision.fields_for`: a record
    reached through a link gets the linked fields). Input order is kept.
    """
    if not decision.allowed:
        return []
    out: list[ReleasedRecord] = []
    for rec in records:
        allowed = decision.fields_for(rec.record_id, rec.item_id)
        if allowed is None:
            continue
        out.append(
            ReleasedRecord(
                record_id=rec.record_id,
                item_id=rec.item_id,
                fields={k: v for k, v in rec.fields.items() if k in allowed},
                objection=rec.record_id in decision.flagged,
            )
        )
    return out


# --- checking a grant before the platform signs it --------------------------------------------


def grant_scope_problems(
    grant: Grant,
    *,
    subject_kind: str,
    items: Mapping[str, ItemView],
    members: Iterable[str],
) -> list[str]:
    """What would make `grant` useless to every query, so the platform does not sign it: a
    grantee that is not a node of the district (`members`, the trust bundle's roster), a
    purpose no query may name (`PURPOSES`), an item the catalogue (`items`, by id) does not
    hold, does not keep about `subject_kind` subjects or never shares (share type `none`, rule
    5b). One message per problem, naming the value (cut short, ID numbers masked) and what is
    accepted; empty when none."""
    problems: list[str] = []
    known = sorted(members)
    if grant.grantee not in known:
        problems.append(
            f"grantee {catalog.shown_text(grant.grantee)!r} is not a node of the trust bundle "
            f"(nodes: {', '.join(known) or 'none'})"
        )
    if grant.purpose not in PURPOSES:
        problems.append(
            f"purpose {catalog.shown_text(grant.purpose)!r} is not a query purpose "
            f"(one of: {', '.join(sorted(PURPOSES))})"
        )
    for item_id in sorted(grant.items):
        item = items.get(item_id)
        if item is None:
            problems.append(f"item {catalog.shown_text(item_id)!r} is not in the catalogue")
        elif subject_kind not in item.subject_kinds:
            problems.append(
                f"item {item_id!r} is not kept about {subject_kind} subjects "
                f"(only {', '.join(sorted(item.subject_kinds))})"
            )
        elif item.share_type == "none":
            problems.append(f"item {item_id!r} is never shared (share type none)")
    return problems


def grant_items_without_agreement(
    grant: Grant, items: Mapping[str, ItemView], agreements: Iterable[AgreementView]
) -> list[str]:
    """The items of `grant` shared only under an agreement (share type `conditional`, rule
    5c) for which no query agreement lets its grantee ask any provider for its purpose: the
    grant cannot be used for them until a trust bundle adds one. Sorted."""
    agreed = {
        item
        for a in agreements
        if a.kind == "query" and a.consumer == grant.grantee and grant.purpose in a.purposes
        for item in a.items
    }
    conditional = {i for i in grant.items if i in items and items[i].share_type == "conditional"}
    return sorted(conditional - agreed)
