"""credex.v1.Lifecycle: the platform acting for a data subject on this node's records.

Object, ResolveObjection, Correct, Revoke and Repair each take a `SignedRequest`; the servicer
authenticates it (signature, roster, TLS identity, timestamp, nonce), refuses any caller whose
roster entry lacks the `platform` role (PERMISSION_DENIED `not_platform`), then applies the
operation through node/lifecycle_ops.py, which logs it. Every refusal (authentication, role, a
malformed body, an unknown record) is logged as a denied access (node/refusals.py). Operations
act only on this node's own records ("谁认定、谁修复").

Once a repair or revocation has committed, the departments its entry was pushed to (joint
punishment) are sent the withdraw notice at once, beside the call: the receipt goes back
without waiting for them, and a receiver that is down leaves the notice pending for the
withdrawal pass below (node/push.py: the pending state is the committed one, nothing is kept
in memory).

The module also provides the node's lifecycle background tasks (`background`): one scan at
start so a node that was down catches up, then one every `[lifecycle] scan_interval_s`; and
the pass sending pending joint-punishment withdrawals every
`[lifecycle] withdrawal_push_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import grpc.aio

from node import lifecycle as rules
from node import lifecycle_ops as ops
from node import push, wire
from node._pb.credex.v1 import common_pb2, lifecycle_pb2, lifecycle_pb2_grpc
from node.errors import InputError, PolicyDenied
from node.refusals import Caller, logged_refusals
from node.requests import VerifiedRequest
from node.scheduler import run_scans, run_withdrawal_pushes
from node.server import Service

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["LIFECYCLE_METHODS", "LifecycleServicer", "background", "make_services"]

_log = logging.getLogger("node.services.lifecycle")
# Withdrawal sends this servicer runs at once: a burst of repairs must not open a connection to
# every receiver for every repair together; the others wait their turn (still beside the call).
WITHDRAWAL_SENDS = 4

LIFECYCLE_METHODS = {
    name: f"/credex.v1.Lifecycle/{name}"
    for name in ("Object", "ResolveObjection", "Correct", "Revoke", "Repair")
}


def _key(record_key: str) -> str:
    key = record_key.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise InputError("record_key: expected the 64 hex characters of a record key")
    return key


class LifecycleServicer(lifecycle_pb2_grpc.LifecycleServicer):
    """Serves Lifecycle for the platform role only."""

    def __init__(self, runtime: NodeRuntime) -> None:
        """Apply operations to `runtime`'s store (its authenticator checks every request)."""
        self._runtime = runtime
        self._auth = runtime.authenticator()
        # withdrawal sends in flight: referenced until done, so none is collected half-way
        self._sending: set[asyncio.Task[None]] = set()
        self._send_slots = asyncio.Semaphore(WITHDRAWAL_SENDS)

    def _withdraw_soon(self, record_key: str) -> None:
        """Start sending `record_key`'s joint-punishment withdraw notices beside the call (at
        most WITHDRAWAL_SENDS records at a time; the others wait for a slot)."""
        task = asyncio.create_task(self._withdraw(record_key))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _withdraw(self, record_key: str) -> None:
        # never raises: the repair stands whatever happens here, and the notices stay due
        # (node/push.py) for the withdrawal pass to retry
        try:
            async with self._send_slots:
                outcomes = await push.push_withdrawal(self._runtime, record_key)
        except Exception as error:
            _log.warning("joint-punishment withdrawal not sent now: %s", type(error).__name__)
            return
        failed = sum(1 for o in outcomes if not o.receipt)
        if failed:
            _log.warning("%d joint-punishment withdrawal notice(s) left for a retry", failed)

    async def withdrawals_sent(self) -> None:
        """Wait until every withdrawal send this servicer started has ended (sent, or left
        pending for the retry pass)."""
        while self._sending:
            await asyncio.wait(set(self._sending))

    def _refusals(
        self,
        request: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        name: str,
    ) -> contextlib.AbstractAsyncContextManager[Caller]:
        """Log whatever refusal ends the `name` call as a denied lifecycle access."""
        return logged_refusals(
            self._runtime,
            context,
            kind=f"lifecycle_{name.lower()}",
            purpose="lifecycle",
            envelope=request.envelope,
        )

    async def _platform(
        self,
        request: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        name: str,
        caller: Caller,
    ) -> tuple[VerifiedRequest, ops.Requester]:
        verified = await caller.authenticate(
            self._auth, request, context, method=LIFECYCLE_METHODS[name]
        )
        entry = self._runtime.bundle().member(verified.node_id)
        if entry is None or "platform" not in entry.roles:
            raise PolicyDenied(
                "not_platform", "lifecycle operations are accepted only from the platform"
            )
        return verified, ops.Requester(node=verified.node_id, officer="platform")

    @staticmethod
    def _receipt(result: ops.LifecycleResult, kind: str) -> lifecycle_pb2.LifecycleReceipt:
        receipt = lifecycle_pb2.LifecycleReceipt(
            event_id=result.task_id,
            record_key=result.record_key,
            version=result.version,
            state=result.state,
            events=result.events,
        )
        if kind:
            receipt.kind = wire.event_kind_to_pb(kind)
        if result.deadline is not None:
            due = dt.datetime.combine(result.deadline.due_on, dt.time(23, 59, 59), rules.CST)
            receipt.review_due.CopyFrom(wire.timestamp_to_pb(due))
            receipt.review_due_approximate = result.deadline.approximate
        return receipt

    async def Object(  # noqa: N802 (the generated servicer's name)
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> lifecycle_pb2.LifecycleReceipt:
        """File an objection for a subject: flag and start the Art. 39 review clock."""
        async with self._refusals(request, context, "Object") as caller:
            verified, who = await self._platform(request, context, "Object", caller)
            body = verified.parse(lifecycle_pb2.ObjectionBody)
            result = await asyncio.to_thread(
                ops.object_record,
                self._runtime,
                _key(body.record_key),
                reason=body.reason_code or "objection",
                needs_other_unit=body.needs_other_unit,
                requester=who,
                objection_id=body.objection_id or None,
            )
            return self._receipt(result, "objection_set")

    async def ResolveObjection(  # noqa: N802
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> lifecycle_pb2.LifecycleReceipt:
        """Resolve an objection: REJECTED clears the flag, UPHELD corrects with `changes`."""
        async with self._refusals(request, context, "ResolveObjection") as caller:
            verified, who = await self._platform(request, context, "ResolveObjection", caller)
            body = verified.parse(lifecycle_pb2.ResolveObjectionBody)
            if body.outcome == lifecycle_pb2.OBJECTION_OUTCOME_REJECTED:
                outcome, kind = "confirm", "objection_cleared"
            elif body.outcome == lifecycle_pb2.OBJECTION_OUTCOME_UPHELD:
                outcome, kind = "correct", "correct"
            else:
                raise InputError("ResolveObjectionBody.outcome: UPHELD or REJECTED required")
            result = await asyncio.to_thread(
                ops.resolve_objection,
                self._runtime,
                body.objection_id,
                outcome=outcome,
                changes=dict(body.changes),
                requester=who,
            )
            return self._receipt(result, kind)

    async def Correct(  # noqa: N802
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> lifecycle_pb2.LifecycleReceipt:
        """Correct a record: the provider re-validates and re-signs the changed fields."""
        async with self._refusals(request, context, "Correct") as caller:
            verified, who = await self._platform(request, context, "Correct", caller)
            body = verified.parse(lifecycle_pb2.CorrectBody)
            if body.HasField("corrected"):
                raise InputError(
                    "CorrectBody.corrected: a version signed elsewhere is never stored; "
                    "send changes"
                )
            key = _key(body.record_key)
            if body.supersedes_version:
                current = self._runtime.store.record_versions(self._runtime.node_id, key)
                if current and current[-1].version != body.supersedes_version:
                    raise InputError(
                        f"CorrectBody.supersedes_version {body.supersedes_version}: the current "
                        f"version is {current[-1].version}"
                    )
            result = await asyncio.to_thread(
                ops.correct_record,
                self._runtime,
                key,
                dict(body.changes),
                reason=body.reason_code or "correction",
                requester=who,
            )
            return self._receipt(result, "correct")

    async def Revoke(  # noqa: N802
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> lifecycle_pb2.LifecycleReceipt:
        """Withdraw a record whose decision was revoked (Art. 40 deadline from `known_on`)."""
        async with self._refusals(request, context, "Revoke") as caller:
            verified, who = await self._platform(request, context, "Revoke", caller)
            body = verified.parse(lifecycle_pb2.RevokeBody)
            known: dt.date | None = None
            if body.known_on:
                try:
                    known = dt.date.fromisoformat(body.known_on)
                except ValueError:
                    raise InputError("RevokeBody.known_on: expected YYYY-MM-DD") from None
            result = await asyncio.to_thread(
                ops.revoke_record,
                self._runtime,
                _key(body.record_key),
                reason=body.reason_code or "revocation",
                known_on=known,
                requester=who,
            )
            self._withdraw_soon(result.record_key)
            return self._receipt(result, "withdraw")

    async def Repair(  # noqa: N802
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> lifecycle_pb2.LifecycleReceipt:
        """Credit repair: PERMISSION_DENIED `repair_not_admissible` lists every failure."""
        async with self._refusals(request, context, "Repair") as caller:
            verified, who = await self._platform(request, context, "Repair", caller)
            body = verified.parse(lifecycle_pb2.RepairBody)
            application = rules.RepairApplication(
                obligations_fulfilled=body.obligations_fulfilled,
                commitment_sha256=body.commitment_sha256.hex() if body.commitment_sha256 else None,
            )
            result = await asyncio.to_thread(
                ops.repair_record,
                self._runtime,
                _key(body.record_key),
                application,
                decision_no=body.decision_no,
                requester=who,
            )
            self._withdraw_soon(result.record_key)
            return self._receipt(result, "withdraw")


def make_services(runtime: NodeRuntime) -> list[Service]:
    """The Lifecycle service of a running node."""
    return [
        Service(
            name="credex.v1.Lifecycle",
            servicer=LifecycleServicer(runtime),
            add=lifecycle_pb2_grpc.add_LifecycleServicer_to_server,
        )
    ]


def background(
    runtime: NodeRuntime,
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """The lifecycle scan (once at start, then every `[lifecycle] scan_interval_s`) and the
    pending joint-punishment withdrawals (every `[lifecycle] withdrawal_push_interval_s`)."""

    async def scans(stop: asyncio.Event) -> None:
        await run_scans(runtime, stop)

    async def withdrawals(stop: asyncio.Event) -> None:
        await run_withdrawal_pushes(runtime, stop)

    return [scans, withdrawals]
