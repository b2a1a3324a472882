"""credex.v1.Exchange, the provider's side: feeds (Subscribe, Ack) and joint-punishment pushes.

Subscribe streams a subscriber's feed from its cursor, in order and without gaps, as batches
sealed for the subscriber's roster encryption key (header: purpose "feed", sender, recipient,
first/last seq). Invariants:
- who gets what follows the bundle's "feed" agreements (provider = this node), re-read for
  every batch: items outside them are refused (PERMISSION_DENIED) and, if an agreement narrows
  later, events of records outside it travel without the record (reason "not_agreed");
- a former subscriber (its agreements ended, its subscription is kept) is still served, with
  every record withheld ("not_agreed"): a withdrawal, expiry or objection flag must reach the
  copies it received (令第36号 Art. 3: sharing stops everywhere the record went); a node
  with neither an agreement nor a subscription is refused (`no_agreement`);
- only this node's own records travel: an event about another producer's record (a received
  copy; queued only by an older release) goes out empty, reason "not_producer", seq kept;
- a record withdrawn, expired or purged since its upsert was queued travels without its body
  (reason = its state): repair stops sharing, also for events already queued; so does a record
  whose disclosure is over on the China day of delivery (`node.lifecycle.disclosure_ended`)
  before the lifecycle scan has marked it expired (reason "expired"): the event keeps its
  seq, the subscriber skips it as it skips any withheld one, and the scan's later `expire`
  event finds no copy to change;
- a record leaves only if its signed header (item, record key, version, producer) is its
  store row's and its event's: a row an insider changed without the keys ends the stream
  before it (DATA_LOSS, a denied `feed_delivery` entry `record_tampered`, the row named in
  the node log), the events before it still sent; the feed resumes there once it is restored;
- every batch is preceded by a durable access-log entry (kind "feed_delivery": subscriber,
  items, event count; never a subject); when the log cannot be written the stream fails
  UNAVAILABLE and nothing is sent (fail closed);
- before every batch (and every idle poll) the stream's subscriber is judged again on the
  bundle in force: its roster membership must be valid now and the key that signed the
  subscription still one it may sign with (current or in its rotation overlap, not revoked);
  otherwise the stream ends UNAUTHENTICATED (`requester_unknown`, `requester_not_valid`,
  `key_revoked`, `key_unknown`), as a new request would;
- a subscription's cursor may not pass the last event sent to the subscriber (OUT_OF_RANGE
  `not_delivered`): skipping events never sent would let the first Ack cover them;
- a refused subscription (signature, agreement, items, cursor, key or membership), before its
  first batch or later, is a durable denied `feed_delivery` entry before the error goes back
  (node/refusals.py);
- follow mode polls for new events until the client leaves or the node stops; a graceful stop
  ends open streams cleanly (no error at the subscriber).

Ack moves the subscriber's durable cursor on a receipt signed by the subscriber (monotonic; a
replayed receipt changes nothing), never beyond the last event of the batches sent to it
(OUT_OF_RANGE `not_delivered`): what a batch carries is recorded in the transaction of its
`feed_delivery` entry, before it leaves, so it survives a restart. Push receives a severe-
dishonesty record sealed for this node from a department named by a "push" agreement, verifies
the producer's signature against the bundle and that the producer is the sender (a department
pushes only its own entries: `not_producer` otherwise), stores it as a received record, logs the
access and answers with a signed receipt; a refused push is logged as a denied `push` entry. A
withdraw/expire notice (PushNotice.kind; the producer repaired, revoked or ended the disclosure
of an entry it pushed) moves our copy of the SENDER's record to withdrawn/expired (令第36号 Art. 3:
repair stops sharing and joint punishment too), is logged as an allowed `push` entry releasing
nothing, and gets the same receipt. Such a notice that finds no copy of the version it ends
leaves a tombstone: the entry, if it lands later (another process of the producer sent it, and
may never hear our receipt), is not stored, is logged as a `push` entry releasing nothing with
the tombstone's kind as reason, and gets the same receipt (node/store/pushed.py). The copy (or
the change a withdraw/expire notice makes) and the `push` entry that says what became of it
commit in one transaction (AccessLog.append_with, decision 0015): no entry claims a copy that
was not stored.

Item ids a caller sent reach log entries bounded (`refusals.asked_items`) and refusal messages
as at most three ids ("… and N more"), whatever their number and size.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

import catalog
import keys
from node import feeds, wire
from node._pb.credex.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc
from node.accesslog import LogEntry, utc_iso
from node.errors import (
    AuthError,
    InputError,
    NodeError,
    NotDelivered,
    PolicyDenied,
    StaleBundle,
    TamperDetected,
)
from node.lifecycle import china_day, disclosure_ended, is_red_list
from node.refusals import Caller, asked_items, logged_refusals
from node.requests import node_signing_keys
from node.server import Service
from node.store import FeedEvent
from node.store import pushed as pushed_store
from node.store.received import FeedRecord, feed_records
from node.trust import record_signing_keys

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["ExchangeServicer", "background", "make_services"]

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500
MAX_BATCH = 5000
_WITHHELD_STATES = frozenset({"withdrawn", "expired", "purged"})
# Why an event about a record this node did not produce travels empty (never relayed).
_NOT_OURS = "not_producer"
# The reason of a feed delivery to a former subscriber (no agreement left: no record released).
_AGREEMENT_ENDED = "agreement_ended"
# Why a stream ended before a record whose store row disagrees with its signed body.
_TAMPERED = "record_tampered"
_SHOWN_IDS = 3  # item ids a refusal message names at most
_MAX_RECORD_KEY = 128
_SHOWN_ID_CHARS = 64


@dataclass(frozen=True)
class _Built:
    sealed: bytes
    first_seq: int
    last_seq: int
    count: int
    items: tuple[str, ...]
    caught_up: bool
    head_seq: int  # the subscriber's newest event when the batch was built (>= last_seq)


@dataclass
class _BatchContext:
    """What building one batch looks up once instead of per event: the at-rest cipher, the
    red-list flag of each item, the wire time stamp of each event time (a batch of ingest
    events shares one), whether the subscriber asked for compact records, and the China day
    the records' disclosure periods are judged on."""

    cipher: keys.StorageCipher
    compact: bool
    today: dt.date
    red_list: dict[str, bool] = field(default_factory=dict)
    stamps: dict[dt.datetime, Timestamp] = field(default_factory=dict)


