"""Feeds, the subscriber's side: pull a provider's feed, verify it, store it, acknowledge it.

A provider streams its events for us (`Exchange.Subscribe`) as sealed batches. For each batch,
`apply_batch`:
1. checks the batch continues our cursor without a gap (`first_seq == cursor + 1`) and opens it
   with `keys.open_batch`, expecting the header {purpose "feed", sender = the peer, recipient =
   us, first/last seq} (a batch sealed for someone else, for another range, or changed in any
   byte does not open);
2. verifies EVERY record of the batch against the peer's own signing keys in the trust bundle
   (the producer must be the peer we pull from) before storing anything, so a tampered batch
   or a bad signature stores nothing and stops the pull (`keys.VerificationError`, exit 3);
3. applies the events in order, idempotently: a record version already stored is skipped,
   lifecycle events (withdraw, expire, objection set/cleared) move the stored copy's state only
   when it differs, and the upstream cursor is written in the same transaction: the whole
   batch is one transaction, which first locks the cursor row (another pull of the feed waits,
   then is refused). A new copy is stored with its objection flag in its own row; a version
   already held takes the flag its event carries. A crash anywhere
   re-delivers from the last written cursor; replaying a prefix of a batch in order reaches
   the same state, so delivery is at least once and applying is exactly once in effect.
Then `pull` sends a signed receipt (`Exchange.Ack`) so the provider moves its durable cursor.

Subject index of a received record: the producer's blind token is meaningless here (another
key), so the subscriber re-validates the disclosed fields against its catalogue and indexes the
subject with ITS OWN blind index (`runtime.blind`), exactly as a local ingest would: the
platform then answers `records_by_subject` for its copies. A record whose fields do not
validate here (catalogue drift, a minimised record without the identifier) is still stored, its
subject index being our blind token of "<producer>:<producer token>", which no subject lookup
matches (documented in docs/feeds.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

import catalog
import keys
from node import lifecycle, wire
from node._pb.credex.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc
from node.errors import (
    AuthError,
    InputError,
    NodeError,
    NotDelivered,
    NotFound,
    PeerUnavailable,
    PolicyDenied,
    TamperDetected,
)
from node.feedcheck import CheckedRecord, Refused, checked_from_verified
from node.store import NewRecord
from node.store import pushed as pushed_store
from node.telemetry import active_telemetry
from node.trust import record_signing_keys

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = [
    "ACK_METHOD",
    "FEED_PURPOSE",
    "PUSH_METHOD",
    "PUSH_PURPOSE",
    "RECEIPT_PAYLOAD_TYPE",
    "SUBSCRIBE_METHOD",
    "PullResult",
    "PushWithdrawal",
    "about_feed",
    "apply_batch",
    "apply_push_withdrawal",
    "feed_header",
    "feed_providers",
    "feed_subject",
    "follow_feeds",
    "pull",
    "push_request_body",
    "push_withdrawal_body",
    "received_record",
    "reported_head",
    "sign_receipt",
    "verify_receipt",
]

log = logging.getLogger(__name__)

FEED_PURPOSE = "feed"
PUSH_PURPOSE = "push"
RECEIPT_PAYLOAD_TYPE = "application/vnd.credex.receipt.v1+protobuf"
SUBSCRIBE_METHOD = "/credex.v1.Exchange/Subscribe"
ACK_METHOD = "/credex.v1.Exchange/Ack"
PUSH_METHOD = "/credex.v1.Exchange/Push"

_STATE_OF_EVENT = {"withdraw": "withdrawn", "expire": "expired"}
_EVENT_OF_STATE = {state: kind for kind, state in _STATE_OF_EVENT.items()}
# A withheld upsert/correct whose reason says the record stopped being shared: our copy of an
# earlier version stops too (a purged record is, for us, withdrawn).
_STATE_OF_WITHHELD = {"withdrawn": "withdrawn", "expired": "expired", "purged": "withdrawn"}
# Why we skipped a record the provider sent: no feed agreement of ours covers its item.
_NOT_AGREED = "not_agreed"
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0


# -- shared by both ends -------------------------------------------------------------------------


def feed_header(provider: str, subscriber: str, first_seq: int, last_seq: int) -> dict[str, Any]:
    """The authenticated header of a sealed feed batch (bound as AEAD associated data)."""
    return {
        "purpose": FEED_PURPOSE,
        "sender": provider,
        "recipient": subscriber,
        "first_seq": first_seq,
        "last_seq": last_seq,
    }


def feed_subject(provider: str) -> str:
    """What a feed receipt acknowledges: the feed of `provider` (receipt `subject`)."""
    return f"feed:{provider}"


def sign_receipt(fields: wire.ReceiptFields, signer: keys.Signer) -> common_pb2.SignedReceipt:
    """A DSSE envelope (RECEIPT_PAYLOAD_TYPE) over the serialized receipt, signed by `signer`."""
    envelope = keys.sign_envelope(RECEIPT_PAYLOAD_TYPE, wire.receipt_to_bytes(fields), signer)
    return common_pb2.SignedReceipt(envelope=envelope.to_bytes())


def verify_receipt(
    signed: common_pb2.SignedReceipt, *, trusted: Mapping[str, bytes]
) -> wire.ReceiptFields:
    """Verify a signed receipt against `trusted` (keyid -> key) and return its fields.

    Refuses (AuthError) an empty or malformed envelope, a signature by no trusted key, and a
    payload that is not a receipt. The caller checks issuer, subject and digest.
    """
    if not signed.envelope:
        raise AuthError("receipt: not signed (empty envelope)", reason="malformed_request")
    try:
        envelope = keys.Envelope.from_bytes(signed.envelope)
        payload = keys.verify_envelope(envelope, payload_type=RECEIPT_PAYLOAD_TYPE, trusted=trusted)
    except keys.KeysError:
        raise AuthError(
            "receipt: the signature does not verify under the issuer's keys",
            reason="bad_signature",
        ) from None
    try:
        return wire.receipt_from_bytes(payload)
    except InputError as error:
        raise AuthError(f"receipt: {error}", reason="malformed_request") from None


def feed_providers(bundle: keys.TrustBundle, node_id: str) -> dict[str, frozenset[str]]:
    """provider -> items of the bundle's "feed" agreements whose consumer is `node_id`."""
    out: dict[str, set[str]] = {}
    for agreement in bundle.agreements:
        if agreement.kind == "feed" and agreement.consumer == node_id:
            out.setdefault(agreement.provider, set()).update(agreement.items)
    return {provider: frozenset(items) for provider, items in out.items()}


