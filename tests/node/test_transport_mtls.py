"""Mutual TLS pinned to the roster, with real servers on 127.0.0.1 and real key directories.

Who is refused where:
- a client whose certificate is not in the roster, or a second certificate for a roster node id,
  is refused in the TLS handshake: UNAVAILABLE at the client, HANDSHAKE_REFUSED by the probe;
- a certificate that chains to a roster certificate but is not itself pinned passes TLS (the
  roster certificates are their own CAs) and is refused per call: UNAUTHENTICATED;
- a client that pins another certificate for the server refuses the server: PEER_CERTIFICATE;
- nothing listening: REFUSED.
Roster changes apply without a restart, to new handshakes and to calls on old connections.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import keys
from node._pb.credex.v1 import common_pb2, query_pb2, query_pb2_grpc
from node.errors import AuthError, ConfigError
from node.server import NodeServer, Service, build_server
from node.transport import (
    ChannelIdentity,
    ServerTls,
    TlsPeer,
    TlsRoster,
    UnavailableCause,
    cert_fingerprint,
    client_channel,
    diagnose_unavailable,
    load_peer_certs,
    roster_from_bundle,
)
from tests.node.transport_support import department_entry, unsigned_bundle

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture(scope="module")
def node_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("keys")
    made = {
        name: keys.create_key_dir(base / name, node_id=name)
        for name in ("dept-a", "platform", "dept-b", "outsider")
    }
    # Same node id as a roster member, another key: an impostor with a self-made certificate.
    made["platform-impostor"] = keys.create_key_dir(base / "impostor", node_id="platform")
    return made


def roster_of(*members: Any) -> TlsRoster:
    return TlsRoster.of((m.node_id, m.tls_fingerprint, m.tls_cert_pem) for m in members)


def identity(member: Any) -> ChannelIdentity:
    return ChannelIdentity(key_pem=member.tls_key_pem, cert_pem=member.tls_cert_pem)


class WhoAmI(query_pb2_grpc.QueryServicer):
    """Answers each call with the node id the server sees on the TLS certificate."""

    def __init__(self, tls: ServerTls) -> None:
        self.tls = tls

    async def Query(
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> query_pb2.QueryAnswer:
        return query_pb2.QueryAnswer(decision=self.tls.identify(context))


async def start(server_keys: Any, roster: TlsRoster) -> NodeServer:
    tls = ServerTls(
        key_pem=server_keys.tls_key_pem, cert_pem=server_keys.tls_cert_pem, roster=roster
    )
    service = Service("credex.v1.Query", WhoAmI(tls), query_pb2_grpc.add_QueryServicer_to_server)
    server = build_server(listen="127.0.0.1:0", tls=tls, services=[service])
    await server.start()
    return server


async def ask(server: NodeServer, peer: TlsPeer, who: ChannelIdentity) -> str:
    async with client_channel(server.target, peer=peer, identity=who) as channel:
        answer: query_pb2.QueryAnswer = await query_pb2_grpc.QueryStub(channel).Query(
            common_pb2.SignedRequest(), timeout=10
        )
        return answer.decision


async def status_of(call: Callable[[], Awaitable[Any]]) -> grpc.StatusCode:
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_a_roster_member_is_identified_by_its_certificate(node_keys: dict[str, Any]) -> None:
    a, platform = node_keys["dept-a"], node_keys["platform"]
    roster = roster_of(a, platform)

    async def scenario() -> str:
        server = await start(a, roster)
        try:
            return await ask(server, roster.peer("dept-a"), identity(platform))
        finally:
            await server.stop(None)

    assert run(scenario()) == "platform"


@pytest.mark.parametrize("client", ["outsider", "platform-impostor"])
def test_a_certificate_outside_the_roster_is_refused_in_the_handshake(
    node_keys: dict[str, Any], client: str
) -> None:
    a, platform = node_keys["dept-a"], node_keys["platform"]
    roster = roster_of(a, platform)
    who = identity(node_keys[client])

    async def scenario() -> tuple[grpc.StatusCode, UnavailableCause, str]:
        server = await start(a, roster)
        try:
            code = await status_of(lambda: ask(server, roster.peer("dept-a"), who))
            found = await diagnose_unavailable(
                server.target, peer=roster.peer("dept-a"), identity=who
            )
            return code, found.cause, found.message
        finally:
            await server.stop(None)

    code, cause, message = run(scenario())
    assert code == grpc.StatusCode.UNAVAILABLE
    assert cause is UnavailableCause.HANDSHAKE_REFUSED
    assert "not in its roster" in message
    assert "PRIVATE KEY" not in message


def test_the_probe_says_tls_ok_for_an_accepted_member(node_keys: dict[str, Any]) -> None:
    a, platform = node_keys["dept-a"], node_keys["platform"]
    roster = roster_of(a, platform)

    async def scenario() -> UnavailableCause:
        server = await start(a, roster)
        try:
            found = await diagnose_unavailable(
                server.target, peer=roster.peer("dept-a"), identity=identity(platform)
            )
            return found.cause
        finally:
            await server.stop(None)

    assert run(scenario()) is UnavailableCause.TLS_OK


def test_a_server_with_another_certificate_than_the_pinned_one_is_refused_by_the_client(
    node_keys: dict[str, Any],
) -> None:
    a, platform, b = node_keys["dept-a"], node_keys["platform"], node_keys["dept-b"]
    roster = roster_of(a, platform)
    # The client believes dept-a's certificate is dept-b's: the server is not who it pinned.
    wrong_pin = TlsPeer(node_id="dept-a", fingerprint=b.tls_fingerprint, cert_pem=b.tls_cert_pem)

    async def scenario() -> tuple[grpc.StatusCode, UnavailableCause]:
        server = await start(a, roster)
        try:
            code = await status_of(lambda: ask(server, wrong_pin, identity(platform)))
            found = await diagnose_unavailable(
                server.target, peer=wrong_pin, identity=identity(platform)
            )
            return code, found.cause
        finally:
            await server.stop(None)

    assert run(scenario()) == (grpc.StatusCode.UNAVAILABLE, UnavailableCause.PEER_CERTIFICATE)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_peer_that_is_down_is_told_apart(node_keys: dict[str, Any]) -> None:
    a, platform = node_keys["dept-a"], node_keys["platform"]
    peer = roster_of(a).peer("dept-a")
    target = f"127.0.0.1:{_closed_port()}"
    found = run(diagnose_unavailable(target, peer=peer, identity=identity(platform)))
    assert found.cause is UnavailableCause.REFUSED
    assert "down" in found.message
    assert target in found.message


def test_an_unresolvable_host_is_told_apart(node_keys: dict[str, Any]) -> None:
    a, platform = node_keys["dept-a"], node_keys["platform"]
    found = run(
        diagnose_unavailable(
            "no-such-host.invalid:7443",
            peer=roster_of(a).peer("dept-a"),
            identity=identity(platform),
        )
    )
    assert found.cause is UnavailableCause.UNRESOLVED


def test_a_malformed_target_is_a_config_error(node_keys: dict[str, Any]) -> None:
    a = node_keys["dept-a"]
    with pytest.raises(ConfigError, match="host:port"):
        run(
            diagnose_unavailable(
                "localhost", peer=roster_of(a).peer("dept-a"), identity=identity(a)
            )
        )


def _child_certificate(parent: Any, node_id: str) -> tuple[bytes, bytes]:
    """A certificate for `node_id` issued with a roster member's TLS key (its cert is a CA)."""
    parent_key = serialization.load_pem_private_key(parent.tls_key_pem, password=None)
    assert isinstance(parent_key, ec.EllipticCurvePrivateKey)
    parent_cert = x509.load_pem_x509_certificate(parent.tls_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(parent_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        .sign(parent_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_a_certificate_issued_by_a_roster_key_gets_no_identity(node_keys: dict[str, Any]) -> None:
    a, platform = node_keys["dept-a"], node_keys["platform"]
    roster = roster_of(a, platform)
    key_pem, cert_pem = _child_certificate(platform, "dept-b")
    # TLS accepts the chain (the platform certificate is a trust anchor) ...
    chain = ChannelIdentity(key_pem=key_pem, cert_pem=cert_pem + platform.tls_cert_pem)

    async def scenario() -> tuple[grpc.StatusCode, str]:
        server = await start(a, roster)
        try:
            async with client_channel(
                server.target, peer=roster.peer("dept-a"), identity=chain
            ) as ch:
                try:
                    await query_pb2_grpc.QueryStub(ch).Query(common_pb2.SignedRequest(), timeout=10)
                except grpc.aio.AioRpcError as error:
                    return error.code(), error.details() or ""
                return grpc.StatusCode.OK, ""
        finally:
            await server.stop(None)

    # ... but the leaf is not pinned, so no call is served.
    code, details = run(scenario())
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "not pinned" in details


def test_roster_changes_apply_without_a_restart(node_keys: dict[str, Any]) -> None:
    a, platform, b = node_keys["dept-a"], node_keys["platform"], node_keys["dept-b"]
    before = roster_of(a, platform)
    after = roster_of(a, b)  # dept-b joins, the platform leaves

    async def scenario() -> dict[str, Any]:
        server = await start(a, before)
        peer = before.peer("dept-a")
        seen: dict[str, Any] = {}
        try:
            seen["b before"] = await status_of(lambda: ask(server, peer, identity(b)))
            async with client_channel(server.target, peer=peer, identity=identity(platform)) as old:
                stub = query_pb2_grpc.QueryStub(old)
                seen["platform before"] = (
                    await stub.Query(common_pb2.SignedRequest(), timeout=10)
                ).decision
                server.tls.update(after)
                seen["b after"] = await ask(server, peer, identity(b))
                seen["platform new connection"] = await status_of(
                    lambda: ask(server, peer, identity(platform))
                )
                seen["platform old connection"] = await status_of(
                    lambda: stub.Query(common_pb2.SignedRequest(), timeout=10)
                )
        finally:
            await server.stop(None)
        return seen

    seen = run(scenario())
    assert seen == {
        "b before": grpc.StatusCode.UNAVAILABLE,
        "platform before": "platform",
        "b after": "dept-b",
        "platform new connection": grpc.StatusCode.UNAVAILABLE,
        "platform old connection": grpc.StatusCode.UNAUTHENTICATED,
    }


class CountingContext:
    """A stand-in servicer context presenting one certificate; counts auth_context reads."""

    def __init__(self, cert_pem: bytes) -> None:
        self.cert_pem = cert_pem
        self.reads = 0

    def auth_context(self) -> dict[str, list[bytes]]:
        self.reads += 1
        return {"x509_pem_cert": [self.cert_pem]}


def test_a_call_is_identified_once_per_roster(node_keys: dict[str, Any]) -> None:
    # The interceptor and the request check both ask who the peer is; within one call (one
    # task's context) the certificate is read once, but a roster change is always re-checked.
    a, platform, b = node_keys["dept-a"], node_keys["platform"], node_keys["dept-b"]
    tls = ServerTls(key_pem=a.tls_key_pem, cert_pem=a.tls_cert_pem, roster=roster_of(a, platform))

    def one_call() -> None:
        call = CountingContext(platform.tls_cert_pem)
        assert tls.identify(call) == "platform"
        assert tls.identify(call) == "platform"
        assert call.reads == 1
        other = CountingContext(b.tls_cert_pem)  # another call's context is never confused
        with pytest.raises(AuthError, match="not pinned"):
            tls.identify(other)
        tls.update(roster_of(a, b))
        with pytest.raises(AuthError, match="not pinned"):
            tls.identify(call)
        assert call.reads == 2

    contextvars.copy_context().run(one_call)
    # A new call (a new task, so a fresh context) reads its certificate again.
    fresh = CountingContext(b.tls_cert_pem)
    assert contextvars.copy_context().run(tls.identify, fresh) == "dept-b"
    assert fresh.reads == 1


# -- the roster itself ---------------------------------------------------------------------------


def test_fingerprints_agree_with_the_keys_package(node_keys: dict[str, Any]) -> None:
    for member in node_keys.values():
        assert cert_fingerprint(member.tls_cert_pem) == member.tls_fingerprint


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(b"", id="empty"),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n", id="not-b64"
        ),
        pytest.param(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", id="a-key"),
    ],
)
def test_malformed_certificates_are_refused(pem: bytes) -> None:
    with pytest.raises(ConfigError):
        cert_fingerprint(pem)


def test_two_certificates_in_one_pem_are_refused(node_keys: dict[str, Any]) -> None:
    a, b = node_keys["dept-a"], node_keys["dept-b"]
    with pytest.raises(ConfigError, match="exactly one"):
        cert_fingerprint(a.tls_cert_pem + b.tls_cert_pem)


def test_a_certificate_that_does_not_match_its_pin_is_refused(node_keys: dict[str, Any]) -> None:
    a, b = node_keys["dept-a"], node_keys["dept-b"]
    with pytest.raises(ConfigError, match=r"dept-a.*does not match"):
        TlsRoster.of([("dept-a", a.tls_fingerprint, b.tls_cert_pem)])


def test_duplicate_roster_members_are_refused(node_keys: dict[str, Any]) -> None:
    a = node_keys["dept-a"]
    with pytest.raises(ConfigError, match="twice"):
        TlsRoster.of([("dept-a", a.tls_fingerprint, a.tls_cert_pem)] * 2)
    with pytest.raises(ConfigError, match="share one"):
        TlsRoster.of(
            [
                ("dept-a", a.tls_fingerprint, a.tls_cert_pem),
                ("x", a.tls_fingerprint, a.tls_cert_pem),
            ]
        )


def test_an_unknown_node_is_an_auth_error(node_keys: dict[str, Any]) -> None:
    with pytest.raises(AuthError, match="not in the TLS roster"):
        roster_of(node_keys["dept-a"]).peer("dept-z")


def test_an_empty_roster_cannot_serve(node_keys: dict[str, Any]) -> None:
    a = node_keys["dept-a"]
    tls = ServerTls(key_pem=a.tls_key_pem, cert_pem=a.tls_cert_pem, roster=TlsRoster.of([]))
    with pytest.raises(ConfigError, match="empty"):
        tls.credentials()


def _entry(member: Any, start: dt.datetime, end: dt.datetime, cert: str = "") -> keys.RosterEntry:
    return department_entry(member, valid_from=start, valid_until=end, tls_cert=cert)


def _bundle(*entries: keys.RosterEntry, now: dt.datetime) -> keys.TrustBundle:
    return unsigned_bundle(
        *entries, version=1, issued_at=now, expires_at=now + dt.timedelta(days=30)
    )


def test_roster_from_bundle_checks_pins_and_validity(
    node_keys: dict[str, Any], tmp_path: Path
) -> None:
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    a, b, platform = node_keys["dept-a"], node_keys["dept-b"], node_keys["platform"]
    peers = tmp_path / "peers"
    peers.mkdir()
    for member in (a, b, platform):
        (peers / f"{member.node_id}.crt").write_bytes(member.tls_cert_pem)
    outsider = node_keys["outsider"]
    nowhere = dataclasses.replace(
        _entry(a, now - day, now + day), node_id="dept-c", tls_fingerprint="00" * 32
    )
    bundle = _bundle(
        _entry(a, now - day, now + day),
        _entry(b, now + day, now + 2 * day),  # not yet valid: kept, refused per call till then
        _entry(platform, now - 2 * day, now),  # expired
        nowhere,  # no certificate anywhere: left out
        # the certificate travels in the bundle itself
        _entry(outsider, now - day, now + day, cert=outsider.tls_cert_pem.decode()),
        now=now,
    )
    roster = roster_from_bundle(bundle, load_peer_certs(peers), now=now)
    assert sorted(roster.peers) == ["dept-a", "dept-b", "outsider"]
    assert roster.peer("outsider").fingerprint == outsider.tls_fingerprint
    # A certificate in the peer directory that differs from the bundle's pin is refused.
    (peers / "dept-a.crt").write_bytes(b.tls_cert_pem)
    with pytest.raises(ConfigError, match="does not match"):
        roster_from_bundle(bundle, load_peer_certs(peers), now=now)


def test_a_missing_peer_directory_is_empty(tmp_path: Path) -> None:
    assert load_peer_certs(tmp_path / "absent") == {}
