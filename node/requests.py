"""Signed requests: every query, subscription, push and lifecycle call is signed by its node.

A signed request is a DSSE envelope (payload type `REQUEST_PAYLOAD_TYPE`) over a serialized
`credex.v1.RequestPayload` that binds the request body to:
- the full gRPC method name, so a request signed for Subscribe cannot be replayed to Query;
- the signer's node id, which must be the node the TLS certificate of the call belongs to;
- a timestamp, accepted within `MAX_SKEW` (5 minutes) either way of the server's clock;
- a 16-byte random nonce, accepted once per signing key while the timestamp is acceptable.

`verify_request` checks, in this order: envelope well-formed, signature by a trusted key,
method, signer = TLS identity, timestamp, and last the nonce (so a refused request never uses
up a nonce). Every refusal is an `AuthError` (UNAUTHENTICATED) whose message says what to fix
and never carries the body, key material or personal data. Only a `VerifiedRequest` carries a
body further in.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

import grpc.aio

import keys
from node import wire
from node._pb.credex.v1 import common_pb2
from node.errors import AuthError, InputError, NodeError
from node.groupcommit import GroupCommit
from node.transport import ServerTls, check_membership

__all__ = [
    "MAX_SKEW",
    "NONCE_SIZE",
    "REQUEST_PAYLOAD_TYPE",
    "InMemoryNonceStore",
    "NonceStore",
    "RequestAuthenticator",
    "StoreNonces",
    "VerifiedRequest",
    "node_signing_keys",
    "purge_nonces",
    "sign_request",
    "verify_request",
    "verify_request_async",
]

REQUEST_PAYLOAD_TYPE = "application/vnd.credex.request.v1+protobuf"
MAX_SKEW = dt.timedelta(minutes=5)
NONCE_SIZE = 16
_MAX_NONCE = 64


class NonceStore(Protocol):
    """Remembers nonces: `remember` returns False when (keyid, nonce) was seen before.

    `expires_at` is when the nonce may be forgotten (after it the timestamp check refuses the
    request anyway). Implementations must decide atomically (no read-then-write race).
    """

    def remember(
        self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
    ) -> bool:
        """Record the nonce; False when it was already recorded and has not expired."""
        ...


class InMemoryNonceStore:
    """A process-local NonceStore (tests, single-process tools); forgets expired nonces."""

    def __init__(self) -> None:
        """Start empty."""
        self._seen: dict[tuple[str, str], dt.datetime] = {}
        self._lock = threading.Lock()

    def remember(
        self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
    ) -> bool:
        """Record (keyid, nonce) until `expires_at`; False when already recorded."""
        with self._lock:
            for key in [k for k, until in self._seen.items() if until < now]:
                del self._seen[key]
            if (keyid, nonce) in self._seen:
                return False
            self._seen[(keyid, nonce)] = expires_at
            return True

    def __len__(self) -> int:
        """How many nonces are remembered."""
        return len(self._seen)


class _RemembersNonces(Protocol):
    def remember_nonce(
        self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
    ) -> bool: ...

    def remember_nonces(
        self,
        nonces: Sequence[tuple[str, str, dt.datetime]],
        *,
        now: dt.datetime,
    ) -> list[bool]: ...


_NONCE_BATCH = 256


class StoreNonces:
    """A NonceStore backed by the node's database (`node.store`'s `remember_nonce`).

    `remember_async` group-commits: the nonces of requests that arrive while a commit is in
    flight are recorded together in the next one, in a worker thread, so neither the event loop
    nor each request waits for an fsync of its own.
    """

    def __init__(self, store: _RemembersNonces) -> None:
        """Wrap a store that has `remember_nonce` and `remember_nonces` (a batch)."""
        self._store = store
        self._group: GroupCommit[tuple[str, str, dt.datetime, dt.datetime], bool] = GroupCommit(
            self._commit_group, max_batch=_NONCE_BATCH
        )

    def remember(
        self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
    ) -> bool:
        """Record the nonce in the database; False when it was already there."""
        return self._store.remember_nonce(keyid, nonce, expires_at, now=now)

    async def remember_async(
        self, keyid: str, nonce: str, expires_at: dt.datetime, *, now: dt.datetime
    ) -> bool:
        """Like `remember`, but group-committed off the event loop.

        Resolves only after the commit that holds the nonce; a failing commit raises its error
        in every request of the group (none of them is accepted).
        """
        return await self._group.submit((keyid, nonce, expires_at, now))

    def _commit_group(self, nonces: list[tuple[str, str, dt.datetime, dt.datetime]]) -> list[bool]:
        # The earliest clock of the group decides which stored nonces count as expired, so
        # batching never lets a nonce be taken over sooner than it would be alone.
        now = min(n[3] for n in nonces)
        return self._store.remember_nonces([n[:3] for n in nonces], now=now)


log = logging.getLogger(__name__)

NONCE_PURGE_INTERVAL = dt.timedelta(seconds=30)
NONCE_PURGE_CHUNK = 2000


class _PurgesNonces(Protocol):
    def purge_expired_nonces(self, now: dt.datetime, *, limit: int) -> int: ...


async def purge_nonces(
    store: _PurgesNonces,
    clock: Callable[[], dt.datetime],
    stop: asyncio.Event,
    *,
    interval: dt.timedelta = NONCE_PURGE_INTERVAL,
    chunk: int = NONCE_PURGE_CHUNK,
) -> None:
    """Delete the expired nonces now, then every `interval` until `stop` is set, in chunks of
    `chunk`, each its own short transaction in a worker thread: no request's commit ever holds
    (or waits behind) one large DELETE. A failing purge is logged and tried again next time."""
    while True:
        while not stop.is_set():
            try:
                deleted = await asyncio.to_thread(store.purge_expired_nonces, clock(), limit=chunk)
            except NodeError as error:
                log.warning(
                    "expired request nonces not purged, next try in %s: %s", interval, error
                )
                break
            if deleted < chunk:
                break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval.total_seconds())
        if stop.is_set():
            return


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature, signer, method, timestamp and nonce were all accepted (the
    nonce is still to be claimed when it came from `authenticate_unclaimed`).

    `checked_at` is the server clock the timestamp was judged at: a nonce claimed later must
    be judged at that same clock, or a replay at the edge of the window could take over the
    original's expired nonce.
    """

    node_id: str
    keyid: str
    method: str
    body: bytes
    issued_at: dt.datetime
    nonce: str  # hex
    checked_at: dt.datetime

    @property
    def nonce_expires_at(self) -> dt.datetime:
        """Until when the nonce must be remembered: past it, the timestamp check refuses a
        replay anyway."""
        return self.issued_at + MAX_SKEW

    @property
    def nonce_scope(self) -> str:
        """Whose nonces this one must differ from: the signer node's, whichever of its keys
        signed. Scoped by key, a request signed with an old and a new key during a rotation
        overlap could be replayed once per key (reorder or drop a signature: another key
        verifies first). A digest of the node id, as the store keeps at most 64 characters."""
        return "node:" + hashlib.sha256(self.node_id.encode("utf-8")).hexdigest()[:32]

    def parse(self, message_type: type[wire.M]) -> wire.M:
        """Parse the body as `message_type`; refuses malformed bytes (InputError)."""
        return wire.parse(message_type, self.body, what=f"body of {self.method}")


