"""Authorised queries (DESIGN.md section 6): both ends of `credex.v1.Query/Query`.

Server side (`QueryEngine.answer`), for a request whose signature, signer and timestamp
`node.requests` has already accepted; its nonce is claimed with its access-log entry (step 6):

1. open the sealed subject identifier and normalise it by subject kind (RIC or USCC); it is
   used only to compute the blind index, the grant digest, the masked form and whether it is
   also a valid citizen ID number (then the policy applies the natural-person rules whatever
   kind is asked), and is never logged, stored or put into an error message;
2. find the subject's records here (own records, linked subjects included) and their states;
3. check the grant: a signed grant sent with the request is verified and registered first, one
   named by id is verified again from its stored signed copy against the current bundle (both
   refused as `grant_invalid` when its issuer is no longer trusted);
4. `node.policy.decide` (records judged by `node.lifecycle.visible` on today's China day),
   then every record it would release is checked against its signed body: the store's item,
   subject and link columns are what the policy judged, and a row that disagrees turns the
   request into a denial (`record_tampered`, DATA_LOSS) that releases nothing;
5. allowed with a grant: count its use (atomic); a use refused now (another query took the
   last one) turns the request into a denial with that reason;
6. append the ONE access-log entry of the request, allowed OR denied, with the request's nonce
   claim, and wait until it is durable (`LogUnavailable` = UNAVAILABLE: nothing leaves when the
   log cannot be written); a replayed nonce has a denial logged instead and is refused
   (UNAUTHENTICATED); in both cases a use counted in step 5 is given back;
7. denied: `PolicyDenied` (PERMISSION_DENIED, the message starts with the reason code);
   allowed: decrypt, minimise each record to the released fields (`SignedRecord.minimise`,
   signatures stay verifiable), seal the batch for the requester.

Client side (`send_query`): normalise the identifier, seal it to the provider, sign the request,
call, then open the sealed answer and verify every record against the provider's keys in the
trust bundle (producer = the peer asked). Only verified records come back (`AnsweredRecord`).

Every request that reaches the service is logged, including ones refused before the policy
(unauthenticated, malformed, bad identifier, invalid grant), so an officer sees attempts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import grpc.aio

import catalog
import keys
from node import wire
from node._pb.credex.v1 import common_pb2, query_pb2, query_pb2_grpc
from node.accesslog import LogEntry, NonceClaim, ReplayedRequest, utc_iso
from node.errors import (
    AuthError,
    InputError,
    LogUnavailable,
    NodeError,
    NotFound,
    PeerUnavailable,
    PolicyDenied,
    StaleBundle,
    TamperDetected,
)
from node.grants import (
    GrantRefusedError,
    is_grant_id,
    subject_digest,
    verify_grant,
    verify_registered_grant,
)
from node.lifecycle import china_day, is_red_list, visible
from node.policy import (
    SUBJECT_KINDS,
    PolicyContext,
    QueryRequest,
    RecordState,
    decide,
)
from node.refusals import asked_items
from node.requests import VerifiedRequest
from node.store import ReleaseCandidate
from node.trust import record_signing_keys

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

log = logging.getLogger(__name__)

__all__ = [
    "ANSWER_KIND",
    "QUERY_METHOD",
    "SUBJECT_SEAL_PURPOSE",
    "AnsweredRecord",
    "QueryAsk",
    "QueryEngine",
    "QueryResult",
    "build_body",
    "normalise_subject",
    "open_answer",
    "released_table",
    "send_query",
]

QUERY_METHOD = "/credex.v1.Query/Query"
SUBJECT_SEAL_PURPOSE = "query_subject"
ANSWER_KIND = "query_answer"
_CHINA = dt.timezone(dt.timedelta(hours=8))
# Record states a query looks at: superseded versions and purged bodies are never candidates;
# withdrawn and expired ones are passed to the policy so it can say why they are held back.
_CANDIDATE_STATES = ("active", "withdrawn", "expired")
# What a request may state as its legal basis (a law, an article, a case number), at most.
MAX_LEGAL_BASIS = 1024


def normalise_subject(value: str, kind: str, *, today: dt.date) -> str:
    """Return the canonical identifier of a subject: a GB 11643 RIC for a natural person, a
    GB 32100 USCC for an organisation or an individual business.

    Refuses (InputError) an unknown kind, and (catalog.InvalidIdentifier, whose message never
    echoes the value) an identifier that fails its check digit.
    """
    if kind not in SUBJECT_KINDS:
        shown = catalog.shown_text(kind)
        raise InputError(
            f"subject kind {shown!r}: must be one of {', '.join(sorted(SUBJECT_KINDS))}"
        )
    if kind == "natural_person":
        return catalog.normalize_ric(value, today=today)
    return catalog.normalize_uscc(value)


def _china_today(now: dt.datetime) -> dt.date:
    return now.astimezone(_CHINA).date()


def _is_citizen_id(subject: str, *, today: dt.date) -> bool:
    """True when the normalised identifier `subject` also passes the GB 11643 citizen ID number
    check: both kinds are 18 characters, and some identifiers pass both checks."""
    try:
        catalog.normalize_ric(subject, today=today)
    except catalog.InvalidIdentifier:
        return False
    return True


def _under_14(subject: str, *, today: dt.date) -> bool:
    """True when the identifier `subject` is an ID number whose holder is under 14 `today`."""
    age = catalog.ric_full_age(subject, today=today)
    return age is not None and age < 14


# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """What the server knows about a request once the policy has decided."""

    entry: LogEntry
    allowed: bool
    reason: str
    message: str
    grant_id: str | None
    grant_used: bool
    released: Mapping[str, frozenset[str]]
    # (candidate, its signed record as stored, objection flag as released, fields released on
    # it): the candidate carries the store's routing copies, checked against the signed header
    records: tuple[tuple[ReleaseCandidate, keys.SignedRecord, bool, frozenset[str]], ...]
    # what a denial raises; None: PolicyDenied with the reason and message
    error: NodeError | None = None


class _ReplayRefused(AuthError):
    """A replayed request, refused after its denial was logged."""

    access_logged = True


class _Refused(Exception):
    """A request refused before the policy: log it as denied, then raise `error`."""

    def __init__(self, reason: str, error: NodeError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class QueryEngine:
    """The provider's side of Query: decide, log durably, then release minimised sealed data.

    Holds no state of its own beyond the runtime; safe for concurrent calls (the access log
    group-commits, the grant ledger counts uses atomically).
    """

    def __init__(self, runtime: NodeRuntime) -> None:
        """Serve queries from `runtime`'s store, bundle, keys, grants and access log."""
        self._rt = runtime
        # On the embedded SQLite store, preparing an answer is in-process reads and CPU: a
        # worker-thread hop and its GIL hand-overs cost more than the loop would wait. A
        # database server means network round trips, which stay off the event loop.
        self._prepare_inline = runtime.store.dialect == "sqlite"

    async def answer(
        self, verified: VerifiedRequest, *, trace: str | None = None
    ) -> query_pb2.QueryAnswer:
        """Answer one authenticated query (see the module docstring for the steps).

        `verified` comes from `RequestAuthenticator.authenticate_unclaimed`: its nonce is
        recorded here, in the group commit of its access-log entry, before anything is
        released. Raises AuthError for a replayed nonce or an invalid grant signature,
        PolicyDenied for a denial, TamperDetected when a record it would release disagrees
        with its store row, InputError for a malformed body or identifier,
        LogUnavailable when the log fails; every one of these is logged as a denied access
        first (except a failing log, of course).
        """
        try:
            body = _parse_body(verified)
            # A signed grant sent along is registered, a write that may wait for the writer
            # lock behind an fsync: that never runs on the event loop.
            if self._prepare_inline and not body.grant:
                prepared = self._prepare(verified, body, trace)
            else:
                prepared = await asyncio.to_thread(self._prepare, verified, body, trace)
        except _Refused as refused:
            await self._log_refusal(verified, refused.reason, trace)
            raise refused.error from None
        if not prepared.allowed:
            await self._append_claiming(verified, prepared.entry)
            if prepared.error is not None:
                raise prepared.error
            raise PolicyDenied(prepared.reason, prepared.message)
        # The grant use is counted BEFORE the entry is written (docs/policy.md): a query that
        # loses the race for a grant's last use is logged once, as the denial it is, never as
        # an allow and then a deny under one request id.
        used = prepared.grant_id if prepared.grant_used else None
        if used is not None:
            try:
                await asyncio.to_thread(self._rt.grants.use, used, self._rt.clock())
            except GrantRefusedError as error:
                # Another query took the last use (or a revocation came) since the decision.
                denial = dataclasses.replace(
                    prepared.entry,
                    decision="deny",
                    reason=error.reason,
                    items_released=(),
                    result_count=0,
                )
                await self._append_claiming(verified, denial)
                raise
        try:
            index = await self._append_claiming(verified, prepared.entry)
        except (LogUnavailable, _ReplayRefused):
            # Nothing leaves without its durable entry (a failing log, a replayed nonce, whose
            # denial was logged instead): the use is given back, so a use is counted once per
            # answer. Not on cancellation: the group commit may still make the allow entry
            # durable, and a use refunded then would let a requester who cancels at the right
            # moment keep a grant's uses while its log shows releases.
            if used is not None:
                await self._refund_use(used)
            raise
        # Inline, not in a worker thread: releasing is a fraction of a millisecond of pure CPU
        # (no IO), and a thread hop plus the GIL hand-over around it cost about as much.
        return self._release(verified, prepared, index)

    async def _log_refusal(self, verified: VerifiedRequest, reason: str, trace: str | None) -> None:
        body = _try_body(verified)
        entry = LogEntry(
            time=utc_iso(self._rt.clock()),
            kind="query",
            requester=verified.node_id,
            officer=body.officer if body else "",
            purpose=body.purpose if body else "",
            legal_basis=body.legal_basis if body else "",
            decision="deny",
            reason=reason,
            request_id=(body.request_id if body and body.request_id else verified.nonce)[:64],
            items_asked=asked_items(body.items) if body else (),
            trace_id=trace,
        )
        await self._append_claiming(verified, entry)

    async def _append_claiming(self, verified: VerifiedRequest, entry: LogEntry) -> int:
        """Log `entry` with the request's nonce claim; AuthError (already logged as a denial)
        when the nonce was used before."""
        # A replay's denial keeps what the request asked (its body is signed, so it is the
        # replayed request's), and releases nothing.
        replayed = dataclasses.replace(
            entry, decision="deny", reason="replayed", items_released=(), result_count=0
        )
        claim = NonceClaim(
            keyid=verified.nonce_scope,
            nonce=verified.nonce,
            expires_at=verified.nonce_expires_at,
            now=verified.checked_at,
            replayed=replayed,
        )
        try:
            return await self._rt.log.append(entry, claim=claim)
        except ReplayedRequest as error:
            raise _ReplayRefused(f"{verified.method}: {error}", reason="replayed") from None

    def _prepare(
        self, verified: VerifiedRequest, body: query_pb2.QueryBody, trace: str | None
    ) -> _Prepared:
        rt = self._rt
        now = rt.clock()
        today = china_day(now)
        bundle = rt.bundle()
        try:
            _header, raw_subject = keys.open_sealed(
                body.sealed_subject,
                recipient_id=rt.node_id,
                private_key=rt.node_keys.encryption_private,
                expect={
                    "purpose": SUBJECT_SEAL_PURPOSE,
                    "request_id": body.request_id,
                    "sender": verified.node_id,
                },
            )
            local_day = _china_today(now)
            subject = normalise_subject(
                raw_subject.decode("utf-8"), body.subject_kind, today=local_day
            )
            citizen_id = body.subject_kind == "natural_person" or _is_citizen_id(
                subject, today=local_day
            )
        except keys.VerificationError:
            raise _Refused(
                "malformed_request",
                InputError("QueryBody.sealed_subject: not sealed to this node for this request"),
            ) from None
        except UnicodeDecodeError:
            raise _Refused(
                "invalid_subject", InputError("QueryBody.sealed_subject: not UTF-8 text")
            ) from None
        except catalog.InvalidIdentifier as error:
            raise _Refused("invalid_subject", InputError(f"subject identifier: {error}")) from None
        except InputError as error:
            raise _Refused("invalid_subject", error) from None
        token = rt.blind.token(subject)
        digest = subject_digest(subject)
        grant_id, fresh = self._grant_id(body, bundle, now)
        state = rt.grants.get(grant_id) if grant_id else None
        if (
            state is not None
            and not fresh
            and state.grant.grantee == verified.node_id
            and state.grant.subject_digest == digest
        ):
            # Registered under an earlier bundle: the issuer's key may have been revoked or its
            # platform role dropped since. Checked only for the grantee asking about the grant's
            # own subject: anyone else is refused by the policy (grantee or subject mismatch)
            # without learning anything about the issuer.
            try:
                verify_registered_grant(state, bundle=bundle, now=now)
            except (AuthError, InputError) as error:
                raise _Refused(
                    "grant_invalid",
                    AuthError(f"registered grant: {error}; ask the platform for a new grant"),
                ) from None
        # A registered grant carries its recorded revocation; one never registered here may
        # still have been revoked already.
        revoked = (
            state.revoked
            if state is not None
            else grant_id is not None and rt.grants.revocation(grant_id) is not None
        )
        found = rt.store.release_candidates(token, producer=rt.node_id, states=_CANDIDATE_STATES)
        linked = frozenset(r.row_id for r in found if r.subject_index != token)
        opened: dict[str, keys.SignedRecord | None] = {}
        stored = [r for r in found if r.row_id not in linked or self._linkable(r, opened)]
        items = frozenset(body.items)
        try:
            narrowed = requested_fields(body.fields)
        except InputError as error:
            raise _Refused("malformed_request", error) from None
        request = QueryRequest(
            requester=verified.node_id,
            requester_keyid=verified.keyid,
            officer=body.officer,
            subject_kind=body.subject_kind,
            items=items,
            purpose=body.purpose,
            legal_basis=body.legal_basis,
            grant_id=grant_id,
            subject_digest=digest,
            requested_fields=narrowed,
            subject_is_citizen_id=citizen_id,
            subject_under_14=citizen_id and _under_14(subject, today=_china_today(now)),
        )
        context = PolicyContext(
            now=now,
            node_id=rt.node_id,
            bundle=bundle,
            items={i: rt.catalogue.items[i] for i in items if i in rt.catalogue.items},
            grant=state.grant if state else None,
            grant_uses=state.uses if state else 0,
            grant_revoked=revoked,
            records=[
                RecordState(
                    record_id=r.row_id,
                    item_id=r.item_id,
                    withdrawn=r.state == "withdrawn",
                    # judged today, not only by the last lifecycle scan: a record past its
                    # disclosure end (or the 5-year cap) is held back from that day on
                    expired=not visible(
                        state=r.state,
                        severity=r.severity,
                        decided_on=r.decided_on,
                        disclosure_max_end=r.disclosure_max_end,
                        today=today,
                    ),
                    objection=r.objection,
                    linked=r.row_id in linked,
                )
                for r in stored
            ],
        )
        decision = decide(request, context)
        released: list[tuple[ReleaseCandidate, keys.SignedRecord, bool, frozenset[str]]] = []
        tampered = False
        for r in found:
            if not r.intact:
                # The policy decided on its columns (state, flag, window), written without the
                # storage key: whatever it would release, nothing leaves (decision 0018).
                log.error(
                    "query %s: stored record %s fails its integrity tag; nothing released; "
                    "run `credex store verify` and restore the row from a backup",
                    catalog.shown_text(body.request_id),  # the requester's text
                    r.row_id,
                )
                tampered = True
        for r in stored:
            if not r.intact:
                continue  # refused above; its columns are not worth comparing
            fields = decision.fields_for(r.row_id, r.item_id)
            if fields is None:
                continue
            signed = self._open(r, opened)
            problem = self._stored_problem(r, signed, token=token, linked=r.row_id in linked)
            if problem is not None or signed is None:
                # The row id and what disagrees go to the operator, never to the requester.
                log.error(
                    "query %s: stored record %s not released: %s; restore the row from a "
                    "backup or re-ingest it",
                    catalog.shown_text(body.request_id),  # the requester's text
                    r.row_id,
                    problem,
                )
                tampered = True
                continue
            released.append((r, signed, r.row_id in decision.flagged, fields))
        if tampered:
            # The policy judged the store's columns; a record whose columns disagree with its
            # signed body may have been judged as something it is not: nothing leaves.
            released = []
        entry = LogEntry(
            time=utc_iso(now),
            kind="query",
            requester=verified.node_id,
            officer=body.officer,
            purpose=body.purpose,
            legal_basis=body.legal_basis,
            decision="allow" if decision.allowed and not tampered else "deny",
            reason="record_tampered" if tampered else decision.reason,
            request_id=body.request_id,
            grant_id=grant_id,
            subject_index=token,
            subject_masked=catalog.mask_identifier(subject),
            items_asked=asked_items(items),
            items_released=tuple(sorted({r.item_id for r, _signed, _flag, _fields in released})),
            result_count=len(released),
            trace_id=trace,
        )
        if tampered:
            return _Prepared(
                entry=entry,
                allowed=False,
                reason="record_tampered",
                message="",
                grant_id=grant_id,
                grant_used=False,
                released={},
                records=(),
                error=TamperDetected(
                    "a record this query would release fails the provider's integrity check "
                    "(its store row disagrees with its signed body); nothing was released and "
                    "the provider's node log names the row for its operator"
                ),
            )
        return _Prepared(
            entry=entry,
            allowed=decision.allowed,
            reason=decision.reason,
            message=decision.message,
            grant_id=grant_id,
            grant_used=decision.grant_used,
            released=decision.released,
            records=tuple(released),
        )

    def _open(
        self, candidate: ReleaseCandidate, opened: dict[str, keys.SignedRecord | None]
    ) -> keys.SignedRecord | None:
        """The signed record stored in `candidate` (decrypted once per query, kept in
        `opened`); None when it does not decrypt or parse."""
        if candidate.row_id not in opened:
            try:
                opened[candidate.row_id] = keys.SignedRecord.from_bytes(
                    self._rt.cipher.decrypt(candidate.row_id, candidate.body)
                )
            except keys.KeysError:
                opened[candidate.row_id] = None
        return opened[candidate.row_id]

    def _stored_problem(
        self,
        candidate: ReleaseCandidate,
        signed: keys.SignedRecord | None,
        *,
        token: str,
        linked: bool,
    ) -> str | None:
        """What about `candidate`'s store row disagrees with its signed record, or None.

        The policy decides on the row's columns (item, subject blind index, linked blind
        indexes), which someone with write access to the database but without the keys can
        change; the body they cannot (AEAD under the storage key, bound to the row id), so its
        signed header and fields are the truth. A record found through a link must name the
        subject asked about in one of its item's linked-person fields."""
        if signed is None:
            return "the body does not decrypt or parse"
        row = {
            "item": candidate.item_id,
            "record_key": candidate.record_key,
            "version": candidate.version,
            "producer": self._rt.node_id,
            "subject": candidate.subject_index,
        }
        problem = wire.stored_row_problem(signed.envelope.payload, row)
        if problem is not None:
            return problem
        if linked:
            item = self._rt.catalogue.items.get(candidate.item_id)
            names = item.linked_id_fields if item is not None else ()
            tokens = {
                self._rt.blind.token(value)
                for fid, (_salt, value) in signed.disclosures.items()
                if fid in names and value
            }
            if token not in tokens:
                return "it is linked to a subject none of its linked-person fields names"
        return None

    def _linkable(
        self, candidate: ReleaseCandidate, opened: dict[str, keys.SignedRecord | None]
    ) -> bool:
        """May `candidate`, found through a link to the subject asked about, be answered as
        such? Only an organisation's or individual business's record (Shandong Art. 31: the
        persons responsible for it): a natural person's record naming someone (a child's
        legal representative, stored so by an earlier release) stays that person's own, under
        their own grant and the under-14 rule, and is not found through the other person."""
        item = self._rt.catalogue.items.get(candidate.item_id)
        if item is None:
            return False
        if "natural_person" not in item.subject_kinds:
            return True
        signed = self._open(candidate, opened)
        if signed is None:
            return False  # unreadable here: certainly not released through a link
        fields = {fid: value for fid, (_salt, value) in signed.disclosures.items()}
        kind = catalog.record_subject_kind(candidate.item_id, fields, catalog=self._rt.catalogue)
        return kind in ("organisation", "individual_business")

    def _grant_id(
        self, body: query_pb2.QueryBody, bundle: keys.TrustBundle, now: dt.datetime
    ) -> tuple[str | None, bool]:
        """The grant the request names, and whether it came signed with this request (then it
        is verified and registered here, now)."""
        named = body.grant_id or None
        if not body.grant:
            return named, False
        try:
            grant = verify_grant(bytes(body.grant), bundle=bundle, now=now)
        except AuthError as error:
            raise _Refused("grant_invalid", error) from None
        except InputError as error:
            raise _Refused("grant_invalid", error) from None
        if named is not None and named != grant.grant_id:
            raise _Refused(
                "grant_mismatch",
                InputError("QueryBody: grant_id and the signed grant name different grants"),
            )
        try:
            self._rt.grants.register(grant, bytes(body.grant))
        except InputError as error:
            raise _Refused("grant_invalid", error) from None
        return grant.grant_id, True

    async def _refund_use(self, grant_id: str) -> None:
        # On failure the use stays counted: one use too many spent on an answer that never
        # left is the safe side, and the caller's error is the one to report.
        with contextlib.suppress(NodeError):
            await asyncio.to_thread(self._rt.grants.refund_use, grant_id)

    def _release(
        self, verified: VerifiedRequest, prepared: _Prepared, index: int
    ) -> query_pb2.QueryAnswer:
        rt = self._rt
        payloads: list[bytes] = []
        for candidate, signed, objection, fields in prepared.records:
            item_id = candidate.item_id
            minimal = signed.minimise(fields)
            red = is_red_list(rt.catalogue.item(item_id).category)
            # Routing copies from the store's columns (ingest took them from the verified
            # payload): the requester checks them against the signature anyway.
            routing = wire.Routing(item_id, candidate.record_key, candidate.version, rt.node_id)
            message = wire.record_to_pb(minimal, objection=objection, red_list=red, routing=routing)
            payloads.append(message.SerializeToString())
        member = rt.bundle().member(verified.node_id)
        if member is None:  # the policy refused non-members; a bundle swap in between
            raise StaleBundle(f"node {verified.node_id} left the roster during the query")
        entry = prepared.entry
        sealed = keys.seal_batch(
            payloads,
            header={
                "kind": ANSWER_KIND,
                "sender": rt.node_id,
                "purpose": entry.purpose,
                "request_id": entry.request_id,
            },
            recipient_id=verified.node_id,
            recipient_public=member.encryption_key,
        )
        return query_pb2.QueryAnswer(
            sealed=sealed,
            decision="allow",
            reason=prepared.reason,
            result_count=len(payloads),
            request_id=entry.request_id,
            log_index=index,
            released_fields=sorted(
                f"{item}.{f}" for item, fields in prepared.released.items() for f in fields
            ),
        )


