"""Refused calls are accesses too: each one becomes a denied access-log entry.

DESIGN.md section 6: every access, allowed or denied, is one log entry. `logged_refusals` does
it for the services that release or take in data (Exchange.Subscribe, Exchange.Push, Lifecycle,
and Query's authentication; node.query logs the refusals that follow from a query's body):
whatever refusal ends the call (a bad signature, a policy denial, a malformed body, a tampered
seal) is durably logged with a reason code before the error status goes back. An error that is
not a refusal (the log itself failing, an internal error) is not an access decision and passes
through untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc.aio
from opentelemetry import trace

import keys
from node._pb.credex.v1 import common_pb2
from node.accesslog import LogEntry, utc_iso
from node.errors import AuthError, InputError, NodeError, NotFound, PolicyDenied, StaleBundle
from node.requests import RequestAuthenticator, VerifiedRequest

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = [
    "Caller",
    "asked_items",
    "logged_refusals",
    "refusal_reason",
    "request_digest",
    "trace_id",
]

UNIDENTIFIED = "unidentified_peer"


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
            LogEntry(
                time=utc_iso(runtime.clock()),
                kind=kind,
                requester=requester,
                officer="",
                purpose=purpose,
                legal_basis="",
                decision="deny",
                reason=reason,
                request_id=request_id[:64],
                items_asked=caller.items_asked,
                trace_id=trace_id(),
            )
        )
        raise


def _tls_peer(runtime: NodeRuntime, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    try:
        return runtime.server_tls().identify(context)
    except AuthError:
        return UNIDENTIFIED
