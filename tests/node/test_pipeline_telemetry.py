"""Pipeline-stage telemetry: ingest, feed pull, access-log group commits and lifecycle scans
each record one span per batch (never per record) with allow-listed attributes only, and no
subject identifier, name or field value anywhere in spans or metrics.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from typer.testing import CliRunner

import keys
from node import feeds, scheduler, telemetry_sdk
from node import telemetry as telemetry_module
from node.accesslog import AccessLog, LogEntry, MemoryLogBackend, utc_iso
from node.cli import app
from node.cli.init_cmds import init_node
from node.cluster import LocalCluster
from node.config import load_config
from node.demo_data import numbered_uscc
from node.errors import PeerUnavailable
from node.ingest import run_ingest
from node.runtime import NodeRuntime
from node.server import build_server
from node.services import exchange_service
from node.telemetry import (
    ALLOWED_ATTRIBUTES,
    Telemetry,
    active_telemetry,
    setup_telemetry,
    use_telemetry,
)
from tests.node import exchange_support
from tests.node.ingest_support import penalty_mapping

NOW = dt.datetime(2026, 5, 20, 2, 0, tzinfo=dt.UTC)
ITEM = "admin_penalty"
PERSONAL_ID = "11010519491231002X"
NAMES = ("某某商贸有限公司1", "某某商贸有限公司2", "王某某")
USCCS = tuple(numbered_uscc("91370303", 30_000 + i) for i in (1, 2))
DECISIONS = ("罚〔2026〕1号", "罚〔2026〕2号")

MAPPING = penalty_mapping(
    "p.csv",
    decision_no='"no"',
    fine_wan_yuan='{ const = "1.5" }',
    decision_date='{ const = "2026-05-11" }',
)


class Recorded:
    """A telemetry with in-memory span and metric sinks."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        self.telemetry = setup_telemetry(
            "none",
            node_id="market",
            span_processors=[SimpleSpanProcessor(self.spans)],
            metric_readers=[self.metrics],
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]

    def stage_points(self) -> list[tuple[str, dict[str, Any], Any]]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            (metric.name, dict(point.attributes or {}), point)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name.startswith("credex.stage.")
            for point in metric.data.data_points
        ]


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    sink = Recorded()
    yield sink
    sink.telemetry.shutdown()


def assert_clean(sink: Recorded, *secrets: str) -> None:
    """Only allow-listed attributes; no secret in any span or metric point."""
    for span in sink.finished():
        assert set(span.attributes or {}) <= ALLOWED_ATTRIBUTES, span.name
        assert not span.events, span.name  # no recorded exceptions (their text may quote data)
        dumped = span.to_json()
        for secret in secrets:
            assert secret not in dumped, (span.name, secret)
    for _, attributes, _ in sink.stage_points():
        assert set(attributes) <= ALLOWED_ATTRIBUTES
        dumped = json.dumps(attributes, ensure_ascii=False)
        for secret in secrets:
            assert secret not in dumped


def batch_size(span: ReadableSpan) -> int:
    value = (span.attributes or {})["credex.batch_size"]
    assert isinstance(value, int)
    return value


def children_of(sink: Recorded, parent: ReadableSpan) -> list[ReadableSpan]:
    parent_id = parent.context.span_id if parent.context else None
    return [s for s in sink.finished() if s.parent is not None and s.parent.span_id == parent_id]


