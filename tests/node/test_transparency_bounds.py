"""Transparency proofs in process over mutual TLS: only up to the latest signed checkpoint, and
bad sizes are INVALID_ARGUMENT, never INTERNAL.

Entries committed after the latest checkpoint are in no signed tree yet: a proof up to them
verifies against no root anybody can check, and answering it tells any roster member how many
accesses the node logged since (second by second), which the checkpoints publish only once
signed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest

import keys
from node._pb.credex.v1 import transparency_pb2, transparency_pb2_grpc
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.services import transparency_service
from tests.node.accesslog_support import query_entry
from tests.node.exchange_support import serving

MAX = 2**64 - 1


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeRuntime]]:
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), nodes)
    cluster.init()
    made = {name: cluster.runtime(name) for name, _role in nodes}
    market = made["market"]
    for i in range(3):
        market.log.append_sync(query_entry(i))
    market.log.checkpoint()  # signed: size 3
    for i in range(3, 6):
        market.log.append_sync(query_entry(i))  # committed, not yet in a signed checkpoint
    yield made
    for runtime in made.values():
        runtime.close()


Ask = transparency_pb2.GetInclusionProofRequest | transparency_pb2.GetConsistencyProofRequest


def _ask(runtimes: dict[str, NodeRuntime], requests: list[Ask]) -> list[grpc.StatusCode]:
    market, hrss = runtimes["market"], runtimes["hrss"]

    async def one(stub: transparency_pb2_grpc.TransparencyStub, request: Ask) -> grpc.StatusCode:
        try:
            if isinstance(request, transparency_pb2.GetInclusionProofRequest):
                await stub.GetInclusionProof(request, timeout=10)
            else:
                await stub.GetConsistencyProof(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def scenario() -> list[grpc.StatusCode]:
        async with (
            serving(market, transparency_service.make_services),
            hrss.channel("market") as channel,
        ):
            stub = transparency_pb2_grpc.TransparencyStub(channel)
            return [await one(stub, request) for request in requests]

    return asyncio.run(scenario())


def inclusion(index: int, size: int) -> Ask:
    return transparency_pb2.GetInclusionProofRequest(index=index, size=size)


def consistency(size1: int, size2: int) -> Ask:
    return transparency_pb2.GetConsistencyProofRequest(size1=size1, size2=size2)


def test_proofs_reach_the_latest_checkpoint_and_no_further(
    runtimes: dict[str, NodeRuntime],
) -> None:
    ok, bad = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
    assert _ask(runtimes, [inclusion(2, 3), consistency(1, 3), consistency(3, 3)]) == [ok] * 3
    beyond = [inclusion(4, 6), inclusion(0, 4), consistency(1, 6), consistency(3, 4)]
    assert _ask(runtimes, beyond) == [bad] * 4


@pytest.mark.parametrize(
    "request_",
    [
        inclusion(3, 3),
        inclusion(0, 0),
        inclusion(MAX - 1, MAX),
        inclusion(0, MAX),
        consistency(0, 3),
        consistency(3, 2),
        consistency(1, MAX),
        consistency(MAX, MAX),
    ],
)
def test_bad_sizes_are_invalid_argument(runtimes: dict[str, NodeRuntime], request_: Ask) -> None:
    assert _ask(runtimes, [request_]) == [grpc.StatusCode.INVALID_ARGUMENT]


def test_a_proof_verifies_against_the_signed_checkpoint(runtimes: dict[str, NodeRuntime]) -> None:
    market = runtimes["market"]
    latest = market.log.backend.latest_checkpoint()
    assert latest is not None
    cp = keys.verify_checkpoint(latest[1], verifiers=market.log_verifiers(), log_name="market")
    assert cp.size == 3
    leaf = market.log.backend.leaf_hashes(1, 2)[0]
    keys.verify_inclusion(1, 3, leaf, market.log.inclusion_proof(1, 3), cp.root)
