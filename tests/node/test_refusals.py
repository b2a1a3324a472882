"""node.refusals: which errors are refusals, and what logged_refusals writes for them."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

import pytest

import keys
from node._pb.credex.v1 import common_pb2, exchange_pb2, transparency_pb2
from node.accesslog import AccessLog, MemoryLogBackend, iter_entries
from node.errors import (
    AuthError,
    InputError,
    LogUnavailable,
    NotFound,
    PolicyDenied,
    StaleBundle,
    TamperDetected,
)
from node.refusals import (
    UNIDENTIFIED,
    InterceptedRefusals,
    MethodAccess,
    asked_items,
    logged_refusals,
    method_access,
    refusal_reason,
    request_digest,
)
from node.requests import VerifiedRequest
from node.runtime import NodeRuntime

T0 = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PolicyDenied("item_not_agreed", "no agreement for that item"), "item_not_agreed"),
        (AuthError("relayed refusal"), "unauthenticated"),
        (AuthError("bad signature", reason="bad_signature"), "bad_signature"),
        (AuthError("revoked key", reason="key_revoked"), "key_revoked"),
        (AuthError("replay", reason="replayed"), "replayed"),
        (keys.VerificationError("does not verify"), "verification_failed"),
        (StaleBundle("bundle too old"), "stale_bundle"),
        (NotFound("no such record"), "not_found"),
        (InputError("bad body"), "malformed_request"),
        (keys.KeysError("bad key id"), "malformed_request"),
        (LogUnavailable("log down"), None),
        (TamperDetected("store altered"), None),
        (RuntimeError("bug"), None),
    ],
)
def test_refusal_reasons(error: BaseException, reason: str | None) -> None:
    assert refusal_reason(error) == reason


class _Tls:
    def __init__(self, peer: str | None) -> None:
        self.peer = peer

    def certificate_owner(self, context: Any) -> str | None:
        return self.peer


def runtime(peer: str | None = "zd-tax") -> tuple[NodeRuntime, MemoryLogBackend]:
    backend = MemoryLogBackend()
    log = AccessLog(backend, origin="credex.test/log", signer=keys.Signer(b"\x05" * 32))
    fake = SimpleNamespace(log=log, clock=lambda: T0, server_tls=lambda: _Tls(peer))
    return cast(NodeRuntime, fake), backend


def run(rt: NodeRuntime, error: BaseException, *, authenticated: bool) -> None:
    async def handler() -> None:
        async with logged_refusals(
            rt, cast(Any, None), kind="push", purpose="joint_punishment", envelope=b"env"
        ) as caller:
            if authenticated:
                caller.verified = VerifiedRequest(
                    node_id="zd-court",
                    keyid="cd" * 8,
                    method="/credex.v1.Exchange/Push",
                    body=b"",
                    issued_at=T0,
                    nonce="ab" * 16,
                    checked_at=T0,
                )
                caller.items_asked = ("severe_dishonesty_list",)
            raise error

    with pytest.raises(type(error)):
        asyncio.run(handler())


def test_a_refusal_is_logged_with_what_the_handler_knew() -> None:
    rt, backend = runtime()
    run(rt, PolicyDenied("no_agreement", "no push agreement"), authenticated=True)
    run(rt, AuthError("bad signature"), authenticated=False)
    entries = [entry for _index, _leaf, entry in iter_entries(backend)]
    assert [
        (e.kind, e.decision, e.reason, e.requester, e.request_id, e.items_asked) for e in entries
    ] == [
        ("push", "deny", "no_agreement", "zd-court", "ab" * 16, ("severe_dishonesty_list",)),
        # before authentication: the TLS peer, and a digest of the untrusted envelope
        ("push", "deny", "unauthenticated", "zd-tax", request_digest(b"env"), ()),
    ]


def test_an_unidentified_peer_is_still_logged() -> None:
    rt, backend = runtime(peer=None)
    run(rt, AuthError("bad signature"), authenticated=False)
    (entry,) = [entry for _index, _leaf, entry in iter_entries(backend)]
    assert entry.requester == UNIDENTIFIED


def test_non_refusals_and_refusals_logged_elsewhere_are_not_logged() -> None:
    rt, backend = runtime()
    run(rt, LogUnavailable("log down"), authenticated=True)
    run(rt, RuntimeError("bug"), authenticated=True)
    already = PolicyDenied("repair_not_admissible", "conditions unmet")
    already.access_logged = True
    run(rt, already, authenticated=True)
    assert backend.size() == 0


def test_a_refusal_that_cannot_be_logged_fails_closed() -> None:
    rt, _backend = runtime()

    async def broken(entry: Any) -> int:
        raise LogUnavailable("the access log could not be written")

    cast(Any, rt).log = SimpleNamespace(append=broken)
    with pytest.raises(LogUnavailable):
        run(rt, PolicyDenied("no_agreement", "no push agreement"), authenticated=True)


def test_asked_items_are_bounded_for_the_log() -> None:
    assert asked_items(["red_list", "admin_penalty", "red_list"]) == ("admin_penalty", "red_list")
    flood = asked_items(f"item_{i:03d}" + "x" * 100 for i in range(500))
    assert len(flood) == 64
    assert all(len(item) == 64 for item in flood)


# -- refusals the call interceptor reports ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "access"),
    [
        ("/credex.v1.Query/Query", MethodAccess("query", "", handler_logs=True)),
        ("/credex.v1.Exchange/Subscribe", MethodAccess("feed_delivery", "feed", True)),
        ("/credex.v1.Exchange/Push", MethodAccess("push", "joint_punishment", True)),
        ("/credex.v1.Exchange/Ack", MethodAccess("feed_ack", "feed", handler_logs=False)),
        (
            "/credex.v1.Lifecycle/ResolveObjection",
            MethodAccess("lifecycle_resolveobjection", "lifecycle", True),
        ),
        ("/credex.v1.Transparency/Cosign", MethodAccess("cosign", "witness", True)),
        ("/credex.v1.Catalog/GetCatalog", None),
        ("/credex.v1.Transparency/GetCheckpoint", None),
        ("/grpc.health.v1.Health/Check", None),
    ],
)
def test_which_methods_refusals_are_accesses(method: str, access: MethodAccess | None) -> None:
    assert method_access(method) == access


def report(
    rt: NodeRuntime, method: str, error: BaseException, request: object, *, in_handler: bool
) -> None:
    asyncio.run(
        InterceptedRefusals(rt).refused(
            method, cast(Any, None), error, request=request, in_handler=in_handler
        )
    )


def test_interceptor_refusals_are_logged_once_with_the_request_digest() -> None:
    rt, backend = runtime()
    signed = common_pb2.SignedRequest(envelope=b"query envelope")
    unpinned = AuthError("not pinned", reason="tls_unpinned")
    report(rt, "/credex.v1.Query/Query", unpinned, signed, in_handler=False)
    # The handler logs its own refusals: not again here.
    report(rt, "/credex.v1.Query/Query", PolicyDenied("no_agreement", "x"), signed, in_handler=True)
    subscribe = exchange_pb2.SubscribeRequest(signed=common_pb2.SignedRequest(envelope=b"sub"))
    report(rt, "/credex.v1.Exchange/Subscribe", StaleBundle("expired"), subscribe, in_handler=False)
    # Ack's handler does not log: its refusals are logged here.
    receipt = common_pb2.SignedReceipt(envelope=b"receipt")
    forged = keys.VerificationError("receipt does not verify")
    report(rt, "/credex.v1.Exchange/Ack", forged, receipt, in_handler=True)
    cosign = transparency_pb2.CosignRequest(note="a note")
    report(rt, "/credex.v1.Transparency/Cosign", unpinned, cosign, in_handler=False)
    report(rt, "/credex.v1.Lifecycle/Repair", InputError("x"), b"\xff\xff", in_handler=False)
    # Not accesses, not refusals, or logged where they were raised: nothing.
    report(rt, "/credex.v1.Catalog/GetCatalog", unpinned, b"", in_handler=False)
    report(rt, "/credex.v1.Exchange/Ack", LogUnavailable("down"), receipt, in_handler=True)
    already = PolicyDenied("repair_not_admissible", "conditions unmet")
    already.access_logged = True
    report(rt, "/credex.v1.Exchange/Ack", already, receipt, in_handler=True)
    entries = [entry for _index, _leaf, entry in iter_entries(backend)]
    assert [
        (e.kind, e.purpose, e.requester, e.decision, e.reason, e.request_id) for e in entries
    ] == [
        ("query", "", "zd-tax", "deny", "tls_unpinned", request_digest(b"query envelope")),
        ("feed_delivery", "feed", "zd-tax", "deny", "stale_bundle", request_digest(b"sub")),
        ("feed_ack", "feed", "zd-tax", "deny", "verification_failed", request_digest(b"receipt")),
        (
            "cosign",
            "witness",
            "zd-tax",
            "deny",
            "tls_unpinned",
            request_digest(cosign.SerializeToString()),
        ),
        (
            "lifecycle_repair",
            "lifecycle",
            "zd-tax",
            "deny",
            "malformed_request",
            request_digest(b"\xff\xff"),
        ),
    ]


def test_an_interceptor_refusal_that_cannot_be_logged_fails_closed() -> None:
    rt, _backend = runtime(peer=None)

    async def broken(entry: Any) -> int:
        raise LogUnavailable("the access log could not be written")

    cast(Any, rt).log = SimpleNamespace(append=broken)
    with pytest.raises(LogUnavailable):
        report(
            rt,
            "/credex.v1.Query/Query",
            AuthError("x", reason="tls_unpinned"),
            b"",
            in_handler=False,
        )