def _parse_body(verified: VerifiedRequest) -> query_pb2.QueryBody:
    """The request's QueryBody; `_Refused` (malformed_request) when it does not parse, its
    request id is not 1-64 characters, its legal basis is longer than `MAX_LEGAL_BASIS`
    characters or its grant id is not one (`node.grants.is_grant_id`)."""
    try:
        body = verified.parse(query_pb2.QueryBody)
    except InputError as error:
        raise _Refused("malformed_request", error) from None
    if not body.request_id or len(body.request_id) > 64:
        raise _Refused("malformed_request", InputError("QueryBody.request_id: 1-64 characters"))
    if len(body.legal_basis) > MAX_LEGAL_BASIS:
        raise _Refused(
            "malformed_request",
            InputError(f"QueryBody.legal_basis: at most {MAX_LEGAL_BASIS} characters"),
        )
    if body.grant_id and not is_grant_id(body.grant_id):
        raise _Refused(
            "malformed_request",
            InputError("QueryBody.grant_id: 1-128 letters, digits and . _ : - (a grant id)"),
        )
    return body


def _try_body(verified: VerifiedRequest) -> query_pb2.QueryBody | None:
    try:
        return verified.parse(query_pb2.QueryBody)
    except InputError:
        return None


# --- the client --------------------------------------------------------------------------------


