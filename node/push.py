"""Joint-punishment pushes (联合惩戒): sending severe-dishonesty list entries to the departments
named by "push" agreements, and keeping their signed receipts.

Only this node's own, active entries of a 严重失信主体名单 item are pushed (the receiver checks
that the record is signed by its producer, which is the sender). The notice is the signed record
sealed for the receiver (`feeds.push_request_body`); the receiver answers with a receipt signed by
its node key over {subject = notice id, digest = sha256(sealed notice)}, which is verified here
against the receiver's roster keys before it is stored in the `pushes` table.

Push ids are derived from (record version, receiver), so a retry of the same push is the same
notice: the receiver applies it idempotently and the first verified receipt is kept.

Stopping: when a pushed entry is repaired or revoked (withdrawn) or its disclosure ends
(expired), every department it was pushed to (the `pushes` rows of the record, acknowledged or
not) gets a withdraw/expire notice through the same Push RPC (PushNotice.kind; a sealed
FeedEvent without record), signed by this node, the record's producer; the receiver moves its
copy of that producer's record out of `active` and answers the same kind of receipt, stored
under a withdrawal push id ("pushw-..." of version, kind, receiver). Feed subscribers are told
by the feed's withdraw/expire events; push receivers without a feed subscription only by these
notices.

When a withdrawal leaves (invariants):
- nothing is queued in memory: a withdrawal is due for as long as the record's committed state
  is withdrawn/expired/purged and a receiver has no stored receipt for it, so a process that
  dies between the repair's commit and the send loses nothing; whoever runs the next pass
  (`push_pending_withdrawals`) sends it;
- `credex serve` sends it right after a repair or revocation made through its Lifecycle
  service, runs `push_pending_withdrawals` every `[lifecycle] withdrawal_push_interval_s` (for
  changes made by the CLI or another replica, and retries), and `push_pending` after each scan;
- a repeat is harmless: the notice id is stable, the receiver applies a withdrawal once (its
  copy is already out of `active`) and the first verified receipt is kept. Within one process,
  the sends about one record are serialised, so two passes do not send the same notice at once
  and a withdrawal never overtakes the entry it ends; an entry that was on its way while the
  record left `active` is followed by its withdrawal again (another process's withdrawal may
  have arrived first and found no copy to end). Should that entry's receipt be lost, nothing
  is sent again, and none is needed: the withdrawal that found no copy left a tombstone at the
  receiver, which keeps the entry from being stored (node/store/pushed.py);
- a purged record keeps the kind its receivers were already sent (an expired copy is not
  re-labelled withdrawn);
- a receiver that fails as a whole (down, refusing this node, a receipt we cannot accept:
  `failed_receivers`) is tried once per pass, not once per notice waiting for it, and
  `credex serve` rests it across passes (node/scheduler.py, exponential backoff up to an
  hour): a refusal costs the receiver a logged denied access each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

import catalog
import keys
from node import feeds, lifecycle, wire
from node._pb.credex.v1 import exchange_pb2, exchange_pb2_grpc
from node.errors import AuthError, InputError, NodeError, TamperDetected
from node.runtime import NodeRuntime
from node.store import StoredRecord
from node.store import lifecycle as ls
from node.store.errors import RecordTampered

__all__ = [
    "SEVERE_LIST_CATEGORY",
    "PushOutcome",
    "failed_receivers",
    "is_pushable",
    "is_withdrawal_push",
    "push_id_for",
    "push_pending",
    "push_pending_withdrawals",
    "push_record",
    "push_targets",
    "push_withdrawal",
    "pushed_to",
    "withdrawal_push_id",
    "withdrawal_report",
]

log = logging.getLogger(__name__)

SEVERE_LIST_CATEGORY = "严重失信主体名单"
_WITHDRAWAL_PREFIX = "pushw-"
# What a receiver is told when our record leaves `active`: a purged record was withdrawn or
# expired first; if that notice never got through, "withdraw" still stops the punishment.
_WITHDRAWAL_OF_STATE = {"withdrawn": "withdraw", "expired": "expire", "purged": "withdraw"}
_NOT_IN_ROSTER = "receiver not in the roster"
_NOT_TRIED = "not tried: receiver failed earlier in this pass"
_RESTING = "not tried: receiver backed off after failing passes"
# Outcomes that say nothing about the receiver as a whole: a notice not sent, or refused as
# malformed (INVALID_ARGUMENT concerns that notice only). Any other failure (down, a refusal of
# this node, a receipt we cannot accept, our credentials) would meet the receiver's other
# notices too, so it is tried once per pass, not once per notice waiting for it: each attempt
# may wait for the RPC timeout or cost the receiver a logged refusal.
_NOT_THE_RECEIVERS = frozenset({_NOT_IN_ROSTER, _NOT_TRIED, _RESTING, "INVALID_ARGUMENT"})


@dataclass(frozen=True)
class PushOutcome:
    """One push to one receiver: receipt verified and stored, or the error (no data in it)."""

    push_id: str
    to_node: str
    receipt: bool
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready outcome."""
        return {
            "push_id": self.push_id,
            "to_node": self.to_node,
            "receipt": self.receipt,
            "error": self.error,
        }