# -- ingest ---------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    node = tmp_path / "market"
    init_node(node, name="market", role="department", now=NOW)
    with (tmp_path / "p.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "uscc", "no"])
        for i in (1, 2):
            writer.writerow([NAMES[i - 1], USCCS[i - 1], DECISIONS[i - 1]])
    (tmp_path / "p.toml").write_text(MAPPING, encoding="utf-8")
    return node


def test_ingest_records_read_sign_commit_per_batch(
    home: Path, tmp_path: Path, recorded: Recorded
) -> None:
    summary = run_ingest(
        load_config(home),
        tmp_path / "p.toml",
        today=NOW.date(),
        clock=lambda: NOW,
        batch_size=1,
        workers=1,
        telemetry=recorded.telemetry,
    )
    assert (summary.read, summary.accepted, summary.batches) == (2, 2, 2)
    (run,) = recorded.named("credex.ingest")
    assert dict(run.attributes or {}) == {
        "credex.stage": "ingest",
        "credex.item": ITEM,
        "credex.result_count": 2,
        "credex.outcome": "ok",
    }
    stages = [s.name for s in children_of(recorded, run)]
    # one span per batch and step (the last read finds the end of the source), never per row
    assert sorted(stages) == sorted(
        ["credex.ingest.read"] * 3 + ["credex.ingest.sign"] * 2 + ["credex.ingest.commit"] * 2
    )
    commits = recorded.named("credex.ingest.commit")
    assert [(s.attributes or {}).get("credex.batch_size") for s in commits] == [1, 1]
    assert all((s.attributes or {}).get("credex.outcome") == "ok" for s in commits)
    assert_clean(recorded, *NAMES, *USCCS, *DECISIONS)
    durations = {
        a["credex.stage"]
        for name, a, _ in recorded.stage_points()
        if name == "credex.stage.duration"
    }
    assert {"ingest", "ingest.read", "ingest.sign", "ingest.commit"} <= durations
    items = {
        a["credex.stage"]: int(p.value)
        for name, a, p in recorded.stage_points()
        if name == "credex.stage.items"
    }
    assert items["ingest.commit"] == 2
    assert items["ingest.read"] == 2


def test_credex_ingest_sets_up_telemetry_from_the_config(
    home: Path, tmp_path: Path, recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str, str | None]] = []

    def configured(exporter: str, *, node_id: str, otlp_endpoint: str | None = None) -> Telemetry:
        asked.append((exporter, node_id, otlp_endpoint))
        return recorded.telemetry

    monkeypatch.setattr(telemetry_module, "configured_telemetry", configured)
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "p.toml"), "--home", str(home), "--json", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert asked == [("none", "market", None)]  # [telemetry] of the node's credex.toml
    assert len(recorded.named("credex.ingest")) == 1
    assert active_telemetry() is not recorded.telemetry  # restored after the run


# -- feed pull ------------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    nodes = [("market", "department"), ("platform", "platform")]
    agreements = [
        {"provider": "market", "consumer": "platform", "items": [ITEM], "purposes": ["feed"],
         "kind": "feed"},
    ]  # fmt: skip
    c = LocalCluster(tmp_path, nodes, agreements)
    c.init()
    return c


def seed(runtime: NodeRuntime, count: int) -> None:
    exchange_support.seed(
        runtime, count, fields_of=lambda i: {"decision_no": f"{DECISIONS[0]}-{i}", "uscc": USCCS[0]}
    )


def test_a_pull_records_open_verify_store_ack_per_batch(
    cluster: LocalCluster, recorded: Recorded
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 5)

    async def scenario() -> feeds.PullResult:
        server = build_server(
            listen=market.config.server.listen,
            tls=market.server_tls(),
            services=exchange_service.make_services(market),
        )
        await server.start()
        try:
            with use_telemetry(recorded.telemetry):
                return await feeds.pull(platform, "market", max_batch=2)
        finally:
            await server.stop(None)

    try:
        result = asyncio.run(scenario())
    finally:
        market.close()
        platform.close()
    assert (result.batches, result.stored) == (3, 5)
    (pull,) = recorded.named("credex.pull")
    assert dict(pull.attributes or {}) == {
        "credex.stage": "pull",
        "credex.peer": "market",
        "credex.result_count": 5,
        "credex.outcome": "ok",
    }
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in children_of(recorded, pull):
        by_name.setdefault(span.name, []).append(span)
    for stage in ("open", "verify", "store", "ack"):
        spans = by_name[f"credex.pull.{stage}"]
        assert len(spans) == 3, stage  # one per batch
        assert sorted(batch_size(s) for s in spans) == [1, 2, 2]
        assert all((s.attributes or {})["credex.peer"] == "market" for s in spans)
    assert_clean(recorded, USCCS[0], DECISIONS[0])


# -- access log and lifecycle ---------------------------------------------------------------------


def _entry(i: int) -> LogEntry:
    return LogEntry(
        time=utc_iso(NOW + dt.timedelta(milliseconds=i)),
        kind="query",
        requester="zd-tax",
        officer="officer-1",
        purpose="administrative_penalty",
        legal_basis="《行政处罚法》",
        decision="allow",
        reason="statutory_duty",
        request_id=f"req-{i}",
    )


def test_access_log_group_commits_are_root_spans_with_their_group_size(
    recorded: Recorded,
) -> None:
    log = AccessLog(
        MemoryLogBackend(), origin="credex.zd-market/accesslog", signer=keys.Signer(b"\x31" * 32)
    )

    async def scenario() -> None:
        with use_telemetry(recorded.telemetry):
            await asyncio.gather(*(log.append(_entry(i)) for i in range(6)))

    asyncio.run(scenario())
    commits = recorded.named("credex.accesslog.commit")
    assert 1 <= len(commits) <= 6
    assert sum(batch_size(s) for s in commits) == 6
    assert all(s.parent is None for s in commits)  # a group serves many callers
    assert_clean(recorded)


