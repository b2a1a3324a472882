"""Joint-punishment pushes (联合惩戒): sending severe-dishonesty list entries to the departments
named by "push" agreements, and keeping their signed receipts.

Only this node's own, active entries of a 严重失信主体名单 item are pushed (the receiver checks
that the record is signed by its producer, which is the sender). The notice is the signed record
sealed for the receiver (`feeds.push_request_body`); the receiver answers with a receipt signed by
its node key over {subject = notice id, digest = sha256(sealed notice)}, which is verified here
against the receiver's roster keys before it is stored in the `pushes` table.

Push ids are derived from (record version, receiver), so a retry of the same push is the same
notice: the receiver applies it idempotently and the first verified receipt is kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import grpc

import catalog
import keys
from node import feeds
from node._pb.credex.v1 import exchange_pb2, exchange_pb2_grpc
from node.errors import AuthError, InputError, NodeError
from node.runtime import NodeRuntime
from node.store import StoredRecord
from node.store import lifecycle as ls

__all__ = [
    "SEVERE_LIST_CATEGORY",
    "PushOutcome",
    "is_pushable",
    "push_id_for",
    "push_record",
    "push_targets",
]

SEVERE_LIST_CATEGORY = "严重失信主体名单"


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


async def _send(
    runtime: NodeRuntime, record: StoredRecord, signed: keys.SignedRecord, to_node: str
) -> PushOutcome:
    now = runtime.clock()
    bundle = runtime.bundle()
    push_id = push_id_for(record, to_node)
    entry = bundle.member(to_node)
    if entry is None:
        return PushOutcome(push_id, to_node, False, "receiver not in the roster")
    done = {p.push_id for p in ls.list_pushes(runtime.store, record_key=record.record_key)
            if p.receipt is not None}  # fmt: skip
    if push_id in done:
        return PushOutcome(push_id, to_node, True, None)
    notice = feeds.push_request_body(
        signed,
        sender=runtime.node_id,
        recipient=to_node,
        recipient_key=entry.encryption_key,
        notice_id=push_id,
    )
    ls.record_push(
        runtime.store, push_id=push_id, to_node=to_node, record_key=record.record_key, sent_at=now
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
    ls.push_receipt(runtime.store, push_id, answer.SerializeToString(), at=runtime.clock())
    return PushOutcome(push_id, to_node, True, None)


async def push_record(runtime: NodeRuntime, record_key: str) -> list[PushOutcome]:
    """Push the current version of one of this node's severe-dishonesty list entries to every
    receiver of a "push" agreement; return one outcome per receiver.

    Refuses (InputError) a record that is not active or not a severe-dishonesty list entry.
    A receiver that is down or refuses gets an outcome with the error (the push row stays
    without receipt and a later call retries it).
    """
    record = ls.current_record(runtime.store, runtime.node_id, record_key)
    if record.state != "active":
        raise InputError(f"record {record_key[:12]}... is {record.state}; only active ones push")
    item = runtime.catalogue.item(record.item_id)
    if not is_pushable(item):
        raise InputError(
            f"item {record.item_id!r} is not a {SEVERE_LIST_CATEGORY} item; nothing to push"
        )
    signed = keys.SignedRecord.from_bytes(runtime.cipher.decrypt(record.row_id, record.body))
    outcomes = []
    for to_node in push_targets(runtime.bundle(), runtime.node_id, record.item_id):
        try:
            outcomes.append(await _send(runtime, record, signed, to_node))
        except AuthError:
            outcomes.append(PushOutcome(push_id_for(record, to_node), to_node, False, "auth"))
    return outcomes


async def push_pending(runtime: NodeRuntime) -> list[PushOutcome]:
    """Push every active severe-dishonesty entry of this node that some receiver of a "push"
    agreement has not yet acknowledged; returns the outcomes of the attempts made.

    Runs inside `credex serve` after each lifecycle scan, so a list entry reaches the named
    departments without an operator command, and a receiver that was down gets it later.
    """
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
    outcomes: list[PushOutcome] = []
    for record in ls.local_active_records(runtime.store, runtime.node_id, items):
        acked = {
            p.push_id
            for p in ls.list_pushes(runtime.store, record_key=record.record_key)
            if p.receipt is not None
        }
        targets = push_targets(bundle, runtime.node_id, record.item_id)
        if all(push_id_for(record, t) in acked for t in targets):
            continue
        outcomes.extend(await push_record(runtime, record.record_key))
    return outcomes