def failed_receivers(outcomes: Iterable[PushOutcome]) -> set[str]:
    """The receivers that failed as a whole in `outcomes`: down, refusing this node
    (PERMISSION_DENIED, UNAUTHENTICATED ...), answering a receipt not signed by them or not
    of the notice, or our credentials refused ("auth"). Not those whose notices were only not
    sent (outside the roster, skipped, resting) or refused as malformed (INVALID_ARGUMENT)."""
    return {o.to_node for o in outcomes if not o.receipt and o.error not in _NOT_THE_RECEIVERS}


def is_pushable(item: catalog.Item) -> bool:
    """True for the items joint punishment pushes: severe-dishonesty list entries."""
    return item.category == SEVERE_LIST_CATEGORY


def push_targets(bundle: keys.TrustBundle, provider: str, item_id: str) -> list[str]:
    """Receivers of `provider`'s pushes of `item_id`: the consumers of its "push" agreements
    covering the item, sorted, without duplicates."""
    return sorted(
        {
            a.consumer
            for a in bundle.agreements
            if a.kind == "push" and a.provider == provider and item_id in a.items
        }
    )


def push_id_for(record: StoredRecord, to_node: str) -> str:
    """The stable push id of one record version to one receiver."""
    text = f"credex-push\0{record.row_id}\0{to_node}"
    return "push-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:27]


class _Gate:
    """One record's send lock and how many coroutines hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


# Per event loop (an asyncio.Lock belongs to one), then per runtime and record key; an entry
# lives only while some coroutine holds or waits for it.
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, str], _Gate]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _one_sender(runtime: NodeRuntime, record_key: str) -> AsyncIterator[None]:
    """Serialise this process's sends about one record (module docstring): the service's
    immediate withdrawal, the withdrawal pass and the scan's pushes may run at once."""
    gates = _GATES.setdefault(asyncio.get_running_loop(), {})
    key = (id(runtime), record_key)
    gate = gates.get(key)
    if gate is None:
        gate = gates[key] = _Gate()
    gate.users += 1
    try:
        async with gate.lock:
            yield
    finally:
        gate.users -= 1
        if gate.users == 0:
            del gates[key]


async def _send(
    runtime: NodeRuntime, record: StoredRecord, signed: keys.SignedRecord, to_node: str
) -> PushOutcome:
    push_id = push_id_for(record, to_node)
    entry = runtime.bundle().member(to_node)
    if entry is None:
        return PushOutcome(push_id, to_node, False, _NOT_IN_ROSTER)
    if await asyncio.to_thread(_acked, runtime, record.record_key, push_id):
        return PushOutcome(push_id, to_node, True, None)
    notice = feeds.push_request_body(
        signed,
        sender=runtime.node_id,
        recipient=to_node,
        recipient_key=entry.encryption_key,
        notice_id=push_id,
    )
    return await _deliver(runtime, record.record_key, to_node, notice)


def _acked(runtime: NodeRuntime, record_key: str, push_id: str) -> bool:
    return any(
        p.push_id == push_id and p.acknowledged
        for p in ls.push_states(runtime.store, record_key=record_key)
    )


