"""Refused calls are accesses too: each one becomes a denied access-log entry.

DESIGN.md section 6: every access, allowed or denied, is one log entry. `logged_refusals` does
it for the services that release or take in data (Exchange.Subscribe, Exchange.Push, Lifecycle,
Transparency.Cosign, and Query's authentication; node.query logs the refusals that follow from
a query's body): whatever refusal ends the call (a bad signature, a policy denial, a malformed
body, a tampered seal) is durably logged with a reason code before the error status goes back.
An error that is not a refusal (the log itself failing, an internal error) is not an access
decision and passes through untouched.

`InterceptedRefusals` logs, for the same methods, what the handlers never see: refusals made by
the server's call interceptor before a handler runs (a certificate no longer pinned, a roster
membership that lapsed, an expired bundle, a request that does not decode), and the refusals of
a handler that does not log its own (Exchange.Ack). `METHOD_ACCESS` says which methods' refusals
are accesses, under which kind, and who logs them, so that each refusal is logged exactly once.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc.aio
from google.protobuf.message import Message
from opentelemetry import trace

import keys
from node._pb.credex.v1 import common_pb2
from node.accesslog import LogEntry, utc_iso
from node.errors import (
    AuthError,
    InputError,
    NodeError,
    NotDelivered,
    NotFound,
    PolicyDenied,
    StaleBundle,
)
from node.requests import RequestAuthenticator, VerifiedRequest

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = [
    "COSIGN_METHOD",
    "METHOD_ACCESS",
    "Caller",
    "InterceptedRefusals",
    "MethodAccess",
    "asked_items",
    "logged_refusals",
    "method_access",
    "refusal_reason",
    "request_digest",
    "trace_id",
]

UNIDENTIFIED = "unidentified_peer"
COSIGN_METHOD = "/credex.v1.Transparency/Cosign"
_LIFECYCLE_SERVICE = "/credex.v1.Lifecycle/"


@dataclass(frozen=True)
class MethodAccess:
    """How the refusals of one RPC method are logged: as denied `kind` accesses for `purpose`;
    `handler_logs` when its handler logs the refusals it raises itself (logged_refusals, or
    the query engine), so that the call interceptor logs only those made before it runs."""

    kind: str
    purpose: str
    handler_logs: bool


# Full method names are the wire's (docs/wire.md), spelled out here because the modules that
# name them import this one. A method absent here (Catalog, the Transparency reads, health,
# reflection) neither releases nor takes in data: its refusals are not accesses.
METHOD_ACCESS: Mapping[str, MethodAccess] = {
    "/credex.v1.Query/Query": MethodAccess("query", "", handler_logs=True),
    "/credex.v1.Exchange/Subscribe": MethodAccess("feed_delivery", "feed", handler_logs=True),
    "/credex.v1.Exchange/Push": MethodAccess("push", "joint_punishment", handler_logs=True),
    # The servicer does not log Ack's refusals (a wrong, forged or foreign receipt): the
    # interceptor does. Switch this to True if Ack is ever wrapped in logged_refusals.
    "/credex.v1.Exchange/Ack": MethodAccess("feed_ack", "feed", handler_logs=False),
    COSIGN_METHOD: MethodAccess("cosign", "witness", handler_logs=True),
}


def method_access(method: str) -> MethodAccess | None:
    """How refusals of the full gRPC `method` are logged; None when they are not accesses.
    Every Lifecycle method is `lifecycle_<operation>`, logged by its handler."""
    if method.startswith(_LIFECYCLE_SERVICE):
        operation = method[len(_LIFECYCLE_SERVICE) :]
        return MethodAccess(f"lifecycle_{operation.lower()}", "lifecycle", handler_logs=True)
    return METHOD_ACCESS.get(method)


def request_digest(envelope: bytes) -> str:
    """A stable id for a request whose body cannot be trusted (hex, 32 digits)."""
    return hashlib.sha256(envelope).hexdigest()[:32]


def trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def refusal_reason(error: BaseException) -> str | None:
    """The reason code a refusal is logged under; None for an error that is not a refusal."""
    if isinstance(error, PolicyDenied):
        return error.reason
    if isinstance(error, AuthError):
        return error.reason
    if isinstance(error, keys.VerificationError):
        return "verification_failed"
    if isinstance(error, StaleBundle):
        return "stale_bundle"
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, NotDelivered):
        return error.reason
    if isinstance(error, InputError | keys.KeysError):
        return "malformed_request"
    return None


_MAX_ITEMS = 64
_MAX_ITEM_ID = 64


def asked_items(items: Iterable[str]) -> tuple[str, ...]:
    """Item ids as a caller asked for them, for a log entry: sorted, unique, and bounded (at
    most 64 ids of at most 64 characters), since a refused caller's list was never checked."""
    return tuple(sorted({item[:_MAX_ITEM_ID] for item in items}))[:_MAX_ITEMS]