def push_request_body(
    record: keys.SignedRecord,
    *,
    sender: str,
    recipient: str,
    recipient_key: bytes,
    notice_id: str,
) -> exchange_pb2.PushNotice:
    """A joint-punishment notice: `record` (signed by its producer) sealed for `recipient`.

    The sealed header binds purpose "push", the sender and the notice id, so a notice cannot be
    replayed under another id or presented as another node's.
    """
    message = wire.record_to_pb(record)
    sealed = keys.seal(
        message.SerializeToString(),
        header={"purpose": PUSH_PURPOSE, "sender": sender, "notice_id": notice_id},
        recipients={recipient: recipient_key},
    )
    return exchange_pb2.PushNotice(notice_id=notice_id, sealed=sealed, items=[message.item_id])


@dataclass(frozen=True)
class PushWithdrawal:
    """An opened withdraw/expire push notice: which record of the sender stops being shared."""

    kind: str  # "withdraw" or "expire"
    record_key: str
    version: int
    item_id: str
    reason: str


def push_withdrawal_body(
    withdrawal: PushWithdrawal,
    *,
    at: dt.datetime,
    sender: str,
    recipient: str,
    recipient_key: bytes,
    notice_id: str,
) -> exchange_pb2.PushNotice:
    """A notice that a pushed entry stopped being shared (repair, revocation: "withdraw"; end of
    disclosure: "expire"), sealed for `recipient`.

    The sealed payload is a FeedEvent without a record; the sealed header binds purpose "push",
    the sender, the notice id and the kind, so a withdrawal cannot pass for an entry or the
    other way round. Refuses (InputError) another kind.
    """
    if withdrawal.kind not in _STATE_OF_EVENT:
        raise InputError(f"push: {withdrawal.kind!r} is not a withdrawal kind")
    event = common_pb2.FeedEvent(
        kind=wire.event_kind_to_pb(withdrawal.kind),
        record_key=withdrawal.record_key,
        version=withdrawal.version,
        item_id=withdrawal.item_id,
        at=wire.timestamp_to_pb(at),
        reason=withdrawal.reason,
    )
    sealed = keys.seal(
        event.SerializeToString(),
        header={
            "purpose": PUSH_PURPOSE,
            "sender": sender,
            "notice_id": notice_id,
            "kind": withdrawal.kind,
        },
        recipients={recipient: recipient_key},
    )
    return exchange_pb2.PushNotice(
        notice_id=notice_id,
        sealed=sealed,
        items=[withdrawal.item_id],
        kind=wire.event_kind_to_pb(withdrawal.kind),
    )


