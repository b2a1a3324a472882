"""Feeds end to end with real `credex serve` processes on loopback (node/cluster.py).

Two departments (market on SQLite, hrss on a throwaway PostgreSQL database) and the platform,
each with its own store. Checked: ingest -> subscribe -> ack over mutual TLS; the platform's
copy equals the producer's (record key, version, content hash) set; corrections and repairs
travel; the platform's background subscription follows new events; DSSE export verifies; and
kill -9 of producer and subscriber at random points (>= 20 kills) loses and doubles nothing.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keys
from node.cluster import LocalCluster
from node.config import load_config
from node.demo_data import numbered_uscc
from node.ingest import run_ingest
from node.runtime import NodeRuntime
from tests.node.ingest_support import penalty_mapping

# A decision date inside its disclosure window whenever the suite runs (general severity:
# shown for at most a year), so the serving nodes' expiry scan never removes the test data.
RECENT = (dt.date.today() - dt.timedelta(days=120)).isoformat()

pytestmark = pytest.mark.slow

TODAY = dt.date(2026, 11, 25)
FEED = {"items": ["admin_penalty"], "purposes": ["feed"], "kind": "feed"}


MAPPING = penalty_mapping(violation_facts='"facts"')


def write_export(directory: Path, rows: range, *, fine: int = 1) -> Path:
    """A CSV export of administrative penalties and its mapping; returns the mapping path."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "uscc", "decision_no", "fine", "date", "facts"])
        for i in rows:
            writer.writerow(
                [
                    f"淄博张店某某商贸有限公司{i}",
                    numbered_uscc("91370303", 10_000 + i),
                    f"张市监罚〔2026〕{i}号",
                    f"{fine + i % 50}.5",
                    RECENT,
                    "经查，当事人销售的产品经抽检不合格。",
                ]
            )
    mapping = directory / "penalties.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return mapping


def ingest(cluster: LocalCluster, name: str, directory: Path, rows: range, *, fine: int = 1) -> int:
    """Ingest in-process (the node may be serving meanwhile); returns the accepted count."""
    mapping = write_export(directory, rows, fine=fine)
    summary = run_ingest(load_config(cluster.home(name)), mapping, today=TODAY)
    assert summary.balanced
    return summary.accepted


def copy_of(runtime: NodeRuntime, producer: str) -> set[tuple[str, int, str, str]]:
    """(record key, version, content hash, state) of every version of `producer` stored here."""
    from node.store.received import received_records  # noqa: PLC0415 - node-side helper

    if producer == runtime.node_id:
        rows = [
            r for key in _local_keys(runtime) for r in runtime.store.record_versions(producer, key)
        ]
    else:
        rows = received_records(runtime.store, producer=producer)
    return {(r.record_key, r.version, r.content_hash, r.state) for r in rows}


def _local_keys(runtime: NodeRuntime) -> set[str]:
    sub = runtime.store.subscription("platform")
    assert sub is not None
    return {e.record_key for e in runtime.store.events_after("platform", 0, limit=1_000_000)}


def wait_caught_up(cluster: LocalCluster, producer: str, *, timeout: float = 30.0) -> None:
    """Wait until the platform has applied AND acknowledged the producer's whole feed."""
    deadline = time.monotonic() + timeout
    while True:
        prod = cluster.runtime(producer)
        plat = cluster.runtime("platform")
        try:
            sub = prod.store.subscription("platform")
            cursor = plat.store.upstream_cursor(producer)
            if sub is not None and sub.last_seq == cursor == sub.acked_seq:
                return
        finally:
            prod.close()
            plat.close()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"platform did not catch up with {producer}: "
                f"{cluster.server_log('platform')[-2000:]}"
            )
        time.sleep(0.05)  # polling state another process writes


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, throwaway_postgres: str
) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("feeds")
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    agreements = [
        {"provider": "market", "consumer": "platform", **FEED},
        {"provider": "hrss", "consumer": "platform", **FEED},
    ]
    stores = {"hrss": throwaway_postgres}
    with LocalCluster(root, nodes, agreements, store_urls=stores) as c:
        c.init()
        yield c


def test_ingest_subscribe_ack_over_mtls(cluster: LocalCluster, tmp_path: Path) -> None:
    assert ingest(cluster, "market", tmp_path / "a", range(150)) == 150
    cluster.start("market")
    done = cluster.cli_json("platform", "subscribe", "market")
    assert (done["events"], done["stored"], done["cursor"]) == (150, 150, 150)
    again = cluster.cli_json("platform", "subscribe", "market")
    assert (again["events"], again["stored"]) == (0, 0)  # resumes from the cursor
    # corrections: 30 changed rows become version 2 and supersede version 1 on both sides
    ingest(cluster, "market", tmp_path / "b", range(30), fine=7)
    done = cluster.cli_json("platform", "subscribe", "market")
    assert (done["events"], done["stored"]) == (30, 30)
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    try:
        mine = copy_of(market, "market")
        assert len(mine) == 180
        assert copy_of(platform, "market") == mine
        # the platform indexes the subject with its OWN blind index, from the disclosure
        subject = numbered_uscc("91370303", 10_000 + 5)
        found = platform.store.records_by_subject(platform.blind.token(subject))
        assert [(r.producer, r.version) for r in found] == [("market", 2)]
        sub = market.store.subscription("platform")
        assert sub is not None
        assert sub.acked_seq == sub.last_seq == 180
    finally:
        market.close()
        platform.close()
    status = cluster.cli_json("market", "status")
    assert status["feeds"][0]["lag"] == 0
    plat_status = cluster.cli_json("platform", "status")
    assert {u["provider"]: u["cursor"] for u in plat_status["upstream"]}["market"] == 180


