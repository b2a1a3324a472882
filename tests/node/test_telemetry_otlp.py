"""OTLP export to a real (in-process) OTLP/gRPC collector: spans and metrics arrive, and no
attribute carries an identifier that was passed in."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from node.telemetry import setup_telemetry

ID_NUMBER = "11010519491231002X"


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[str, _Traces, _Metrics]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    traces, metrics = _Traces(), _Metrics()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", traces, metrics
    finally:
        server.stop(None)


def test_spans_and_metrics_reach_an_otlp_collector_without_personal_data(
    collector: tuple[str, _Traces, _Metrics],
) -> None:
    endpoint, traces, metrics = collector
    telemetry = setup_telemetry("otlp", node_id="market", otlp_endpoint=endpoint)
    with telemetry.tracer.start_as_current_span("credex.v1.Query/Query"):
        pass
    # an attribute that is not on the allow-list (and here holds an ID number) is dropped
    telemetry.record_rpc(3.5, {"rpc.method": "Query", "subject": ID_NUMBER})
    telemetry.shutdown()  # flushes both exporters

    assert traces.requests, "no span reached the collector"
    spans = [
        span.name
        for request in traces.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert "credex.v1.Query/Query" in spans
    assert metrics.requests, "no metric reached the collector"
    exported = b"".join(r.SerializeToString() for r in [*traces.requests, *metrics.requests])
    assert ID_NUMBER.encode() not in exported
