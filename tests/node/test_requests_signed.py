"""Signed requests: what verify_request refuses, alone and through a real server call.

Every refusal is an AuthError (UNAUTHENTICATED at the client) with a message that says what to
fix: bad signature, unknown or revoked key, signer other than the TLS peer, stale timestamp,
replayed nonce, request signed for another method.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from node._pb.credex.v1 import common_pb2, query_pb2, query_pb2_grpc
from node.errors import AuthError, InputError
from node.requests import (
    MAX_SKEW,
    InMemoryNonceStore,
    RequestAuthenticator,
    StoreNonces,
    VerifiedRequest,
    node_signing_keys,
    purge_nonces,
    sign_request,
    verify_request,
    verify_request_async,
)
from node.server import Service, build_server
from node.store import StoreError
from node.transport import ChannelIdentity, ServerTls, TlsRoster, client_channel

T = TypeVar("T")
QUERY = "/credex.v1.Query/Query"
SUBSCRIBE = "/credex.v1.Exchange/Subscribe"
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
BODY = query_pb2.QueryBody(request_id="r-1", purpose="administrative_licensing").SerializeToString()


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture(scope="module")
def node_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, keys.NodeKeys]:
    base = tmp_path_factory.mktemp("keys")
    return {n: keys.create_key_dir(base / n, node_id=n) for n in ("dept-a", "platform", "dept-b")}


def entry(member: keys.NodeKeys, **changes: Any) -> keys.RosterEntry:
    base = keys.RosterEntry(
        node_id=member.node_id,
        name=member.node_id,
        roles=frozenset({"department"}),
        endpoint="127.0.0.1:7443",
        signing_key=member.signing.public_key,
        encryption_key=member.encryption_public,
        tls_fingerprint=member.tls_fingerprint,
        valid_from=NOW - dt.timedelta(days=1),
        valid_until=NOW + dt.timedelta(days=365),
        tls_cert=member.tls_cert_pem.decode(),
    )
    return dataclasses.replace(base, **changes)


def bundle(*entries: keys.RosterEntry, revoked: frozenset[str] = frozenset()) -> keys.TrustBundle:
    return keys.TrustBundle(
        version=7,
        issued_at=NOW - dt.timedelta(days=1),
        expires_at=NOW + dt.timedelta(days=30),
        root_keyid="0" * 16,
        roster=entries,
        revoked_keyids=revoked,
        revoked_grants=frozenset(),
        catalog_version="2026.1",
        agreements=(),
    )


@pytest.fixture(scope="module")
def trust(node_keys: dict[str, keys.NodeKeys]) -> keys.TrustBundle:
    return bundle(*(entry(k) for k in node_keys.values()))


def verify(
    signed: common_pb2.SignedRequest,
    trust: keys.TrustBundle,
    *,
    tls: str = "platform",
    method: str = QUERY,
    now: dt.datetime = NOW,
    nonces: InMemoryNonceStore | None = None,
) -> VerifiedRequest:
    return verify_request(
        signed,
        method=method,
        trusted=node_signing_keys(trust, tls, now),
        tls_node_id=tls,
        now=now,
        nonce_store=nonces if nonces is not None else InMemoryNonceStore(),
        revoked=trust.revoked_keyids,
    )


def test_a_well_signed_request_is_accepted(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    platform = node_keys["platform"]
    signed = sign_request(QUERY, BODY, platform.signing, "platform", NOW, nonce=b"n" * 16)
    verified = verify(signed, trust)
    assert verified.node_id == "platform"
    assert verified.keyid == platform.signing.keyid
    assert verified.method == QUERY
    assert verified.nonce == (b"n" * 16).hex()
    assert verified.issued_at == NOW
    assert verified.parse(query_pb2.QueryBody).request_id == "r-1"


def test_nonces_are_fresh_by_default(node_keys: dict[str, keys.NodeKeys]) -> None:
    signer = node_keys["platform"].signing
    one = sign_request(QUERY, BODY, signer, "platform", NOW)
    two = sign_request(QUERY, BODY, signer, "platform", NOW)
    assert one.envelope != two.envelope


def refusal(call: Any) -> str:
    with pytest.raises(AuthError) as caught:
        call()
    return str(caught.value)


def test_a_replayed_request_is_refused(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    nonces = InMemoryNonceStore()
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "platform", NOW)
    verify(signed, trust, nonces=nonces)
    assert "replayed" in refusal(lambda: verify(signed, trust, nonces=nonces))


def test_a_request_signed_by_two_keys_of_a_node_is_not_replayed_once_per_key(
    node_keys: dict[str, keys.NodeKeys],
) -> None:
    # During a rotation overlap both keys are trusted. Nonces belong to the node, not to the
    # key, so reordering or dropping a signature (another key then verifies first) replays
    # nothing.
    platform = node_keys["platform"]
    old = keys.Signer.generate()
    trust = bundle(
        entry(
            platform,
            roles=frozenset({"platform"}),
            previous_signing_keys=((old.public_key, NOW + dt.timedelta(days=7)),),
        )
    )
    signed = sign_request(QUERY, BODY, platform.signing, "platform", NOW)
    both = keys.add_signature(keys.Envelope.from_bytes(signed.envelope), old)
    reordered = keys.Envelope(both.payload_type, both.payload, both.signatures[::-1])
    only_old = keys.Envelope(both.payload_type, both.payload, both.signatures[1:])
    nonces = InMemoryNonceStore()
    first = verify(common_pb2.SignedRequest(envelope=both.to_bytes()), trust, nonces=nonces)
    for replay in (reordered, only_old):
        again = common_pb2.SignedRequest(envelope=replay.to_bytes())
        assert "replayed" in refusal(lambda r=again: verify(r, trust, nonces=nonces))
    assert first.nonce_scope.startswith("node:")


class _BatchStore:
    """A fake store that records each batch it is asked to commit."""

    def __init__(self, *, fail: bool = False) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.batches: list[list[str]] = []
        self.durable: list[bool] = []
        self.fail = fail

    def remember_nonce(
        self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
    ) -> bool:
        return self.remember_nonces([(keyid, nonce, expires_at)], now=now)[0]

    def remember_nonces(
        self,
        nonces: Sequence[tuple[str, str, dt.datetime]],
        *,
        now: dt.datetime,
        durable: bool = True,
    ) -> list[bool]:
        if self.fail:
            raise RuntimeError("disk full")
        self.batches.append([n for _k, n, _e in nonces])
        self.durable.append(durable)
        fresh = []
        for keyid, nonce, _expires in nonces:
            fresh.append((keyid, nonce) not in self.seen)
            self.seen.add((keyid, nonce))
        return fresh


def test_a_replayed_request_is_refused_by_the_group_committed_store(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    nonces = StoreNonces(_BatchStore())
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "platform", NOW)
    trusted = node_signing_keys(trust, "platform", NOW)

    async def twice() -> list[VerifiedRequest | BaseException]:
        calls = [
            verify_request_async(
                signed,
                method=QUERY,
                trusted=trusted,
                tls_node_id="platform",
                now=NOW,
                nonce_store=nonces,
            )
            for _ in range(2)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, second = run(twice())
    assert isinstance(first, VerifiedRequest)
    assert isinstance(second, AuthError)
    assert "replayed" in str(second)


def test_concurrent_nonces_share_one_commit_and_a_failure_refuses_all() -> None:
    store = _BatchStore()
    nonces = StoreNonces(store)

    async def many(target: StoreNonces, names: list[str]) -> list[bool | BaseException]:
        calls = [target.remember_async("k", n, NOW + MAX_SKEW, now=NOW) for n in names]
        return await asyncio.gather(*calls, return_exceptions=True)

    assert run(many(nonces, ["a", "b", "a", "c"])) == [True, True, False, True]
    assert store.batches == [["a", "b", "a", "c"]]
    # Exchange and Lifecycle reply without waiting for a log commit: their nonces are durable.
    assert store.durable == [True]
    failing = StoreNonces(_BatchStore(fail=True))
    outcomes = run(many(failing, ["a", "b"]))
    assert all(isinstance(o, RuntimeError) for o in outcomes)


# The abandoned loop's never-run flusher is reported when collected: expected here.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_nonces_still_commit_after_the_server_moves_to_a_new_event_loop() -> None:
    store = _BatchStore()
    nonces = StoreNonces(store)
    old_loop = asyncio.new_event_loop()

    async def abandon() -> asyncio.Future[bool]:
        # The request and its flusher are scheduled, then the loop is closed under them.
        return asyncio.ensure_future(nonces.remember_async("k", "old", NOW + MAX_SKEW, now=NOW))

    abandoned = old_loop.run_until_complete(abandon())
    assert not abandoned.done()
    old_loop.close()

    async def on_new_loop() -> bool:
        call = nonces.remember_async("k", "new", NOW + MAX_SKEW, now=NOW)
        return await asyncio.wait_for(call, timeout=10)

    assert run(on_new_loop()) is True
    assert store.batches == [["new"]]


def test_a_forged_signature_is_refused(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "platform", NOW)
    envelope = keys.Envelope.from_bytes(signed.envelope)
    (kid, sig), *_ = envelope.signatures
    forged = dataclasses.replace(envelope, signatures=((kid, bytes([sig[0] ^ 1]) + sig[1:]),))
    message = refusal(lambda: verify(common_pb2.SignedRequest(envelope=forged.to_bytes()), trust))
    assert "does not verify" in message
    # Swapping the body under a valid signature fails the same way.
    swapped = dataclasses.replace(envelope, payload=envelope.payload.replace(b"r-1", b"r-2"))
    message = refusal(lambda: verify(common_pb2.SignedRequest(envelope=swapped.to_bytes()), trust))
    assert "does not verify" in message


def test_a_revoked_key_is_refused(node_keys: dict[str, keys.NodeKeys]) -> None:
    platform = node_keys["platform"]
    revoked = bundle(entry(platform), revoked=frozenset({platform.signing.keyid}))
    signed = sign_request(QUERY, BODY, platform.signing, "platform", NOW)
    message = refusal(lambda: verify(signed, revoked))
    assert "which the trust bundle revokes" in message
    assert platform.signing.keyid in message


def test_an_unknown_key_is_refused(trust: keys.TrustBundle) -> None:
    stranger = keys.Signer.generate()
    signed = sign_request(QUERY, BODY, stranger, "platform", NOW)
    assert "not a current key" in refusal(lambda: verify(signed, trust))


def test_another_nodes_key_is_refused_for_this_tls_peer(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    # dept-b signs as itself, but the call comes over the platform's TLS connection.
    signed = sign_request(QUERY, BODY, node_keys["dept-b"].signing, "dept-b", NOW)
    assert "not a current key of node platform" in refusal(lambda: verify(signed, trust))


def test_a_signer_other_than_the_tls_peer_is_refused(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "dept-b", NOW)
    message = refusal(lambda: verify(signed, trust))
    assert "signed as node dept-b" in message
    assert "platform" in message


@pytest.mark.parametrize(
    ("offset", "word"),
    [
        (-(MAX_SKEW + dt.timedelta(seconds=1)), "behind"),
        (MAX_SKEW + dt.timedelta(seconds=1), "ahead of"),
        (dt.timedelta(days=-1), "behind"),
    ],
)
def test_a_stale_timestamp_is_refused(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle, offset: dt.timedelta, word: str
) -> None:
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "platform", NOW + offset)
    message = refusal(lambda: verify(signed, trust))
    assert word in message
    assert "NTP" in message


@pytest.mark.parametrize("offset", [-MAX_SKEW, MAX_SKEW, dt.timedelta(0)])
def test_timestamps_at_the_edge_of_the_window_are_accepted(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle, offset: dt.timedelta
) -> None:
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "platform", NOW + offset)
    assert verify(signed, trust).node_id == "platform"


def test_a_request_for_another_method_is_refused(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    signed = sign_request(SUBSCRIBE, BODY, node_keys["platform"].signing, "platform", NOW)
    message = refusal(lambda: verify(signed, trust))
    assert f"signed for {SUBSCRIBE}" in message


@pytest.mark.parametrize(
    ("envelope", "word"),
    [(b"", "not signed"), (b"CXE1\x00", "not a valid envelope"), (b"{}", "not a valid envelope")],
)
def test_malformed_envelopes_are_refused(
    trust: keys.TrustBundle, envelope: bytes, word: str
) -> None:
    assert word in refusal(lambda: verify(common_pb2.SignedRequest(envelope=envelope), trust))


def test_a_payload_that_is_not_a_request_is_refused(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    signer = node_keys["platform"].signing
    other_type = keys.sign_envelope("application/vnd.credex.record.v1+json", BODY, signer)
    signed = common_pb2.SignedRequest(envelope=other_type.to_bytes())
    assert "does not verify" in refusal(lambda: verify(signed, trust))
    garbage = keys.sign_envelope("application/vnd.credex.request.v1+protobuf", b"\xff\xff", signer)
    signed = common_pb2.SignedRequest(envelope=garbage.to_bytes())
    assert "signed request payload" in refusal(lambda: verify(signed, trust))


def test_rotated_keys_are_accepted_only_within_their_overlap(
    node_keys: dict[str, keys.NodeKeys],
) -> None:
    platform = node_keys["platform"]
    old = keys.Signer.generate()
    rotated = bundle(
        entry(platform, previous_signing_keys=((old.public_key, NOW + dt.timedelta(hours=1)),))
    )
    signed = sign_request(QUERY, BODY, old, "platform", NOW)
    assert verify(signed, rotated).keyid == old.keyid
    later = NOW + dt.timedelta(hours=2)
    signed = sign_request(QUERY, BODY, old, "platform", later)
    assert "not a current key" in refusal(lambda: verify(signed, rotated, now=later))


def test_a_node_outside_the_roster_or_its_validity_has_no_keys(
    node_keys: dict[str, keys.NodeKeys],
) -> None:
    platform = node_keys["platform"]
    with pytest.raises(AuthError, match="not in the roster of trust bundle v7"):
        node_signing_keys(bundle(entry(platform)), "dept-z", NOW)
    expired = bundle(entry(platform, valid_until=NOW))
    with pytest.raises(AuthError, match="not valid now"):
        node_signing_keys(expired, "platform", NOW)


def test_each_refusal_carries_its_own_reason_code(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    """The access log tells a forgery from a replay, a revoked key or a stale clock."""
    platform = node_keys["platform"]
    good = sign_request(QUERY, BODY, platform.signing, "platform", NOW)
    envelope = keys.Envelope.from_bytes(good.envelope)
    (kid, sig), *_ = envelope.signatures
    forged = dataclasses.replace(envelope, signatures=((kid, bytes([sig[0] ^ 1]) + sig[1:]),))
    revoked = bundle(entry(platform), revoked=frozenset({platform.signing.keyid}))
    late = NOW + MAX_SKEW + dt.timedelta(seconds=1)
    nonces = InMemoryNonceStore()
    verify(good, trust, nonces=nonces)
    cases: dict[str, Any] = {
        "bad_signature": lambda: verify(
            common_pb2.SignedRequest(envelope=forged.to_bytes()), trust
        ),
        "key_revoked": lambda: verify(good, revoked),
        "key_unknown": lambda: verify(
            sign_request(QUERY, BODY, keys.Signer.generate(), "platform", NOW), trust
        ),
        "replayed": lambda: verify(good, trust, nonces=nonces),
        "stale_timestamp": lambda: verify(
            sign_request(QUERY, BODY, platform.signing, "platform", late), trust
        ),
        "wrong_method": lambda: verify(
            sign_request(SUBSCRIBE, BODY, platform.signing, "platform", NOW), trust
        ),
        "signer_mismatch": lambda: verify(
            sign_request(QUERY, BODY, platform.signing, "dept-b", NOW), trust
        ),
        "malformed_request": lambda: verify(common_pb2.SignedRequest(envelope=b"{}"), trust),
        "requester_unknown": lambda: node_signing_keys(trust, "dept-z", NOW),
        "requester_not_valid": lambda: node_signing_keys(
            bundle(entry(platform, valid_until=NOW)), "platform", NOW
        ),
    }
    for reason, call in cases.items():
        with pytest.raises(AuthError) as caught:
            call()
        assert caught.value.reason == reason, (reason, str(caught.value))


def test_an_auth_error_refuses_a_reason_code_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="unknown authentication refusal reason"):
        AuthError("nope", reason="because")


def test_a_refused_request_does_not_use_up_its_nonce(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle
) -> None:
    nonces = InMemoryNonceStore()
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "platform", NOW)
    refusal(lambda: verify(signed, trust, method=SUBSCRIBE, nonces=nonces))
    assert len(nonces) == 0
    verify(signed, trust, nonces=nonces)
    assert len(nonces) == 1


def test_the_in_memory_store_forgets_expired_nonces() -> None:
    store = InMemoryNonceStore()
    assert store.remember("k", "n1", NOW, now=NOW - dt.timedelta(minutes=1))
    assert not store.remember("k", "n1", NOW, now=NOW - dt.timedelta(minutes=1))
    assert store.remember("k", "n2", NOW + MAX_SKEW, now=NOW + dt.timedelta(seconds=1))
    assert len(store) == 1  # n1 expired and was forgotten
    assert store.remember("other-key", "n2", NOW + MAX_SKEW, now=NOW)


def test_the_store_adapter_passes_everything_through() -> None:
    calls: list[tuple[Any, ...]] = []

    class FakeStore:
        def remember_nonce(
            self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
        ) -> bool:
            calls.append((keyid, nonce, expires_at, now))
            return len(calls) == 1

        def remember_nonces(
            self,
            nonces: Sequence[tuple[str, str, dt.datetime]],
            *,
            now: dt.datetime,
            durable: bool = True,
        ) -> list[bool]:
            return [self.remember_nonce(k, n, e, now=now) for k, n, e in nonces]

    nonces = StoreNonces(FakeStore())
    assert nonces.remember("k", "n", NOW, now=NOW)
    assert not nonces.remember("k", "n", NOW, now=NOW)
    assert calls[0] == ("k", "n", NOW, NOW)


def test_sign_request_refuses_programming_errors(node_keys: dict[str, keys.NodeKeys]) -> None:
    signer = node_keys["platform"].signing
    with pytest.raises(ValueError, match="nonce"):
        sign_request(QUERY, BODY, signer, "platform", NOW, nonce=b"short")
    with pytest.raises(ValueError, match="full gRPC method"):
        sign_request("Query", BODY, signer, "platform", NOW)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_refused(
    node_keys: dict[str, keys.NodeKeys], trust: keys.TrustBundle, data: st.DataObject
) -> None:
    signed = sign_request(QUERY, BODY, node_keys["platform"].signing, "platform", NOW)
    raw = bytearray(signed.envelope)
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(AuthError):
        verify(common_pb2.SignedRequest(envelope=bytes(raw)), trust)


# -- through a real server call -----------------------------------------------------------------


class Guarded(query_pb2_grpc.QueryServicer):
    def __init__(self, auth: RequestAuthenticator) -> None:
        self.auth = auth

    async def Query(
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> query_pb2.QueryAnswer:
        verified = await self.auth.authenticate_async(request, context, method=QUERY)
        body = verified.parse(query_pb2.QueryBody)
        return query_pb2.QueryAnswer(decision="allow", request_id=body.request_id)


def test_signed_requests_through_a_real_server(
    node_keys: dict[str, keys.NodeKeys], tmp_path: Path
) -> None:
    a, platform, b = node_keys["dept-a"], node_keys["platform"], node_keys["dept-b"]
    trust = bundle(entry(a), entry(platform), entry(b))
    revoked = bundle(entry(a), entry(platform), entry(b), revoked=frozenset({b.signing.keyid}))
    current = {"bundle": trust}
    roster = TlsRoster.of((k.node_id, k.tls_fingerprint, k.tls_cert_pem) for k in (a, platform, b))
    tls = ServerTls(key_pem=a.tls_key_pem, cert_pem=a.tls_cert_pem, roster=roster)
    auth = RequestAuthenticator(
        tls=tls,
        bundle=lambda: current["bundle"],
        nonce_store=InMemoryNonceStore(),
        clock=lambda: NOW,
    )
    good = sign_request(QUERY, BODY, platform.signing, "platform", NOW)
    forged_env = keys.Envelope.from_bytes(good.envelope)
    forged_env = dataclasses.replace(forged_env, payload=forged_env.payload.replace(b"r-1", b"r-9"))
    cases: list[tuple[str, keys.NodeKeys, common_pb2.SignedRequest]] = [
        ("good", platform, good),
        ("replayed", platform, good),
        ("forged", platform, common_pb2.SignedRequest(envelope=forged_env.to_bytes())),
        ("other signer", platform, sign_request(QUERY, BODY, b.signing, "dept-b", NOW)),
        ("claims other node", platform, sign_request(QUERY, BODY, platform.signing, "dept-b", NOW)),
        (
            "stale",
            platform,
            sign_request(QUERY, BODY, platform.signing, "platform", NOW - 2 * MAX_SKEW),
        ),
        (
            "wrong method",
            platform,
            sign_request(SUBSCRIBE, BODY, platform.signing, "platform", NOW),
        ),
        ("unsigned", platform, common_pb2.SignedRequest()),
        ("bad body", platform, sign_request(QUERY, b"\xff", platform.signing, "platform", NOW)),
        ("revoked", b, sign_request(QUERY, BODY, b.signing, "dept-b", NOW)),
    ]

    async def scenario() -> dict[str, tuple[grpc.StatusCode, str]]:
        service = Service(
            "credex.v1.Query", Guarded(auth), query_pb2_grpc.add_QueryServicer_to_server
        )
        server = build_server(listen="127.0.0.1:0", tls=tls, services=[service])
        await server.start()
        results: dict[str, tuple[grpc.StatusCode, str]] = {}
        try:
            for name, caller, signed in cases:
                if name == "revoked":
                    current["bundle"] = revoked
                who = ChannelIdentity(key_pem=caller.tls_key_pem, cert_pem=caller.tls_cert_pem)
                async with client_channel(
                    server.target, peer=roster.peer("dept-a"), identity=who
                ) as channel:
                    try:
                        answer = await query_pb2_grpc.QueryStub(channel).Query(signed, timeout=10)
                        results[name] = (grpc.StatusCode.OK, answer.request_id)
                    except grpc.aio.AioRpcError as error:
                        results[name] = (error.code(), error.details() or "")
        finally:
            await server.stop(None)
        return results

    results = run(scenario())
    assert results["good"] == (grpc.StatusCode.OK, "r-1")
    assert results["bad body"][0] == grpc.StatusCode.INVALID_ARGUMENT
    expected_words = {
        "replayed": "replayed",
        "forged": "does not verify",
        "other signer": "not a current key of node platform",
        "claims other node": "signed as node dept-b",
        "stale": "behind",
        "wrong method": "signed for /credex.v1.Exchange/Subscribe",
        "unsigned": "not signed",
        "revoked": "which the trust bundle revokes",
    }
    for name, word in expected_words.items():
        code, details = results[name]
        assert code == grpc.StatusCode.UNAUTHENTICATED, name
        assert word in details, (name, details)


def test_verified_request_body_parse_refuses_garbage() -> None:
    verified = VerifiedRequest(
        node_id="platform",
        keyid="k",
        method=QUERY,
        body=b"\xff",
        issued_at=NOW,
        nonce="00",
        checked_at=NOW,
    )
    with pytest.raises(InputError, match=f"body of {QUERY}"):
        verified.parse(query_pb2.QueryBody)


class _PurgingStore:
    """Deletes from a count of expired nonces, `limit` at a time; can fail once."""

    def __init__(self, expired: int, *, fail_first: bool = False) -> None:
        self.expired = expired
        self.deleted: list[int] = []
        self.fail_first = fail_first

    def purge_expired_nonces(self, now: dt.datetime, *, limit: int) -> int:
        if self.fail_first:
            self.fail_first = False
            raise StoreError("store: database is locked")
        deleted = min(limit, self.expired)
        self.expired -= deleted
        self.deleted.append(deleted)
        return deleted


def test_expired_nonces_are_purged_in_chunks_until_none_is_left() -> None:
    store = _PurgingStore(expired=2500)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            purge_nonces(store, lambda: NOW, stop, interval=dt.timedelta(0), chunk=1000)
        )
        while store.expired:
            await asyncio.sleep(0.01)  # let the purge run (no timing is asserted)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(run())
    assert store.expired == 0
    assert store.deleted[:3] == [1000, 1000, 500]
    assert not any(store.deleted[3:])  # later rounds find nothing left


def test_a_failing_purge_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    store = _PurgingStore(expired=10, fail_first=True)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            purge_nonces(store, lambda: NOW, stop, interval=dt.timedelta(0), chunk=1000)
        )
        while store.expired:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    with caplog.at_level("WARNING", logger="node.requests"):
        asyncio.run(run())
    assert store.expired == 0
    assert "not purged" in caplog.text
    assert "database is locked" in caplog.text
