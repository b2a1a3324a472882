"""Subject grants: a data subject's written authorisation (Shandong Art. 21, PIPL Arts. 14-15).

A grant says: subject S authorises grantee node G to query items I for purpose P between
`valid_from` and `valid_until`, at most `use_limit` times; `evidence_sha256` is the SHA-256 of the
signed authorisation document kept by the platform. The platform (a roster node with the
`platform` role) collects the document, issues the grant as a DSSE envelope signed by its node
key, and the grantee presents it to the data-holding node, which verifies it, registers it in its
`GrantLedger` and counts every use there. The signature is checked again at every use
(`verify_registered_grant`): a grant whose issuer the current trust bundle no longer trusts (its
key revoked, its `platform` role gone) is refused by id as it would be if sent afresh.

The subject is named by `subject_digest = sha256("credex-grant\\0" + normalised identifier)` in
hex: the platform cannot compute every holder's keyed blind index, and the holder recomputes the
digest from the query subject to match. The digest never appears in log lines or errors.

Revocation (PIPL Art. 15) comes either as a signed revocation message from a platform node or
through the trust bundle's `revoked_grants`. It is final, and it may arrive before the grant
does: the ledger keeps every revocation by grant id, registered grant or not, and a grant
presented after its revocation is registered already revoked. Only verified objects leave this
module: `verify_grant` and `verify_revocation` return a `Grant` / `GrantRevocation` or raise.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import catalog
import keys
from node.errors import AuthError, InputError, PolicyDenied

GRANT_PAYLOAD_TYPE = "application/vnd.credex.grant.v1+json"
REVOCATION_PAYLOAD_TYPE = "application/vnd.credex.grant-revocation.v1+json"
PLATFORM_ROLE = "platform"

# Matched with `fullmatch`: `$` would also match before a final newline ("g-1\n").
_HEX64 = re.compile(r"[0-9a-f]{64}")
_GRANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SNAKE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Anything deeper is not a grant: refused before the JSON parser's recursion limit is.
_JSON_ERRORS = (ValueError, UnicodeDecodeError, RecursionError)


class MalformedGrantError(InputError):
    """A grant or revocation payload is not well formed (the message names the field)."""


class InvalidGrantError(AuthError):
    """A grant or revocation is not signed by a current platform node of the roster."""


class GrantRefusedError(PolicyDenied):
    """A grant cannot be used: unknown, revoked, exhausted or outside its validity."""


class GrantConflictError(InputError):
    """A different grant is already registered under the same grant id."""


def is_grant_id(text: str) -> bool:
    """True when `text` is a grant id: 1-128 characters of letters, digits, '.', '_', ':',
    '-', starting with a letter or digit."""
    return _GRANT_ID.fullmatch(text) is not None


def grant_id_problem(grant_id: str) -> str | None:
    """Why `grant_id` may not name a new grant, or None.

    A grant id is stored in the clear at every holder, listed by `credex grant list`, named
    on the wire and in the bundle's `revoked_grants`, and the access log masks any citizen ID
    number or credit code it finds in one (`catalog.redact_identifiers`): an id holding one
    would spread the subject's identifier and could not be looked up in the log. The message
    never quotes the id.
    """
    if not is_grant_id(grant_id):
        return "grant_id: 1-128 characters of letters, digits, '.', '_', ':', '-'"
    if catalog.redact_identifiers(grant_id, digit_runs=False) != grant_id:
        return (
            "grant_id: holds a citizen ID number or credit code; a grant id must not carry "
            "personal data (use a random id)"
        )
    return None


def subject_digest(normalised_identifier: str) -> str:
    """Return the grant's subject digest for an already normalised identifier (hex SHA-256).

    Refuses an empty identifier; it does not normalise (catalog.normalize_ric/uscc do that), so
    one subject is never spelled two ways here.
    """
    if not normalised_identifier:
        raise MalformedGrantError("subject identifier: empty")
    return hashlib.sha256(b"credex-grant\0" + normalised_identifier.encode("utf-8")).hexdigest()


def _utc(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None:
        raise MalformedGrantError(f"{name}: a timezone-aware time is required")
    return value.astimezone(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Grant:
    """One subject authorisation (validated on construction; see `verify_grant`)."""

    grant_id: str
    issuer: str
    subject_digest: str
    grantee: str
    purpose: str
    items: frozenset[str]
    valid_from: dt.datetime
    valid_until: dt.datetime
    use_limit: int
    evidence_sha256: str
    issued_at: dt.datetime
    # item id -> the fields the subject agreed to release; may name `sensitive` fields
    # (PIPL Art. 29 separate consent). An item absent here gets the default minimisation.
    fields: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _grant_problems(self)
        if problems:
            raise MalformedGrantError("grant: " + "; ".join(problems))

    def covers(self, item_ids: frozenset[str]) -> bool:
        """True when every item in `item_ids` is named by the grant."""
        return item_ids <= self.items

    def valid_at(self, now: dt.datetime) -> bool:
        """True when `now` lies in [valid_from, valid_until)."""
        return self.valid_from <= now < self.valid_until

    def to_payload(self) -> bytes:
        """Return the canonical JSON payload (sorted keys, compact, UTF-8) that is signed."""
        doc: dict[str, Any] = {
            "v": 1,
            "grant_id": self.grant_id,
            "issuer": self.issuer,
            "subject_digest": self.subject_digest,
            "grantee": self.grantee,
            "purpose": self.purpose,
            "items": sorted(self.items),
            "fields": {k: sorted(v) for k, v in sorted(self.fields.items())},
            "valid_from": _iso(self.valid_from),
            "valid_until": _iso(self.valid_until),
            "use_limit": self.use_limit,
            "evidence_sha256": self.evidence_sha256,
            "issued_at": _iso(self.issued_at),
        }
        return _canonical(doc)

    @classmethod
    def from_payload(cls, payload: bytes) -> Grant:
        """Parse a canonical grant payload; raises MalformedGrantError naming the bad field."""
        doc = _load_object(payload, "grant")
        expected = {
            "v",
            "grant_id",
            "issuer",
            "subject_digest",
            "grantee",
            "purpose",
            "items",
            "fields",
            "valid_from",
            "valid_until",
            "use_limit",
            "evidence_sha256",
            "issued_at",
        }
        _exact_keys(doc, expected, "grant")
        if doc["v"] != 1:
            raise MalformedGrantError("grant.v: unsupported version")
        fields_doc = doc["fields"]
        if not isinstance(fields_doc, dict):
            raise MalformedGrantError("grant.fields: must be an object")
        use_limit = doc["use_limit"]
        if not isinstance(use_limit, int) or isinstance(use_limit, bool):
            raise MalformedGrantError("grant.use_limit: must be an integer")
        return cls(
            grant_id=_str(doc, "grant_id", "grant"),
            issuer=_str(doc, "issuer", "grant"),
            subject_digest=_str(doc, "subject_digest", "grant"),
            grantee=_str(doc, "grantee", "grant"),
            purpose=_str(doc, "purpose", "grant"),
            items=_str_set(doc["items"], "grant.items"),
            fields={str(k): _str_set(v, f"grant.fields.{k}") for k, v in fields_doc.items()},
            valid_from=_time(doc, "valid_from", "grant"),
            valid_until=_time(doc, "valid_until", "grant"),
            use_limit=use_limit,
            evidence_sha256=_str(doc, "evidence_sha256", "grant"),
            issued_at=_time(doc, "issued_at", "grant"),
        )


def _grant_problems(g: Grant) -> list[str]:
    problems: list[str] = []
    if not _GRANT_ID.fullmatch(g.grant_id):
        problems.append("grant_id: 1-128 characters of letters, digits, '.', '_', ':', '-'")
    if not g.issuer:
        problems.append("issuer: empty")
    if not g.grantee:
        problems.append("grantee: empty")
    if not _HEX64.fullmatch(g.subject_digest):
        problems.append("subject_digest: must be 64 lowercase hex digits")
    if not _HEX64.fullmatch(g.evidence_sha256):
        problems.append("evidence_sha256: must be 64 lowercase hex digits")
    if not _SNAKE.fullmatch(g.purpose):
        problems.append("purpose: must be a snake_case purpose code")
    if not g.items:
        problems.append("items: at least one item is required")
    for item_id in g.fields:
        if item_id not in g.items:
            problems.append(f"fields: item {item_id!r} is not among the granted items")
    for name in ("valid_from", "valid_until", "issued_at"):
        if getattr(g, name).tzinfo is None:
            problems.append(f"{name}: a timezone-aware time is required")
    if not problems and g.valid_until <= g.valid_from:
        problems.append("valid_until: must be after valid_from")
    if isinstance(g.use_limit, bool) or g.use_limit < 1:
        problems.append("use_limit: must be a positive integer")
    return problems


@dataclass(frozen=True)
class GrantRevocation:
    """A platform's statement that a grant is withdrawn (the subject revoked consent)."""

    grant_id: str
    issuer: str
    revoked_at: dt.datetime
    reason: str  # stable snake_case code, e.g. "subject_withdrew_consent"

    def __post_init__(self) -> None:
        if not _GRANT_ID.fullmatch(self.grant_id):
            raise MalformedGrantError("revocation.grant_id: not a grant id")
        if not self.issuer:
            raise MalformedGrantError("revocation.issuer: empty")
        if self.revoked_at.tzinfo is None:
            raise MalformedGrantError("revocation.revoked_at: a timezone-aware time is required")
        if not _SNAKE.fullmatch(self.reason):
            raise MalformedGrantError("revocation.reason: must be a snake_case code")

    def to_payload(self) -> bytes:
        """Return the canonical JSON payload that is signed."""
        return _canonical(
            {
                "v": 1,
                "grant_id": self.grant_id,
                "issuer": self.issuer,
                "revoked_at": _iso(self.revoked_at),
                "reason": self.reason,
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> GrantRevocation:
        """Parse a canonical revocation payload; raises MalformedGrantError naming the bad field."""
        doc = _load_object(payload, "revocation")
        _exact_keys(doc, {"v", "grant_id", "issuer", "revoked_at", "reason"}, "revocation")
        if doc["v"] != 1:
            raise MalformedGrantError("revocation.v: unsupported version")
        return cls(
            grant_id=_str(doc, "grant_id", "revocation"),
            issuer=_str(doc, "issuer", "revocation"),
            revoked_at=_time(doc, "revoked_at", "revocation"),
            reason=_str(doc, "reason", "revocation"),
        )


# --- signing and verification -------------------------------------------------------------


class _Roster(Protocol):
    """The part of keys.TrustBundle that grant verification needs."""

    @property
    def revoked_keyids(self) -> frozenset[str]: ...

    @property
    def revoked_grants(self) -> frozenset[str]: ...

    def member(self, node_id: str) -> Any: ...


def issue_grant(grant: Grant, signer: keys.Signer) -> bytes:
    """Sign `grant` as a DSSE envelope with the platform node's key; return its JSON bytes.

    The caller must be the platform node named in `grant.issuer`; verification enforces it.
    Refuses (MalformedGrantError) a grant id that holds an identifier (`grant_id_problem`).
    """
    problem = grant_id_problem(grant.grant_id)
    if problem is not None:
        raise MalformedGrantError("grant: " + problem)
    return keys.sign_envelope(GRANT_PAYLOAD_TYPE, grant.to_payload(), signer).to_json().encode()


def sign_revocation(revocation: GrantRevocation, signer: keys.Signer) -> bytes:
    """Sign a grant revocation as a DSSE envelope; return its JSON bytes."""
    payload = revocation.to_payload()
    return keys.sign_envelope(REVOCATION_PAYLOAD_TYPE, payload, signer).to_json().encode()


def _platform_keys(
    bundle: _Roster, issuer: str, now: dt.datetime, *, retired_too: bool = False
) -> dict[str, bytes]:
    """The issuer's signing keys a grant may be signed with: its current key and previous keys
    in their overlap, or (`retired_too`, a grant checked again at a later use) every previous
    key the roster lists: a routine rotation does not void grants; a revocation does."""
    entry = bundle.member(issuer)
    if entry is None or PLATFORM_ROLE not in entry.roles:
        raise InvalidGrantError("grant issuer is not a platform node of the roster")
    if not entry.valid_from <= now < entry.valid_until:
        raise InvalidGrantError("grant issuer is not valid at this time")
    trusted: dict[str, bytes] = {}
    candidates: list[bytes] = [entry.signing_key]
    candidates += [pk for pk, until in entry.previous_signing_keys if retired_too or now < until]
    for pk in candidates:
        kid = keys.keyid(pk)
        if kid not in bundle.revoked_keyids:
            trusted[kid] = pk
    if not trusted:
        raise InvalidGrantError("grant issuer has no unrevoked signing key")
    return trusted


def _verify(
    raw: bytes,
    payload_type: str,
    bundle: _Roster,
    now: dt.datetime,
    *,
    retired_too: bool = False,
    what: str = "grant",
) -> tuple[str, bytes]:
    try:
        envelope = keys.Envelope.from_json(raw)
        unverified = keys.loads_unique_keys(envelope.payload)
        issuer = unverified.get("issuer") if isinstance(unverified, dict) else None
    except (keys.KeysError, *_JSON_ERRORS) as error:
        raise MalformedGrantError(
            f"signed {what}: not a DSSE envelope with a JSON payload"
        ) from error
    if not isinstance(issuer, str) or not issuer:
        raise MalformedGrantError(f"signed {what}: payload names no issuer")
    trusted = _platform_keys(bundle, issuer, _utc(now, "now"), retired_too=retired_too)
    try:
        payload = keys.verify_envelope(envelope, payload_type=payload_type, trusted=trusted)
    except keys.VerificationError as error:
        raise InvalidGrantError(
            "grant signature did not verify against the issuer's key"
        ) from error
    return issuer, payload


def verify_grant(raw: bytes, *, bundle: _Roster, now: dt.datetime) -> Grant:
    """Verify a signed grant against the trust bundle and return it.

    Promises: the envelope is signed by a current, unrevoked key of the roster node named as
    issuer, and that node has the `platform` role. Refuses (InvalidGrantError) anything else and
    (MalformedGrantError) a payload that does not parse or a grant id holding an identifier
    (`grant_id_problem`: it is not registered, so the id is kept nowhere). It does not check
    validity dates, uses or revocation: those change over time and are the policy's and the
    ledger's business.
    """
    grant = _verified_grant(raw, bundle, now, retired_too=False)
    problem = grant_id_problem(grant.grant_id)
    if problem is not None:
        raise MalformedGrantError("signed grant: " + problem)
    return grant


def _verified_grant(raw: bytes, bundle: _Roster, now: dt.datetime, *, retired_too: bool) -> Grant:
    issuer, payload = _verify(raw, GRANT_PAYLOAD_TYPE, bundle, now, retired_too=retired_too)
    grant = Grant.from_payload(payload)
    if grant.issuer != issuer:  # pragma: no cover - same bytes parsed twice
        raise InvalidGrantError("grant issuer changed between parse and verification")
    return grant


def verify_registered_grant(state: GrantState, *, bundle: _Roster, now: dt.datetime) -> Grant:
    """Check a grant registered here earlier against the bundle in use now, and return it.

    Promises: the stored grant is the one its stored signed copy carries; its issuer is still
    a roster node with the `platform` role, valid now; the key that signed it is not revoked;
    and when the roster still lists that key (current, or retired by a rotation since: a
    routine rotation does not void the grants already issued) the signature verifies with it.
    A key the roster no longer lists at all (an earlier release dropped retired keys at the
    next rotation) is taken on the verification made when the grant was registered. Refuses
    (InvalidGrantError, MalformedGrantError) anything else, with the reasons `verify_grant`
    gives.
    """
    try:
        envelope = keys.Envelope.from_json(state.raw)
        signed = Grant.from_payload(envelope.payload)
    except (keys.KeysError, InputError, *_JSON_ERRORS) as error:
        raise MalformedGrantError("registered grant: its signed copy does not parse") from error
    if signed != state.grant:
        raise InvalidGrantError("the registered grant differs from its signed copy")
    trusted = _platform_keys(bundle, state.grant.issuer, _utc(now, "now"), retired_too=True)
    signers = {kid for kid, _sig in envelope.signatures}
    if signers & bundle.revoked_keyids:
        raise InvalidGrantError("the key that signed the grant is revoked")
    if signers & trusted.keys():
        try:
            keys.verify_envelope(envelope, payload_type=GRANT_PAYLOAD_TYPE, trusted=trusted)
        except keys.VerificationError as error:
            raise InvalidGrantError(
                "grant signature did not verify against the issuer's key"
            ) from error
    return state.grant


def verify_revocation(raw: bytes, *, bundle: _Roster, now: dt.datetime) -> GrantRevocation:
    """Verify a signed grant revocation from a platform node and return it.

    Same rules as `verify_grant`, except that a previous key of the platform counts even past
    its rotation overlap (as long as it is not revoked): a revocation only takes access away,
    and one signed before a routine rotation but registered after it must still stop the
    grant (PIPL Art. 15). Refuses a revoked key, a non-platform signer, a bad signature.
    """
    _issuer, payload = _verify(
        raw, REVOCATION_PAYLOAD_TYPE, bundle, now, retired_too=True, what="revocation"
    )
    return GrantRevocation.from_payload(payload)


# --- the ledger ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRevocation:
    """A revocation as the data-holding node keeps it, whether or not the grant is registered
    here: a grant revoked before it is first presented must start revoked (PIPL Art. 15)."""

    grant_id: str
    revoked_at: dt.datetime
    reason: str


@dataclass(frozen=True)
class GrantState:
    """What the data-holding node knows about one registered grant."""

    grant: Grant
    raw: bytes  # the signed envelope exactly as received (evidence)
    uses: int
    revoked_at: dt.datetime | None = None
    revoked_reason: str | None = None

    @property
    def revoked(self) -> bool:
        """True once the grant has been revoked."""
        return self.revoked_at is not None


@runtime_checkable
class GrantLedger(Protocol):
    """Registered grants and their use counts at a data-holding node (SQL version in node/store).

    `use` is the one place uses are counted; it is atomic (check-and-increment), so two
    concurrent queries can never both take the last use.
    """

    def register(self, grant: Grant, raw: bytes) -> GrantState:
        """Register a verified grant; idempotent for the same grant, GrantConflictError for a
        different grant under the same id. A grant whose revocation was recorded before is
        registered revoked. Returns the current state."""
        ...

    def get(self, grant_id: str) -> GrantState | None:
        """Return the grant's state, or None when it was never registered."""
        ...

    def use(self, grant_id: str, now: dt.datetime) -> GrantState:
        """Count one use; GrantRefusedError (reason code) when unknown, revoked, outside its
        validity or exhausted. Returns the state after the use."""
        ...

    def revoke(
        self, grant_id: str, at: dt.datetime, reason: str, *, raw: bytes | None = None
    ) -> GrantState | None:
        """Record the grant's revocation (final and idempotent: the first one is kept) and
        return the revoked state, or None when the grant is not registered here: the revocation
        is kept all the same, and the grant starts revoked if it is ever registered. `raw` is
        the signed revocation as received (evidence), None for one from the trust bundle."""
        ...

    def revocation(self, grant_id: str) -> RecordedRevocation | None:
        """Return the revocation recorded for a grant id (registered or not), else None."""
        ...

    def refund_use(self, grant_id: str) -> None:
        """Give back one use counted by `use` for a request that was then not answered (its
        access-log entry could not be written, or it was a replay), so a use is counted once
        per answer; never goes below zero, and does nothing for an unknown grant."""
        ...


class MemoryGrantLedger:
    """An in-memory GrantLedger for tests and single-process tools (thread-safe)."""

    def __init__(self) -> None:
        self._states: dict[str, GrantState] = {}
        self._revocations: dict[str, RecordedRevocation] = {}
        self._lock = threading.Lock()

    def register(self, grant: Grant, raw: bytes) -> GrantState:
        """See GrantLedger.register."""
        with self._lock:
            current = self._states.get(grant.grant_id)
            if current is not None:
                if current.grant != grant:
                    raise GrantConflictError(
                        f"grant {grant.grant_id}: a different grant is registered under this id"
                    )
                return current
            # A grant revoked before it reached this node starts revoked.
            revoked = self._revocations.get(grant.grant_id)
            state = GrantState(
                grant=grant,
                raw=raw,
                uses=0,
                revoked_at=None if revoked is None else revoked.revoked_at,
                revoked_reason=None if revoked is None else revoked.reason,
            )
            self._states[grant.grant_id] = state
            return state

    def get(self, grant_id: str) -> GrantState | None:
        """See GrantLedger.get."""
        with self._lock:
            return self._states.get(grant_id)

    def use(self, grant_id: str, now: dt.datetime) -> GrantState:
        """See GrantLedger.use."""
        with self._lock:
            state = self._states.get(grant_id)
            if state is None:
                raise GrantRefusedError("grant_unknown", "the grant is not registered at this node")
            refusal = use_refusal(state, now)
            if refusal is not None:
                raise GrantRefusedError(*refusal)
            new = GrantState(
                grant=state.grant,
                raw=state.raw,
                uses=state.uses + 1,
                revoked_at=state.revoked_at,
                revoked_reason=state.revoked_reason,
            )
            self._states[grant_id] = new
            return new

    def revoke(
        self, grant_id: str, at: dt.datetime, reason: str, *, raw: bytes | None = None
    ) -> GrantState | None:
        """See GrantLedger.revoke (`raw` is not kept in memory)."""
        del raw
        with self._lock:
            recorded = self._revocations.get(grant_id)
            if recorded is None:
                recorded = RecordedRevocation(grant_id, _utc(at, "at"), reason)
                self._revocations[grant_id] = recorded
            state = self._states.get(grant_id)
            if state is None or state.revoked_at is not None:
                return state
            new = GrantState(
                grant=state.grant,
                raw=state.raw,
                uses=state.uses,
                revoked_at=recorded.revoked_at,
                revoked_reason=recorded.reason,
            )
            self._states[grant_id] = new
            return new

    def revocation(self, grant_id: str) -> RecordedRevocation | None:
        """See GrantLedger.revocation."""
        with self._lock:
            return self._revocations.get(grant_id)

    def refund_use(self, grant_id: str) -> None:
        """See GrantLedger.refund_use."""
        with self._lock:
            state = self._states.get(grant_id)
            if state is not None and state.uses > 0:
                self._states[grant_id] = replace(state, uses=state.uses - 1)


def use_refusal(state: GrantState, now: dt.datetime) -> tuple[str, str] | None:
    """Return `(reason code, sentence)` when `state` may not be used at `now`, else None.

    Shared by every GrantLedger implementation so the SQL one refuses exactly alike.
    """
    if state.revoked:
        return "grant_revoked", "the subject's authorisation has been revoked"
    if now < state.grant.valid_from:
        return "grant_not_yet_valid", "the subject's authorisation is not valid yet"
    if now >= state.grant.valid_until:
        return "grant_expired", "the subject's authorisation has expired"
    if state.uses >= state.grant.use_limit:
        return "grant_exhausted", "the subject's authorisation has no uses left"
    return None


def apply_bundle_revocations(
    ledger: GrantLedger, revoked_grants: frozenset[str], at: dt.datetime
) -> list[str]:
    """Record every grant listed in a newly accepted bundle's `revoked_grants` as revoked;
    return the ids newly recorded.

    Grants not registered here are recorded too: a later bundle may drop the id, and the grant
    must still start revoked if it is presented afterwards (revocation is final).
    """
    newly: list[str] = []
    for grant_id in sorted(revoked_grants):
        if ledger.revocation(grant_id) is None:
            ledger.revoke(grant_id, at, "revoked_by_bundle")
            newly.append(grant_id)
    return newly


# --- strict JSON helpers --------------------------------------------------------------------


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        doc = keys.loads_unique_keys(payload)
    except _JSON_ERRORS as error:
        raise MalformedGrantError(f"{what}: payload is not JSON ({error})") from error
    if not isinstance(doc, dict):
        raise MalformedGrantError(f"{what}: payload is not a JSON object")
    return doc


def _exact_keys(doc: Mapping[str, Any], expected: set[str], what: str) -> None:
    missing = expected - doc.keys()
    extra = doc.keys() - expected
    if missing:
        raise MalformedGrantError(f"{what}: missing {sorted(missing)}")
    if extra:
        raise MalformedGrantError(f"{what}: unknown keys {sorted(extra)}")


def _str(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise MalformedGrantError(f"{what}.{key}: must be a string")
    return value


def _str_set(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedGrantError(f"{where}: must be a list of strings")
    return frozenset(value)


def _time(doc: Mapping[str, Any], key: str, what: str) -> dt.datetime:
    value = _str(doc, key, what)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise MalformedGrantError(f"{what}.{key}: not an ISO 8601 time") from error
    if parsed.tzinfo is None:
        raise MalformedGrantError(f"{what}.{key}: a timezone is required")
    return parsed.astimezone(dt.UTC)