def sign_request(
    method: str,
    body: bytes,
    signer: keys.Signer,
    node_id: str,
    now: dt.datetime,
    *,
    nonce: bytes | None = None,
) -> common_pb2.SignedRequest:
    """Sign `body` for one call of `method` by node `node_id` at `now`.

    `method` is the full gRPC method ("/credex.v1.Query/Query"); `nonce` defaults to 16 fresh
    random bytes (pass one only to pin it in tests). Refuses a naive `now` or a nonce outside
    8..64 bytes (ValueError: a programming error, not bad input).
    """
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_SIZE)
    if not 8 <= len(nonce) <= _MAX_NONCE:
        raise ValueError("a request nonce must be 8 to 64 bytes")
    if not method.startswith("/"):
        raise ValueError("method must be the full gRPC method name, e.g. /credex.v1.Query/Query")
    payload = wire.request_payload_to_bytes(
        wire.RequestFields(method=method, nonce=nonce, issued_at=now, signer=node_id, body=body)
    )
    envelope = keys.sign_envelope(REQUEST_PAYLOAD_TYPE, payload, signer)
    return common_pb2.SignedRequest(envelope=envelope.to_bytes())


def node_signing_keys(bundle: keys.TrustBundle, node_id: str, now: dt.datetime) -> dict[str, bytes]:
    """Return keyid -> public key of the signing keys node `node_id` may use at `now`.

    These are the node's current key and the previous keys still inside their rotation overlap,
    minus every revoked key id. Passing this as `trusted` to `verify_request` binds the
    signature to the TLS peer: a request signed with another node's key is refused. Refuses
    (AuthError) a node that is not in the roster or whose membership is not valid at `now`.
    """
    check_membership(bundle, node_id, now)
    return bundle.node_signing_keys(node_id, now)


