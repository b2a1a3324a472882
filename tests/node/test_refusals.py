"""node.refusals: which errors are refusals, and what logged_refusals writes for them."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

import pytest

import keys
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
    asked_items,
    logged_refusals,
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

    def identify(self, context: Any) -> str:
        if self.peer is None:
            raise AuthError("certificate not in the roster")
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
