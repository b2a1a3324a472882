"""The assembled node server on 127.0.0.1: reflection, health, Catalog, error mapping,
telemetry without personal data, and graceful shutdown.

The reflection test uses a client built ONLY from the .proto files: they are compiled with
grpc_tools into a temporary directory and used from a separate Python process that never
imports credex, so the contract stands on its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import catalog
import keys
from node._pb.credex.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    exchange_pb2,
    exchange_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from node.errors import (
    InputError,
    LogUnavailable,
    NotFound,
    PolicyDenied,
    StaleBundle,
    TamperDetected,
)
from node.server import NodeServer, Service, build_server, serve
from node.services import catalog_service
from node.telemetry import Telemetry, safe_attributes, setup_telemetry
from node.transport import ChannelIdentity, ServerTls, TlsRoster, client_channel

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# A syntactically valid resident ID (GB 11643 check digit) used as "personal data" that must
# never reach a status message, a span or a metric.
PERSONAL_ID = "11010519491231002X"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture(scope="module")
def node_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("keys")
    return {n: keys.create_key_dir(base / n, node_id=n) for n in ("dept-a", "platform")}


def _roster(node_keys: dict[str, Any]) -> TlsRoster:
    return TlsRoster.of((k.node_id, k.tls_fingerprint, k.tls_cert_pem) for k in node_keys.values())


def _tls(node_keys: dict[str, Any]) -> ServerTls:
    a = node_keys["dept-a"]
    return ServerTls(key_pem=a.tls_key_pem, cert_pem=a.tls_cert_pem, roster=_roster(node_keys))


def _channel(server: NodeServer, node_keys: dict[str, Any]) -> grpc.aio.Channel:
    platform = node_keys["platform"]
    return client_channel(
        server.target,
        peer=server.tls.roster.peer("dept-a"),
        identity=ChannelIdentity(key_pem=platform.tls_key_pem, cert_pem=platform.tls_cert_pem),
    )


# -- a client from the .proto files alone ---------------------------------------------------------

PROTO_CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from google.protobuf import descriptor_pb2
    from credex.v1 import catalog_pb2, catalog_pb2_grpc

    target, server_cert, key, cert = sys.argv[1:5]
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(read(server_cert), read(key), read(cert))
    options = [("grpc.ssl_target_name_override", "dept-a")]
    out = {}
    with grpc.secure_channel(target, creds, options=options) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="credex.v1.Catalog"),
        ]
        answers = list(stub.ServerReflectionInfo(iter(asks), timeout=10))
        out["services"] = sorted(s.name for s in answers[0].list_services_response.service)
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in answers[1].file_descriptor_response.file_descriptor_proto]
        out["catalog_methods"] = sorted(
            m.name for f in files for s in f.service if s.name == "Catalog" for m in s.method)
        health = health_pb2_grpc.HealthStub(channel)
        out["health"] = {
            name: health_pb2.HealthCheckResponse.ServingStatus.Name(
                health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status)
            for name in ("", "credex.v1.Catalog")
        }
        cat = catalog_pb2_grpc.CatalogStub(channel)
        document = cat.GetCatalog(catalog_pb2.GetCatalogRequest(), timeout=10)
        out["catalog"] = [document.version, len(document.items), len(document.code_tables)]
        items = cat.ListItems(catalog_pb2.ListItemsRequest(), timeout=10)
        out["provided"] = [i.id for i in items.items]
    print(json.dumps(out))
    """
)