def _verified_keyid(envelope: keys.Envelope, trusted: Mapping[str, bytes]) -> str | None:
    """The first trusted key id whose signature on `envelope` verifies, or None."""
    for kid, _ in envelope.signatures:
        if kid not in trusted:
            continue
        try:
            keys.verify_envelope(
                envelope, payload_type=REQUEST_PAYLOAD_TYPE, trusted={kid: trusted[kid]}
            )
        except keys.VerificationError:
            continue
        return kid
    return None


def verify_request(
    signed: common_pb2.SignedRequest,
    *,
    method: str,
    trusted: Mapping[str, bytes],
    tls_node_id: str,
    now: dt.datetime,
    nonce_store: NonceStore,
    revoked: AbstractSet[str] = frozenset(),
) -> VerifiedRequest:
    """Verify a signed request received on `method` from TLS peer `tls_node_id`.

    `trusted` maps keyid -> Ed25519 public key of the keys acceptable for this peer with revoked
    keys excluded (use `node_signing_keys(bundle, tls_node_id, now)`). Refuses (AuthError) a
    malformed envelope, a key that is not trusted (unknown, revoked or another node's), a bad
    signature, a request signed for another method, a signer other than the TLS peer, a
    timestamp more than MAX_SKEW away from `now`, and a nonce seen before; each refusal's
    `reason` says which (`revoked`, the bundle's revoked key ids, tells `key_revoked` from
    `key_unknown`).
    """
    verified = _verify_unclaimed(
        signed, method=method, trusted=trusted, tls_node_id=tls_node_id, now=now, revoked=revoked
    )
    _refuse_replay(nonce_store.remember(*_nonce_of(verified), now=now), method)
    return verified


async def verify_request_async(
    signed: common_pb2.SignedRequest,
    *,
    method: str,
    trusted: Mapping[str, bytes],
    tls_node_id: str,
    now: dt.datetime,
    nonce_store: NonceStore,
    revoked: AbstractSet[str] = frozenset(),
) -> VerifiedRequest:
    """`verify_request` for a running event loop, with the same checks and refusals.

    With `StoreNonces` the nonce is group-committed in a worker thread (the loop never waits
    for an fsync); any other NonceStore is asked directly.
    """
    verified = _verify_unclaimed(
        signed, method=method, trusted=trusted, tls_node_id=tls_node_id, now=now, revoked=revoked
    )
    await _remember_async(nonce_store, verified)
    return verified


async def _remember_async(nonce_store: NonceStore, verified: VerifiedRequest) -> None:
    """Record the request's nonce, judged at the clock it was checked at (with StoreNonces
    group-committed in a worker thread); AuthError for a replay."""
    if isinstance(nonce_store, StoreNonces):
        fresh = await nonce_store.remember_async(*_nonce_of(verified), now=verified.checked_at)
    else:
        fresh = nonce_store.remember(*_nonce_of(verified), now=verified.checked_at)
    _refuse_replay(fresh, verified.method)


def _nonce_of(verified: VerifiedRequest) -> tuple[str, str, dt.datetime]:
    """(scope, nonce, until when to remember it), as a NonceStore takes them."""
    return verified.nonce_scope, verified.nonce, verified.nonce_expires_at


def _refuse_replay(fresh: bool, method: str) -> None:
    if not fresh:
        raise AuthError(
            f"{method}: replayed request (this nonce was already used)", reason="replayed"
        )


def _verify_unclaimed(
    signed: common_pb2.SignedRequest,
    *,
    method: str,
    trusted: Mapping[str, bytes],
    tls_node_id: str,
    now: dt.datetime,
    revoked: AbstractSet[str] = frozenset(),
) -> VerifiedRequest:
    """Every check of `verify_request` but the nonce."""
    keyid, fields = _check_request(
        signed, method=method, trusted=trusted, tls_node_id=tls_node_id, now=now, revoked=revoked
    )
    return VerifiedRequest(
        node_id=fields.signer,
        keyid=keyid,
        method=method,
        body=fields.body,
        issued_at=fields.issued_at,
        nonce=fields.nonce.hex(),
        checked_at=now,
    )