def apply_push_withdrawal(
    runtime: NodeRuntime, producer: str, withdrawal: PushWithdrawal, *, now: dt.datetime
) -> int:
    """Apply a verified withdraw/expire push notice from `producer` to our copy of its record
    (only a copy of `producer`'s own record is ever touched); 1 if a copy changed, else 0 (no
    copy, already in that state, or purged: a retried notice changes nothing).

    When we hold no copy of the version the notice names (its entry, sent by another process
    of the producer, may still be on its way), a tombstone is recorded first, so that entry is
    not stored active when it lands (node/store/pushed.py); a copy of an earlier version is
    still ended here.
    """
    pushed_store.tombstone_unless_held(
        runtime.store,
        producer,
        withdrawal.record_key,
        withdrawal.version,
        withdrawal.kind,
        now=now,
    )
    event = _Event(
        seq=0,
        kind=withdrawal.kind,
        record_key=withdrawal.record_key,
        version=withdrawal.version,
        record=None,
        objection=False,
    )
    return _apply_lifecycle(runtime, producer, event, now=now)


def received_record(
    runtime: NodeRuntime,
    signed: keys.SignedRecord,
    verified: keys.VerifiedRecord,
    *,
    now: dt.datetime,
) -> NewRecord:
    """The store row for a verified record received from its producer (origin "received").

    The body is the signed record exactly as received, encrypted at rest under a fresh row id;
    the subject is indexed with this node's blind index (see the module docstring). Its fields
    are re-validated on the China day of `now`, the day its producer validated them on.
    """
    today = lifecycle.china_day(now)
    checked = checked_from_verified(verified, today=today, catalogue=runtime.catalogue)
    return _Receiver(runtime, now).row(signed.to_bytes(), checked)


class _Receiver:
    """Builds the store rows of received records; what does not change within a batch (keys,
    day) is looked up once, not per record."""

    __slots__ = ("_blind", "_cipher", "_now")

    def __init__(self, runtime: NodeRuntime, now: dt.datetime) -> None:
        self._blind = runtime.blind
        self._cipher = runtime.cipher
        self._now = now

    def row(self, body: bytes, checked: CheckedRecord, *, objection: bool = False) -> NewRecord:
        """The row of `checked`, whose compact signed form is `body` (received_record): the
        keyed steps (blind index, at-rest encryption) on top of what checking found; flagged
        with the producer's `objection`."""
        header = checked.header
        producer = str(header["producer"])
        blind = self._blind
        if checked.subject_id is not None:
            subject = blind.token(checked.subject_id)
            linked = tuple(blind.token(s) for s in checked.linked_subject_ids)
        else:
            subject = blind.token(f"{producer}:{header.get('subject', '')}")
            linked = ()
        severity, decided_on = checked.severity, checked.decided_on
        # the producer's own window (node/sealer.py): a copy must not outlive the original
        period = catalog.record_period(
            severity,
            decided_on,
            conduct_ended_on=checked.conduct_ended_on,
            disclosure_end=checked.disclosure_end,
        )
        row_id = str(uuid.uuid4())
        return NewRecord(
            row_id=row_id,
            producer=producer,
            record_key=str(header["record_key"]),
            version=int(header["version"]),
            item_id=str(header["item"]),
            catalog_version=str(header["catalog_version"]),
            subject_index=subject,
            body=self._cipher.encrypt(row_id, body),
            content_hash=checked.content_hash,
            severity=severity,
            decided_on=decided_on,
            disclosure_min_end=period.min_end,
            disclosure_max_end=period.max_end,
            disclosure_rule=period.rule,
            created_at=self._now,
            origin="received",
            linked_subject_indexes=linked,
            objection=objection,
        )


# -- the subscriber ------------------------------------------------------------------------------


@dataclass
class PullResult:
    """What a pull did: batches and events applied, record versions stored, lifecycle changes
    applied, events skipped (already applied, or withheld by the provider), final cursor."""

    peer: str
    batches: int = 0
    events: int = 0
    stored: int = 0
    applied: int = 0
    skipped: int = 0
    cursor: int = 0

    def add(self, other: PullResult) -> None:
        """Accumulate another batch's counts (the cursor is the later one)."""
        self.batches += other.batches
        self.events += other.events
        self.stored += other.stored
        self.applied += other.applied
        self.skipped += other.skipped
        self.cursor = max(self.cursor, other.cursor)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {
            "peer": self.peer,
            "batches": self.batches,
            "events": self.events,
            "stored": self.stored,
            "applied": self.applied,
            "skipped": self.skipped,
            "cursor": self.cursor,
        }


@dataclass(frozen=True)
class _Event:
    seq: int
    kind: str
    record_key: str
    version: int
    record: NewRecord | None
    objection: bool
    reason: str = ""  # why the provider withheld an upsert/correct's record ("" if it did not)