def requested_fields(names: Sequence[str]) -> dict[str, frozenset[str]]:
    """Group "item.field" names by item (the policy's `requested_fields`).

    Refuses (InputError) a name that is not `item.field`.
    """
    grouped: dict[str, set[str]] = {}
    for name in names:
        item, dot, fid = name.partition(".")
        if not dot or not item or not fid:
            shown = catalog.shown_text(name, 128)
            raise InputError(f"--fields: {shown!r} is not ITEM.FIELD")
        grouped.setdefault(item, set()).add(fid)
    return {item: frozenset(fids) for item, fids in grouped.items()}


@dataclass(frozen=True)
class QueryAsk:
    """What an officer asks a peer: the subject (as typed), items, purpose and authority."""

    peer: str
    subject: str
    subject_kind: str
    items: tuple[str, ...]
    purpose: str
    legal_basis: str
    officer: str
    grant_id: str | None = None
    grant: bytes | None = None  # a signed grant file to send along (registered by the peer)
    fields: tuple[str, ...] = ()  # optional narrowing, "item.field" each
    request_id: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass(frozen=True)
class AnsweredRecord:
    """One record of an answer, verified against the provider's signing key."""

    item_id: str
    record_key: str
    version: int
    producer: str
    fields: Mapping[str, str]
    hidden: frozenset[str]
    objection: bool