def _check_request(
    signed: common_pb2.SignedRequest,
    *,
    method: str,
    trusted: Mapping[str, bytes],
    tls_node_id: str,
    now: dt.datetime,
    revoked: AbstractSet[str] = frozenset(),
) -> tuple[str, wire.RequestFields]:
    """Every check of `verify_request` but the nonce; returns (keyid, payload fields)."""
    if not signed.envelope:
        raise AuthError(
            f"{method}: the request is not signed (empty envelope)", reason="malformed_request"
        )
    try:
        envelope = keys.Envelope.from_bytes(signed.envelope)
    except keys.KeysError:
        raise AuthError(
            f"{method}: the signed request is not a valid envelope", reason="malformed_request"
        ) from None
    keyids = [kid for kid, _ in envelope.signatures]
    if not any(kid in trusted for kid in keyids):
        shown = ", ".join(sorted(set(keyids))[:3]) or "none"
        if any(kid in revoked for kid in keyids):
            raise AuthError(
                f"{method}: signed by key {shown}, which the trust bundle revokes",
                reason="key_revoked",
            )
        raise AuthError(
            f"{method}: signed by key {shown}, which is not a current key of node "
            f"{tls_node_id} (unknown, or another node's key); check the trust bundle",
            reason="key_unknown",
        )
    keyid = _verified_keyid(envelope, trusted)
    if keyid is None:
        raise AuthError(f"{method}: the request signature does not verify", reason="bad_signature")
    try:
        fields = wire.request_payload_from_bytes(envelope.payload)
    except InputError as error:
        raise AuthError(f"{method}: {error}", reason="malformed_request") from None
    if fields.method != method:
        raise AuthError(
            f"{method}: the request was signed for {fields.method}, not for this method",
            reason="wrong_method",
        )
    if fields.signer != tls_node_id:
        raise AuthError(
            f"{method}: the request is signed as node {fields.signer} but the TLS certificate "
            f"is node {tls_node_id}'s",
            reason="signer_mismatch",
        )
    skew = fields.issued_at - now
    if abs(skew) > MAX_SKEW:
        direction = "ahead of" if skew > dt.timedelta(0) else "behind"
        raise AuthError(
            f"{method}: the request timestamp is {abs(skew).total_seconds():.0f} s {direction} "
            f"this node's clock (at most {MAX_SKEW.total_seconds():.0f} s accepted); check NTP",
            reason="stale_timestamp",
        )
    if not 8 <= len(fields.nonce) <= _MAX_NONCE:
        raise AuthError(
            f"{method}: the request nonce must be 8 to 64 bytes", reason="malformed_request"
        )
    return keyid, fields


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RequestAuthenticator:
    """What a servicer calls first: TLS identity, then the signed request, against the bundle.

    `bundle` returns the trust bundle in force (re-read on every call, so a new bundle applies
    at once); `clock` is injected so tests pin time.
    """

    def __init__(
        self,
        *,
        tls: ServerTls,
        bundle: Callable[[], keys.TrustBundle],
        nonce_store: NonceStore,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        """Hold the server's TLS roster, the bundle supplier, the nonce store and the clock."""
        self._tls = tls
        self._bundle = bundle
        self._nonces = nonce_store
        self._clock = clock

    async def authenticate_async(
        self,
        signed: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        method: str,
    ) -> VerifiedRequest:
        """Return the verified request of a call to `method`, or raise AuthError saying why:
        TLS identity, signature by a trusted key of that node, method, timestamp, then the
        nonce, whose durable commit is awaited off the event loop (group-committed)."""
        verified = self.authenticate_unclaimed(signed, context, method=method)
        await _remember_async(self._nonces, verified)
        return verified

    def authenticate_unclaimed(
        self,
        signed: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        method: str,
    ) -> VerifiedRequest:
        """Every check of `authenticate_async` but the nonce, which is NOT recorded here.

        Only for a service that claims the nonce with the request's access-log entry
        (`node.accesslog.NonceClaim`) and replies to nothing before that append returned: the
        append refuses a replay. Raises AuthError like `authenticate_async` otherwise.
        """
        tls_node_id = self._tls.identify(context)
        now = self._clock()
        bundle = self._bundle()
        return _verify_unclaimed(
            signed,
            method=method,
            trusted=node_signing_keys(bundle, tls_node_id, now),
            tls_node_id=tls_node_id,
            now=now,
            revoked=bundle.revoked_keyids,
        )
