"""The receiving side's lag: each batch reports the provider's head, the subscriber stores it
with the time of the batch, and `credex status` shows lag and last-batch age; the platform's
status lists roster departments it does not follow ("no feed agreement").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

from node import feeds
from node._pb.credex.v1 import exchange_pb2, exchange_pb2_grpc
from node.cli import app
from node.cli.feed_cmds import node_status
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.store import open_store
from node.store.engine import MIGRATIONS_DIR, make_engine
from tests.node.exchange_support import seed, serving
from tests.node.store_support import TEST_TAGGER

runner = CliRunner()
ITEM = "admin_penalty"


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    agreements = [
        {"provider": "market", "consumer": "platform", "items": [ITEM], "purposes": ["feed"],
         "kind": "feed"},
        {"provider": "market", "consumer": "hrss", "items": [ITEM], "purposes": ["push"],
         "kind": "push"},
    ]  # fmt: skip
    c = LocalCluster(tmp_path, nodes, agreements)
    c.init()
    return c


async def _batches(client: NodeRuntime, *, max_batch: int) -> list[exchange_pb2.SealedBatch]:
    channel = client.channel("market")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        body = exchange_pb2.SubscribeBody(max_batch=max_batch, compact_records=True)
        signed = client.sign_request(feeds.SUBSCRIBE_METHOD, body.SerializeToString())
        call = stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed), timeout=10)
        return [b async for b in call]
    finally:
        await channel.close()


def _upstream(runtime: NodeRuntime) -> dict[str, dict[str, object]]:
    return {str(u["provider"]): u for u in node_status(runtime)["upstream"]}


def test_status_shows_the_lag_behind_the_providers_head(cluster: LocalCluster) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 5)

    async def first_batch_then_the_rest() -> tuple[list[exchange_pb2.SealedBatch], int]:
        async with serving(market):
            batches = await _batches(platform, max_batch=2)
            feeds.apply_batch(platform, "market", batches[0], cursor=0)
            behind = _upstream(platform)
            assert (behind["market"]["cursor"], behind["market"]["head"]) == (2, 5)
            assert behind["market"]["lag"] == 3
            done = await feeds.pull(platform, "market")
            return batches, done.cursor

    try:
        before = _upstream(platform)["market"]
        assert (before["cursor"], before["head"], before["lag"]) == (0, None, None)
        assert before["last_batch_at"] is None
        batches, cursor = asyncio.run(first_batch_then_the_rest())
        # every batch reports the head; only the last one is caught up
        assert [(b.first_seq, b.last_seq, b.head_seq) for b in batches] == [
            (1, 2, 5),
            (3, 4, 5),
            (5, 5, 5),
        ]
        assert [b.caught_up for b in batches] == [False, False, True]
        assert cursor == 5
        status = node_status(platform)
        after = {u["provider"]: u for u in status["upstream"]}
        market_feed = after["market"]
        assert (market_feed["cursor"], market_feed["head"], market_feed["lag"]) == (5, 5, 0)
        assert market_feed["agreement"] is True
        last = dt.datetime.fromisoformat(str(market_feed["last_batch_at"]))
        assert abs((platform.clock() - last).total_seconds()) < 60
        assert isinstance(market_feed["last_batch_age_s"], int)
        # hrss is a department of the roster that the platform does not follow: visible
        assert after["hrss"]["agreement"] is False
        assert after["hrss"]["note"] == "no feed agreement"
        assert after["hrss"]["lag"] is None
        assert "platform" not in after  # not itself
    finally:
        market.close()
        platform.close()


def test_the_status_command_prints_lag_age_and_unfollowed_departments(
    cluster: LocalCluster,
) -> None:
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    seed(market, 3)

    async def pull() -> None:
        async with serving(market):
            await feeds.pull(platform, "market")

    try:
        asyncio.run(pull())
    finally:
        market.close()
        platform.close()
    home = str(cluster.home("platform"))
    as_json = runner.invoke(app, ["status", "--home", home, "--json"])
    assert as_json.exit_code == 0, as_json.output
    upstream = {u["provider"]: u for u in json.loads(as_json.stdout)["upstream"]}
    assert (upstream["market"]["head"], upstream["market"]["lag"]) == (3, 0)
    assert upstream["hrss"]["note"] == "no feed agreement"
    human = runner.invoke(app, ["status", "--home", home])
    assert human.exit_code == 0, human.output
    text = " ".join(human.stdout.split())
    assert "feeds received" in text
    for header in ("head", "lag", "last batch"):
        assert header in text
    assert " ago" in text
    assert "agreement" in text  # the hrss row's note (rich may wrap it)


def test_a_department_lists_no_unfollowed_peers(cluster: LocalCluster) -> None:
    market = cluster.runtime("market")
    try:
        assert node_status(market)["upstream"] == []  # departments do not follow feeds
    finally:
        market.close()


@pytest.mark.parametrize(
    ("head_seq", "last_seq", "caught_up", "expected"),
    [
        (9, 4, False, 9),  # reported
        (3, 4, False, 4),  # never below the batch's own end
        (0, 4, True, 4),  # an older provider, caught up: its head is this batch's end
        (0, 4, False, None),  # an older provider, not caught up: unknown
        (2**64 - 1, 4, False, None),  # beyond any store column: ignored, not a failed batch
        (2**63, 4, True, 4),
        (2**63 - 1, 4, False, 2**63 - 1),
    ],
)
def test_the_reported_head(
    head_seq: int, last_seq: int, caught_up: bool, expected: int | None
) -> None:
    batch = exchange_pb2.SealedBatch(
        first_seq=1, last_seq=last_seq, head_seq=head_seq, caught_up=caught_up
    )
    assert feeds.reported_head(batch) == expected


def test_a_batch_without_a_head_keeps_the_stored_one(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'credex.db'}", tagger=TEST_TAGGER)
    t0 = dt.datetime(2026, 11, 27, 1, 0, tzinfo=dt.UTC)
    try:
        assert store.upstream_feed("market") is None
        store.store_batch([], now=t0, upstream_cursor=("market", 2), upstream_head=7)
        later = t0 + dt.timedelta(minutes=5)
        store.store_batch([], now=later, upstream_cursor=("market", 4))
        feed = store.upstream_feed("market")
        assert feed is not None
        assert (feed.cursor, feed.head, feed.lag, feed.last_batch_at) == (4, 7, 3, later)
        assert store.upstream_cursor("market") == 4
    finally:
        store.close()


def test_migration_0003_adds_the_head_to_existing_cursors_and_goes_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credex.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = make_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.exec_driver_sql(
            "INSERT INTO upstream_cursors (peer, cursor, updated_at) "
            "VALUES ('market', 12, '2026-11-26 08:00:00')"
        )
    engine.dispose()
    store = open_store(url, tagger=TEST_TAGGER)  # migrates to the newest revision
    try:
        feed = store.upstream_feed("market")
        assert feed is not None
        assert (feed.cursor, feed.head, feed.lag) == (12, None, None)
    finally:
        store.close()
    engine = make_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
        columns = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(upstream_cursors)")}
        assert "head_seq" not in columns
        assert conn.exec_driver_sql("SELECT cursor FROM upstream_cursors").scalar() == 12
    engine.dispose()