def _open_events(
    runtime: NodeRuntime, peer: str, batch: exchange_pb2.SealedBatch, *, cursor: int
) -> list[_Event]:
    """Open and verify a whole batch; nothing is stored here, so a failure stores nothing.
    Recorded as the stages "pull.open" (unseal, parse the events) and "pull.verify" (check
    every record and build its row), once per batch."""
    telemetry = active_telemetry()
    attributes = {"credex.peer": peer}
    with telemetry.stage("pull.open", attributes=attributes) as opening:
        parsed, bodies = _unsealed_events(runtime, peer, batch, cursor=cursor)
        opening.items = len(parsed)
        opening.set_attributes({"credex.batch_size": len(parsed)})
    with telemetry.stage("pull.verify", items=len(bodies), attributes=attributes):
        return _checked_events(runtime, peer, parsed, bodies)


_Parsed = list[tuple[common_pb2.FeedEvent, str, bytes | None]]


def _unsealed_events(
    runtime: NodeRuntime, peer: str, batch: exchange_pb2.SealedBatch, *, cursor: int
) -> tuple[_Parsed, list[bytes]]:
    """The batch's events in order, each with its kind and its record's compact body (if
    any), and those bodies: the sealed batch opened, nothing verified yet."""
    me = runtime.node_id
    if batch.provider != peer:
        named = catalog.shown_text(batch.provider)  # the peer's text
        raise AuthError(f"feed of {peer}: a batch names {named!r} as its provider")
    if batch.first_seq != cursor + 1 or batch.last_seq < batch.first_seq:
        raise InputError(
            f"feed of {peer}: batch {batch.first_seq}..{batch.last_seq} does not continue "
            f"cursor {cursor} (a gap or a replay); pull again to resume from the cursor"
        )
    _, payloads = keys.open_batch(
        batch.sealed,
        recipient_id=me,
        private_key=runtime.node_keys.encryption_private,
        expect=feed_header(peer, me, batch.first_seq, batch.last_seq),
    )
    if len(payloads) != batch.last_seq - batch.first_seq + 1:
        raise keys.VerificationError("sealed feed batch does not hold its announced range")
    # First the events themselves, in order; then every record of the batch is checked at
    # once (perhaps by worker processes); then, in order again, each checked record must
    # match its event and its provider before it becomes a row.
    parsed: _Parsed = []
    bodies: list[bytes] = []
    for offset, payload in enumerate(payloads):
        event = wire.parse(common_pb2.FeedEvent, payload, what="feed event")
        if event.seq != batch.first_seq + offset:
            raise keys.VerificationError("sealed feed batch events are out of sequence")
        kind = wire.event_kind_from_pb(event.kind)
        body: bytes | None = None
        if kind in ("upsert", "correct") and event.HasField("record"):
            # The compact form is checked and stored as received; the map form is encoded to
            # it once.
            body = _compact_body(event.record)
            bodies.append(body)
        parsed.append((event, kind, body))
    return parsed, bodies


def _checked_events(
    runtime: NodeRuntime, peer: str, parsed: _Parsed, bodies: list[bytes]
) -> list[_Event]:
    """Verify every record of the parsed events against `peer`'s keys and build the rows."""
    now = runtime.clock()
    bundle = runtime.bundle()
    # a record keeps the signature of the key it was ingested under (node/trust.py)
    trusted = record_signing_keys(bundle, peer, now)
    agreed = feed_providers(bundle, runtime.node_id).get(peer, frozenset())
    # The China day, as the producer's ingest uses: on the UTC day, a record decided "today"
    # in China between 00:00 and 08:00 CST would look decided in the future and lose its
    # severity, window and subject index here.
    today = lifecycle.china_day(now)
    outcomes = iter(runtime.record_checker.check(bodies, trusted=trusted, today=today))
    receiver = _Receiver(runtime, now)
    events: list[_Event] = []
    unagreed: dict[str, int] = {}  # item -> first event of it no agreement of ours covers
    for event, kind, body in parsed:
        record: NewRecord | None = None
        objection = False
        if body is not None:
            checked = next(outcomes)
            # Each refusal names the feed and the event, for the provider's operator (the
            # messages quote no field value).
            where = f"feed of {peer}: event {event.seq}"
            if isinstance(checked, Refused):
                if checked.kind == "input":
                    raise InputError(f"{where}: {checked.message}")
                raise keys.VerificationError(f"{where}: {checked.message}")
            try:
                wire.check_record_routing(event.record, checked.header)
            except InputError as error:
                raise InputError(f"{where}: {error}") from None
            if checked.header.get("producer") != peer:
                raise AuthError(f"{where}: the record names another producer")
            if checked.header["item"] not in agreed:
                # Whatever the provider sends, we hold only what our agreements give us: skipped
                # as the provider skips it under a current bundle (withheld, "not_agreed"), not
                # refused, so that the withdrawals behind it still arrive while bundles differ.
                unagreed.setdefault(str(checked.header["item"])[:64], event.seq)
                skipped = _Event(
                    event.seq, kind, event.record_key, event.version, None, False, _NOT_AGREED
                )
                events.append(skipped)
                continue
            objection = event.record.flags.objection
            record = receiver.row(body, checked, objection=objection)
        events.append(
            _Event(
                event.seq, kind, event.record_key, event.version, record, objection, event.reason
            )
        )
    if unagreed:
        log.warning(
            "feed of %s: records of item(s) %s (first at event %d) not stored: no feed agreement "
            "of trust bundle v%d gives them to this node (if one is new, install the current "
            "bundle here; the provider sends them again only with a new version)",
            peer,
            ", ".join(sorted(unagreed)[:3]),
            min(unagreed.values()),
            bundle.version,
        )
    return events