async def _deliver(
    runtime: NodeRuntime, record_key: str, to_node: str, notice: exchange_pb2.PushNotice
) -> PushOutcome:
    """Record the push, send it, verify the receiver's receipt and keep it (the store off
    the event loop: a pass sends many)."""
    push_id = notice.notice_id
    await asyncio.to_thread(
        ls.record_push,
        runtime.store,
        push_id=push_id,
        to_node=to_node,
        record_key=record_key,
        sent_at=runtime.clock(),
    )
    request = exchange_pb2.PushRequest(
        signed=runtime.sign_request(feeds.PUSH_METHOD, notice.SerializeToString())
    )
    try:
        async with runtime.channel(to_node) as channel:
            stub = exchange_pb2_grpc.ExchangeStub(channel)
            answer = await stub.Push(request, timeout=30)
    except grpc.aio.AioRpcError as error:
        return PushOutcome(push_id, to_node, False, f"{error.code().name}")
    bundle = runtime.bundle()
    try:
        fields = feeds.verify_receipt(
            answer, trusted=bundle.node_signing_keys(to_node, runtime.clock())
        )
    except NodeError:
        return PushOutcome(push_id, to_node, False, "receipt not signed by the receiver")
    if (
        fields.issuer != to_node
        or fields.subject != push_id
        or fields.digest != hashlib.sha256(notice.sealed).digest()
    ):
        return PushOutcome(push_id, to_node, False, "receipt does not match the notice")
    await asyncio.to_thread(
        ls.push_receipt, runtime.store, push_id, answer.SerializeToString(), at=runtime.clock()
    )
    return PushOutcome(push_id, to_node, True, None)


async def push_record(runtime: NodeRuntime, record_key: str) -> list[PushOutcome]:
    """Push the current version of one of this node's severe-dishonesty list entries to every
    receiver of a "push" agreement; return one outcome per receiver.

    Refuses (InputError) a record that is not active or not a severe-dishonesty list entry.
    A receiver that is down or refuses gets an outcome with the error (the push row stays
    without receipt and a later call retries it). If the record is withdrawn or expires while
    the entry is on its way, the receivers that took the entry are sent the withdrawal after
    it, and those outcomes are returned too.
    """
    async with _one_sender(runtime, record_key):
        record, signed, before = await asyncio.to_thread(_entry_to_push, runtime, record_key)
        outcomes = []
        for to_node in push_targets(runtime.bundle(), runtime.node_id, record.item_id):
            try:
                outcomes.append(await _send(runtime, record, signed, to_node))
            except AuthError:
                outcomes.append(PushOutcome(push_id_for(record, to_node), to_node, False, "auth"))
        took = frozenset(o.to_node for o in outcomes if o.receipt and o.push_id not in before)
        left = bool(took) and await asyncio.to_thread(_left_active, runtime, record_key)
        if left:
            # another process withdrew it meanwhile; its notice may have reached a receiver
            # before this entry, found no copy, and been receipted: send it again, after (the
            # receiver's tombstone covers the case where this entry's receipt is lost)
            outcomes.extend(await _withdraw(runtime, record_key, skip=set(), again=took))
    return outcomes


def _entry_to_push(
    runtime: NodeRuntime, record_key: str
) -> tuple[StoredRecord, keys.SignedRecord, set[str]]:
    """`push_record`'s store reads: the current version (refused unless an active
    severe-dishonesty entry), its signed form, and the push ids already receipted."""
    record = ls.current_record(runtime.store, runtime.node_id, record_key)
    if record.state != "active":
        raise InputError(f"record {record_key[:12]}... is {record.state}; only active ones push")
    if lifecycle.disclosure_ended(
        severity=record.severity,
        decided_on=record.decided_on,
        disclosure_max_end=record.disclosure_max_end,
        today=lifecycle.china_day(runtime.clock()),
    ):
        # Still "active" only because the lifecycle scan has not run since it ended.
        raise InputError(
            f"record {record_key[:12]}...: its disclosure period is over (the next lifecycle "
            "scan marks it expired); an ended record is not pushed"
        )
    item = runtime.catalogue.item(record.item_id)
    if not is_pushable(item):
        raise InputError(
            f"item {record.item_id!r} is not a {SEVERE_LIST_CATEGORY} item; nothing to push"
        )
    signed = keys.SignedRecord.from_bytes(runtime.cipher.decrypt(record.row_id, record.body))
    problem = _row_problem(runtime, record, signed)
    if problem is not None:
        # The row id and what disagrees go to the operator's log, never field values.
        log.error(
            "push of record %s...: stored record %s not sent: %s; restore the row from a "
            "backup or re-ingest it",
            record_key[:12],
            record.row_id,
            problem,
        )
        raise TamperDetected(
            f"record {record_key[:12]}... fails the integrity check (its store row disagrees "
            "with its signed body); nothing was sent, and the node log names the row"
        )
    acked = {
        p.push_id for p in ls.push_states(runtime.store, record_key=record_key) if p.acknowledged
    }
    return record, signed, acked


