"""The node's gRPC server: mTLS, credex services, health, reflection, errors, telemetry.

`build_server` assembles a `grpc.aio` server from `Service` registrations, so every servicer
(Catalog now; Exchange, Query, Lifecycle, Transparency as they land) plugs in the same way.
Around every handler one interceptor, `_CallInterceptor`:
- refuses a call whose TLS certificate is not pinned in the CURRENT roster (UNAUTHENTICATED),
  which also shuts out a node removed from the roster on a connection it opened earlier; on a
  node, also every call once its bundle has expired (FAILED_PRECONDITION) and a caller whose
  roster membership is not valid now (UNAUTHENTICATED): see `ServerTls.identify`;
- refuses a request that does not decode as its message type (INVALID_ARGUMENT): the request
  deserializer hands the handler wrapper a marker instead of raising inside gRPC, which would
  answer UNKNOWN with the parser's text and log a stack trace per call;
- reports every failure to `ServerTls.refusals` (when set) before the status goes back, so
  that refusals made here, before the handler, are logged as denied accesses too (a refusal
  that cannot be logged answers UNAVAILABLE, fail closed);
- maps every credex error to its status code through `node.errors.status_for`, with the
  error's own message (credex messages are written to be safe); any other exception becomes
  INTERNAL with a generic message and the trace id, and only its type and stack are logged
  (foreign messages may quote data);
- opens a server span (trace context taken from the caller's metadata) and records the call
  count and latency per method and status, with attributes passed through
  `node.telemetry.safe_attributes`.

Shutdown is graceful: health turns NOT_SERVING, the server stops accepting new calls and lets
in-flight calls and streams finish within the grace period, then cancels what is left.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry import propagate, trace

import adapters
import catalog
import keys
from node.config import DEFAULT_MAX_CALLS_PER_PEER
from node.errors import ConfigError, InputError, NodeError, status_for
from node.telemetry import Telemetry, noop_telemetry, safe_attributes
from node.transport import CHANNEL_OPTIONS, ServerTls

__all__ = [
    "MAX_CALLS_PER_PEER",
    "MAX_REQUEST_BYTES",
    "SERVER_OPTIONS",
    "NodeServer",
    "PeerBusy",
    "Service",
    "build_server",
    "serve",
    "server_options",
]

log = logging.getLogger(__name__)

_CREDEX_ERRORS = (NodeError, catalog.CatalogError, keys.KeysError, adapters.AdapterError)
_HEALTH_SERVICE = "grpc.health.v1.Health"
# The largest request a peer may send. Every credex request is one signed message holding at
# most one record (Push, Correct) or a proof of a few kilobytes (Cosign); answers and feed
# batches travel the other way and keep the shared 64 MiB limit (CHANNEL_OPTIONS). gRPC reads
# a whole request into memory before any credex code sees it, so this bounds what one call
# can make the node hold; a larger one ends RESOURCE_EXHAUSTED.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Calls one roster node may have in flight at once (follow-mode Subscribe streams included),
# unless `[server] max_calls_per_peer` says otherwise. More end RESOURCE_EXHAUSTED at once, so
# a faulty or compromised member cannot take every handler, database connection and byte of
# memory the others need.
MAX_CALLS_PER_PEER = DEFAULT_MAX_CALLS_PER_PEER
# Server-only channel options, applied over CHANNEL_OPTIONS:
# - SO_REUSEPORT off: one process per port (see build_server);
# - requests bounded (MAX_REQUEST_BYTES), and at most 128 calls at once on one connection.
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_concurrent_streams", 128),
)


def server_options(extra: Sequence[tuple[str, Any]] = ()) -> tuple[tuple[str, Any], ...]:
    """The channel options of a credex server: CHANNEL_OPTIONS, then SERVER_OPTIONS, then
    `extra`, a later value replacing an earlier one for the same key (gRPC does not promise
    which of two duplicates wins, so none is passed)."""
    merged: dict[str, Any] = {}
    for key, value in (*CHANNEL_OPTIONS, *SERVER_OPTIONS, *extra):
        merged[key] = value
    return tuple(merged.items())


class PeerBusy(NodeError):
    """A roster node has MAX_CALLS_PER_PEER calls in flight here already."""

    status = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class Service:
    """One gRPC service to serve: its full name, the servicer, and the generated add function."""

    name: str  # e.g. "credex.v1.Catalog"
    servicer: object
    add: Callable[
        [Any, grpc.aio.Server], None
    ]  # e.g. catalog_pb2_grpc.add_CatalogServicer_to_server


def _split_method(full: str) -> tuple[str, str]:
    service, _, method = full.lstrip("/").partition("/")
    return service, method


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a request whose bytes are not a valid `message_type`."""

    message_type: str
    data: bytes