@dataclass(frozen=True)
class QueryResult:
    """A verified answer: the provider's log index for the access and the records."""

    peer: str
    request_id: str
    reason: str
    log_index: int
    released_fields: tuple[str, ...]
    records: tuple[AnsweredRecord, ...]


def build_body(
    ask: QueryAsk, *, requester: str, provider_key: bytes, now: dt.datetime
) -> query_pb2.QueryBody:
    """Return the request body for `ask`, with the normalised identifier sealed to the provider.

    Refuses (InputError / catalog.InvalidIdentifier) a bad kind or identifier before anything
    is sent, and an empty item list.
    """
    if not ask.items:
        raise InputError("--items: name at least one catalogue item")
    subject = normalise_subject(ask.subject, ask.subject_kind, today=_china_today(now))
    sealed = keys.seal(
        subject.encode("utf-8"),
        header={
            "purpose": SUBJECT_SEAL_PURPOSE,
            "request_id": ask.request_id,
            "sender": requester,
        },
        recipients={ask.peer: provider_key},
    )
    return query_pb2.QueryBody(
        request_id=ask.request_id,
        officer=ask.officer,
        purpose=ask.purpose,
        legal_basis=ask.legal_basis,
        items=list(ask.items),
        subject_kind=ask.subject_kind,
        sealed_subject=sealed,
        grant=ask.grant or b"",
        grant_id=ask.grant_id or "",
        fields=list(ask.fields),
    )