def _row_problem(
    runtime: NodeRuntime, record: StoredRecord, signed: keys.SignedRecord
) -> str | None:
    """What about `record`'s store row disagrees with its signed header, or None.

    Which entries are pushed, and to whom, is chosen by the row's columns (item, record key,
    version, producer), which someone with write access to the database but without keys can
    change; the receiver refuses a record that is not what its notice says, but only after
    opening it. So the signed header is checked before anything is sealed (as node/query.py
    and the feed do)."""
    row = {
        "item": record.item_id,
        "record_key": record.record_key,
        "version": record.version,
        "producer": runtime.node_id,
    }
    return wire.stored_row_problem(signed.envelope.payload, row)


def _left_active(runtime: NodeRuntime, record_key: str) -> bool:
    state = ls.current_record(runtime.store, runtime.node_id, record_key).state
    return state in _WITHDRAWAL_OF_STATE


async def push_pending(runtime: NodeRuntime) -> list[PushOutcome]:
    """Push every active severe-dishonesty entry of this node that some receiver of a "push"
    agreement has not yet acknowledged; returns the outcomes of the attempts made.

    Runs inside `credex serve` after each lifecycle scan, so a list entry reaches the named
    departments without an operator command, and a receiver that was down gets it later.
    Then sends the withdraw/expire notices of entries that were pushed and have since been
    repaired, revoked or expired (`push_pending_withdrawals`).
    """
    outcomes: list[PushOutcome] = []
    for record_key in await asyncio.to_thread(_entries_due, runtime):
        try:
            outcomes.extend(await push_record(runtime, record_key))
        except InputError:
            continue  # withdrawn or expired since it was listed: its withdrawal follows
        except TamperDetected:
            continue  # logged with its row; the other entries still go
    outcomes.extend(await push_pending_withdrawals(runtime))
    return outcomes


def _entries_due(runtime: NodeRuntime) -> list[str]:
    """Keys of this node's active severe-dishonesty entries that a receiver of a "push"
    agreement has not acknowledged (oldest first)."""
    bundle = runtime.bundle()
    items = sorted(
        {
            item
            for a in bundle.agreements
            if a.kind == "push" and a.provider == runtime.node_id
            for item in a.items
            if item in runtime.catalogue.items and is_pushable(runtime.catalogue.item(item))
        }
    )
    due = []
    for record in ls.local_active_records(runtime.store, runtime.node_id, items):
        acked = {
            p.push_id
            for p in ls.push_states(runtime.store, record_key=record.record_key)
            if p.acknowledged
        }
        targets = push_targets(bundle, runtime.node_id, record.item_id)
        if not all(push_id_for(record, t) in acked for t in targets):
            due.append(record.record_key)
    return due


def is_withdrawal_push(push_id: str) -> bool:
    """True for the id of a withdraw/expire notice (`withdrawal_push_id`), False for an entry."""
    return push_id.startswith(_WITHDRAWAL_PREFIX)


def withdrawal_push_id(record: StoredRecord, kind: str, to_node: str) -> str:
    """The stable id of the withdraw/expire notice of one record version to one receiver."""
    text = f"credex-push-{kind}\0{record.row_id}\0{to_node}"
    return _WITHDRAWAL_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:27]


def pushed_to(runtime: NodeRuntime, record_key: str) -> list[str]:
    """The departments this node has pushed `record_key`'s entry to (sent, acknowledged or
    not: a push without receipt may still have arrived), sorted."""
    return sorted(
        {
            p.to_node
            for p in ls.list_pushes(runtime.store, record_key=record_key)
            if not is_withdrawal_push(p.push_id)
        }
    )


