"""Raw gRPC limits on this machine: the floor under every credex RPC benchmark.

A bare `grpc.aio` server with the node's mutual TLS (P-256 certificates from `keys`, roots =
the roster) and no credex code in the path: generic handlers move opaque bytes, so the
figures are what gRPC, TLS and the loopback can do. Other benchmarks `import _grpc_raw` with
the repository root first and bench/ LAST on sys.path (see grpc_baseline.py) and report their
figures as a ratio to these.

- `measure_unary(size, concurrency, seconds)`: unary calls of `size`-byte requests and
  answers; calls/s and latency p50/p99 in ms.
- `measure_stream(count, size)`: one server stream of `count` messages of `size` bytes;
  messages/s and MB/s.

`raw_server(separate_process=True)` runs the server in a child process, for benchmarks whose
credex server runs in its own process too (the comparison stays like for like).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import struct
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

import keys
from node.transport import CHANNEL_OPTIONS, ChannelIdentity, ServerTls, TlsRoster, client_channel

UNARY = "/bench.Raw/Echo"
STREAM = "/bench.Raw/Stream"


def _identity(raw: bytes) -> bytes:
    return raw


@dataclass(frozen=True)
class UnaryFigures:
    """Unary throughput and latency at one size and concurrency."""

    size: int
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class StreamFigures:
    """Server-stream throughput for one message size."""

    size: int
    count: int
    messages_per_s: float
    mb_per_s: float


class _Raw(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Echo a payload of the requested size; stream N payloads."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if handler_call_details.method == UNARY:
            return grpc.unary_unary_rpc_method_handler(
                self._echo, request_deserializer=_identity, response_serializer=_identity
            )
        if handler_call_details.method == STREAM:
            return grpc.unary_stream_rpc_method_handler(
                self._stream, request_deserializer=_identity, response_serializer=_identity
            )
        return None

    async def _echo(self, request: bytes, context: Any) -> bytes:
        del context
        return request

    async def _stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        del context
        count, size = struct.unpack(">QI", request)
        payload = b"\x5a" * size
        for _ in range(count):
            yield payload


@dataclass
class RawTarget:
    """A running raw server and what a client needs to dial it."""

    channel: grpc.aio.Channel


async def _start(
    key_pem: bytes, cert_pem: bytes, roster: list[tuple[str, str, bytes]]
) -> tuple[grpc.aio.Server, int]:
    """Start the bare mTLS server on a free loopback port; return it and the port."""
    tls = ServerTls(key_pem=key_pem, cert_pem=cert_pem, roster=TlsRoster.of(roster))
    server = grpc.aio.server(options=list(CHANNEL_OPTIONS))
    server.add_generic_rpc_handlers((_Raw(),))
    port = server.add_secure_port("127.0.0.1:0", tls.credentials())
    await server.start()
    return server, port


def _serve_in_child(
    key_pem: bytes,
    cert_pem: bytes,
    roster: list[tuple[str, str, bytes]],
    conn: Any,
) -> None:
    """Child process body: serve until the parent sends anything on `conn`."""

    async def serve() -> None:
        server, port = await _start(key_pem, cert_pem, roster)
        conn.send(port)
        await asyncio.to_thread(conn.recv)
        await server.stop(None)

    asyncio.run(serve())


@asynccontextmanager
async def _in_child(
    key_pem: bytes, cert_pem: bytes, roster: list[tuple[str, str, bytes]]
) -> AsyncIterator[int]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(
        target=_serve_in_child, args=(key_pem, cert_pem, roster, theirs), daemon=True
    )
    child.start()
    try:
        yield await asyncio.to_thread(ours.recv)
    finally:
        ours.send("stop")
        await asyncio.to_thread(child.join, 10)
        if child.is_alive():
            child.kill()


@asynccontextmanager
async def _in_process(
    key_pem: bytes, cert_pem: bytes, roster: list[tuple[str, str, bytes]]
) -> AsyncIterator[int]:
    server, port = await _start(key_pem, cert_pem, roster)
    try:
        yield port
    finally:
        await server.stop(None)


@asynccontextmanager
async def raw_server(*, separate_process: bool = False) -> AsyncIterator[RawTarget]:
    """Start a bare mTLS gRPC server on 127.0.0.1 and yield a connected client channel.

    With `separate_process` the server runs in a child process (its own interpreter and GIL).
    """
    with tempfile.TemporaryDirectory(prefix="credex-bench-") as tmp:
        server_keys = keys.create_key_dir(Path(tmp) / "server", node_id="bench-server")
        client_keys = keys.create_key_dir(Path(tmp) / "client", node_id="bench-client")
    entries = [(k.node_id, k.tls_fingerprint, k.tls_cert_pem) for k in (server_keys, client_keys)]
    roster = TlsRoster.of(entries)
    identity = ChannelIdentity(key_pem=client_keys.tls_key_pem, cert_pem=client_keys.tls_cert_pem)
    serve = _in_child if separate_process else _in_process
    async with serve(server_keys.tls_key_pem, server_keys.tls_cert_pem, entries) as port:
        channel = client_channel(
            f"127.0.0.1:{port}", peer=roster.peer("bench-server"), identity=identity
        )
        try:
            await channel.channel_ready()
            yield RawTarget(channel=channel)
        finally:
            await channel.close()


async def measure_unary(
    target: RawTarget, *, size: int, concurrency: int, seconds: float
) -> UnaryFigures:
    """Run `concurrency` clients calling back to back for `seconds`; return rate and latency."""
    call = target.channel.unary_unary(
        UNARY, request_serializer=_identity, response_deserializer=_identity
    )
    payload = b"\xa5" * size
    for _ in range(20):  # warm up the connection and the code paths
        await call(payload)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call(payload)
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return UnaryFigures(
        size=size,
        concurrency=concurrency,
        calls_per_s=len(latencies) / elapsed,
        p50_ms=statistics.median(ordered) * 1000.0,
        p99_ms=p99 * 1000.0,
    )


async def measure_stream(target: RawTarget, *, count: int, size: int) -> StreamFigures:
    """Receive one server stream of `count` messages of `size` bytes; best of three."""
    call = target.channel.unary_stream(
        STREAM, request_serializer=_identity, response_deserializer=_identity
    )
    best = 0.0
    for _ in range(3):
        received = 0
        start = time.perf_counter()
        async for message in call(struct.pack(">QI", count, size)):
            received += len(message)
        elapsed = time.perf_counter() - start
        if received != count * size:
            raise RuntimeError(f"stream delivered {received} bytes, expected {count * size}")
        best = max(best, count / elapsed)
    return StreamFigures(
        size=size, count=count, messages_per_s=best, mb_per_s=best * size / 1_000_000
    )
