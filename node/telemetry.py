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

Pipeline stages (`Telemetry.stage`, `Telemetry.start_stage`): one span `credex.<stage>` per
run of a stage over a whole batch (ingest read/sign/commit, feed pull open/verify/store/ack,
access-log group commits, lifecycle scans), with `credex.stage`, `credex.outcome` ("ok",
"error", "cancelled") and counts, and the metrics `credex.stage.duration` (ms) and
`credex.stage.items`. Never per record: the per-record paths create no span, so throughput
does not depend on telemetry. A failed stage's span status carries the exception's type name,
never its message (a message may quote data), and exceptions are not recorded on spans.

Which telemetry a stage records into: the caller's when it has one (the server, ingest), else
the process's active telemetry (`active_telemetry`), which `credex serve` and `credex ingest`
install with `use_telemetry` for as long as they run; elsewhere it records nothing. One
process-wide seam, like OpenTelemetry's own global providers, so that deep code (group
commits, lifecycle scans) needs no telemetry parameter.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Counter, Histogram, Meter, NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, Tracer

from node.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

    from node.config import NodeConfig

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "EXPORTERS",
    "Stage",
    "Telemetry",
    "active_telemetry",
    "configured_telemetry",
    "noop_telemetry",
    "safe_attributes",
    "setup_telemetry",
    "telemetry_for",
    "telemetry_of",
    "use_telemetry",
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


# Attributes a stage's metrics keep (bounded values only: stage names, outcomes, roster node
# ids, catalogue item ids); spans keep every safe attribute.
_STAGE_METRIC_KEYS = ("credex.stage", "credex.outcome", "credex.peer", "credex.item")


