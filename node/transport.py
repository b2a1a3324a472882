"""Mutual TLS between credex nodes, pinned to the roster of the trust bundle.

Invariants:
- A server accepts a connection only from a client whose certificate is one of the roster's
  certificates (client certificates are REQUIRED; the trusted roots are exactly the roster's
  self-signed certificates, and every one of them was checked against the fingerprint the
  signed bundle pins). A certificate whose fingerprint is not pinned never becomes a root.
- `peer_identity` maps the certificate of a call to a roster node by fingerprint, so even a
  chain that the TLS library would accept (say, a certificate issued by a roster member's key)
  gets no identity unless it is itself pinned.
- Roster changes take effect without a restart: `ServerTls.update` swaps the roots for new
  handshakes and `peer_identity` consults the current roster on every call, so a removed node
  is refused at once even on a connection it opened earlier.
- The TLS roots are computed when the roster is loaded, but trust is judged at each call:
  given the bundle in use (`ServerTls(bundle=..., clock=...)`, as a node's runtime does),
  `ServerTls.identify` refuses every caller once that bundle has expired, and a member whose
  roster validity window does not hold now, however it got through the handshake, and a
  certificate that bundle does not pin for the node (the TLS roster may lag behind it).
- A client trusts exactly the certificate the roster pins for the peer it dials and names the
  peer by node id (the certificate's SAN) through `grpc.ssl_target_name_override`.

TLS keys are ECDSA P-256 (grpcio 1.85 refuses Ed25519 TLS certificates); they are created by
`keys` (node/ never imports `cryptography`). A refused handshake reaches a gRPC client only as
UNAVAILABLE; `diagnose_unavailable` probes the peer to say why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import enum
import functools
import hashlib
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio

import keys
from node.errors import AuthError, ConfigError, StaleBundle

__all__ = [
    "CallRefusals",
    "ChannelIdentity",
    "Diagnosis",
    "ServerTls",
    "TlsPeer",
    "TlsRoster",
    "UnavailableCause",
    "cert_fingerprint",
    "check_membership",
    "client_channel",
    "diagnose_unavailable",
    "load_peer_certs",
    "peer_identity",
    "roster_from_bundle",
]

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"
# Keepalive and message-size options every credex channel and server shares.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


def cert_fingerprint(cert_pem: bytes) -> str:
    """Return hex SHA-256 of the DER encoding of a single PEM certificate.

    Refuses (ConfigError) anything that is not exactly one well-formed PEM certificate block.
    Only the framing is checked here; `keys` makes and parses certificates.
    """
    if cert_pem.count(_PEM_BEGIN) != 1 or cert_pem.count(_PEM_END) != 1:
        raise ConfigError("a TLS certificate must be exactly one PEM 'CERTIFICATE' block")
    body = cert_pem.split(_PEM_BEGIN, 1)[1].split(_PEM_END, 1)[0]
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        raise ConfigError("a TLS certificate is not valid PEM (bad base64)") from None
    if len(der) < 2 or der[0] != 0x30:  # an X.509 certificate is a DER SEQUENCE
        raise ConfigError("a TLS certificate is not valid PEM (not a DER certificate)")
    return hashlib.sha256(der).hexdigest()


# Every call of a connection presents the same few certificates: remember their fingerprints.
_pinned_fingerprint = functools.lru_cache(maxsize=256)(cert_fingerprint)


@dataclass(frozen=True)
class TlsPeer:
    """A roster member as TLS sees it: its node id, pinned fingerprint and certificate."""

    node_id: str
    fingerprint: str
    cert_pem: bytes


@dataclass(frozen=True)
class TlsRoster:
    """The set of certificates this node trusts, each checked against its pinned fingerprint.

    Build it with `TlsRoster.of(...)` or `roster_from_bundle(...)`; both refuse a certificate
    whose fingerprint differs from the pinned one.
    """

    peers: Mapping[str, TlsPeer]
    _by_fingerprint: Mapping[str, TlsPeer]

    @classmethod
    def of(cls, members: Iterable[tuple[str, str, bytes]]) -> TlsRoster:
        """Build a roster from (node id, pinned fingerprint, certificate PEM) triples.

        Refuses (ConfigError naming the node) a certificate that does not match its pin, a
        duplicate node id, or two nodes sharing one certificate.
        """
        peers: dict[str, TlsPeer] = {}
        by_fp: dict[str, TlsPeer] = {}
        for node_id, pinned, cert_pem in members:
            actual = cert_fingerprint(cert_pem)
            if actual != pinned.lower():
                raise ConfigError(
                    f"peer {node_id}: its TLS certificate does not match the fingerprint the "
                    f"roster pins (pinned {pinned[:16]}..., certificate {actual[:16]}...)"
                )
            if node_id in peers:
                raise ConfigError(f"peer {node_id}: listed twice in the TLS roster")
            if actual in by_fp:
                raise ConfigError(
                    f"peers {by_fp[actual].node_id} and {node_id} share one TLS certificate"
                )
            peer = TlsPeer(node_id=node_id, fingerprint=actual, cert_pem=cert_pem)
            peers[node_id] = peer
            by_fp[actual] = peer
        return cls(peers=peers, _by_fingerprint=by_fp)

    def by_fingerprint(self, fingerprint: str) -> TlsPeer | None:
        """Return the peer pinned with this certificate fingerprint, or None."""
        return self._by_fingerprint.get(fingerprint.lower())

    def peer(self, node_id: str) -> TlsPeer:
        """Return the peer `node_id`; refuses (AuthError) a node that is not in the roster."""
        try:
            return self.peers[node_id]
        except KeyError:
            raise AuthError(
                f"node {node_id} is not in the TLS roster", reason="requester_unknown"
            ) from None

    def root_pem(self) -> bytes:
        """The trusted roots for a server: every pinned certificate, in node id order."""
        return b"".join(self.peers[n].cert_pem.strip() + b"\n" for n in sorted(self.peers))


def roster_from_bundle(
    bundle: keys.TrustBundle, certs: Mapping[str, bytes], *, now: datetime
) -> TlsRoster:
    """Build the TLS roster of a trust bundle.

    Each entry's certificate is taken from the entry itself (`tls_cert`, when the bundle
    carries it) or else from `certs` (node id -> PEM, the node's peer directory, see
    `load_peer_certs`); either way it must match the fingerprint the signed bundle pins
    (ConfigError otherwise). Entries whose validity has ended at `now` are left out; an entry
    whose window has not begun yet is kept, so that the member can connect from its
    `valid_from` on without the roster being rebuilt (`ServerTls.identify` refuses each of its
    calls until then). An entry whose certificate is unknown is left out too (it can be
    neither dialled nor accepted), never trusted blindly.
    """
    members: list[tuple[str, str, bytes]] = []
    for entry in bundle.roster:
        if now >= entry.valid_until:
            continue
        cert = entry.tls_cert.encode("ascii") if entry.tls_cert else certs.get(entry.node_id)
        if cert:
            members.append((entry.node_id, entry.tls_fingerprint, cert))
    return TlsRoster.of(members)


def load_peer_certs(directory: Path) -> dict[str, bytes]:
    """Read a peer directory: one `<node id>.crt` PEM file per peer.

    Returns node id -> certificate PEM; a missing directory is empty. The certificates are not
    trusted by being here: `roster_from_bundle` checks each against the bundle's pin.
    """
    if not directory.is_dir():
        return {}
    return {path.stem: path.read_bytes() for path in sorted(directory.glob("*.crt"))}


class CallRefusals(Protocol):
    """Where a server's call interceptor reports the refusals that end calls
    (`node.refusals.InterceptedRefusals` on a node), so that they become denied accesses."""

    async def refused(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        error: BaseException,
        *,
        request: object,
        in_handler: bool,
    ) -> None:
        """Log `error`, which ends a call to `method`, as a denied access when it is a refusal
        that nobody else logs (`in_handler`: the handler raised it; otherwise it came before
        the handler ran). `request` is the request message, or the raw bytes of one that did
        not decode. Raises (LogUnavailable) when the denial cannot be logged."""


class ServerTls:
    """Server credentials that require a roster client certificate, reloadable at run time.

    `credentials()` is given to the gRPC server once; `update(roster)` makes every later
    handshake use the new roots (gRPC asks `_fetch` at each new connection). With `bundle`
    and `clock` (the node's bundle in use and its clock), `identify` also holds every call to
    that bundle's expiry and to the caller's roster validity at the time of the call.
    `refusals`, when given, is where the server's call interceptor logs the refusals it sees.
    """

    def __init__(
        self,
        *,
        key_pem: bytes,
        cert_pem: bytes,
        roster: TlsRoster,
        bundle: Callable[[], keys.TrustBundle] | None = None,
        clock: Callable[[], datetime] | None = None,
        refusals: CallRefusals | None = None,
    ) -> None:
        """Hold the node's own TLS key and certificate and the initial roster; `bundle`
        returns the bundle in use (raising StaleBundle when there is none in force), and is
        asked on every call together with `clock` (both or neither)."""
        if (bundle is None) != (clock is None):
            raise ValueError("ServerTls: give both `bundle` and `clock`, or neither")
        self._key_pem = key_pem
        self._cert_pem = cert_pem
        self._lock = threading.Lock()
        self._roster = roster
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._bundle = bundle
        self._clock = clock
        self.refusals = refusals

    @property
    def roster(self) -> TlsRoster:
        """The roster currently in force."""
        with self._lock:
            return self._roster

    def _configuration(self, roster: TlsRoster) -> grpc.ServerCertificateConfiguration:
        roots = roster.root_pem()
        if not roots:
            raise ConfigError("the TLS roster is empty: no peer could ever connect")
        return grpc.ssl_server_certificate_configuration(
            [(self._key_pem, self._cert_pem)], root_certificates=roots
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Return dynamic server credentials with client authentication REQUIRED."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self.roster),
            self._fetch,
            require_client_authentication=True,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC core (on its own thread) before each new handshake; None = unchanged.
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    def update(self, roster: TlsRoster) -> None:
        """Trust `roster` from the next handshake on; refuses an empty roster (ConfigError)."""
        configuration = self._configuration(roster)
        with self._lock:
            self._roster = roster
            self._pending = configuration

    def identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """Return the node id of the calling peer, trusted now.

        The certificate must be pinned in the current roster (see peer_identity). Given the
        bundle in use, that bundle must be in force (StaleBundle, FAILED_PRECONDITION, once it
        has expired: the node then trusts no one) and must list the node with a membership
        valid now (AuthError `requester_unknown` / `requester_not_valid`, UNAUTHENTICATED),
        and must pin the call's certificate for that node itself (AuthError `tls_unpinned`:
        the TLS roster may lag behind the bundle when it could not be rebuilt from it).
        Asked again within the same call under the same roster, the certificate is not read
        again; the bundle and the validity window are checked every time.
        """
        if self._bundle is None or self._clock is None:
            return self._pinned_node(context)
        try:
            bundle = self._bundle()
        except StaleBundle as error:
            raise StaleBundle(
                f"this node trusts no peer until its operator installs a current trust bundle "
                f"here ({error})"
            ) from None
        peer = self._pinned_peer(context)
        check_membership(bundle, peer.node_id, self._clock())
        # The TLS roster is rebuilt from a bundle when it is loaded, and that rebuild can fail
        # apart from the bundle (a stale peer directory), leaving older pins in force: the pin
        # that counts is the one of the bundle in use, so a rotated-out certificate is refused.
        entry = bundle.member(peer.node_id)
        if entry is None or entry.tls_fingerprint.lower() != peer.fingerprint:
            raise AuthError(
                f"the client certificate is not the one trust bundle v{bundle.version} pins "
                f"for node {peer.node_id} (its certificate was replaced; connect with the "
                "current one)",
                reason="tls_unpinned",
            )
        return peer.node_id

    def certificate_owner(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The roster node the call's certificate is pinned for, or None: names a refused
        caller in the access log, and never authorises anything (see `identify`)."""
        try:
            return self._pinned_node(context)
        except AuthError:
            return None

    def _pinned_node(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        return self._pinned_peer(context).node_id

    def _pinned_peer(self, context: grpc.aio.ServicerContext[Any, Any]) -> TlsPeer:
        roster = self.roster
        known = _CALL_PEER.get()
        if known is not None and known[0] is context and known[1] is roster:
            return known[2]
        peer = _pinned_peer(context, roster)
        # Each call's handler runs in its own task, with its own copy of the context variables.
        _CALL_PEER.set((context, roster, peer))
        return peer


def check_membership(bundle: keys.TrustBundle, node_id: str, now: datetime) -> None:
    """Refuse (AuthError `requester_unknown`) a node that the bundle does not list, or
    (`requester_not_valid`) lists outside its validity window at `now`: the one check of a
    caller's roster membership, for its TLS identity and for its signed requests alike."""
    entry = bundle.member(node_id)
    if entry is None:
        raise AuthError(
            f"node {node_id} is not in the roster of trust bundle v{bundle.version}",
            reason="requester_unknown",
        )
    if not entry.valid_at(now):
        raise AuthError(
            f"node {node_id}: its roster membership in trust bundle v{bundle.version} is not "
            f"valid now (valid from {entry.valid_from.isoformat()} until "
            f"{entry.valid_until.isoformat()}); ask the platform for a bundle that renews it, "
            "or check the clocks",
            reason="requester_not_valid",
        )


# The peer identified in the running call: (call context, roster, roster peer).
_CALL_PEER: contextvars.ContextVar[tuple[object, TlsRoster, TlsPeer] | None] = (
    contextvars.ContextVar("credex_call_peer", default=None)
)


def peer_identity(context: grpc.aio.ServicerContext[Any, Any], roster: TlsRoster) -> str:
    """Return the node id of the peer of a call, by the fingerprint of its TLS certificate.

    Refuses (AuthError) a call without a client certificate, or whose certificate is not pinned
    in `roster` (for instance a node removed from the roster on an older connection).
    """
    return _pinned_peer(context, roster).node_id


def _pinned_peer(context: grpc.aio.ServicerContext[Any, Any], roster: TlsRoster) -> TlsPeer:
    auth = context.auth_context()
    certs = auth.get("x509_pem_cert") or []
    if not certs:
        raise AuthError(
            "the call carries no client certificate (mutual TLS is required)",
            reason="tls_unpinned",
        )
    peer = roster.by_fingerprint(_pinned_fingerprint(bytes(certs[0])))
    if peer is None:
        raise AuthError(
            "the client certificate is not pinned in the current roster", reason="tls_unpinned"
        )
    return peer


@dataclass(frozen=True)
class ChannelIdentity:
    """What a node presents when it dials: its TLS key and certificate (PEM)."""

    key_pem: bytes
    cert_pem: bytes


def client_channel(
    target: str,
    *,
    peer: TlsPeer,
    identity: ChannelIdentity,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """Open an mTLS channel to `peer` at `target` ("host:port").

    The channel trusts only the certificate the roster pins for that peer and checks that it
    names the peer's node id; it presents `identity`. Connecting is lazy: a refused handshake
    surfaces as UNAVAILABLE on the first call (see `diagnose_unavailable`).
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=peer.cert_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.cert_pem,
    )
    all_options = [
        *CHANNEL_OPTIONS,
        ("grpc.ssl_target_name_override", peer.node_id),
        ("grpc.default_authority", peer.node_id),
        *options,
    ]
    return grpc.aio.secure_channel(
        target, credentials, options=all_options, interceptors=interceptors
    )


class UnavailableCause(enum.Enum):
    """Why a peer answered UNAVAILABLE, as far as a probe from here can tell."""

    UNRESOLVED = "unresolved"  # the host name does not resolve
    REFUSED = "refused"  # nothing listens on the port (peer down)
    UNREACHABLE = "unreachable"  # no answer in time (network, firewall)
    PEER_CERTIFICATE = "peer_certificate"  # the peer's certificate is not the pinned one
    HANDSHAKE_REFUSED = "handshake_refused"  # the peer refused our certificate
    TLS_OK = "tls_ok"  # the handshake succeeds: the peer is up and accepts us


@dataclass(frozen=True)
class Diagnosis:
    """The result of `diagnose_unavailable`: a cause and a sentence a person can act on."""

    cause: UnavailableCause
    message: str


# The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113 section 3.4):
# a gRPC server that accepted our certificate answers with its own SETTINGS frame, so the probe
# needs no timeout to tell "accepted" from "refused after the handshake" (TLS 1.3 sends the
# refusal of a client certificate only after the client has finished its handshake).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"endpoint {target!r}: expected host:port")
    return host.strip("[]"), int(port)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _load_identity(context: ssl.SSLContext, identity: ChannelIdentity) -> None:
    """Load `identity` into `context` without writing the private key to any file system.

    The ssl module loads a client key only from a path. On Linux the key goes into an
    anonymous memory file (memfd, never on disk, gone when closed); elsewhere into a 0600 file
    in a private directory, removed at once. A clear key on disk would undo the passphrase
    that protects `tls.key` in the key directory (a deleted file's blocks stay on the disk).
    """
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:  # pragma: no cover - not Linux
        with tempfile.TemporaryDirectory(prefix="credex-probe-") as private:
            key_file = Path(private) / "tls.key"
            cert_file = Path(private) / "tls.crt"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(identity.key_pem)
            cert_file.write_bytes(identity.cert_pem)
            context.load_cert_chain(cert_file, key_file)
        return
    key_fd = memfd_create("credex-probe-key", os.MFD_CLOEXEC)
    try:
        cert_fd = memfd_create("credex-probe-cert", os.MFD_CLOEXEC)
        try:
            _write_all(key_fd, identity.key_pem)
            _write_all(cert_fd, identity.cert_pem)
            context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
        finally:
            os.close(cert_fd)
    finally:
        os.close(key_fd)


def _tls_probe(
    host: str, port: int, *, peer: TlsPeer, identity: ChannelIdentity, timeout: float
) -> Diagnosis:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=peer.cert_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    _load_identity(context, identity)
    where = f"{host}:{port}"
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=peer.node_id) as tls,
        ):
            tls.sendall(_H2_PREFACE)
            answer = tls.recv(9)
    except ssl.SSLCertVerificationError:
        return Diagnosis(
            UnavailableCause.PEER_CERTIFICATE,
            f"{peer.node_id} at {where} presents a TLS certificate that is not the one the "
            "roster pins for it (wrong endpoint, or the peer changed its key without a new "
            "bundle)",
        )
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return Diagnosis(
            UnavailableCause.HANDSHAKE_REFUSED,
            f"{peer.node_id} at {where} refused our TLS certificate: this node is not in its "
            "roster, or it pins another certificate for us (check that it has the current "
            "trust bundle, and `credex keys show` here)",
        )
    except TimeoutError:
        return Diagnosis(
            UnavailableCause.UNREACHABLE,
            f"{peer.node_id} at {where} accepted TCP but did not complete TLS within {timeout} s",
        )
    if not answer:
        return Diagnosis(
            UnavailableCause.HANDSHAKE_REFUSED,
            f"{peer.node_id} at {where} closed the connection after the TLS handshake: it does "
            "not accept our certificate (not in its roster, or another certificate pinned)",
        )
    return Diagnosis(
        UnavailableCause.TLS_OK,
        f"{peer.node_id} at {where} is up and accepts our certificate; the failure was "
        "transient or above TLS (retry, then check the peer's logs)",
    )


def _probe(target: str, peer: TlsPeer, identity: ChannelIdentity, timeout: float) -> Diagnosis:
    host, port = _split_target(target)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror:
        return Diagnosis(
            UnavailableCause.UNRESOLVED,
            f"the host name of {peer.node_id} ({host}) does not resolve",
        )
    except ConnectionRefusedError:
        return Diagnosis(
            UnavailableCause.REFUSED,
            f"{peer.node_id} is down: connection refused at {target} (is `credex serve` running "
            "there, on that port?)",
        )
    except OSError:
        return Diagnosis(
            UnavailableCause.UNREACHABLE,
            f"{peer.node_id} at {target} does not answer within {timeout} s (network or firewall)",
        )
    return _tls_probe(host, port, peer=peer, identity=identity, timeout=timeout)


async def diagnose_unavailable(
    target: str, *, peer: TlsPeer, identity: ChannelIdentity, timeout: float = 5.0
) -> Diagnosis:
    """Tell why a call to `peer` at `target` ended UNAVAILABLE.

    A plain TCP connect tells "peer down" (refused), "unreachable" and "unresolved" apart; a
    TLS handshake with this node's own certificate then tells "the peer presents another
    certificate than the pinned one" from "the peer refused our certificate" (not in its
    roster). When both succeed the cause is TLS_OK. Never raises for network failures; refuses
    (ConfigError) a target that is not host:port.
    """
    return await asyncio.to_thread(_probe, target, peer, identity, timeout)