def _compile_protos(out: Path) -> None:
    protos = sorted((ROOT / "proto" / "credex" / "v1").glob("*.proto"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *(str(p) for p in protos),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_client_built_from_the_proto_files_sees_services_health_and_catalog(
    node_keys: dict[str, Any], tmp_path: Path
) -> None:
    _compile_protos(tmp_path)
    platform, a = node_keys["platform"], node_keys["dept-a"]
    files = {"server.crt": a.tls_cert_pem, "client.key": platform.tls_key_pem}
    files["client.crt"] = platform.tls_cert_pem
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    # -I (isolated mode) drops the script's directory from sys.path: put the generated code back.
    path_fix = "import sys; sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0])\n"
    (tmp_path / "client.py").write_text(path_fix + PROTO_CLIENT)
    cat = catalog.default_catalog()
    provided = sorted(cat.items)[:2]

    async def scenario() -> dict[str, Any]:
        server = build_server(
            listen="127.0.0.1:0", tls=_tls(node_keys), services=[catalog_service(cat, provided)]
        )
        await server.start()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",  # isolated: no credex on the path, no user site
                str(tmp_path / "client.py"),
                server.target,
                *(str(tmp_path / n) for n in ("server.crt", "client.key", "client.crt")),
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await process.communicate()
            assert process.returncode == 0, stderr.decode()
            result: dict[str, Any] = json.loads(stdout)
            return result
        finally:
            await server.stop(None)

    out = run(scenario())
    assert out["services"] == [
        "credex.v1.Catalog",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    assert out["catalog_methods"] == ["GetCatalog", "ListItems"]
    assert out["health"] == {"": "SERVING", "credex.v1.Catalog": "SERVING"}
    assert out["catalog"] == [cat.version, len(cat.items), len(cat.code_tables)]
    assert out["provided"] == provided


def test_the_catalog_service_refuses_an_unknown_provided_item() -> None:
    with pytest.raises(catalog.UnknownItem):
        catalog_service(catalog.default_catalog(), ["no_such_item"])


# -- error mapping ------------------------------------------------------------------------------

ERRORS: dict[str, tuple[BaseException, grpc.StatusCode]] = {
    "input": (InputError("items: unknown item id"), grpc.StatusCode.INVALID_ARGUMENT),
    "denied": (
        PolicyDenied("no_agreement", "no sharing agreement"),
        grpc.StatusCode.PERMISSION_DENIED,
    ),
    "forged": (keys.VerificationError("envelope does not verify"), grpc.StatusCode.UNAUTHENTICATED),
    "bundle": (keys.BundleError("bundle expired"), grpc.StatusCode.FAILED_PRECONDITION),
    "stale": (StaleBundle("bundle v3 expired"), grpc.StatusCode.FAILED_PRECONDITION),
    "unknown-item": (catalog.UnknownItem("unknown item 'x'"), grpc.StatusCode.NOT_FOUND),
    "not-found": (NotFound("no such record"), grpc.StatusCode.NOT_FOUND),
    "log-down": (LogUnavailable("access log cannot be written"), grpc.StatusCode.UNAVAILABLE),
    "tamper": (TamperDetected("log entry 7 does not verify"), grpc.StatusCode.DATA_LOSS),
    # A foreign exception whose message quotes personal data: must not leak.
    "bug": (RuntimeError(f"constraint failed for subject {PERSONAL_ID}"), grpc.StatusCode.INTERNAL),
}


class Failing(query_pb2_grpc.QueryServicer, exchange_pb2_grpc.ExchangeServicer):
    """Raises the error named by the request (envelope bytes = key of ERRORS)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.streaming = asyncio.Event()

    async def Query(
        self, request: common_pb2.SignedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> query_pb2.QueryAnswer:
        name = request.envelope.decode()
        if name == "ok":
            return query_pb2.QueryAnswer(decision="allow")
        raise ERRORS[name][0]

    async def Subscribe(
        self, request: exchange_pb2.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[exchange_pb2.SealedBatch]:
        name = request.signed.envelope.decode()
        yield exchange_pb2.SealedBatch(first_seq=1, last_seq=1)
        if name == "wait":
            self.streaming.set()
            await self.release.wait()
            yield exchange_pb2.SealedBatch(first_seq=2, last_seq=2)
            return
        raise ERRORS[name][0]

    async def Ack(
        self, request: common_pb2.SignedReceipt, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.AckResponse:
        raise InputError("not used here")

    async def Push(
        self, request: exchange_pb2.PushRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.SignedReceipt:
        raise InputError("not used here")


def _services(servicer: Failing) -> list[Service]:
    return [
        Service("credex.v1.Query", servicer, query_pb2_grpc.add_QueryServicer_to_server),
        Service("credex.v1.Exchange", servicer, exchange_pb2_grpc.add_ExchangeServicer_to_server),
    ]


async def _unary(stub: Any, name: str) -> tuple[grpc.StatusCode, str]:
    try:
        await stub.Query(common_pb2.SignedRequest(envelope=name.encode()), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def _stream(stub: Any, name: str) -> tuple[int, grpc.StatusCode, str]:
    got = 0
    request = exchange_pb2.SubscribeRequest(signed=common_pb2.SignedRequest(envelope=name.encode()))
    try:
        async for _ in stub.Subscribe(request, timeout=10):
            got += 1
    except grpc.aio.AioRpcError as error:
        return got, error.code(), error.details() or ""
    return got, grpc.StatusCode.OK, ""


def _telemetry() -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    spans = InMemorySpanExporter()
    metrics = InMemoryMetricReader()
    telemetry = setup_telemetry(
        "none",
        node_id="dept-a",
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[metrics],
    )
    return telemetry, spans, metrics


def test_errors_become_the_right_status_with_a_safe_message(node_keys: dict[str, Any]) -> None:
    telemetry, spans, metrics = _telemetry()

    async def scenario() -> dict[str, Any]:
        servicer = Failing()
        server = build_server(
            listen="127.0.0.1:0",
            tls=_tls(node_keys),
            services=_services(servicer),
            telemetry=telemetry,
        )
        await server.start()
        results: dict[str, Any] = {}
        try:
            async with _channel(server, node_keys) as channel:
                query = query_pb2_grpc.QueryStub(channel)
                exchange = exchange_pb2_grpc.ExchangeStub(channel)
                results["ok"] = await _unary(query, "ok")
                for name in ERRORS:
                    results[name] = await _unary(query, name)
                    results[f"stream {name}"] = await _stream(exchange, name)
        finally:
            await server.stop(None)
        return results

    results = run(scenario())
    assert results["ok"] == (grpc.StatusCode.OK, "")
    for name, (error, code) in ERRORS.items():
        unary_code, unary_details = results[name]
        streamed, stream_code, stream_details = results[f"stream {name}"]
        assert (unary_code, stream_code) == (code, code), name
        assert streamed == 1, name  # the message sent before the error arrived
        for details in (unary_details, stream_details):
            assert PERSONAL_ID not in details
            if code != grpc.StatusCode.INTERNAL:
                assert details == str(error)
            else:
                assert "internal error" in details
                assert "trace" in details
    assert results["denied"][1].startswith("no_agreement:")

    # Telemetry: one span per call with method and status, and no personal data anywhere.
    finished = spans.get_finished_spans()
    assert len(finished) == 1 + 2 * len(ERRORS)
    for span in finished:
        attributes = dict(span.attributes or {})
        assert attributes["rpc.system"] == "grpc"
        assert attributes["credex.peer"] == "platform"
        assert set(attributes) <= {
            "rpc.system",
            "rpc.service",
            "rpc.method",
            "rpc.grpc.status_code",
            "credex.peer",
        }
        dumped = span.to_json()
        assert PERSONAL_ID not in dumped
    by_status = {
        (s.attributes or {}).get("rpc.grpc.status_code")
        for s in finished
        if s.name.endswith("Query")
    }
    assert grpc.StatusCode.INTERNAL.value[0] in by_status
    assert grpc.StatusCode.OK.value[0] in by_status

    data = metrics.get_metrics_data()
    assert data is not None
    points: dict[str, int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    assert PERSONAL_ID not in json.dumps(dict(point.attributes or {}))
                    if metric.name == "credex.rpc.server.calls":
                        assert isinstance(point, NumberDataPoint)
                        labels = dict(point.attributes or {})
                        key = f"{labels['rpc.method']}/{labels['rpc.grpc.status_code']}"
                        points[key] = points.get(key, 0) + int(point.value)
    assert points["Query/0"] == 1
    assert points[f"Subscribe/{grpc.StatusCode.INTERNAL.value[0]}"] == 1
    assert sum(points.values()) == len(finished)


def test_safe_attributes_drop_unknown_keys_and_identifiers() -> None:
    attributes = safe_attributes(
        {
            "rpc.method": "Query",
            "credex.item": PERSONAL_ID,
            "credex.reason": "uscc 91370303MA3C9XXX1K",
            "subject_id": "x",
            "credex.result_count": 3,
            "credex.stage": ["not", "scalar"],
        }
    )
    assert attributes == {"rpc.method": "Query", "credex.result_count": 3}


# -- health and graceful shutdown ---------------------------------------------------------------


def test_shutdown_lets_an_inflight_stream_finish(node_keys: dict[str, Any]) -> None:
    async def scenario() -> dict[str, Any]:
        servicer = Failing()
        server = build_server(
            listen="127.0.0.1:0", tls=_tls(node_keys), services=_services(servicer)
        )
        await server.start()
        seen: dict[str, Any] = {}
        async with _channel(server, node_keys) as channel:
            # A watcher (a load balancer, `credex status`) sees the node leave.
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            updates = aiter(watch)
            seen["health before"] = (await anext(updates)).status
            stream = asyncio.create_task(_stream(exchange_pb2_grpc.ExchangeStub(channel), "wait"))
            await servicer.streaming.wait()  # the stream has delivered its first batch
            stopping = asyncio.create_task(server.stop(grace=30))
            await server.stopping.wait()
            seen["health during"] = (await anext(updates)).status
            watch.cancel()
            servicer.release.set()
            seen["stream"] = await stream
            await stopping
        async with _channel(server, node_keys) as channel:
            seen["after"] = await _unary(query_pb2_grpc.QueryStub(channel), "ok")
        return seen

    seen = run(scenario())
    assert seen["health before"] == health_pb2.HealthCheckResponse.SERVING
    assert seen["health during"] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen["stream"] == (2, grpc.StatusCode.OK, "")
    assert seen["after"][0] == grpc.StatusCode.UNAVAILABLE


def test_serve_runs_until_asked_to_stop(node_keys: dict[str, Any]) -> None:
    async def scenario() -> tuple[str, int]:
        servicer = Failing()
        server = build_server(
            listen="127.0.0.1:0", tls=_tls(node_keys), services=_services(servicer)
        )
        stop = asyncio.Event()
        running = asyncio.create_task(serve(server, grace=5, stop=stop))
        async with _channel(server, node_keys) as channel:
            # wait_for_ready: the call waits for the server to come up instead of failing.
            answer = await query_pb2_grpc.QueryStub(channel).Query(
                common_pb2.SignedRequest(envelope=b"ok"), timeout=10, wait_for_ready=True
            )
        stop.set()
        await running
        return answer.decision, int(server.stopping.is_set())

    assert run(scenario()) == ("allow", 1)


def test_a_service_registered_twice_is_refused(node_keys: dict[str, Any]) -> None:
    async def scenario() -> None:
        servicer = Failing()
        build_server(listen="127.0.0.1:0", tls=_tls(node_keys), services=_services(servicer) * 2)

    with pytest.raises(ValueError, match="twice"):
        run(scenario())


def test_a_catalog_document_is_served_as_messages(node_keys: dict[str, Any]) -> None:
    cat = catalog.default_catalog()

    async def scenario() -> catalog_pb2.CatalogDocument:
        server = build_server(
            listen="127.0.0.1:0", tls=_tls(node_keys), services=[catalog_service(cat, [])]
        )
        await server.start()
        try:
            async with _channel(server, node_keys) as channel:
                stub = catalog_pb2_grpc.CatalogStub(channel)
                empty = await stub.ListItems(catalog_pb2.ListItemsRequest(), timeout=10)
                assert list(empty.items) == []
                document: catalog_pb2.CatalogDocument = await stub.GetCatalog(
                    catalog_pb2.GetCatalogRequest(), timeout=10
                )
                return document
        finally:
            await server.stop(None)

    document = run(scenario())
    assert {i.id for i in document.items} == set(cat.items)