def _agreed_items(bundle: keys.TrustBundle, provider: str, consumer: str, kind: str) -> set[str]:
    return {
        item
        for a in bundle.agreements
        if a.kind == kind and a.provider == provider and a.consumer == consumer
        for item in a.items
    }


def _listed(ids: Sequence[str]) -> str:
    """`ids` for a refusal message: at most the first three, each cut to 64 characters with
    any ID number masked (`catalog.shown_text`), then "… and N more", so the message stays
    short and free of personal data whatever the caller sent."""
    # The message travels in gRPC trailing metadata: an oversized one never reaches the caller,
    # who would see RESOURCE_EXHAUSTED instead of the refusal.
    shown = ", ".join(catalog.shown_text(i, _SHOWN_ID_CHARS) for i in ids[:_SHOWN_IDS])
    more = len(ids) - _SHOWN_IDS
    return f"{shown} … and {more} more" if more > 0 else shown


def _quoted(text: str) -> str:
    """Caller-written `text` for an error message: at most 64 characters, identifiers masked."""
    shown = catalog.shown_text(text, _SHOWN_ID_CHARS)
    return repr(shown) + (" (cut)" if len(text) > _SHOWN_ID_CHARS else "")


def _check_subscriber(
    bundle: keys.TrustBundle, subscriber: str, keyid: str, now: dt.datetime
) -> keys.RosterEntry:
    """The roster entry of `subscriber`, whose subscription was signed with `keyid`, if it
    may still be served at `now` under `bundle`: its membership is valid and `keyid` is still
    one of its trusted signing keys (current, or previous inside its overlap; not revoked).
    Otherwise AuthError with the reason a new request would be refused under."""
    trusted = node_signing_keys(bundle, subscriber, now)  # requester_unknown / _not_valid
    member = bundle.member(subscriber)
    if member is not None and keyid in trusted:
        return member
    if keyid in bundle.revoked_keyids:
        raise AuthError(
            f"Subscribe: the subscription was signed with key {keyid}, which trust bundle "
            f"v{bundle.version} revokes; the stream ends, subscribe again with a current key",
            reason="key_revoked",
        )
    raise AuthError(
        f"Subscribe: the subscription was signed with key {keyid}, which is no longer a "
        f"current key of node {subscriber} in trust bundle v{bundle.version}; the stream ends, "
        "subscribe again with a current key",
        reason="key_unknown",
    )