def _compact_body(message: common_pb2.Record) -> bytes:
    """The compact signed form a wire Record carries (unverified; checked by the caller)."""
    if message.signed_record and not (message.envelope or message.disclosures):
        return bytes(message.signed_record)
    # the map form, or a malformed Record that record_from_pb refuses with its own message
    return wire.record_from_pb(message).to_bytes()


def apply_batch(
    runtime: NodeRuntime, peer: str, batch: exchange_pb2.SealedBatch, *, cursor: int
) -> PullResult:
    """Open, verify and apply one sealed batch of `peer`'s feed after `cursor` (module doc).

    Refuses (keys.VerificationError) a batch that does not open for us or whose records do not
    verify against the peer's keys, (InputError) a gap, (AuthError) another producer; in every
    refusal nothing of the batch is stored. Returns the counts; the new cursor is last_seq.
    """
    events = _open_events(runtime, peer, batch, cursor=cursor)
    return _store_events(runtime, peer, batch, events)


def _store_events(
    runtime: NodeRuntime, peer: str, batch: exchange_pb2.SealedBatch, events: list[_Event]
) -> PullResult:
    """Apply the opened and verified events of `batch` in order, in one transaction with the
    cursor they move; WriteConflict, nothing written, when another pull of the feed moved the
    cursor since this batch was asked for."""
    store = runtime.store
    with store.write("apply a feed batch") as conn, store.joined(conn):
        return _apply_events(runtime, peer, batch, events)


def _apply_events(
    runtime: NodeRuntime, peer: str, batch: exchange_pb2.SealedBatch, events: list[_Event]
) -> PullResult:
    """`_store_events` inside its transaction: every store call here joins it."""
    store = runtime.store
    now = runtime.clock()
    # Another pull of this feed (the CLI beside `credex serve`, or another serve replica on
    # the same store) may have moved the cursor since this batch was asked for: applying it
    # now would take copies back to older flags and the cursor back. Checked before anything
    # is written, under the cursor row's lock, which this transaction then holds: another
    # pull waits for it, and is refused by the same check once it commits. The check runs
    # again where the cursor moves, at the end.
    start = batch.first_seq - 1
    store.store_batch([], now=now, upstream_cursor=(peer, start), upstream_from=start)
    result = PullResult(peer=peer, batches=1, events=len(events), cursor=batch.last_seq)
    known = store.current_versions(peer, [e.record_key for e in events if e.record is not None])
    pending: list[NewRecord] = []
    # A new copy carries its objection flag in its own row, so it is stored flagged or not at
    # all. A version already held (a replay after a crash, or a re-delivered batch) is
    # reconciled with the flag the producer sent, in the transaction of the records before
    # it, so a copy can never keep a flag its producer no longer shows, or lose one.
    reconcile: list[tuple[str, str, int, bool]] = []
    for event in events:
        if event.record is not None:
            newest = known.get(event.record_key)
            if newest is not None and newest[0] >= event.version:
                result.skipped += 1
                if newest[0] == event.version:
                    reconcile.append((peer, event.record_key, event.version, event.objection))
                continue
            known[event.record_key] = (event.version, event.record.content_hash)
            pending.append(event.record)
            continue
        if event.kind in ("upsert", "correct") and event.reason not in _STATE_OF_WITHHELD:
            result.skipped += 1  # withheld by the provider (not agreed): nothing to change
            continue
        # A lifecycle event, or a version withheld because the record stopped being shared
        # (which also ends our copy of its earlier version): flush what came before it, so it
        # applies to the stored copy.
        if pending or reconcile:
            store.store_batch(pending, now=now, expire_ended=True, copy_flags=reconcile)
            result.stored += len(pending)
            pending, reconcile = [], []
        changed = _apply_lifecycle(runtime, peer, event, now=now)
        result.applied += changed
        if not changed and event.kind in ("upsert", "correct"):
            result.skipped += 1  # withheld, and no earlier copy of ours to end
    store.store_batch(
        pending,
        now=now,
        upstream_cursor=(peer, batch.last_seq),
        upstream_head=reported_head(batch),
        upstream_from=start,
        expire_ended=True,
        copy_flags=reconcile,
    )
    result.stored += len(pending)
    return result