def open_answer(
    answer: query_pb2.QueryAnswer,
    *,
    ask: QueryAsk,
    recipient_id: str,
    private_key: bytes,
    trusted: Mapping[str, bytes],
) -> QueryResult:
    """Open a sealed answer and verify every record in it.

    Promises: the batch was sealed by `ask.peer` for this request and purpose; every record's
    signature verifies with `trusted` (the peer's keys), its producer is the peer, its routing
    copies agree with the signed payload and it carries no field the answer did not release.
    Raises keys.VerificationError (exit 3) otherwise.
    """
    _header, payloads = keys.open_batch(
        answer.sealed,
        recipient_id=recipient_id,
        private_key=private_key,
        expect={
            "kind": ANSWER_KIND,
            "sender": ask.peer,
            "purpose": ask.purpose,
            "request_id": ask.request_id,
        },
    )
    if len(payloads) != answer.result_count:
        raise keys.VerificationError("the answer's record count does not match its header")
    released = frozenset(answer.released_fields)
    records: list[AnsweredRecord] = []
    for payload in payloads:
        try:
            message = wire.parse(common_pb2.Record, payload, what="answered record")
            signed = wire.record_from_pb(message)
            verified = keys.verify_record(signed, trusted=trusted)
            wire.check_record_routing(message, verified.header)
        except InputError as error:
            raise keys.VerificationError(f"an answered record is malformed: {error}") from None
        header = verified.header
        if header.get("producer") != ask.peer:
            raise keys.VerificationError("an answered record was produced by another node")
        item = str(header.get("item", ""))
        if any(f"{item}.{f}" not in released for f in verified.fields):
            raise keys.VerificationError("an answered record carries a field not released")
        records.append(
            AnsweredRecord(
                item_id=item,
                record_key=str(header.get("record_key", "")),
                version=int(header.get("version", 0)),
                producer=ask.peer,
                fields=dict(verified.fields),
                hidden=verified.hidden,
                objection=message.flags.objection,
            )
        )
    return QueryResult(
        peer=ask.peer,
        request_id=answer.request_id,
        reason=answer.reason,
        log_index=answer.log_index,
        released_fields=tuple(answer.released_fields),
        records=tuple(records),
    )


