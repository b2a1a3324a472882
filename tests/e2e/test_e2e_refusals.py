"""Refusals of Exchange over real mTLS against a running `credex serve` (node/cluster.py).

Each hostile or mistaken caller gets the documented status: a node outside the roster and a
certificate nobody pinned never get past the handshake (UNAVAILABLE at the client, told apart
by diagnose_unavailable); a roster certificate presented by another signer, a revoked key, a
replayed or stale request are UNAUTHENTICATED; no agreement or an item outside it is
PERMISSION_DENIED; a tampered sealed batch is refused by the subscriber and stores nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest

import keys
from node import feeds
from node._pb.credex.v1 import exchange_pb2, exchange_pb2_grpc
from node.cli.init_cmds import init_node
from node.cluster import LocalCluster
from node.errors import PolicyDenied
from node.requests import sign_request
from node.runtime import NodeRuntime
from node.transport import ChannelIdentity, UnavailableCause, client_channel, diagnose_unavailable

pytestmark = pytest.mark.slow
T = TypeVar("T")
FEED = {"items": ["admin_penalty"], "purposes": ["feed"], "kind": "feed"}


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("refusals")
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    agreements = [{"provider": "market", "consumer": "platform", **FEED}]
    with LocalCluster(root, nodes, agreements) as c:
        c.init()
        _seed(c, root)
        c.start("market")
        yield c


def _seed(cluster: LocalCluster, root: Path) -> None:
    """A few signed records at market, stored as ingest would (sign, encrypt, subscribe)."""
    market = cluster.runtime("market")
    try:
        from node.store import NewRecord  # noqa: PLC0415

        now = dt.datetime.now(dt.UTC)
        market.store.ensure_subscription("platform", ["admin_penalty"], now=now)
        rows = []
        for i in range(5):
            header = {
                "item": "admin_penalty",
                "catalog_version": market.catalogue.version,
                "record_key": f"{i:064x}",
                "version": 1,
                "producer": "market",
                "issued_at": "2026-11-25T00:00:00Z",
                "subject": f"{i:032x}",
            }
            signed = keys.sign_record(header, {"decision_no": f"N{i}"}, market.node_keys.signing)
            row_id = f"row-{i}"
            rows.append(
                NewRecord(
                    row_id=row_id,
                    producer="market",
                    record_key=f"{i:064x}",
                    version=1,
                    item_id="admin_penalty",
                    catalog_version=market.catalogue.version,
                    subject_index=f"{i:032x}",
                    body=market.cipher.encrypt(row_id, signed.to_bytes()),
                    content_hash=f"{i:064x}",
                    severity=None,
                    decided_on=None,
                    disclosure_min_end=None,
                    disclosure_max_end=None,
                    disclosure_rule="none",
                    created_at=now,
                )
            )
        market.store.store_batch(rows, now=now)
    finally:
        market.close()


def _identity(node_keys: keys.NodeKeys) -> ChannelIdentity:
    return ChannelIdentity(key_pem=node_keys.tls_key_pem, cert_pem=node_keys.tls_cert_pem)


async def _subscribe(
    runtime: NodeRuntime,
    *,
    identity: ChannelIdentity | None = None,
    signed: Any = None,
    body: exchange_pb2.SubscribeBody | None = None,
) -> list[exchange_pb2.SealedBatch]:
    """Call market's Subscribe as `runtime`'s node (optionally with another TLS identity or a
    prepared signed request) and return the batches."""
    peer = runtime.tls_roster().peer("market")
    channel = client_channel(
        runtime.peer_endpoint("market"),
        peer=peer,
        identity=identity or _identity(runtime.node_keys),
    )
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        if signed is None:
            body = body or exchange_pb2.SubscribeBody()
            signed = runtime.sign_request(feeds.SUBSCRIBE_METHOD, body.SerializeToString())
        call = stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed), timeout=15)
        return [batch async for batch in call]
    finally:
        await channel.close()


def _code(runtime: NodeRuntime, **kwargs: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        run(_subscribe(runtime, **kwargs))
    code: grpc.StatusCode = caught.value.code()
    return code


def test_the_agreed_subscriber_is_served(cluster: LocalCluster) -> None:
    platform = cluster.runtime("platform")
    try:
        batches = run(_subscribe(platform))
        assert [(b.first_seq, b.last_seq, b.provider) for b in batches] == [(1, 5, "market")]
    finally:
        platform.close()


def test_node_outside_the_roster_never_gets_past_the_handshake(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    init_node(tmp_path / "stranger", name="stranger", role="department")
    stranger = keys.load_key_dir(tmp_path / "stranger" / "keys")
    platform = cluster.runtime("platform")
    try:
        assert _code(platform, identity=_identity(stranger)) == grpc.StatusCode.UNAVAILABLE
        diagnosis = run(
            diagnose_unavailable(
                platform.peer_endpoint("market"),
                peer=platform.tls_roster().peer("market"),
                identity=_identity(stranger),
            )
        )
        assert diagnosis.cause == UnavailableCause.HANDSHAKE_REFUSED
    finally:
        platform.close()


def test_roster_certificate_of_another_node_is_unauthenticated(cluster: LocalCluster) -> None:
    # hrss's pinned certificate, but the request is signed by the platform: signer != TLS peer
    platform = cluster.runtime("platform")
    hrss = keys.load_key_dir(cluster.home("hrss") / "keys")
    try:
        assert _code(platform, identity=_identity(hrss)) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        platform.close()


def test_replayed_and_stale_requests_are_unauthenticated(cluster: LocalCluster) -> None:
    platform = cluster.runtime("platform")
    try:
        body = exchange_pb2.SubscribeBody(cursor=5).SerializeToString()
        signed = platform.sign_request(feeds.SUBSCRIBE_METHOD, body)
        assert run(_subscribe(platform, signed=signed)) == []
        assert _code(platform, signed=signed) == grpc.StatusCode.UNAUTHENTICATED  # replay
        stale = sign_request(
            feeds.SUBSCRIBE_METHOD,
            body,
            platform.node_keys.signing,
            "platform",
            dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10),
        )
        assert _code(platform, signed=stale) == grpc.StatusCode.UNAUTHENTICATED
        for_query = platform.sign_request("/credex.v1.Query/Query", body)
        assert _code(platform, signed=for_query) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        platform.close()


def test_no_agreement_and_items_outside_it_are_permission_denied(cluster: LocalCluster) -> None:
    hrss = cluster.runtime("hrss")
    platform = cluster.runtime("platform")
    try:
        assert _code(hrss) == grpc.StatusCode.PERMISSION_DENIED
        wider = exchange_pb2.SubscribeBody(items=["admin_penalty", "admin_licence"])
        assert _code(platform, body=wider) == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(PolicyDenied, match="no_agreement"):
            run(feeds.pull(hrss, "market"))
    finally:
        hrss.close()
        platform.close()


def test_tampered_sealed_batch_is_refused_and_stores_nothing(cluster: LocalCluster) -> None:
    platform = cluster.runtime("platform")
    try:
        (batch,) = run(_subscribe(platform))
        for position in (10, len(batch.sealed) // 2, len(batch.sealed) - 1):
            tampered = exchange_pb2.SealedBatch()
            tampered.CopyFrom(batch)
            raw = bytearray(batch.sealed)
            raw[position] ^= 0x01
            tampered.sealed = bytes(raw)
            with pytest.raises(keys.VerificationError):
                feeds.apply_batch(platform, "market", tampered, cursor=0)
        relabelled = exchange_pb2.SealedBatch()
        relabelled.CopyFrom(batch)
        relabelled.last_seq = 4  # the header binds the range: a shortened claim does not open
        with pytest.raises(keys.VerificationError):
            feeds.apply_batch(platform, "market", relabelled, cursor=0)
        assert platform.store.count_records(producer="market") == 0
        assert platform.store.upstream_cursor("market") == 0
        done = feeds.apply_batch(platform, "market", batch, cursor=0)  # the genuine one applies
        assert (done.stored, done.cursor) == (5, 5)
    finally:
        platform.close()


def test_revoked_key_is_unauthenticated_until_unrevoked(cluster: LocalCluster) -> None:
    platform = cluster.runtime("platform")
    keyid = platform.node_keys.signing.keyid
    platform.close()
    cluster.reissue_bundle(revoked_keyids=[keyid])
    try:
        code = _poll_code(cluster, grpc.StatusCode.UNAUTHENTICATED)
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        cluster.reissue_bundle(revoked_keyids=[])
    assert _poll_code(cluster, None) is None


def _poll_code(cluster: LocalCluster, want: grpc.StatusCode | None) -> grpc.StatusCode | None:
    """The running market reloads a newly installed bundle within a second: poll for it."""
    deadline = time.monotonic() + 15
    code: grpc.StatusCode | None = None
    while time.monotonic() < deadline:
        platform = cluster.runtime("platform")
        try:
            body = exchange_pb2.SubscribeBody(cursor=5)
            run(_subscribe(platform, body=body))
            code = None
        except grpc.aio.AioRpcError as error:
            code = error.code()
        finally:
            platform.close()
        if code == want:
            return code
        time.sleep(0.1)  # waiting for another process to reload its bundle file
    return code
