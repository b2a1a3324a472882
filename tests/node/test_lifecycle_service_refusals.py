"""Lifecycle in-process: every refused call is a denied access in the node's log, once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import keys
from node._pb.credex.v1 import lifecycle_pb2, lifecycle_pb2_grpc
from node.accesslog import iter_entries, verify_log
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.server import build_server
from node.services import lifecycle_service
from node.services.lifecycle_service import LIFECYCLE_METHODS
from node.store import NewRecord

ITEM = "admin_penalty"
KEY = f"{1:064x}"


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    c = LocalCluster(
        tmp_path, [("market", "department"), ("health", "department"), ("platform", "platform")]
    )
    c.init()
    return c


def store_one(runtime: NodeRuntime) -> None:
    header = {
        "item": ITEM,
        "catalog_version": runtime.catalogue.version,
        "record_key": KEY,
        "version": 1,
        "producer": runtime.node_id,
        "issued_at": "2026-11-25T00:00:00Z",
        "subject": "ab" * 16,
    }
    signed = keys.sign_record(header, {"decision_no": "N1"}, runtime.node_keys.signing)
    runtime.store.store_batch(
        [
            NewRecord(
                row_id="row-1",
                producer=runtime.node_id,
                record_key=KEY,
                version=1,
                item_id=ITEM,
                catalog_version=runtime.catalogue.version,
                subject_index="ab" * 16,
                body=runtime.cipher.encrypt("row-1", signed.to_bytes()),
                content_hash="cd" * 32,
                severity="general",
                decided_on=None,
                disclosure_min_end=None,
                disclosure_max_end=None,
                disclosure_rule="none",
                created_at=runtime.clock(),
            )
        ],
        now=runtime.clock(),
    )


def denied(runtime: NodeRuntime) -> list[tuple[str, str, str]]:
    """(kind, requester, reason) of every denied entry in `runtime`'s log."""
    backend = runtime.log.backend
    entries = [entry for _index, _leaf, entry in iter_entries(backend)]
    return [(e.kind, e.requester, e.reason) for e in entries if e.decision == "deny"]


def test_refused_lifecycle_calls_are_logged_once(cluster: LocalCluster) -> None:
    market, health, platform = (cluster.runtime(n) for n in ("market", "health", "platform"))
    store_one(market)

    async def call(client: NodeRuntime, name: str, body: Any, *, forge: bool = False) -> Any:
        signed = client.sign_request(LIFECYCLE_METHODS[name], body.SerializeToString())
        if forge:
            envelope = bytearray(signed.envelope)
            envelope[-5] ^= 1  # inside the signature
            signed.envelope = bytes(envelope)
        channel = client.channel("market")
        try:
            stub = lifecycle_pb2_grpc.LifecycleStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await getattr(stub, name)(signed, timeout=10)
            return caught.value.code()
        finally:
            await channel.close()

    async def scenario() -> list[Any]:
        server = build_server(
            listen=market.config.server.listen,
            tls=market.server_tls(),
            services=lifecycle_service.make_services(market),
        )
        await server.start()
        try:
            objection = lifecycle_pb2.ObjectionBody(record_key=KEY, reason_code="dispute")
            return [
                await call(health, "Object", objection),
                await call(platform, "Object", objection, forge=True),
                await call(platform, "Revoke", lifecycle_pb2.RevokeBody(record_key="not-a-key")),
                await call(platform, "Repair", lifecycle_pb2.RepairBody(record_key=KEY)),
            ]
        finally:
            await server.stop(None)

    try:
        codes = asyncio.run(scenario())
        assert codes == [
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.PERMISSION_DENIED,
        ]
        assert denied(market) == [
            ("lifecycle_object", "health", "not_platform"),
            ("lifecycle_object", "platform", "bad_signature"),
            ("lifecycle_revoke", "platform", "malformed_request"),
            # logged by the repair rules with the record it concerns, and by nobody else
            ("lifecycle_repair", "platform", "repair_not_admissible"),
        ]
        assert verify_log(market.log.backend, {}).ok
    finally:
        for r in (market, health, platform):
            r.close()