class Stage:
    """One run of a pipeline stage: its span, plus the duration and item metrics at `end`.

    Made by `Telemetry.start_stage` (or the `Telemetry.stage` context manager). `items` counts
    what the stage handled (records, entries); `end` may be called from another thread than
    the one that started the stage, and only once takes effect.
    """

    __slots__ = ("_attributes", "_ended", "_started", "_telemetry", "items", "span")

    def __init__(
        self, telemetry: Telemetry, span: trace.Span, attributes: dict[str, AttributeValue]
    ) -> None:
        """Wrap a started span (use `Telemetry.start_stage`)."""
        self._telemetry = telemetry
        self._attributes = attributes
        self._started = time.perf_counter()
        self._ended = False
        self.span = span
        self.items = int(attributes.get("credex.batch_size", 0))

    def context(self) -> otel_context.Context:
        """A context whose current span is this stage's (the parent for work in other threads)."""
        return trace.set_span_in_context(self.span)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes to the span (through `safe_attributes`, like every attribute)."""
        safe = safe_attributes(attributes)
        self._attributes.update(safe)
        self.span.set_attributes(safe)

    def end(self, error: BaseException | None = None, *, cancelled: bool = False) -> None:
        """End the span and record the metrics; `error` (if any) makes the outcome "error"
        ("cancelled" for a cancellation), with only the exception's type name on the span;
        `cancelled` marks work abandoned before it ran."""
        if self._ended:
            return
        self._ended = True
        if cancelled or isinstance(
            error, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt
        ):
            outcome = "cancelled"
        elif error is None:
            outcome = "ok"
        else:
            outcome = "error"
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        self._attributes["credex.outcome"] = outcome
        self.span.set_attribute("credex.outcome", outcome)
        self.span.end()
        labels = {k: self._attributes[k] for k in _STAGE_METRIC_KEYS if k in self._attributes}
        elapsed_ms = (time.perf_counter() - self._started) * 1000.0
        self._telemetry.stage_duration.record(elapsed_ms, labels)
        if self.items:
            self._telemetry.stage_items.add(self.items, labels)


@dataclass
class Telemetry:
    """The node's tracer and meter, the per-RPC instruments and the pipeline-stage ones."""

    tracer: Tracer
    meter: Meter
    rpc_calls: Counter
    rpc_duration: Histogram
    stage_duration: Histogram
    stage_items: Counter
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
            stage_duration=meter.create_histogram(
                "credex.stage.duration",
                unit="ms",
                description="Time of one run of a pipeline stage (one batch), by outcome",
            ),
            stage_items=meter.create_counter(
                "credex.stage.items",
                unit="{item}",
                description="Records or entries handled by pipeline stages",
            ),
            _providers=[tracer_provider, meter_provider],
        )

    def start_stage(
        self,
        name: str,
        *,
        items: int | None = None,
        attributes: Mapping[str, Any] | None = None,
        parent: otel_context.Context | None = None,
        root: bool = False,
    ) -> Stage:
        """Start a stage span `credex.<name>` (a child of `parent`, else of the current span,
        or a new trace with `root`); the caller must `end` it. `items` is the batch size."""
        wanted: dict[str, Any] = {**(attributes or {}), "credex.stage": name}
        if items is not None:
            wanted["credex.batch_size"] = items
        safe = safe_attributes(wanted)
        context = otel_context.Context() if root else parent
        span = self.tracer.start_span(f"credex.{name}", context=context, attributes=safe)
        return Stage(self, span, safe)

    @contextmanager
    def stage(
        self,
        name: str,
        *,
        items: int | None = None,
        attributes: Mapping[str, Any] | None = None,
        parent: otel_context.Context | None = None,
        root: bool = False,
    ) -> Iterator[Stage]:
        """Run the body as stage `name` (see `start_stage`), its span current meanwhile; an
        exception ends it with outcome "error" (type name only) and propagates."""
        stage = self.start_stage(name, items=items, attributes=attributes, parent=parent, root=root)
        try:
            # record_exception=False: an exception's text may quote data (see Stage.end).
            with trace.use_span(
                stage.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                yield stage
        except BaseException as error:
            stage.end(error)
            raise
        stage.end()

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


_NOOP = noop_telemetry()
_active: Telemetry = _NOOP


def active_telemetry() -> Telemetry:
    """The process's telemetry while `credex serve` or `credex ingest` runs, else a no-op one."""
    return _active


@contextmanager
def use_telemetry(telemetry: Telemetry) -> Iterator[Telemetry]:
    """Make `telemetry` the process's active telemetry for the body, then restore the previous
    one (it does not shut `telemetry` down: its owner does)."""
    global _active  # noqa: PLW0603 - the one process-wide seam (module docstring)
    previous, _active = _active, telemetry
    try:
        yield telemetry
    finally:
        _active = previous


def configured_telemetry(
    exporter: str, *, node_id: str, otlp_endpoint: str | None = None
) -> Telemetry:
    """The telemetry `[telemetry]` of a node's config asks for: exporter "none" records
    nothing at all (no SDK providers), "console" and "otlp" export (see `setup_telemetry`)."""
    if exporter == "none":
        return noop_telemetry()
    return setup_telemetry(exporter, node_id=node_id, otlp_endpoint=otlp_endpoint)


def telemetry_for(config: NodeConfig) -> Telemetry:
    """The telemetry the node's `[telemetry]` asks for, tagged with its node id (its owner
    shuts it down)."""
    return configured_telemetry(
        config.telemetry.exporter,
        node_id=config.node.id,
        otlp_endpoint=config.telemetry.otlp_endpoint,
    )


@contextmanager
def telemetry_of(config: NodeConfig) -> Iterator[Telemetry]:
    """For a one-shot command (`credex subscribe`, `credex lifecycle scan`): the telemetry the
    node's `[telemetry]` asks for, active for the body, then flushed and stopped, as `credex
    serve` and `credex ingest` do for theirs."""
    telemetry = telemetry_for(config)
    try:
        with use_telemetry(telemetry):
            yield telemetry
    finally:
        telemetry.shutdown()


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
    # Imported here: every process imports this module (the access log's group commits record
    # into the active telemetry), most only ever record into the no-op one (node/telemetry_sdk.py).
    from node.telemetry_sdk import sdk_providers  # noqa: PLC0415

    tracer_provider, meter_provider = sdk_providers(
        exporter,
        node_id=node_id,
        otlp_endpoint=otlp_endpoint,
        span_processors=span_processors,
        metric_readers=metric_readers,
    )
    return Telemetry.from_providers(tracer_provider, meter_provider)