async def push_withdrawal(runtime: NodeRuntime, record_key: str) -> list[PushOutcome]:
    """Tell every department this node pushed `record_key` to that the entry stopped being
    shared (credit repair or revocation: withdraw; end of disclosure: expire), so joint
    punishment stops there too (令第36号 Art. 3). One outcome per receiver.

    Refuses (InputError) a record that is still active. A receiver that is down or refuses
    gets an outcome with the error; a later pass (`push_pending_withdrawals`) retries it.
    Receivers already acknowledging this withdrawal are not asked again. The Lifecycle
    service calls it right after a repair or revocation commits; the CLI's `lifecycle push`
    on a withdrawn or expired record too.
    """
    async with _one_sender(runtime, record_key):
        return await _withdraw(runtime, record_key, skip=set())


def _withdrawal_kind(
    record: StoredRecord, to_node: str, acked: Mapping[str, bool], *, withdrawn: bool = False
) -> str:
    """The notice `to_node` gets for `record` (`acked`: push id -> receipted, for the
    record's pushes): the kind of its state, except that a purged record keeps the notice its
    receiver was already sent (acknowledged first, else the one being retried), so an expired
    copy is not told again as withdrawn; one never told gets "withdraw", which stops the
    punishment either way. A purged record that was `withdrawn` first (repaired, or revoked
    after it expired: `_was_withdrawn`) gets "withdraw": an expire notice does not tell of
    that (`ls.pushed_keys_untold` counts it as due)."""
    if record.state == "purged" and withdrawn:
        return "withdraw"
    if record.state == "purged":
        sent = [
            k for k in ("expire", "withdraw") if withdrawal_push_id(record, k, to_node) in acked
        ]
        for kind in sent:
            if acked[withdrawal_push_id(record, kind, to_node)]:
                return kind
        if sent:
            return sent[0]
    return _WITHDRAWAL_OF_STATE[record.state]


async def _withdraw(
    runtime: NodeRuntime,
    record_key: str,
    *,
    skip: set[str],
    resting: Collection[str] = (),
    again: Collection[str] = (),
) -> list[PushOutcome]:
    """`push_withdrawal` inside the record's `_one_sender`. Receivers in `skip` (failed
    earlier in this pass) and in `resting` (backed off by the caller) are not tried; one that
    fails as a whole (`failed_receivers`) is added to `skip`. Those in `again` are sent the
    notice even if they acknowledged it (an entry may have overtaken it)."""
    record, pushes, withdrawn = await asyncio.to_thread(_withdrawal_plan, runtime, record_key)
    receivers = sorted({p.to_node for p in pushes.values() if not is_withdrawal_push(p.push_id)})
    acknowledged = {push_id: p.acknowledged for push_id, p in pushes.items()}
    bundle = runtime.bundle()
    outcomes = []
    for to_node in receivers:
        kind = _withdrawal_kind(record, to_node, acknowledged, withdrawn=withdrawn)
        push_id = withdrawal_push_id(record, kind, to_node)
        entry = bundle.member(to_node)
        if entry is None:
            outcomes.append(PushOutcome(push_id, to_node, False, _NOT_IN_ROSTER))
            continue
        if acknowledged.get(push_id, False) and to_node not in again:
            outcomes.append(PushOutcome(push_id, to_node, True, None))
            continue
        if to_node in resting:
            outcomes.append(PushOutcome(push_id, to_node, False, _RESTING))
            continue
        if to_node in skip:
            outcomes.append(PushOutcome(push_id, to_node, False, _NOT_TRIED))
            continue
        withdrawal = feeds.PushWithdrawal(
            kind=kind,
            record_key=record.record_key,
            version=record.version,
            item_id=record.item_id,
            reason=record.state,
        )
        notice = feeds.push_withdrawal_body(
            withdrawal,
            at=runtime.clock(),
            sender=runtime.node_id,
            recipient=to_node,
            recipient_key=entry.encryption_key,
            notice_id=push_id,
        )
        try:
            outcome = await _deliver(runtime, record_key, to_node, notice)
        except AuthError:
            outcome = PushOutcome(push_id, to_node, False, "auth")
        skip |= failed_receivers([outcome])
        outcomes.append(outcome)
    return outcomes