_CODE_ERRORS: Mapping[grpc.StatusCode, Callable[[str], NodeError]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.INVALID_ARGUMENT: InputError,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: StaleBundle,
    grpc.StatusCode.DATA_LOSS: TamperDetected,
}


async def _call_error(rt: NodeRuntime, peer: str, error: grpc.aio.AioRpcError) -> NodeError:
    """Turn a failed call into the credex error a person can act on."""
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.PERMISSION_DENIED:
        reason, _sep, message = details.partition(": ")
        return PolicyDenied(reason or "denied", message or details)
    if code == grpc.StatusCode.UNAVAILABLE:
        from node.transport import (  # noqa: PLC0415 - only on the failure path
            ChannelIdentity,
            UnavailableCause,
            diagnose_unavailable,
        )

        diagnosis = await diagnose_unavailable(
            rt.peer_endpoint(peer),
            peer=rt.tls_roster().peer(peer),
            identity=ChannelIdentity(
                key_pem=rt.node_keys.tls_key_pem, cert_pem=rt.node_keys.tls_cert_pem
            ),
        )
        if diagnosis.cause == UnavailableCause.TLS_OK:
            return PeerUnavailable(f"peer {peer}: {details}")
        return PeerUnavailable(f"peer {peer}: {diagnosis.message}")
    make = _CODE_ERRORS.get(code)
    if make is not None:
        return make(f"peer {peer}: {details}")
    return NodeError(f"peer {peer}: {code.name if code else 'error'}: {details}")