def _delivery_entry(
    runtime: NodeRuntime,
    subscriber: str,
    request_id: str,
    asked: tuple[str, ...],
    *,
    reason: str,
    released: _Built | None = None,
) -> LogEntry:
    """The `feed_delivery` access entry of one batch to `subscriber`: allowed with what
    `released` carries, or, without a batch, denied with `reason` (nothing released)."""
    return LogEntry(
        time=utc_iso(runtime.clock()),
        kind="feed_delivery",
        requester=subscriber,
        officer="",
        purpose=feeds.FEED_PURPOSE,
        legal_basis="feed_agreement",
        decision="allow" if released is not None else "deny",
        reason=reason,
        request_id=request_id,
        items_asked=asked,
        items_released=released.items if released is not None else (),
        result_count=released.count if released is not None else 0,
    )


class _Tampered(Exception):
    """A record about to be sent whose store row disagrees with its signed body."""

    def __init__(self, row_id: str, problem: str) -> None:
        super().__init__(problem)
        self.row_id = row_id
        self.problem = problem


def _routing_problem(body: bytes, stored: FeedRecord, event: FeedEvent, node_id: str) -> str | None:
    """What about `stored`'s row (and `event`, which names it) disagrees with its signed header
    in `body` (the decrypted compact record), or None.

    The provider decides what a subscriber may get by the row's columns (item, producer) and
    sends the event's record key and version with it; someone who can write to the database
    but has no keys can change those, never the body, so the signed header is the truth
    (`wire.stored_row_problem`, as node/query.py and node/push.py check it)."""
    if (event.record_key, event.version) != (stored.record_key, stored.version):
        return "the event's record key or version is not its row's"
    try:
        payload = keys.SignedRecord.envelope_of(body).payload
    except keys.KeysError:
        return "the body does not parse"
    row = {
        "item": stored.item_id,
        "record_key": stored.record_key,
        "version": stored.version,
        "producer": node_id,
    }
    return wire.stored_row_problem(payload, row)