def reported_head(batch: exchange_pb2.SealedBatch) -> int | None:
    """The provider's head as `batch` reports it (`head_seq`, never below the batch's own
    last_seq); for a provider that predates the field, last_seq when the batch says it is
    caught up, else None (unknown: the stored head is kept).

    The head is the provider's word, shown as lag and never used to move the cursor; one that
    no store column can hold (above 2**63-1) is ignored rather than allowed to fail the batch.
    """
    if batch.head_seq and batch.head_seq <= _MAX_SEQ:
        return max(int(batch.head_seq), int(batch.last_seq))
    return int(batch.last_seq) if batch.caught_up else None


_MAX_SEQ = 2**63 - 1  # a signed 64-bit column (BigInteger) on every store


def _apply_lifecycle(runtime: NodeRuntime, peer: str, event: _Event, *, now: dt.datetime) -> int:
    """Apply a withdraw/expire/objection event, or a version withheld as withdrawn, expired or
    purged, to our copy; 1 if something changed, else 0.

    When we never received the version the event names (it was withheld, e.g. a correction
    past its disclosure end), a withdrawal or expiry ends the newest earlier version we hold
    instead: otherwise that copy would outlive the record at its producer. A purged copy never
    changes again (a notice retried after its purge must not bring it back as withdrawn).
    """
    store = runtime.store
    versions = store.record_versions(peer, event.record_key)
    target = next((r for r in versions if r.version == event.version), None)
    state = _STATE_OF_EVENT.get(event.kind) or _STATE_OF_WITHHELD.get(event.reason)
    if target is None and state is not None:
        earlier = [r for r in versions if r.version < event.version and r.state == "active"]
        target = max(earlier, key=lambda r: r.version, default=None)
    if target is None:
        return 0  # never received (e.g. withdrawn before we subscribed): nothing to change
    if target.state == "purged":
        return 0  # its retention is over and its body erased: it never changes again
    if state is not None:
        if target.state == state:
            return 0
        kind = event.kind if event.kind in _STATE_OF_EVENT else _EVENT_OF_STATE[state]
        store.set_record_state(target.row_id, state, event_kind=kind, now=now)
        return 1
    flag = event.kind == "objection_set"
    if target.objection == flag:
        return 0
    store.set_objection(target.row_id, flag, now=now)
    return 1


def _describe_rpc_error(peer: str, error: grpc.aio.AioRpcError) -> NodeError:
    code = error.code()
    detail = error.details() or ""
    message = f"feed of {peer}: {code.name}: {detail}".rstrip(": ")
    if code == grpc.StatusCode.UNAVAILABLE:
        return PeerUnavailable(message)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthError(message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        reason = detail.split(":", 1)[0] if ":" in detail else "denied"
        return PolicyDenied(reason, message)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InputError(message)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message)
    if code == grpc.StatusCode.OUT_OF_RANGE:
        return NotDelivered(message)  # an Ack beyond what the provider says it sent
    if code == grpc.StatusCode.DATA_LOSS:
        return TamperDetected(message)  # the provider's store failed its integrity check
    return NodeError(message)


# Refusals of the resume acknowledgement that must not stop the subscription itself (e.g. a
# provider restored from an older backup: it neither holds nor sent the events we applied).
_RESUME_ACK_TOLERATED = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE}
)


async def pull(
    runtime: NodeRuntime,
    peer: str,
    *,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    items: Sequence[str] = (),
    max_batch: int = 0,
) -> PullResult:
    """Pull `peer`'s feed from our stored cursor, apply each batch and acknowledge it.

    Without `follow` it returns once caught up; with `follow` it keeps the stream open until
    `stop` is set (or the peer ends it). Refuses a peer outside the roster (NotFound); remote
    refusals come back as the matching credex error (PolicyDenied, AuthError, PeerUnavailable
    ...), local verification failures as keys.VerificationError. Applied batches stay applied.
    Recorded as the stage "pull" (peer, events) with per-batch stages "pull.open",
    "pull.verify", "pull.store" and "pull.ack" (node/telemetry.py).
    """
    with active_telemetry().stage("pull", attributes={"credex.peer": peer}) as pulling:
        result = await _pull(
            runtime, peer, follow=follow, stop=stop, items=items, max_batch=max_batch
        )
        pulling.items = result.events
        pulling.set_attributes({"credex.result_count": result.stored})
    return result