def _withdrawal_plan(
    runtime: NodeRuntime, record_key: str
) -> tuple[StoredRecord, dict[str, ls.PushState], bool]:
    """`_withdraw`'s store reads: the current version (refused while active), its pushes
    by push id, and whether a purged one was withdrawn first (`_was_withdrawn`)."""
    record = ls.current_record(runtime.store, runtime.node_id, record_key)
    if record.state not in _WITHDRAWAL_OF_STATE:
        raise InputError(f"record {record_key[:12]}... is {record.state}; nothing to withdraw")
    pushes = {p.push_id: p for p in ls.push_states(runtime.store, record_key=record_key)}
    return record, pushes, _was_withdrawn(runtime, record)


def _was_withdrawn(runtime: NodeRuntime, record: StoredRecord) -> bool:
    """Whether purged `record` was repaired or revoked before its purge (its state says only
    "purged"): the task of the withdrawal outlives it."""
    if record.state != "purged":
        return False
    tasks = ls.list_tasks(runtime.store, record_key=record.record_key)
    return any(task.kind in ("repair", "revocation") for task in tasks)


def withdrawal_report(runtime: NodeRuntime, record_key: str) -> list[dict[str, Any]]:
    """For the propagation report: one row per department `record_key` was pushed to, saying
    whether it acknowledged the withdraw/expire notice (no personal data). Empty while the
    record is active or was never pushed."""
    record = ls.current_record(runtime.store, runtime.node_id, record_key)
    if record.state not in _WITHDRAWAL_OF_STATE:
        return []
    pushes = {p.push_id: p for p in ls.list_pushes(runtime.store, record_key=record_key)}
    acked = {push_id: p.receipt is not None for push_id, p in pushes.items()}
    rows = []
    withdrawn = _was_withdrawn(runtime, record)
    for to_node in pushed_to(runtime, record_key):
        kind = _withdrawal_kind(record, to_node, acked, withdrawn=withdrawn)
        push = pushes.get(withdrawal_push_id(record, kind, to_node))
        rows.append(
            {
                "to_node": to_node,
                "kind": kind,
                "sent_at": None if push is None else push.sent_at.isoformat(),
                "acknowledged": push is not None and push.receipt is not None,
            }
        )
    return rows


async def push_pending_withdrawals(
    runtime: NodeRuntime, *, resting: Collection[str] = ()
) -> list[PushOutcome]:
    """Send every withdraw/expire notice that a department an entry was pushed to has not
    acknowledged yet; return the outcomes of the attempts made (empty when none is due).

    A withdrawal is due from the commit that took the record out of `active` until its
    receipt is stored, whichever process made the change. Finding none only reads the
    `pushes` table (without receipts) and the states of the pushed records, and every store
    access is off the event loop, so `credex serve` runs this every
    `[lifecycle] withdrawal_push_interval_s`.
    A receiver that fails as a whole (`failed_receivers`: down, refusing this node, a receipt
    we cannot accept) is tried once per pass: its other notices get an outcome saying they
    were not tried. Receivers in `resting` (the caller's backoff) are not tried at all, and
    their outcomes say so. Either way the notices stay due for a later pass. A record whose
    row fails its integrity tag (decision 0018) is logged and left for a later pass; the
    others are still sent.
    """
    due = await asyncio.to_thread(_withdrawals_due, runtime)
    skip: set[str] = set()
    outcomes: list[PushOutcome] = []
    for record_key in due:
        async with _one_sender(runtime, record_key):
            try:
                outcomes.extend(await _withdraw(runtime, record_key, skip=skip, resting=resting))
            except RecordTampered as error:
                # Its row fails its integrity tag: its notice waits until the row is restored;
                # the other records' notices still go (the message names the row id only).
                log.error("withdrawal of record %s...: %s", record_key[:12], error)
    return outcomes


def _withdrawals_due(runtime: NodeRuntime) -> list[str]:
    """Keys (sorted) of this node's records that were pushed, are no longer active, and have a
    receiver with no acknowledged withdraw/expire notice."""
    # A receipted notice of any version settles the pair: a record that left `active` never
    # gets an active version again (ingest keeps it withdrawn or expired, corrections need an
    # active one); but one sent before a revocation that withdrew an expired record does not
    # tell of that withdrawal (pushed_keys_untold).
    return ls.pushed_keys_untold(
        runtime.store,
        runtime.node_id,
        notice_prefix=_WITHDRAWAL_PREFIX,
        states=sorted(_WITHDRAWAL_OF_STATE),
    )
