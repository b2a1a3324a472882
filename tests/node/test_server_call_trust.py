"""The call interceptor of a real node, in process over mutual TLS: trust is judged at every
call by the bundle in use and the node's clock, a request that does not decode is
INVALID_ARGUMENT, and every refusal the interceptor makes (or that a handler leaves unlogged)
is one denied access-log entry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from node import feeds
from node._pb.credex.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    exchange_pb2,
    exchange_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    transparency_pb2,
    transparency_pb2_grpc,
)
from node.accesslog import LogEntry, iter_entries, verify_log
from node.cluster import LocalCluster
from node.query import QUERY_METHOD
from node.refusals import UNIDENTIFIED, request_digest
from node.runtime import NodeRuntime
from node.server import NodeServer, build_server
from node.serving import collect
from node.telemetry import Telemetry, setup_telemetry

FEED = {"items": ["admin_penalty"], "purposes": ["feed"], "kind": "feed"}
Code = grpc.StatusCode


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    c = LocalCluster(tmp_path, nodes, [{"provider": "market", "consumer": "platform", **FEED}])
    c.init()
    return c


@pytest.fixture
def runtimes(cluster: LocalCluster) -> Iterator[dict[str, NodeRuntime]]:
    made = {name: cluster.runtime(name) for name in ("market", "hrss", "platform")}
    yield made
    for runtime in made.values():
        runtime.close()


@asynccontextmanager
async def serving(
    runtime: NodeRuntime, telemetry: Telemetry | None = None
) -> AsyncIterator[NodeServer]:
    """Every service of `runtime` on its configured address, as `credex serve` runs them."""
    services, _tasks = collect(runtime)
    server = build_server(
        listen=runtime.config.server.listen,
        tls=runtime.server_tls(),
        services=services,
        telemetry=telemetry,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(None)


def entries(runtime: NodeRuntime) -> list[LogEntry]:
    return [entry for _index, _leaf, entry in iter_entries(runtime.log.backend)]


def denied(runtime: NodeRuntime) -> list[tuple[str, str, str]]:
    """(kind, requester, reason) of every denied entry in `runtime`'s log."""
    return [(e.kind, e.requester, e.reason) for e in entries(runtime) if e.decision == "deny"]


async def outcome(call: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str]:
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return Code.OK, ""


async def drain(stream: Any) -> None:
    async for _ in stream:
        pass


