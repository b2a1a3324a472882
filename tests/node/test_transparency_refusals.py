"""Transparency.Cosign in process over mutual TLS: a refused cosignature (not the platform, a
note the witness did not sign) is one denied `cosign` access; an accepted one logs nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

import keys
from node._pb.credex.v1 import transparency_pb2, transparency_pb2_grpc
from node.accesslog import iter_entries, verify_log
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.services import transparency_service
from tests.node.exchange_support import serving


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[dict[str, NodeRuntime]]:
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    cluster = LocalCluster(tmp_path, nodes)
    cluster.init()
    made = {name: cluster.runtime(name) for name, _role in nodes}
    yield made
    for runtime in made.values():
        runtime.close()


def denied(runtime: NodeRuntime) -> list[tuple[str, str, str, str]]:
    """(kind, requester, purpose, reason) of every denied entry in `runtime`'s log."""
    entries = [entry for _index, _leaf, entry in iter_entries(runtime.log.backend)]
    return [(e.kind, e.requester, e.purpose, e.reason) for e in entries if e.decision == "deny"]


def test_refused_cosignatures_are_logged_once(runtimes: dict[str, NodeRuntime]) -> None:
    market, hrss, platform = runtimes["market"], runtimes["hrss"], runtimes["platform"]

    async def cosign(client: NodeRuntime, *, sign: bool) -> grpc.StatusCode:
        async with client.channel("market") as channel:
            stub = transparency_pb2_grpc.TransparencyStub(channel)
            checkpoint = await stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest())
            note = checkpoint.note
            if sign:
                note = keys.cosign_note(note, name=client.node_id, signer=client.node_keys.signing)
            try:
                await stub.Cosign(transparency_pb2.CosignRequest(note=note), timeout=10)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    async def scenario() -> list[grpc.StatusCode]:
        async with serving(market, transparency_service.make_services):
            return [
                await cosign(hrss, sign=True),  # a department is no witness
                await cosign(platform, sign=False),  # no cosignature of the witness on it
                await cosign(platform, sign=True),
            ]

    codes = asyncio.run(scenario())
    assert codes == [
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.OK,
    ]
    assert denied(market) == [
        ("cosign", "hrss", "witness", "not_a_witness"),
        ("cosign", "platform", "witness", "verification_failed"),
    ]
    witness = {"platform": platform.node_keys.signing.public_key}
    assert verify_log(
        market.log.backend, market.log_verifiers(), log_name="market", witness_verifiers=witness
    ).ok