@dataclass
class Caller:
    """What the handler learnt about the call so far; the refusal entry says as much.

    Once `verified` is set, the entry names its signer and nonce. Before that the request id is
    a digest of the request envelope (its nonce cannot be trusted yet) and the requester is the
    node the TLS certificate belongs to.
    """

    verified: VerifiedRequest | None = None
    items_asked: tuple[str, ...] = ()

    async def authenticate(
        self,
        auth: RequestAuthenticator,
        signed: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        method: str,
    ) -> VerifiedRequest:
        """Authenticate the call's signed request and remember who sent it, so that a later
        refusal is logged under the verified signer and nonce."""
        self.verified = await auth.authenticate_async(signed, context, method=method)
        return self.verified


@contextlib.asynccontextmanager
async def logged_refusals(
    runtime: NodeRuntime,
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    kind: str,
    purpose: str,
    envelope: bytes,
) -> AsyncIterator[Caller]:
    """Run a handler body; a refusal raised in it is logged as a denied `kind` access, then
    re-raised. Raises LogUnavailable instead when the denial cannot be logged (fail closed)."""
    caller = Caller()
    try:
        yield caller
    except (NodeError, keys.KeysError) as error:
        reason = refusal_reason(error)
        if reason is None or getattr(error, "access_logged", False):
            raise
        verified = caller.verified
        if verified is not None:
            requester, request_id = verified.node_id, verified.nonce
        else:
            requester, request_id = _tls_peer(runtime, context), request_digest(envelope)
        await runtime.log.append(
            _denied(
                runtime,
                kind=kind,
                purpose=purpose,
                requester=requester,
                reason=reason,
                request_id=request_id,
                items_asked=caller.items_asked,
            )
        )
        raise


def _denied(
    runtime: NodeRuntime,
    *,
    kind: str,
    purpose: str,
    requester: str,
    reason: str,
    request_id: str,
    items_asked: tuple[str, ...] = (),
) -> LogEntry:
    """The denied `kind` access entry of a refusal, at `runtime.clock()`."""
    return LogEntry(
        time=utc_iso(runtime.clock()),
        kind=kind,
        requester=requester,
        officer="",
        purpose=purpose,
        legal_basis="",
        decision="deny",
        reason=reason,
        request_id=request_id[:64],
        items_asked=items_asked,
        trace_id=trace_id(),
    )


class InterceptedRefusals:
    """Logs the refusals a node's call interceptor reports (`transport.CallRefusals`): each
    refusal of a method in `method_access` that its handler does not log becomes one denied
    entry, named after the node the TLS certificate is pinned for (`unidentified_peer` if
    none), with a digest of the request as its id."""

    def __init__(self, runtime: NodeRuntime) -> None:
        """Log into `runtime.log`, at `runtime.clock()`."""
        self._runtime = runtime

    async def refused(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        error: BaseException,
        *,
        request: object,
        in_handler: bool,
    ) -> None:
        """Append one denied entry for `error` when it is a refusal of a logged method that
        nobody else logs; raises LogUnavailable when the entry cannot be written."""
        access = method_access(method)
        if access is None or (in_handler and access.handler_logs):
            return
        reason = refusal_reason(error)
        if reason is None or getattr(error, "access_logged", False):
            return
        runtime = self._runtime
        await runtime.log.append(
            _denied(
                runtime,
                kind=access.kind,
                purpose=access.purpose,
                requester=_tls_peer(runtime, context),
                reason=reason,
                request_id=request_digest(_request_bytes(request)),
            )
        )


def _request_bytes(request: object) -> bytes:
    """The bytes a refused request is known by: its signed envelope when it has one (the
    same digest as logged_refusals'), else the whole message, or the raw bytes of a request
    that did not decode."""
    if isinstance(request, bytes):
        return request
    if not isinstance(request, Message):
        return b""
    fields = request.DESCRIPTOR.fields_by_name
    if "signed" in fields:
        return bytes(request.signed.envelope)  # type: ignore[attr-defined]
    if "envelope" in fields:
        return bytes(request.envelope)  # type: ignore[attr-defined]
    return request.SerializeToString()


def _tls_peer(runtime: NodeRuntime, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    # The certificate's owner even when it is no longer trusted (expired membership or bundle):
    # the log says who was refused, not who was accepted.
    return runtime.server_tls().certificate_owner(context) or UNIDENTIFIED