class ExchangeServicer(exchange_pb2_grpc.ExchangeServicer):
    """Subscribe, Ack and Push for one node (see the module docstring)."""

    def __init__(
        self,
        runtime: NodeRuntime,
        *,
        poll_interval: float = 0.2,
        stopping: asyncio.Event | None = None,
    ) -> None:
        """Serve from `runtime`; `stopping` ends follow-mode streams cleanly when set."""
        self._runtime = runtime
        self._auth = runtime.authenticator()
        self._poll = poll_interval
        self.stopping = stopping if stopping is not None else asyncio.Event()

    # -- Subscribe -----------------------------------------------------------------------------

    async def Subscribe(  # noqa: N802 (the generated servicer's name)
        self,
        request: exchange_pb2.SubscribeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[exchange_pb2.SealedBatch]:
        """Stream the caller's feed from its cursor in sealed batches (module docstring).
        A refusal, before the first batch or later, is logged as a denied feed delivery."""
        async with logged_refusals(
            self._runtime,
            context,
            kind="feed_delivery",
            purpose=feeds.FEED_PURPOSE,
            envelope=request.signed.envelope,
        ) as caller:
            runtime = self._runtime
            verified = await caller.authenticate(
                self._auth, request.signed, context, method=feeds.SUBSCRIBE_METHOD
            )
            subscriber = verified.node_id
            body = verified.parse(exchange_pb2.SubscribeBody)
            caller.items_asked = asked_items(body.items)
            allowed = await asyncio.to_thread(self._allowed, runtime.bundle(), subscriber)
            wanted = set(body.items) or allowed
            refused = sorted(wanted - allowed)
            if refused:
                raise PolicyDenied(
                    "item_not_agreed",
                    f"no feed agreement gives {subscriber} the item(s) {_listed(refused)}; "
                    "subscribe only to items of your feed agreements",
                )
            sub = await asyncio.to_thread(
                runtime.store.ensure_subscription, subscriber, wanted, now=runtime.clock()
            )
            if body.cursor > sub.last_seq:
                raise InputError(
                    f"Subscribe: cursor {body.cursor} is beyond the last event {sub.last_seq} "
                    f"of {subscriber}'s feed"
                )
            if body.cursor > sub.delivered_seq:
                # Starting past events never sent would let the first batch's Ack cover them.
                raise NotDelivered(
                    f"Subscribe: cursor {body.cursor} is beyond the last event this node has "
                    f"sent to {subscriber} ({sub.delivered_seq}); resume from the last event "
                    "you applied: events never sent cannot be skipped"
                )
            limit = min(body.max_batch or DEFAULT_BATCH, MAX_BATCH)
            cursor = int(body.cursor)
            asked = caller.items_asked = tuple(sorted(wanted))
            while True:
                # A new bundle applies to the next batch: its agreements, and whether the
                # subscriber and the key that signed this (possibly long-open) stream still hold.
                bundle = runtime.bundle()
                allowed = _agreed_items(bundle, runtime.node_id, subscriber, "feed")
                member = _check_subscriber(bundle, subscriber, verified.keyid, runtime.clock())
                try:
                    built = await asyncio.to_thread(
                        self._build,
                        subscriber,
                        cursor,
                        limit,
                        allowed,
                        member.encryption_key,
                        compact=body.compact_records,
                    )
                except TamperDetected:
                    # The stream ends before the row; its record never leaves. Denied entry
                    # first, then DATA_LOSS (not a refusal of the caller: logged here).
                    await runtime.log.append(
                        _delivery_entry(
                            runtime, subscriber, verified.nonce, asked, reason=_TAMPERED
                        )
                    )
                    raise
                if built is None:
                    if not body.follow or self.stopping.is_set():
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), timeout=self._poll)
                    continue
                # Durable log entry BEFORE the batch leaves; LogUnavailable -> UNAVAILABLE.
                # What was sent commits with it: the subscriber may acknowledge up to this
                # batch from now on, also after a restart (and never beyond it).
                await asyncio.to_thread(
                    runtime.log.append_with,
                    _delivery_entry(
                        runtime,
                        subscriber,
                        verified.nonce,
                        asked,
                        # a former subscriber gets lifecycle events only (no record)
                        reason="" if allowed else _AGREEMENT_ENDED,
                        released=built,
                    ),
                    functools.partial(runtime.store.mark_delivered, subscriber, built.last_seq),
                    what="send a feed batch",
                )
                yield exchange_pb2.SealedBatch(
                    sealed=built.sealed,
                    first_seq=built.first_seq,
                    last_seq=built.last_seq,
                    count=built.count,
                    provider=runtime.node_id,
                    caught_up=built.caught_up,
                    head_seq=built.head_seq,
                )
                cursor = built.last_seq
                if self.stopping.is_set():
                    return

    def _allowed(self, bundle: keys.TrustBundle, subscriber: str) -> set[str]:
        """The items `bundle`'s feed agreements give `subscriber` from this node (runs in a
        worker thread: it may read the store); none for a former subscriber (its agreement
        ended, its subscription is kept): it is still served, records withheld, so that the
        withdrawals, expiries and objection flags of what it received reach its copies.
        PolicyDenied (`no_agreement`) for a node with neither."""
        allowed = _agreed_items(bundle, self._runtime.node_id, subscriber, "feed")
        if allowed or self._runtime.store.subscription(subscriber) is not None:
            return allowed
        raise PolicyDenied(
            "no_agreement",
            f"no feed agreement in trust bundle v{bundle.version} names "
            f"{self._runtime.node_id} as provider for {subscriber}",
        )

    def _build(
        self,
        subscriber: str,
        cursor: int,
        limit: int,
        allowed: set[str],
        encryption_key: bytes,
        *,
        compact: bool = False,
    ) -> _Built | None:
        """Read, decrypt and seal for `encryption_key` (the subscriber's, from the bundle the
        batch is judged on) the next batch (runs in a worker thread); None when idle.
        With `compact`, records travel as Record.signed_record (the stored form, unparsed)."""
        runtime = self._runtime
        events = runtime.store.events_after(subscriber, cursor, limit=limit)
        if not events:
            return None
        payloads = []
        items: set[str] = set()
        stored = feed_records(runtime.store, [e.record_row_id for e in events])
        context = _BatchContext(runtime.cipher, compact, china_day(runtime.clock()))
        for index, event in enumerate(events):
            try:
                message = self._event_pb(event, stored[event.record_row_id], allowed, context)
            except _Tampered as tampered:
                # Only the row id and what disagrees, for the operator: never field values.
                log.error(
                    "feed of %s: event %d: stored record %s not sent: %s; restore the row "
                    "from a backup or re-ingest it, the feed resumes there",
                    subscriber,
                    event.seq,
                    tampered.row_id,
                    tampered.problem,
                )
                if index == 0:
                    raise TamperDetected(
                        f"the record of event {event.seq} fails the "
                        "provider's integrity check (its store row disagrees with its signed "
                        "body); nothing of it was sent, and the provider's node log names the "
                        "row for its operator; the feed resumes there once it is restored"
                    ) from None
                events = events[:index]  # what comes before it still goes
                break
            if message.HasField("record"):
                items.add(message.item_id)
            payloads.append(message.SerializeToString())
        first, last = events[0].seq, events[-1].seq
        # The head the subscriber shows its lag against (one read per batch, not per event).
        sub = runtime.store.subscription(subscriber)
        head = max(last, 0 if sub is None else sub.last_seq)
        sealed = keys.seal_batch(
            payloads,
            header=feeds.feed_header(runtime.node_id, subscriber, first, last),
            recipient_id=subscriber,
            recipient_public=encryption_key,
        )
        return _Built(sealed, first, last, len(events), tuple(sorted(items)), last >= head, head)

    def _event_pb(
        self, event: FeedEvent, stored: FeedRecord, allowed: set[str], context: _BatchContext
    ) -> common_pb2.FeedEvent:
        runtime = self._runtime
        at = context.stamps.get(event.created_at)
        if at is None:
            at = context.stamps[event.created_at] = wire.timestamp_to_pb(event.created_at)
        if not stored.intact:
            # its columns (state, flag, window, producer...) were written without the storage
            # key: nothing about it leaves, not even an event kind (decision 0018)
            raise _Tampered(stored.row_id, "its store row fails its integrity tag")
        if stored.producer != runtime.node_id:
            # Defence in depth: the store queues no event about another producer's record
            # (node/store/store.py), but one queued by an older release must neither carry
            # that record nor name it. The seq stays (no gap); the subscriber skips it.
            return common_pb2.FeedEvent(
                seq=event.seq, kind=wire.event_kind_to_pb(event.kind), at=at, reason=_NOT_OURS
            )
        message = common_pb2.FeedEvent(
            seq=event.seq,
            kind=wire.event_kind_to_pb(event.kind),
            record_key=event.record_key,
            version=event.version,
            item_id=stored.item_id,
            at=at,
        )
        if event.kind not in ("upsert", "correct"):
            return message
        if stored.item_id not in allowed:
            message.reason = "not_agreed"
        elif stored.state in _WITHHELD_STATES:
            message.reason = stored.state
        elif disclosure_ended(
            severity=stored.severity,
            decided_on=stored.decided_on,
            disclosure_max_end=stored.disclosure_max_end,
            today=context.today,
        ):
            # Past its disclosure end today, scanned or not: the body never leaves again (a
            # superseded version is judged by its dates too; its state alone would not hold it).
            message.reason = "expired"
        else:
            body = context.cipher.decrypt(stored.row_id, stored.body)
            problem = _routing_problem(body, stored, event, runtime.node_id)
            if problem is not None:
                raise _Tampered(stored.row_id, problem)
            red = context.red_list.get(stored.item_id)
            if red is None:
                red = is_red_list(runtime.catalogue.item(stored.item_id).category)
                context.red_list[stored.item_id] = red
            # Routing copies from the store's columns, checked against the signed payload
            # above (and again by the subscriber).
            routing = wire.Routing(
                stored.item_id, stored.record_key, stored.version, stored.producer
            )
            if context.compact:
                record = wire.record_to_pb_compact(
                    body, objection=stored.objection, red_list=red, routing=routing
                )
            else:
                signed = keys.SignedRecord.from_bytes(body)
                record = wire.record_to_pb(
                    signed, objection=stored.objection, red_list=red, routing=routing
                )
            message.record.CopyFrom(record)
        return message

    # -- Ack -----------------------------------------------------------------------------------

    async def Ack(  # noqa: N802 (the generated servicer's name)
        self,
        request: common_pb2.SignedReceipt,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> exchange_pb2.AckResponse:
        """Move the caller's durable feed cursor on its signed receipt (monotonic; a repeated
        or older receipt changes nothing). Refuses a receipt of another issuer or feed, and one
        beyond the last event of the batches sent to the caller (OUT_OF_RANGE `not_delivered`:
        a subscriber cannot acknowledge what it never received); the server's interceptor logs
        each refusal as a denied `feed_ack` entry."""
        runtime = self._runtime
        caller = runtime.server_tls().identify(context)
        now = runtime.clock()
        fields = feeds.verify_receipt(
            request, trusted=node_signing_keys(runtime.bundle(), caller, now)
        )
        # The caller wrote issuer and subject: quoted bounded and redacted (the message
        # travels in trailing metadata, and could otherwise carry anything, an ID number too).
        if fields.issuer != caller:
            raise AuthError(
                f"Ack: the receipt is issued by {_quoted(fields.issuer)}, not by {caller}; "
                "sign it with issuer = your node id",
                reason="signer_mismatch",
            )
        if fields.subject != feeds.feed_subject(runtime.node_id):
            raise InputError(
                f"Ack: the receipt acknowledges {_quoted(fields.subject)}, not this feed "
                f"({feeds.feed_subject(runtime.node_id)!r})"
            )
        if len(fields.digest) != hashlib.sha256().digest_size:
            raise InputError("Ack: the receipt digest must be a SHA-256 digest")
        cursor = await asyncio.to_thread(runtime.store.ack, caller, fields.cursor, now=now)
        return exchange_pb2.AckResponse(cursor=cursor)

    # -- Push ----------------------------------------------------------------------------------

    async def Push(  # noqa: N802 (the generated servicer's name)
        self,
        request: exchange_pb2.PushRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> common_pb2.SignedReceipt:
        """Receive a joint-punishment notice, store its verified record, answer a receipt.
        A refused notice (signature, agreement, seal, record) is logged as a denied push."""
        async with logged_refusals(
            self._runtime,
            context,
            kind="push",
            purpose="joint_punishment",
            envelope=request.signed.envelope,
        ) as caller:
            runtime = self._runtime
            verified = await caller.authenticate(
                self._auth, request.signed, context, method=feeds.PUSH_METHOD
            )
            sender = verified.node_id
            notice = verified.parse(exchange_pb2.PushNotice)
            if not notice.notice_id:
                raise InputError("Push: the notice id is missing")
            bundle = runtime.bundle()
            agreed = _agreed_items(bundle, sender, runtime.node_id, "push")
            if not agreed:
                raise PolicyDenied(
                    "no_agreement", f"no push agreement lets {sender} push to {runtime.node_id}"
                )
            kind = _push_kind(notice.kind)
            expect: dict[str, Any] = {
                "purpose": feeds.PUSH_PURPOSE,
                "sender": sender,
                "notice_id": notice.notice_id,
            }
            if kind != "upsert":
                expect["kind"] = kind
            sealed_header, plaintext = keys.open_sealed(
                notice.sealed,
                recipient_id=runtime.node_id,
                private_key=runtime.node_keys.encryption_private,
                expect=expect,
            )
            if sealed_header.get("kind", "upsert") != kind:
                # a withdrawal presented as an entry (or the other way round)
                raise AuthError(
                    "Push: the notice kind is not the sealed one", reason="malformed_request"
                )
            if kind != "upsert":
                return await self._push_withdrawal(
                    caller,
                    request_id=verified.nonce,
                    sender=sender,
                    notice=notice,
                    plaintext=plaintext,
                    agreed=agreed,
                )
            message = wire.parse(common_pb2.Record, plaintext, what="pushed record")
            signed = wire.record_from_pb(message)
            now = runtime.clock()
            # the sender's own records keep the key they were signed with (node/trust.py)
            senders = record_signing_keys(bundle, sender, now)
            record = keys.verify_record(
                signed, trusted={**bundle.trusted_signing_keys(now), **senders}
            )
            wire.check_record_routing(message, record.header)
            owner = (
                bundle.member(sender)
                if record.signer_keyid in senders
                else bundle.owner_of(record.signer_keyid, now)
            )
            producer = record.header.get("producer")
            if owner is None or owner.node_id != producer:
                raise AuthError(
                    "Push: the record is not signed by its producer's key",
                    reason="signer_mismatch",
                )
            # only once the producer's signature holds
            caller.items_asked = asked_items((message.item_id,))
            if producer != sender:
                # The push agreement is the sender's: another department's entry (one received
                # by feed, say) would reach us under an agreement its producer never made.
                raise PolicyDenied(
                    "not_producer",
                    f"{sender} pushed an entry produced by {owner.node_id}; a department pushes "
                    "only the entries it produced itself",
                )
            if message.item_id not in agreed:
                raise PolicyDenied(
                    "item_not_agreed",
                    f"the push agreement does not cover item {_listed([message.item_id])}",
                )
            producer_id, record_key = str(producer), str(record.header["record_key"])

            def keep() -> str:
                # store calls only (AccessLog.append_with may run this twice): "" when the
                # copy is stored or held already, else the kind of the withdrawal that came
                # first (another process of the producer sent it), so the copy is not kept
                if self._store_pushed(signed, record, now) != "ended":
                    return ""
                ended = pushed_store.push_tombstone(runtime.store, producer_id, record_key)
                return ended.kind if ended is not None else "withdraw"

            def entry(not_kept: str) -> LogEntry:
                return _push_entry(
                    now,
                    sender,
                    verified.nonce,
                    message.item_id,
                    reason=not_kept,
                    stored=not not_kept,
                )

            # the copy and the entry that says whether it was kept commit together
            await asyncio.to_thread(
                runtime.log.append_with, entry, keep, what="store a pushed record"
            )
            return _push_receipt(runtime, notice, now)

    async def _push_withdrawal(
        self,
        caller: Caller,
        *,
        request_id: str,
        sender: str,
        notice: exchange_pb2.PushNotice,
        plaintext: bytes,
        agreed: set[str],
    ) -> common_pb2.SignedReceipt:
        """Apply an opened withdraw/expire notice: the authenticated sender withdraws its own
        record, so only our copy of a record whose producer is the sender changes (a record of
        another producer is never looked up). Logged as a `push` access entry; answered with
        the same receipt as an entry."""
        runtime = self._runtime
        event = wire.parse(common_pb2.FeedEvent, plaintext, what="pushed withdrawal")
        kind = wire.event_kind_from_pb(event.kind)
        if kind != _push_kind(notice.kind) or not event.record_key or event.HasField("record"):
            raise InputError("Push: the withdrawal notice is malformed")
        if len(event.record_key) > _MAX_RECORD_KEY:
            # a record key is a SHA-256 in hex; a longer one names nothing and would only grow
            # the tombstone table
            raise InputError(
                f"Push: the withdrawal notice's record key is longer than {_MAX_RECORD_KEY} "
                "characters"
            )
        caller.items_asked = asked_items((event.item_id,))
        if event.item_id not in agreed:
            raise PolicyDenied(
                "item_not_agreed",
                f"the push agreement does not cover item {_listed([event.item_id])}",
            )
        withdrawal = feeds.PushWithdrawal(
            kind=kind,
            record_key=event.record_key,
            version=event.version,
            item_id=event.item_id,
            reason=event.reason[:64],
        )
        now = runtime.clock()

        def apply() -> int:
            return feeds.apply_push_withdrawal(runtime, sender, withdrawal, now=now)

        # the change to our copy and its entry commit together (decision 0015)
        await asyncio.to_thread(
            runtime.log.append_with,
            _push_entry(now, sender, request_id, event.item_id, reason=kind, stored=False),
            apply,
            what="apply a pushed withdrawal",
        )
        return _push_receipt(runtime, notice, now)

    def _store_pushed(
        self, signed: keys.SignedRecord, record: keys.VerifiedRecord, now: dt.datetime
    ) -> Literal["stored", "held", "ended"]:
        # Not stored when this version is held already (a retried push) or a withdrawal of it
        # committed since the tombstone check in Push ("ended"): the store decides under the
        # record's lock. A version past its end is kept expired, not shown.
        new = feeds.received_record(self._runtime, signed, record, now=now)
        return pushed_store.store_pushed(self._runtime.store, new, now=now)


def _push_entry(
    now: dt.datetime, sender: str, request_id: str, item_id: str, *, reason: str, stored: bool
) -> LogEntry:
    """The allowed `push` access entry of a notice from `sender`: an entry `stored` here
    releases its item to us (one record); a withdraw/expire notice (`reason` = its kind)
    releases nothing."""
    return LogEntry(
        time=utc_iso(now),
        kind="push",
        requester=sender,
        officer="",
        purpose="joint_punishment",
        legal_basis="push_agreement",
        decision="allow",
        reason=reason,
        request_id=request_id,
        items_asked=(item_id,),
        items_released=(item_id,) if stored else (),
        result_count=1 if stored else 0,
    )


def _push_receipt(
    runtime: NodeRuntime, notice: exchange_pb2.PushNotice, now: dt.datetime
) -> common_pb2.SignedReceipt:
    """This node's signed receipt of `notice` (an entry or a withdrawal alike)."""
    receipt = wire.ReceiptFields(
        issuer=runtime.node_id,
        subject=notice.notice_id,
        cursor=0,
        issued_at=now,
        digest=hashlib.sha256(notice.sealed).digest(),
    )
    return feeds.sign_receipt(receipt, runtime.node_keys.signing)


def _push_kind(value: int) -> str:
    """The kind of a push notice: "upsert" (an entry; also an unset kind, as sent before the
    field existed), "withdraw" or "expire"; any other kind is refused (InputError)."""
    if value == common_pb2.EVENT_KIND_UNSPECIFIED:
        return "upsert"
    kind = wire.event_kind_from_pb(value)
    if kind not in ("upsert", "withdraw", "expire"):
        raise InputError(f"Push: a notice of kind {kind!r} is not accepted")
    return kind


def make_services(runtime: NodeRuntime) -> list[Service]:
    """The Exchange service of a running node; follow-mode streams end when the node begins
    its graceful shutdown (`runtime.stopping`)."""
    return [
        Service(
            name="credex.v1.Exchange",
            servicer=ExchangeServicer(runtime, stopping=runtime.stopping),
            add=exchange_pb2_grpc.add_ExchangeServicer_to_server,
        )
    ]


BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def background(runtime: NodeRuntime) -> list[BackgroundTask]:
    """Tasks beside the server: reload a newly installed bundle, and (platform role) follow
    every department feed agreed with this node."""

    async def watch_bundle(stop: asyncio.Event) -> None:
        await _watch_bundle(runtime, stop)

    async def follow(stop: asyncio.Event) -> None:
        await feeds.follow_feeds(runtime, stop)

    tasks: list[BackgroundTask] = [watch_bundle]
    if runtime.config.node.role == "platform":
        tasks.append(follow)
    return tasks


def _bundle_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:  # gone, or unreadable: judged when it can be read again
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


async def _watch_bundle(runtime: NodeRuntime, stop: asyncio.Event, interval: float = 0.5) -> None:
    """Reload trust/bundle.json when it is replaced (`credex bundle install` while serving), so
    a new roster, revocation or agreement applies without a restart.

    A file that does not load (bad signature, unreadable, a directory in its place) is tried
    again at every interval until it loads, so fixing its permissions is enough; the failure
    is logged once per version of the file, with its reason (key ids and paths only)."""
    path = runtime.trust_dir / "bundle.json"
    seen = _bundle_stamp(path)
    failed: tuple[int, int, int] | None = None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        stamp = _bundle_stamp(path)
        if stamp is None or stamp == seen:
            continue
        try:
            bundle = runtime.reload_bundle()
        except (NodeError, keys.KeysError, StaleBundle, OSError) as error:
            if stamp != failed:
                reason = error.strerror if isinstance(error, OSError) else str(error)
                log.warning("trust bundle not reloaded: %s", reason or type(error).__name__)
                failed = stamp
            continue
        seen, failed = stamp, None
        log.info("trust bundle v%d loaded", bundle.version)