async def _pull(
    runtime: NodeRuntime,
    peer: str,
    *,
    follow: bool,
    stop: asyncio.Event | None,
    items: Sequence[str],
    max_batch: int,
) -> PullResult:
    if runtime.bundle().member(peer) is None:
        raise NotFound(f"peer {peer!r} is not in the trust bundle's roster")
    stop = stop if stop is not None else asyncio.Event()
    cursor = await asyncio.to_thread(runtime.store.upstream_cursor, peer)
    total = PullResult(peer=peer, cursor=cursor)
    body = exchange_pb2.SubscribeBody(
        cursor=cursor,
        items=sorted(items),
        max_batch=max_batch,
        follow=follow,
        compact_records=True,
    )
    signed = runtime.sign_request(SUBSCRIBE_METHOD, body.SerializeToString())
    channel = runtime.channel(peer)
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        if cursor > 0:
            # A crash between applying a batch and its Ack leaves the provider behind our
            # durable cursor, and a caught-up stream brings no batch to ack: re-acknowledge
            # what is already applied (acks are monotonic, so this is always safe).
            try:
                with active_telemetry().stage("pull.ack", attributes={"credex.peer": peer}):
                    await _ack(runtime, stub, peer, cursor, b"")
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RESUME_ACK_TOLERATED:
                    raise _describe_rpc_error(peer, error) from None
                # e.g. a provider restored from an older backup: the stream decides
                log.warning(
                    "feed of %s: resume acknowledgement refused (%s)", peer, error.code().name
                )
        call = stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed))
        watcher = asyncio.ensure_future(_cancel_on(stop, call))
        # Two stages overlap: batch N is stored and acknowledged (SQL, fsync and the Ack RPC
        # mostly wait outside the GIL) while batch N+1 is opened and verified. Batch N+1's
        # events are used only after batch N's store succeeded, so stores and acks stay in
        # order and a failure stores nothing after it; every store carries its own cursor.
        storing: asyncio.Future[None] | None = None
        try:
            async for batch in _batches(call, peer, idle=None if follow else IDLE_BATCH_S):
                opening = asyncio.ensure_future(
                    asyncio.to_thread(_open_events, runtime, peer, batch, cursor=cursor)
                )
                if storing is not None:
                    previous, storing = storing, None
                    try:
                        await previous
                    except BaseException:
                        _forget(opening)
                        raise
                events = await opening
                storing = asyncio.ensure_future(
                    _store_and_ack(runtime, stub, peer, batch, events, total=total)
                )
                cursor = batch.last_seq
                if stop.is_set():
                    break
            if storing is not None:
                previous, storing = storing, None
                await previous
        except grpc.aio.AioRpcError as error:
            await _settle_quietly(storing)
            storing = None
            if not (stop.is_set() and error.code() == grpc.StatusCode.CANCELLED):
                raise _describe_rpc_error(peer, error) from None
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            await _settle_quietly(storing)
            storing = None
        finally:
            if storing is not None:
                _forget(storing)
            watcher.cancel()
            call.cancel()
    finally:
        await channel.close()
    return total


# The longest a one-off pull waits for the next batch: a provider sends each batch as soon as it
# is sealed (seconds for the largest), then ends the stream. A follow stream idles while the
# feed is caught up, so it has no such bound (the serving node's stop event ends it).
IDLE_BATCH_S = 120.0


async def _batches(
    call: Any, peer: str, *, idle: float | None
) -> AsyncIterator[exchange_pb2.SealedBatch]:
    """The batches of a Subscribe stream until it ends; with `idle`, PeerUnavailable (the
    call cancelled) when no batch comes for that many seconds: a provider that stalls mid-way
    must not hang a one-off pull for ever."""
    while True:
        try:
            batch = await (call.read() if idle is None else asyncio.wait_for(call.read(), idle))
        except TimeoutError:
            call.cancel()
            raise PeerUnavailable(
                f"feed of {peer}: no batch for {idle:g} s, the stream stalled; what was "
                "stored so far stays stored, run the pull again"
            ) from None
        if batch is grpc.aio.EOF:
            return
        yield batch


async def _store_and_ack(
    runtime: NodeRuntime,
    stub: exchange_pb2_grpc.ExchangeStub,
    peer: str,
    batch: exchange_pb2.SealedBatch,
    events: list[_Event],
    *,
    total: PullResult,
) -> None:
    """Store one opened batch (with its cursor), count it, then acknowledge it (the stages
    "pull.store" and "pull.ack")."""
    telemetry = active_telemetry()
    attributes = {"credex.peer": peer}
    with telemetry.stage("pull.store", items=len(events), attributes=attributes):
        done = await asyncio.to_thread(_store_events, runtime, peer, batch, events)
    total.add(done)
    with telemetry.stage("pull.ack", items=len(events), attributes=attributes):
        await _ack(runtime, stub, peer, batch.last_seq, batch.sealed)


