"""OpenTelemetry traces and metrics for the node, with no personal data anywhere.

`setup_telemetry` builds a tracer and a meter for one node from `[telemetry]` of the node's
configuration: exporter "none" (spans and metrics are created and dropped), "console"
(printed), or "otlp" (OTLP/gRPC to `[telemetry] otlp_endpoint`).
Tests pass their own span processor and metric reader instead.

No personal data: every span and metric attribute goes through `safe_attributes`, which keeps
only the keys in `ALLOWED_ATTRIBUTES` (method names, node ids of departments, item ids,
decisions, reason codes, counts) and drops any value that looks like a personal identifier
(an 18-character resident or credit code). Request bodies, subject ids, names and key material
are never attributes. The allow-list is the contract: adding a key is a reviewed change here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import Counter, Histogram, Meter, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import NoOpTracerProvider, Tracer

from node.errors import ConfigError

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "EXPORTERS",
    "Telemetry",
    "noop_telemetry",
    "safe_attributes",
    "setup_telemetry",
]

EXPORTERS = ("none", "console", "otlp")
INSTRUMENTATION = "credex.node"

ALLOWED_ATTRIBUTES = frozenset(
    {
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "rpc.grpc.status_code",
        "credex.peer",  # node id of a department or the platform, not a person
        "credex.node",
        "credex.item",
        "credex.decision",
        "credex.reason",
        "credex.result_count",
        "credex.batch_size",
        "credex.stage",
        "credex.outcome",
    }
)
# 18-character resident identity numbers and unified social credit codes (and their shapes
# with a lower-case x): never let one through even under an allowed key.
_IDENTIFIER_LIKE = re.compile(r"\d{17}[\dXx]|[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}")

AttributeValue = str | bool | int | float


def safe_attributes(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Keep only allowed keys with scalar values that do not look like personal identifiers."""
    kept: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if key not in ALLOWED_ATTRIBUTES or not isinstance(value, str | bool | int | float):
            continue
        if isinstance(value, str) and _IDENTIFIER_LIKE.search(value):
            continue
        kept[key] = value
    return kept


@dataclass
class Telemetry:
    """The node's tracer and meter and the per-RPC instruments."""

    tracer: Tracer
    meter: Meter
    rpc_calls: Counter
    rpc_duration: Histogram
    _providers: list[Any] = field(default_factory=list)

    @classmethod
    def from_providers(
        cls, tracer_provider: trace.TracerProvider, meter_provider: Any
    ) -> Telemetry:
        """Create the instruments on the given providers."""
        tracer = tracer_provider.get_tracer(INSTRUMENTATION)
        meter = meter_provider.get_meter(INSTRUMENTATION)
        return cls(
            tracer=tracer,
            meter=meter,
            rpc_calls=meter.create_counter(
                "credex.rpc.server.calls", unit="{call}", description="RPCs handled, by status"
            ),
            rpc_duration=meter.create_histogram(
                "credex.rpc.server.duration", unit="ms", description="RPC handling time"
            ),
            _providers=[tracer_provider, meter_provider],
        )

    def record_rpc(self, duration_ms: float, attributes: Mapping[str, Any]) -> None:
        """Count one RPC and its duration under safe attributes."""
        safe = safe_attributes(attributes)
        self.rpc_calls.add(1, safe)
        self.rpc_duration.record(duration_ms, safe)

    def shutdown(self) -> None:
        """Flush and stop the exporters (idempotent)."""
        providers, self._providers = self._providers, []
        for provider in providers:
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                stop()


def noop_telemetry() -> Telemetry:
    """Telemetry that records nothing (tools and tests that do not look at it)."""
    return Telemetry.from_providers(NoOpTracerProvider(), NoOpMeterProvider())


def setup_telemetry(
    exporter: str,
    *,
    node_id: str,
    otlp_endpoint: str | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Build the node's telemetry for `exporter` ("none" | "console" | "otlp").

    `span_processors` and `metric_readers` are added as well (tests pass in-memory ones).
    Refuses (ConfigError naming `telemetry.exporter`) an unknown exporter.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(
            f"telemetry.exporter = {exporter!r}: must be one of {', '.join(EXPORTERS)}"
        )
    resource = Resource.create({"service.name": "credex", "service.instance.id": node_id})
    processors = list(span_processors)
    readers = list(metric_readers)
    if exporter == "console":
        processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    elif exporter == "otlp":
        processor, reader = _otlp(otlp_endpoint)
        processors.append(processor)
        readers.append(reader)
    tracer_provider = TracerProvider(resource=resource)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry.from_providers(tracer_provider, meter_provider)


def _otlp(endpoint: str | None) -> tuple[SpanProcessor, MetricReader]:
    # Imported here: only a node configured for OTLP pays for loading the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return (
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)),
        PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint)),
    )
