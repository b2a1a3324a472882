"""kill -9 of real `credex serve` processes during feeds and queries.

Three nodes (market, hrss, platform) run as real processes with mutual TLS. Each round market
ingests new records, hrss sends a query, and one node (market mid-query, or the platform while
it follows market's feed) is SIGKILLed at a random moment, then restarted. At the end:

- every query answer hrss received has exactly one entry in market's access log (no data left
  before its entry was durable), and no query's request id is logged twice;
- the platform holds every market record exactly once (the feed resumed from its cursor);
- `credex log verify` passes on market and on the platform.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from node.accesslog import decode_leaf
from node.cluster import LocalCluster
from node.config import load_config
from node.demo_data import write_demo_data
from node.ingest import run_ingest
from node.store import SqlLogBackend

ROUNDS = 12
AGREEMENTS = (
    {"provider": "market", "consumer": "platform", "items": ["admin_penalty", "admin_licence"],
     "purposes": ["other_management"], "kind": "feed"},
    {"provider": "market", "consumer": "hrss", "items": ["admin_penalty", "admin_licence"],
     "purposes": ["staff_recruitment"], "kind": "query"},
)  # fmt: skip


def _platform_copies(cluster: LocalCluster) -> tuple[int, int]:
    runtime = cluster.runtime("platform")
    try:
        with runtime.store.read("check") as conn:
            total, distinct = conn.exec_driver_sql(
                "SELECT COUNT(*), COUNT(DISTINCT record_key || ':' || version) FROM records "
                "WHERE producer = 'market'"
            ).one()
        return int(total), int(distinct)
    finally:
        runtime.close()


def _market_log(cluster: LocalCluster) -> Counter[str]:
    runtime = cluster.runtime("market")
    try:
        backend = SqlLogBackend(runtime.store)
        entries = [decode_leaf(leaf)[0] for _i, leaf, _h in backend.leaves(0, backend.size())]
        # Feed deliveries are at least once: a batch redelivered after a crash is a second
        # access and rightly a second entry. A query is answered once per request id.
        return Counter(e.request_id for e in entries if e.kind == "query")
    finally:
        runtime.close()


@pytest.mark.slow
def test_serve_processes_killed_during_feeds_and_queries(tmp_path: Path, kills: Any) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    today = dt.datetime.now(dt.UTC).date()
    nodes = (("market", "department"), ("hrss", "department"), ("platform", "platform"))
    answered: list[str] = []
    with LocalCluster(tmp_path / "district", nodes, agreements=AGREEMENTS) as cluster:
        cluster.init()
        cluster.start_all()
        for round_no in range(ROUNDS):
            data = write_demo_data(tmp_path / f"exports-{round_no}", today=today,
                                   seed=1000 + round_no, companies=8)  # fmt: skip
            run_ingest(load_config(cluster.home("market")), data.penalties_mapping, today=today)
            victim = "market" if round_no % 2 == 0 else "platform"
            query = subprocess.Popen(
                [sys.executable, "-m", "node.cli", "query", "market", "--subject",
                 data.focus.uscc, "--subject-kind", "organisation", "--items", "admin_penalty",
                 "--purpose", "staff_recruitment", "--legal-basis", "《条例》", "--json"],
                env=cluster.env("hrss"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            # A random moment inside the client's start-up, its call, or the platform's pull.
            time.sleep(rng.uniform(0.3, 2.0))  # the kill point, not a synchronisation
            cluster.kill(victim)
            kills.add(f"serve_{victim}")
            out, err = query.communicate(timeout=120)
            if query.returncode == 0:
                answered.append(json.loads(out)["request_id"])
            else:
                assert "Traceback" not in err, err
            cluster.start(victim)

        # Let the platform catch up once, through the CLI (resumes from its cursor).
        done = cluster.cli("platform", "subscribe", "market", "--json")
        assert done.returncode == 0, done.stderr
        market_runtime = cluster.runtime("market")
        try:
            market_records = market_runtime.store.count_records()
        finally:
            market_runtime.close()
        total, distinct = _platform_copies(cluster)
        assert total == distinct == market_records, f"seed {seed}: feed lost or doubled"

        logged = _market_log(cluster)
        assert not [r for r, n in logged.items() if n > 1], f"seed {seed}: doubled log entry"
        missing = [r for r in answered if logged[r] != 1]
        assert not missing, f"seed {seed}: answers without a log entry {missing}"
        assert answered, f"seed {seed}: no query was ever answered"
        cluster.stop_all()
        for name in ("market", "platform"):
            verify = cluster.cli(name, "log", "verify")
            assert verify.returncode == 0, f"seed {seed}: {name}: {verify.stdout}{verify.stderr}"
