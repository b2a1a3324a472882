"""A streamed request message that does not decode is INVALID_ARGUMENT, as a unary one is.

Streamed requests keep gRPC's own deserializer (their handlers read the iterator), so its
DecodeError surfaced inside the handler and became INTERNAL, with a stack trace logged at
ERROR for every such message any roster peer sends. Server reflection is such a method.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from node.transport import client_channel
from tests.node.test_transport_mtls import identity, node_keys, roster_of, run, start

__all__ = ["node_keys"]  # the module-scoped key directories, shared with the mTLS tests

REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.mark.parametrize(
    "garbage",
    [b"\x0a\x10abc", b"\x0c", b"\x1a\x02\xff\xfe"],
    ids=["truncated", "stray end-group", "invalid utf-8"],
)
def test_a_malformed_streamed_request_is_invalid_argument_without_a_traceback(
    node_keys: dict[str, Any], garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = node_keys["dept-a"], node_keys["dept-b"]
    roster = roster_of(a, b)

    async def scenario() -> tuple[grpc.StatusCode, str, list[bytes]]:
        server = await start(a, roster)
        try:
            async with client_channel(
                server.target, peer=roster.peer("dept-a"), identity=identity(b)
            ) as channel:
                call = channel.stream_stream(REFLECTION)
                good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

                async def requests() -> AsyncIterator[bytes]:
                    yield good
                    yield garbage

                answers: list[bytes] = []
                try:
                    async for answer in call(requests(), timeout=10):
                        answers.append(answer)
                except grpc.aio.AioRpcError as error:
                    return error.code(), error.details() or "", answers
                return grpc.StatusCode.OK, "", answers
        finally:
            await server.stop(None)

    with caplog.at_level(logging.INFO):
        code, details, answers = run(scenario())
    assert len(answers) == 1  # the well-formed request before it was answered
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(
        "malformed request: not a valid grpc.reflection.v1alpha.ServerReflectionRequest"
    )
    assert "Traceback" not in caplog.text
    assert "unhandled" not in caplog.text