def _message_type(deserializer: Callable[[bytes], Any] | None) -> str:
    """The full name of the message `deserializer` (a generated `FromString`) decodes."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request message"))


def _malformed(message_type: str) -> InputError:
    """The refusal of a request that does not decode as `message_type` (its name only: never
    the parser's text, which may quote the bytes)."""
    source = "the credex.v1 .proto files" if message_type.startswith("credex.") else "its .proto"
    return InputError(f"malformed request: not a valid {message_type} (encode it from {source})")


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, yielding an `_Undecodable` instead of raising for bytes that do not
    decode (None stays None: the handler takes raw bytes)."""
    if deserializer is None:
        return None
    message_type = _message_type(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _Undecodable(message_type, data)

    return deserialize


def _refuse_undecodable(request: Any) -> None:
    """Refuse (InputError) a request that did not decode."""
    if isinstance(request, _Undecodable):
        raise _malformed(request.message_type)


def _streamed_refusal(error: Exception, streamed: str | None) -> Exception:
    """`error`, or the refusal of a malformed message when it is gRPC's DecodeError from the
    request stream of a method whose requests are streamed (of type `streamed`)."""
    if streamed is not None and isinstance(error, DecodeError):
        return _malformed(streamed)
    return error


class _CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Peer check, error mapping and telemetry around every handler (see the module doc)."""

    def __init__(
        self, tls: ServerTls, telemetry: Telemetry, max_calls_per_peer: int = MAX_CALLS_PER_PEER
    ) -> None:
        self._tls = tls
        self._telemetry = telemetry
        self._max_calls = max_calls_per_peer
        # Calls in flight per identified roster node; one event loop, so no lock is needed.
        self._in_flight: dict[str, int] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        metadata = tuple(handler_call_details.invocation_metadata or ())
        deserializer = handler.request_deserializer
        # Streamed requests keep gRPC's deserializer; its DecodeError reaches the wrapper.
        streamed: str | None = None
        if handler.unary_unary is not None:
            factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
            deserializer = _tolerant(deserializer)
        elif handler.unary_stream is not None:
            factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
            deserializer = _tolerant(deserializer)
        elif handler.stream_unary is not None:
            factory, behavior = grpc.stream_unary_rpc_method_handler, handler.stream_unary
            streamed = _message_type(deserializer)
        else:
            factory, behavior = grpc.stream_stream_rpc_method_handler, handler.stream_stream
            streamed = _message_type(deserializer)
        if inspect.isasyncgenfunction(behavior):
            wrapped: Any = self._wrap_stream(behavior, method, metadata, streamed)
        else:
            wrapped = self._wrap_call(behavior, method, metadata, streamed)
        # Streamed requests keep their own deserializer: their handlers read the iterator
        # themselves, and a marker among the messages would reach them unchecked.
        return factory(
            wrapped,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    def _begin(self, method: str, metadata: tuple[Any, ...]) -> tuple[trace.Span, dict[str, Any]]:
        service, name = _split_method(method)
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
        }
        # Only the caller's trace and span ids are taken (W3C traceparent): its tracestate and
        # baggage are free text a peer writes, which would travel into this node's exports.
        carrier = {str(k): v for k, v in metadata if str(k) == "traceparent" and isinstance(v, str)}
        span = self._telemetry.tracer.start_span(
            method.lstrip("/"),
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes=safe_attributes(attributes),
        )
        return span, attributes

    def _identify(self, context: grpc.aio.ServicerContext[Any, Any], span: trace.Span) -> str:
        """Identify the caller and take one of its call slots (give it back with `_release`).

        AuthError: not pinned, not a member valid now; StaleBundle: the bundle has expired;
        PeerBusy: the caller has `max_calls_per_peer` calls in flight already."""
        peer = self._tls.identify(context)
        span.set_attributes(safe_attributes({"credex.peer": peer}))
        busy = self._in_flight.get(peer, 0)
        if busy >= self._max_calls:
            raise PeerBusy(
                f"node {peer} already has {busy} calls in flight here (at most "
                f"{self._max_calls} calls at once per node); let some finish, or end unused "
                "Subscribe streams, then retry"
            )
        self._in_flight[peer] = busy + 1
        return peer

    def _release(self, peer: str | None) -> None:
        if peer is None:
            return
        left = self._in_flight[peer] - 1
        if left:
            self._in_flight[peer] = left
        else:
            del self._in_flight[peer]

    async def _logged(
        self,
        error: BaseException,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        request: Any,
        *,
        in_handler: bool,
    ) -> BaseException:
        """Report `error` to the refusal log (ServerTls.refusals) and return the error the call
        ends with: `error`, or the log's own failure (fail closed) when it cannot be logged."""
        refusals = self._tls.refusals
        if refusals is None:
            return error
        if isinstance(request, _Undecodable):
            request = request.data
        try:
            await refusals.refused(method, context, error, request=request, in_handler=in_handler)
        except Exception as failure:
            return failure
        return error

    async def _fail(
        self,
        error: BaseException,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        span: trace.Span,
    ) -> None:
        if isinstance(error, _CREDEX_ERRORS):
            code = status_for(error)
            message = str(error)
        else:
            code = grpc.StatusCode.INTERNAL
            trace_id = format(span.get_span_context().trace_id, "032x")
            message = f"internal error in {method} (trace {trace_id}); see the node's log"
            # Type and stack only: a foreign exception's message may quote the data it choked on.
            stack = "".join(traceback.format_tb(error.__traceback__))
            log.error(
                "unhandled %s in %s (trace %s)\n%s", type(error).__name__, method, trace_id, stack
            )
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
        await context.abort(code, message)

    def _end(
        self,
        span: trace.Span,
        attributes: dict[str, Any],
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
        cancelled: bool,
    ) -> None:
        code = context.code()
        if cancelled:
            status = grpc.StatusCode.CANCELLED
        elif code is None:
            status = grpc.StatusCode.OK
        elif isinstance(code, grpc.StatusCode):
            status = code
        else:
            status = grpc.StatusCode.UNKNOWN
        attributes["rpc.grpc.status_code"] = status.value[0]
        span.set_attributes(safe_attributes({"rpc.grpc.status_code": status.value[0]}))
        span.end()
        self._telemetry.record_rpc((time.perf_counter() - started) * 1000.0, attributes)

    def _wrap_call(
        self,
        behavior: Callable[..., Any],
        method: str,
        metadata: tuple[Any, ...],
        streamed: str | None,
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            span, attributes = self._begin(method, metadata)
            cancelled = False
            failure: BaseException | None = None
            in_handler = False
            peer: str | None = None
            try:
                # record_exception=False: an exception's text may quote data (see _fail).
                with trace.use_span(
                    span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                ):
                    try:
                        peer = self._identify(context, span)
                        _refuse_undecodable(request)
                        in_handler = True
                        result = behavior(request, context)
                        if inspect.isawaitable(result):
                            result = await result
                        return result
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        raise
                    except Exception as error:
                        failure = _streamed_refusal(error, streamed)
                    # Log and abort outside the except block, so the original exception is not
                    # chained to the abort (and never printed by anything that logs the abort).
                    failure = await self._logged(
                        failure, context, method, request, in_handler=in_handler
                    )
                    await self._fail(failure, context, method, span)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                self._release(peer)
                self._end(span, attributes, context, started, cancelled)
            return None  # unreachable: _fail aborts

        return call

    def _wrap_stream(
        self,
        behavior: Callable[..., AsyncIterator[Any]],
        method: str,
        metadata: tuple[Any, ...],
        streamed: str | None,
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = time.perf_counter()
            span, attributes = self._begin(method, metadata)
            cancelled = False
            failure: BaseException | None = None
            in_handler = False
            peer: str | None = None
            try:
                with trace.use_span(
                    span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                ):
                    try:
                        peer = self._identify(context, span)
                        _refuse_undecodable(request)
                        in_handler = True
                        async for response in behavior(request, context):
                            yield response
                    except (asyncio.CancelledError, GeneratorExit, grpc.aio.AbortError):
                        raise
                    except Exception as error:
                        failure = _streamed_refusal(error, streamed)
                    if failure is not None:
                        failure = await self._logged(
                            failure, context, method, request, in_handler=in_handler
                        )
                        await self._fail(failure, context, method, span)
            except (asyncio.CancelledError, GeneratorExit):
                cancelled = True
                raise
            finally:
                self._release(peer)
                self._end(span, attributes, context, started, cancelled)

        return stream


class NodeServer:
    """A built gRPC server: `start`, `stop(grace)`, `wait`; `port` once started."""

    def __init__(
        self,
        server: grpc.aio.Server,
        *,
        port: int,
        host: str,
        tls: ServerTls,
        health: HealthServicer,
        services: Sequence[str],
        telemetry: Telemetry,
    ) -> None:
        """Wrap an assembled server (use `build_server`)."""
        self.server = server
        self.port = port
        self.host = host
        self.tls = tls
        self.health = health
        self.service_names = tuple(services)
        self.telemetry = telemetry
        self.stopping = asyncio.Event()

    @property
    def target(self) -> str:
        """ "host:port" that clients dial."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Start serving and mark every service SERVING in the health service."""
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = 10.0) -> None:
        """Stop gracefully: NOT_SERVING, refuse new calls, let in-flight calls finish within
        `grace` seconds (None: cancel at once), then cancel the rest."""
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def wait(self) -> None:
        """Wait until the server has terminated."""
        await self.server.wait_for_termination()


def _split_listen(listen: str, listen_key: str) -> str:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{listen_key} = {listen!r}: expected HOST:PORT")
    return host.strip("[]")


def build_server(
    *,
    listen: str,
    tls: ServerTls,
    services: Sequence[Service],
    telemetry: Telemetry | None = None,
    options: Sequence[tuple[str, Any]] = (),
    listen_key: str = "[server] listen",
    max_calls_per_peer: int = MAX_CALLS_PER_PEER,
) -> NodeServer:
    """Assemble (not start) an mTLS gRPC server on `listen` ("host:port"; port 0 = ephemeral).

    Adds health checking, reflection listing the given credex services, and the call
    interceptor. Must be called with an event loop running. The port is bound here, without
    SO_REUSEPORT, so a port another server holds is refused instead of shared. Refuses
    (ConfigError naming `listen_key`, where the address came from, and the address) a
    malformed listen address, a port in use and an address that is not this machine's;
    (ValueError) duplicate service names; raises ConfigError for an empty roster. Requests
    over MAX_REQUEST_BYTES, and calls of a node beyond `max_calls_per_peer` in flight, end
    RESOURCE_EXHAUSTED (see SERVER_OPTIONS).
    """
    names = [service.name for service in services]
    if len(set(names)) != len(names):
        raise ValueError(f"a service is registered twice: {sorted(names)}")
    telemetry = telemetry if telemetry is not None else noop_telemetry()
    server = grpc.aio.server(
        interceptors=[_CallInterceptor(tls, telemetry, max_calls_per_peer)],
        # SO_REUSEPORT off: gRPC sets it by default, and then a second node started on the same
        # port binds without complaint and the kernel splits the calls between the two.
        options=list(server_options(options)),
    )
    for service in services:
        service.add(service.servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (*sorted(names), _HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )
    host = _split_listen(listen, listen_key)
    try:
        port = server.add_secure_port(listen, tls.credentials())
    except RuntimeError:
        # grpcio raises a bare RuntimeError ("Failed to bind to address ...") for a port in use
        # and for an address that is not this machine's; older versions returned port 0.
        port = 0
    if port == 0:
        raise ConfigError(
            f"{listen_key} = {listen!r}: cannot listen there: the port is in use (another "
            "credex serve, or another program) or the address is not one of this machine's"
        )
    return NodeServer(
        server, port=port, host=host, tls=tls, health=health, services=names, telemetry=telemetry
    )


async def serve(
    server: NodeServer, *, grace: float = 10.0, stop: asyncio.Event | None = None
) -> None:
    """Start `server` and run until SIGINT/SIGTERM (or `stop` is set), then stop gracefully."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            continue
    await server.start()
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop(grace)
