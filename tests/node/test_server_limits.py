"""One roster peer cannot take the whole server: requests are size-bounded and each peer has a
bounded number of calls in flight.

Only roster members pass the handshake, but a compromised or faulty member (threat 3) still
must not exhaust the node's memory or every handler slot for the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio

from node._pb.credex.v1 import common_pb2, query_pb2, query_pb2_grpc
from node.server import MAX_CALLS_PER_PEER, MAX_REQUEST_BYTES, Service, build_server, server_options
from node.transport import CHANNEL_OPTIONS, ServerTls, client_channel
from tests.node.test_transport_mtls import identity, node_keys, roster_of, run

__all__ = ["node_keys"]  # the module-scoped key directories, shared with the mTLS tests

Code = grpc.StatusCode


class Holding(query_pb2_grpc.QueryServicer):
    """Holds dept-b's calls open until released; answers everyone else at once."""

    def __init__(self, tls: ServerTls, holding: int) -> None:
        self.tls = tls
        self.release = asyncio.Event()
        self.held = 0
        self.all_held = asyncio.Event()
        self.holding = holding

    async def Query(
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> query_pb2.QueryAnswer:
        peer = self.tls.identify(context)
        if peer == "dept-b":
            self.held += 1
            if self.held == self.holding:
                self.all_held.set()
            await self.release.wait()
        return query_pb2.QueryAnswer(decision=peer)


async def _outcome(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return Code.OK, ""


def test_one_peer_cannot_hold_every_handler(node_keys: dict[str, Any]) -> None:
    a, b, platform = node_keys["dept-a"], node_keys["dept-b"], node_keys["platform"]
    roster = roster_of(a, b, platform)
    tls = ServerTls(key_pem=a.tls_key_pem, cert_pem=a.tls_cert_pem, roster=roster)

    async def scenario() -> dict[str, tuple[grpc.StatusCode, str]]:
        servicer = Holding(tls, MAX_CALLS_PER_PEER)
        service = Service("credex.v1.Query", servicer, query_pb2_grpc.add_QueryServicer_to_server)
        server = build_server(listen="127.0.0.1:0", tls=tls, services=[service])
        await server.start()
        peer = roster.peer("dept-a")
        try:
            async with (
                client_channel(server.target, peer=peer, identity=identity(b)) as flood,
                client_channel(server.target, peer=peer, identity=identity(platform)) as other,
            ):
                stub = query_pb2_grpc.QueryStub(flood)
                held = [
                    asyncio.ensure_future(stub.Query(common_pb2.SignedRequest(), timeout=30))
                    for _ in range(MAX_CALLS_PER_PEER)
                ]
                await asyncio.wait_for(servicer.all_held.wait(), timeout=20)
                seen = {
                    "one more from dept-b": await _outcome(
                        stub.Query(common_pb2.SignedRequest(), timeout=5)
                    ),
                    "platform meanwhile": await _outcome(
                        query_pb2_grpc.QueryStub(other).Query(common_pb2.SignedRequest(), timeout=5)
                    ),
                }
                servicer.release.set()
                results = [await _outcome(call) for call in held]
                seen["the held calls"] = (
                    Code.OK if all(code == Code.OK for code, _ in results) else results[0][0],
                    "",
                )
                # The slots come back once the calls end.
                seen["dept-b afterwards"] = await _outcome(
                    stub.Query(common_pb2.SignedRequest(), timeout=5)
                )
                return seen
        finally:
            await server.stop(None)

    seen = run(scenario())
    code, details = seen.pop("one more from dept-b")
    assert code == Code.RESOURCE_EXHAUSTED
    assert f"{MAX_CALLS_PER_PEER} calls" in details
    assert "node dept-b" in details
    assert seen == {
        "platform meanwhile": (Code.OK, ""),
        "the held calls": (Code.OK, ""),
        "dept-b afterwards": (Code.OK, ""),
    }


def test_an_oversized_request_is_refused_before_it_reaches_a_handler(
    node_keys: dict[str, Any],
) -> None:
    a, b = node_keys["dept-a"], node_keys["dept-b"]
    roster = roster_of(a, b)
    tls = ServerTls(key_pem=a.tls_key_pem, cert_pem=a.tls_cert_pem, roster=roster)

    async def scenario() -> dict[str, grpc.StatusCode]:
        servicer = Holding(tls, 0)
        service = Service("credex.v1.Query", servicer, query_pb2_grpc.add_QueryServicer_to_server)
        server = build_server(listen="127.0.0.1:0", tls=tls, services=[service])
        await server.start()
        try:
            async with client_channel(
                server.target, peer=roster.peer("dept-a"), identity=identity(b)
            ) as channel:
                stub = query_pb2_grpc.QueryStub(channel)
                servicer.release.set()

                async def send(size: int) -> grpc.StatusCode:
                    request = common_pb2.SignedRequest(envelope=b"x" * size)
                    return (await _outcome(stub.Query(request, timeout=20)))[0]

                return {
                    "a large but plausible request": await send(1024 * 1024),
                    "over the limit": await send(MAX_REQUEST_BYTES + 1),
                    "far over the limit": await send(16 * MAX_REQUEST_BYTES),
                }
        finally:
            await server.stop(None)

    assert run(scenario()) == {
        "a large but plausible request": Code.OK,
        "over the limit": Code.RESOURCE_EXHAUSTED,
        "far over the limit": Code.RESOURCE_EXHAUSTED,
    }


def test_server_options_are_merged_without_duplicates() -> None:
    # gRPC does not promise which of two values for one key wins: the request limit must not
    # depend on it (CHANNEL_OPTIONS carries the 64 MiB limit answers need).
    options = server_options()
    keys = [key for key, _ in options]
    assert len(keys) == len(set(keys))
    merged = dict(options)
    assert merged["grpc.max_receive_message_length"] == MAX_REQUEST_BYTES
    assert (
        merged["grpc.max_send_message_length"]
        == dict(CHANNEL_OPTIONS)["grpc.max_send_message_length"]
    )
    assert merged["grpc.so_reuseport"] == 0