async def send_query(
    rt: NodeRuntime,
    ask: QueryAsk,
    *,
    timeout: float = 30.0,
    channel: grpc.aio.Channel | None = None,
) -> QueryResult:
    """Ask `ask.peer` over mutual TLS and return the verified answer.

    Raises PolicyDenied (exit 1) with the peer's reason code on a denial, AuthError when the
    peer refused our signature, PeerUnavailable when it cannot be reached (with a diagnosis),
    keys.VerificationError (exit 3) when the answer does not verify.
    """
    bundle = rt.bundle()
    member = bundle.member(ask.peer)
    if member is None:
        raise NotFound(f"peer {ask.peer!r} is not in the trust bundle's roster")
    now = rt.clock()
    body = build_body(ask, requester=rt.node_id, provider_key=member.encryption_key, now=now)
    signed = rt.sign_request(QUERY_METHOD, body.SerializeToString())
    own = channel is None
    chan = rt.channel(ask.peer) if channel is None else channel
    try:
        stub = query_pb2_grpc.QueryStub(chan)
        try:
            answer = await stub.Query(signed, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise await _call_error(rt, ask.peer, error) from None
    finally:
        if own:
            await chan.close()
    return open_answer(
        answer,
        ask=ask,
        recipient_id=rt.node_id,
        private_key=rt.node_keys.encryption_private,
        # records signed before a key rotation stay good after its overlap (node/trust.py)
        trusted=record_signing_keys(bundle, ask.peer, rt.clock()),
    )


def released_table(result: QueryResult) -> Sequence[tuple[str, str, str]]:
    """Rows (item, record, fields) for printing an answer; fields as `id=value` pairs."""
    rows = []
    for rec in result.records:
        fields = "; ".join(f"{k}={v}" for k, v in sorted(rec.fields.items()))
        flag = " [objection pending]" if rec.objection else ""
        rows.append((rec.item_id, f"{rec.record_key[:12]} v{rec.version}{flag}", fields))
    return rows