def test_feed_export_is_standard_dsse(cluster: LocalCluster, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    done = cluster.cli(
        "platform", "feed", "export", "--peer", "market", "--output", str(out),
        "--officer", "p-007", check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) >= 180
    assert f"exported {len(lines)} received records" in " ".join(done.stdout.split())
    # the export was logged, with its officer and count, before the file was written
    exports = cluster.cli_json("platform", "log", "search", "--kind", "export")
    logged = exports[-1]
    assert (logged["officer"], logged["reason"]) == ("p-007", "feed_export")
    assert logged["result_count"] == len(lines)
    market = keys.load_key_dir(cluster.home("market") / "keys")
    for line in lines[:20]:
        env = keys.Envelope(
            line["payloadType"],
            base64.b64decode(line["payload"]),
            tuple((s["keyid"], base64.b64decode(s["sig"])) for s in line["signatures"]),
        )
        keys.verify_envelope(
            env,
            payload_type=keys.RECORD_PAYLOAD_TYPE,
            trusted={market.signing.keyid: market.signing.public_key},
        )
        assert "张店" not in base64.b64decode(line["payload"]).decode("utf-8")
    # the printed count is the lines written, and an existing file is never replaced
    said = cluster.cli(
        "platform", "feed", "export", "--peer", "market", "--output", str(out), "--officer", "p-007"
    )
    assert said.returncode == 2, said.stderr
    assert "exists" in said.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(lines)


def test_postgres_department_feed(
    cluster: LocalCluster, tmp_path: Path, throwaway_postgres: str
) -> None:
    assert ingest(cluster, "hrss", tmp_path, range(1000, 1080)) == 80
    cluster.start("hrss")
    done = cluster.cli_json("platform", "subscribe", "hrss")
    assert done["stored"] == 80
    hrss, platform = cluster.runtime("hrss"), cluster.runtime("platform")
    try:
        assert hrss.store.dialect == "postgresql"
        keys_ = {e.record_key for e in hrss.store.events_after("platform", 0, limit=10_000)}
        mine = {
            (r.record_key, r.version, r.content_hash, r.state)
            for k in keys_
            for r in hrss.store.record_versions("hrss", k)
        }
        assert copy_of(platform, "hrss") == mine
    finally:
        hrss.close()
        platform.close()
    cluster.stop("hrss")


def test_platform_background_subscription_follows(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.start("market")
    cluster.start("platform")
    ingest(cluster, "market", tmp_path, range(150, 200))
    wait_caught_up(cluster, "market")
    doctor = cluster.cli("platform", "doctor", "--json")
    report = json.loads(doctor.stdout)
    by_name = {c["check"]: c["ok"] for c in report["checks"]}
    assert by_name["keys"]
    assert by_name["bundle"]
    assert by_name["database"]
    assert by_name["peer market"] is True
    assert by_name["peer hrss"] is False  # stopped: doctor says so and exits 1
    assert doctor.returncode == 1


def _platform_is_behind(cluster: LocalCluster) -> bool:
    """True when the platform has not applied and acknowledged all of market's feed."""
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    try:
        sub = market.store.subscription("platform")
        head = sub.last_seq if sub is not None else 0
        acked = sub.acked_seq if sub is not None else 0
        return platform.store.upstream_cursor("market") < head or acked < head
    finally:
        market.close()
        platform.close()


def test_kill_9_producer_and_subscriber_lose_and_double_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    kills = behind = 0
    start = 200
    for round_ in range(10):
        cluster.start("market")
        cluster.start("platform")
        rows = rng.randint(300, 900)
        ingest(cluster, "market", tmp_path / f"r{round_}", range(start, start + rows))
        start += rows
        # kill both at random points while the platform applies and acknowledges the stream
        victims = ["market", "platform"]
        rng.shuffle(victims)
        for victim in victims:
            time.sleep(rng.uniform(0.0, 0.3))  # a random kill point, not synchronisation
            cluster.kill(victim)
            kills += 1
            behind += _platform_is_behind(cluster)
    assert kills >= 20
    # Kills that hit a caught-up, idle feed prove little: most must land with records still
    # to be delivered, applied or acknowledged.
    assert behind >= kills // 2, f"only {behind} of {kills} kills landed mid-stream"
    cluster.start("market")
    cluster.start("platform")
    wait_caught_up(cluster, "market", timeout=60)
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    try:
        mine = copy_of(market, "market")
        theirs = copy_of(platform, "market")
        assert theirs == mine  # nothing lost
        received = platform.store.count_records(producer="market")
        assert received == len(mine)  # nothing doubled
        # the cursor is exactly the end of the feed: no event skipped or applied twice
        assert platform.store.upstream_cursor("market") == len(
            market.store.events_after("platform", 0, limit=1_000_000)
        )
    finally:
        market.close()
        platform.close()