def test_a_lifecycle_scan_is_one_span(cluster: LocalCluster, recorded: Recorded) -> None:
    market = cluster.runtime("market")
    try:
        with use_telemetry(recorded.telemetry):
            report = scheduler.scan(market)
    finally:
        market.close()
    (scan,) = recorded.named("credex.lifecycle.scan")
    attributes = dict(scan.attributes or {})
    assert attributes["credex.outcome"] == "ok"
    assert attributes["credex.result_count"] == report.expired + report.capped + report.purged
    assert_clean(recorded)


# -- stages themselves ----------------------------------------------------------------------------


def test_a_failed_stage_carries_the_error_type_never_its_message(recorded: Recorded) -> None:
    with (
        pytest.raises(ValueError, match="subject"),
        recorded.telemetry.stage(
            "ingest.read", items=3, attributes={"credex.item": ITEM, "subject": PERSONAL_ID}
        ),
    ):
        raise ValueError(f"bad row for subject {PERSONAL_ID}")
    (span,) = recorded.named("credex.ingest.read")
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert dict(span.attributes or {}) == {
        "credex.stage": "ingest.read",
        "credex.item": ITEM,
        "credex.batch_size": 3,
        "credex.outcome": "error",
    }
    assert_clean(recorded, PERSONAL_ID, "bad row")
    outcomes = {
        a.get("credex.outcome")
        for name, a, p in recorded.stage_points()
        if name == "credex.stage.duration" and isinstance(p, HistogramDataPoint)
    }
    assert outcomes == {"error"}


def test_use_telemetry_restores_the_previous_one(recorded: Recorded) -> None:
    before = active_telemetry()
    with use_telemetry(recorded.telemetry):
        assert active_telemetry() is recorded.telemetry
    assert active_telemetry() is before


def test_exporters_of_a_forked_child_export_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    inner = InMemorySpanExporter()
    guarded = telemetry_sdk._ParentOnlySpans(inner)
    parent_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent_pid + 1)  # as if in a forked child
    assert guarded.export(cast(Any, ["span"])) == SpanExportResult.SUCCESS
    guarded.shutdown()
    assert inner.get_finished_spans() == ()
    assert guarded.force_flush() is True


# -- the platform's log lines ---------------------------------------------------------------------


def test_a_follow_loop_warning_names_the_feed_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()

    async def refused(*_: Any, **__: Any) -> feeds.PullResult:
        stop.set()
        raise PeerUnavailable("feed of market: UNAVAILABLE: failed to connect to all addresses")

    monkeypatch.setattr(feeds, "pull", refused)
    follow: Callable[..., Any] = feeds._follow_one
    with caplog.at_level(logging.WARNING, logger="node.feeds"):
        asyncio.run(follow(cast(NodeRuntime, None), "market", stop))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("feed of market: UNAVAILABLE: failed to connect")
    assert line.count("feed of market") == 1
    assert feeds.about_feed("market", ValueError("no prefix")) == "feed of market: no prefix"


def test_an_unexpected_error_keeps_the_feed_followed_and_logs_only_its_type(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    calls: list[int] = []

    async def failing(*_: Any, **__: Any) -> feeds.PullResult:
        calls.append(1)
        if len(calls) == 2:
            stop.set()
        raise ValueError("张三 11010519491231002X: year 10000 is out of range")

    monkeypatch.setattr(feeds, "pull", failing)
    monkeypatch.setattr(feeds, "_BACKOFF_FIRST", 0.01)
    follow: Callable[..., Any] = feeds._follow_one
    with caplog.at_level(logging.WARNING, logger="node.feeds"):
        asyncio.run(follow(cast(NodeRuntime, None), "market", stop))
    assert len(calls) == 2  # tried again: the subscription did not die with the error
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("feed of market: unexpected ValueError")
    assert not any("11010519491231002X" in line or "张三" in line for line in lines)


def test_a_callers_trace_ids_are_followed_but_not_its_free_text(recorded: Recorded) -> None:
    from node.server import _CallInterceptor  # noqa: PLC0415 - the unit under test is private

    interceptor = _CallInterceptor(cast(Any, None), recorded.telemetry)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    metadata = (
        ("traceparent", f"00-{trace_id}-{span_id}-01"),
        ("tracestate", "vendor=张三-11010519491231002X"),
        ("baggage", "subject=11010519491231002X"),
    )
    span, _attributes = interceptor._begin("/credex.v1.Query/Query", metadata)
    span.end()
    [finished] = recorded.finished()
    assert finished.parent is not None
    assert f"{finished.context.trace_id:032x}" == trace_id  # the caller's trace goes on
    assert f"{finished.parent.span_id:016x}" == span_id
    dumped = finished.to_json()
    assert "11010519491231002X" not in dumped
    assert "张三" not in dumped
    assert not finished.context.trace_state
