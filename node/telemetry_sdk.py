"""The OpenTelemetry SDK half of node/telemetry.py: the providers `setup_telemetry` builds for
`[telemetry] exporter` "console" or "otlp" (or for a test's own processors and readers), and the
fork guard around their exporters.

A module of its own so that only a process that exports loads the SDK: node.telemetry, which
every command imports through the access log, needs nothing but OpenTelemetry's API for the
no-op telemetry that records nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

__all__ = ["sdk_providers"]


def sdk_providers(
    exporter: str,
    *,
    node_id: str,
    otlp_endpoint: str | None,
    span_processors: Sequence[SpanProcessor],
    metric_readers: Sequence[MetricReader],
) -> tuple[TracerProvider, MeterProvider]:
    """The tracer and meter providers for `exporter` ("none" | "console" | "otlp", checked by
    `node.telemetry.setup_telemetry`), with `span_processors` and `metric_readers` added."""
    resource = Resource.create({"service.name": "credex", "service.instance.id": node_id})
    processors = list(span_processors)
    readers = list(metric_readers)
    if exporter == "console":
        # stderr: stdout belongs to the commands' own (possibly --json) output.
        processors.append(BatchSpanProcessor(_ParentOnlySpans(ConsoleSpanExporter(out=sys.stderr))))
        readers.append(
            PeriodicExportingMetricReader(_ParentOnlyMetrics(ConsoleMetricExporter(out=sys.stderr)))
        )
    elif exporter == "otlp":
        processor, reader = _otlp(otlp_endpoint)
        processors.append(processor)
        readers.append(reader)
    tracer_provider = TracerProvider(resource=resource)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return tracer_provider, meter_provider


def _otlp(endpoint: str | None) -> tuple[SpanProcessor, MetricReader]:
    # Imported here: only a node configured for OTLP pays for loading the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return (
        BatchSpanProcessor(_ParentOnlySpans(OTLPSpanExporter(endpoint=endpoint))),
        PeriodicExportingMetricReader(_ParentOnlyMetrics(OTLPMetricExporter(endpoint=endpoint))),
    )


# Fork guard. Ingest forks its sealing workers after telemetry is set up, and OpenTelemetry
# restarts its export threads in a forked child, which would then export copies of the parent's
# pending spans and metrics, through the parent's gRPC channel (not fork-safe). The exporters
# below export only in the process that made them; in a child they drop everything and never
# touch the inherited exporter (freeing or closing it there is what crashes: node/forksafe.py).


class _ParentOnlySpans(SpanExporter):
    """A span exporter that exports only in the process that created it."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._pid = os.getpid()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if os.getpid() != self._pid:
            return SpanExportResult.SUCCESS
        return self._inner.export(spans)

    def shutdown(self) -> None:
        if os.getpid() == self._pid:
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return os.getpid() != self._pid or self._inner.force_flush(timeout_millis)


class _ParentOnlyMetrics(MetricExporter):
    """A metric exporter that exports only in the process that created it."""

    def __init__(self, inner: MetricExporter) -> None:
        # The reader asks its exporter for the temporality and aggregation it prefers.
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._pid = os.getpid()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if os.getpid() != self._pid:
            return MetricExportResult.SUCCESS
        return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return os.getpid() != self._pid or self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if os.getpid() == self._pid:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