def _query(client: NodeRuntime, channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    signed = client.sign_request(QUERY_METHOD, query_pb2.QueryBody().SerializeToString())
    return lambda: query_pb2_grpc.QueryStub(channel).Query(signed, timeout=10)


def _subscribe(client: NodeRuntime, channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    body = exchange_pb2.SubscribeBody().SerializeToString()
    request = exchange_pb2.SubscribeRequest(
        signed=client.sign_request(feeds.SUBSCRIBE_METHOD, body)
    )
    return lambda: drain(exchange_pb2_grpc.ExchangeStub(channel).Subscribe(request, timeout=10))


def _reads(channel: grpc.aio.Channel) -> dict[str, Callable[[], Awaitable[Any]]]:
    catalog = catalog_pb2_grpc.CatalogStub(channel)
    transparency = transparency_pb2_grpc.TransparencyStub(channel)
    return {
        "GetCatalog": lambda: catalog.GetCatalog(catalog_pb2.GetCatalogRequest(), timeout=10),
        "ListItems": lambda: catalog.ListItems(catalog_pb2.ListItemsRequest(), timeout=10),
        "GetCheckpoint": lambda: transparency.GetCheckpoint(
            transparency_pb2.GetCheckpointRequest(), timeout=10
        ),
    }


# -- fix 1: the bundle in use and the clock of the call ------------------------------------------


def test_an_expired_bundle_refuses_every_call(
    cluster: LocalCluster, runtimes: dict[str, NodeRuntime]
) -> None:
    market, hrss = runtimes["market"], runtimes["hrss"]
    real = market.clock

    async def scenario() -> dict[str, tuple[grpc.StatusCode, str]]:
        async with serving(market):
            async with hrss.channel("market") as channel:
                before = await outcome(_reads(channel)["GetCatalog"])
                # The node runs on past its bundle's expiry (bundles last 30 days here).
                market.clock = lambda: real() + dt.timedelta(days=cluster.bundle_days + 1)
                results = {name: await outcome(call) for name, call in _reads(channel).items()}
                results["Query"] = await outcome(_query(hrss, channel))
            results["before"] = before
            return results

    results = asyncio.run(scenario())
    assert results.pop("before") == (Code.OK, "")
    for name, (code, details) in results.items():
        assert code == Code.FAILED_PRECONDITION, name
        assert details.startswith("this node trusts no peer until its operator installs"), name
        assert "expired" in details, name
    # The refused query is a denied access, named after the certificate's owner.
    assert denied(market) == [("query", "hrss", "stale_bundle")]


def test_a_member_past_its_validity_is_refused(
    cluster: LocalCluster, runtimes: dict[str, NodeRuntime]
) -> None:
    spec = cluster.spec()
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    for node in spec["node"]:
        if node["node_id"] == "hrss":
            node["valid_until"] = until.isoformat().replace("+00:00", "Z")
    cluster.reissue_bundle(node=spec["node"])
    market, hrss, platform = runtimes["market"], runtimes["hrss"], runtimes["platform"]
    real = market.clock

    async def scenario() -> dict[str, tuple[grpc.StatusCode, str]]:
        async with serving(market):
            market.clock = lambda: real() + dt.timedelta(days=3)  # bundle still in force
            results: dict[str, tuple[grpc.StatusCode, str]] = {}
            async with hrss.channel("market") as channel:
                for name, call in _reads(channel).items():
                    results[name] = await outcome(call)
                results["Query"] = await outcome(_query(hrss, channel))
            async with platform.channel("market") as channel:
                results["platform"] = await outcome(_reads(channel)["GetCatalog"])
            return results

    results = asyncio.run(scenario())
    assert results.pop("platform") == (Code.OK, "")
    for name, (code, details) in results.items():
        assert code == Code.UNAUTHENTICATED, name
        assert details.startswith("node hrss: its roster membership in trust bundle v2"), name
    assert denied(market) == [("query", "hrss", "requester_not_valid")]


def test_a_member_whose_window_opens_later_is_let_in_when_it_opens(
    cluster: LocalCluster, runtimes: dict[str, NodeRuntime]
) -> None:
    """The TLS roster left out a member not valid yet when it was built, and nothing added it
    when its window opened: it could not connect until the bundle changed or the node
    restarted. It is kept now, and each call is judged by the clock of that call."""
    spec = cluster.spec()
    opens = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    for node in spec["node"]:
        if node["node_id"] == "hrss":
            node["valid_from"] = opens.isoformat().replace("+00:00", "Z")
    cluster.reissue_bundle(node=spec["node"])
    market, hrss = runtimes["market"], runtimes["hrss"]
    real = market.clock

    async def scenario() -> tuple[tuple[grpc.StatusCode, str], tuple[grpc.StatusCode, str]]:
        async with serving(market):  # the roster is built now, before hrss's window opens
            async with hrss.channel("market") as channel:
                before = await outcome(_reads(channel)["GetCatalog"])
            market.clock = lambda: real() + dt.timedelta(days=2)  # bundle still in force
            async with hrss.channel("market") as channel:
                after = await outcome(_reads(channel)["GetCatalog"])
            return before, after

    before, after = asyncio.run(scenario())
    assert before[0] == Code.UNAUTHENTICATED
    assert "roster membership" in before[1]
    assert after == (Code.OK, "")


# -- fix 2: requests that do not decode ----------------------------------------------------------

GARBAGE = {
    "garbage": b"\xff\xff\xff\xff\x0f",
    "truncated": b"\x0a\x10abc",
    "deep groups": b"\x7b" * 5000 + b"\x7c" * 5000,
}
# method -> (request type, the kind its refusals are logged under; None: not an access)
METHODS: dict[str, tuple[str, str | None]] = {
    "/credex.v1.Query/Query": ("SignedRequest", "query"),
    "/credex.v1.Exchange/Subscribe": ("SubscribeRequest", "feed_delivery"),
    "/credex.v1.Exchange/Push": ("PushRequest", "push"),
    "/credex.v1.Exchange/Ack": ("SignedReceipt", "feed_ack"),
    "/credex.v1.Lifecycle/Repair": ("SignedRequest", "lifecycle_repair"),
    "/credex.v1.Transparency/Cosign": ("CosignRequest", "cosign"),
    "/credex.v1.Catalog/GetCatalog": ("GetCatalogRequest", None),
    "/credex.v1.Transparency/GetInclusionProof": ("GetInclusionProofRequest", None),
}


def _raw(channel: grpc.aio.Channel, method: str, data: bytes) -> Callable[[], Awaitable[Any]]:
    """A call of `method` that sends `data` as the request, unencoded."""
    if method.endswith("/Subscribe"):
        stream = channel.unary_stream(method)
        return lambda: drain(stream(data, timeout=10))
    unary = channel.unary_unary(method)
    return lambda: unary(data, timeout=10)


def _telemetry() -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = setup_telemetry(
        "none",
        node_id="market",
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[metrics],
    )
    return telemetry, spans, metrics


def test_a_request_that_does_not_decode_is_invalid_argument_and_logged(
    runtimes: dict[str, NodeRuntime], caplog: pytest.LogCaptureFixture
) -> None:
    market, platform = runtimes["market"], runtimes["platform"]
    telemetry, spans, metrics = _telemetry()
    caplog.set_level(logging.INFO)

    async def scenario() -> dict[tuple[str, str], tuple[grpc.StatusCode, str]]:
        results = {}
        async with serving(market, telemetry), platform.channel("market") as channel:
            for method in METHODS:
                for name, data in GARBAGE.items():
                    results[method, name] = await outcome(_raw(channel, method, data))
        return results

    results = asyncio.run(scenario())
    for (method, name), (code, details) in results.items():
        message_type = METHODS[method][0]
        assert code == Code.INVALID_ARGUMENT, (method, name)
        assert details.startswith(f"malformed request: not a valid credex.v1.{message_type} "), (
            method,
            name,
        )
    # Once per refused call of a logged method, under its kind, named after the TLS peer; the
    # request id is a digest of the bytes sent (they have no envelope to read).
    expected = [
        (kind, "platform", "malformed_request")
        for kind in (kind for _type, kind in METHODS.values())
        if kind is not None
        for _ in GARBAGE
    ]
    assert denied(market) == expected
    assert entries(market)[0].request_id == request_digest(GARBAGE["garbage"])
    assert verify_log(market.log.backend, {}).ok
    # No exception inside gRPC: no error and stack trace per call from its logger.
    assert not [
        r for r in caplog.records if r.name.startswith("grpc") and r.levelno >= logging.WARNING
    ]
    # Each call has its span and its count, with the status it ended with.
    invalid = Code.INVALID_ARGUMENT.value[0]
    finished = spans.get_finished_spans()
    assert len(finished) == len(results)
    assert {(s.attributes or {}).get("rpc.grpc.status_code") for s in finished} == {invalid}
    data = metrics.get_metrics_data()
    assert data is not None
    counted = sum(
        int(point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "credex.rpc.server.calls"
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
        and (point.attributes or {}).get("rpc.grpc.status_code") == invalid
    )
    assert counted == len(results)


# -- fix 3: refusals before the handler, and handlers that do not log their own -----------------


def test_a_node_removed_from_the_roster_is_refused_and_logged_on_its_old_connection(
    cluster: LocalCluster, runtimes: dict[str, NodeRuntime]
) -> None:
    market, hrss = runtimes["market"], runtimes["hrss"]

    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with serving(market), hrss.channel("market") as channel:
            assert await outcome(_reads(channel)["GetCatalog"]) == (Code.OK, "")
            spec = cluster.spec()
            cluster.reissue_bundle(node=[n for n in spec["node"] if n["node_id"] != "hrss"])
            market.reload_bundle()
            return [
                await outcome(_query(hrss, channel)),
                await outcome(_subscribe(hrss, channel)),
                await outcome(_reads(channel)["GetCatalog"]),
            ]

    results = asyncio.run(scenario())
    assert [code for code, _ in results] == [Code.UNAUTHENTICATED] * 3
    assert all("not pinned in the current roster" in details for _, details in results)
    # Query and Subscribe are accesses, each logged once; the catalogue read is not.
    assert denied(market) == [
        ("query", UNIDENTIFIED, "tls_unpinned"),
        ("feed_delivery", UNIDENTIFIED, "tls_unpinned"),
    ]


def test_a_refused_ack_is_logged_once(runtimes: dict[str, NodeRuntime]) -> None:
    market, platform = runtimes["market"], runtimes["platform"]

    async def scenario() -> tuple[grpc.StatusCode, str]:
        async with serving(market), platform.channel("market") as channel:
            stub = exchange_pb2_grpc.ExchangeStub(channel)
            forged = common_pb2.SignedReceipt(envelope=b"not a receipt")
            return await outcome(lambda: stub.Ack(forged, timeout=10))

    code, _details = asyncio.run(scenario())
    assert code == Code.UNAUTHENTICATED
    ((kind, requester, _reason),) = denied(market)
    assert (kind, requester) == ("feed_ack", "platform")
    assert entries(market)[0].request_id == request_digest(b"not a receipt")


def test_handler_refusals_are_still_logged_once(runtimes: dict[str, NodeRuntime]) -> None:
    # A refusal the handler logs itself (here: the request check) is not logged again.
    market, hrss = runtimes["market"], runtimes["hrss"]

    async def scenario() -> tuple[grpc.StatusCode, str]:
        async with serving(market), hrss.channel("market") as channel:
            return await outcome(_subscribe(hrss, channel))

    code, details = asyncio.run(scenario())
    assert code == Code.PERMISSION_DENIED, details
    assert denied(market) == [("feed_delivery", "hrss", "no_agreement")]