async def _settle_quietly(storing: asyncio.Future[None] | None) -> None:
    """Let a batch already being stored finish while the stream ends for another reason; its
    own failure is not reported over that reason (its cursor did not move, so the next pull
    redoes it, and an unsent Ack is re-sent when the next pull resumes)."""
    if storing is not None:
        with contextlib.suppress(Exception):
            await storing


def _forget(future: asyncio.Future[Any]) -> None:
    """Let a stage that is no longer awaited end in the background without an unretrieved
    exception warning (a worker thread cannot be interrupted; its transaction is atomic)."""
    future.add_done_callback(lambda f: None if f.cancelled() else f.exception())


async def _cancel_on(stop: asyncio.Event, call: Any) -> None:
    await stop.wait()
    call.cancel()


async def _ack(
    runtime: NodeRuntime,
    stub: exchange_pb2_grpc.ExchangeStub,
    peer: str,
    cursor: int,
    sealed: bytes,
) -> None:
    receipt = sign_receipt(
        wire.ReceiptFields(
            issuer=runtime.node_id,
            subject=feed_subject(peer),
            cursor=cursor,
            issued_at=runtime.clock(),
            digest=hashlib.sha256(sealed).digest(),
        ),
        runtime.node_keys.signing,
    )
    await stub.Ack(receipt, timeout=30.0)


async def _follow_one(runtime: NodeRuntime, peer: str, stop: asyncio.Event) -> None:
    """Follow one provider until `stop`, reconnecting with exponential backoff."""
    delay = _BACKOFF_FIRST
    while not stop.is_set():
        try:
            done = await pull(runtime, peer, follow=True, stop=stop)
            if done.batches:
                delay = _BACKOFF_FIRST
        except (NodeError, keys.KeysError, catalog.CatalogError) as error:
            # The message is a credex message (safe); it names the peer and the problem.
            log.warning("%s; retrying in %.1f s", about_feed(peer, error), delay)
        except grpc.aio.AioRpcError as error:  # the Ack call, outside pull's translation
            log.warning("feed of %s: %s; retrying in %.1f s", peer, error.code().name, delay)
        except Exception as error:
            # A bug or a foreign library's error must not end this subscription for good; its
            # text may quote the record it failed on, so only its type is logged.
            log.error(
                "feed of %s: unexpected %s (a credex bug: please report it); retrying in %.1f s",
                peer,
                type(error).__name__,
                delay,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, _BACKOFF_MAX)


def _followed_providers(runtime: NodeRuntime) -> list[str]:
    """The roster members whose feed this node follows: those with a feed agreement with us,
    and former providers whose feed we have applied before (a cursor is stored)."""
    bundle = runtime.bundle()
    agreed = feed_providers(bundle, runtime.node_id)
    return [
        entry.node_id
        for entry in bundle.roster
        if entry.node_id != runtime.node_id
        and (entry.node_id in agreed or runtime.store.upstream_feed(entry.node_id) is not None)
    ]


def about_feed(peer: str, error: BaseException) -> str:
    """`error`'s message about `peer`'s feed, prefixed "feed of <peer>: " once: most feed
    errors (refusals, gaps, RPC failures) already start with it."""
    message = str(error)
    prefix = f"feed of {peer}: "
    return message if message.startswith(prefix) else prefix + message


async def follow_feeds(runtime: NodeRuntime, stop: asyncio.Event) -> None:
    """The platform's background subscriptions: follow every roster member that has a "feed"
    agreement with this node, or had one (we hold a cursor of its feed), each with its own
    reconnecting loop, until `stop` is set.

    The agreement list is re-read from the bundle in force every few seconds, so a new
    bundle adds (never silently drops a running) subscription without a restart. A former
    provider sends no more records, only what ends or flags the copies we received from it
    (withdrawals, expiries, objections), and those must still arrive.
    """
    running: dict[str, asyncio.Task[None]] = {}
    try:
        while not stop.is_set():
            try:
                providers = await asyncio.to_thread(_followed_providers, runtime)
            except (NodeError, keys.KeysError) as error:
                log.warning("feeds: no usable trust bundle (%s)", error)
                providers = []
            for peer in providers:
                if peer not in running or running[peer].done():
                    running[peer] = asyncio.create_task(_follow_one(runtime, peer, stop))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5.0)
    finally:
        if running:
            await asyncio.gather(*running.values(), return_exceptions=True)
