"""The access log seen by its officers and its witness, between real nodes over mutual TLS.

- `credex log verify` passes on an honest log (with the platform's cosignatures) and exits 3
  naming the first bad entry when a row is edited, deleted, reordered or the log truncated;
- `log search --subject` finds the subject's accesses and is itself logged (without the id);
- `log export` lines verify on their own (checkpoint signature + inclusion proof);
- the platform witness cosigns a growing log and raises the alarm when the log forks (a
  department restored an old database and wrote a different history after it).
The witness rounds run in-process against the real serving department, so the test decides
when they happen instead of waiting for the background loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keys
from node.accesslog import decode_leaf
from node.cluster import LocalCluster
from node.query import QueryAsk, send_query
from node.witness import WitnessOutcome, WitnessState, background, witness_round

pytestmark = pytest.mark.slow

SUBJECT = "11010519491231002X"


def ask(officer: str) -> QueryAsk:
    return QueryAsk(
        peer="market", subject=SUBJECT, subject_kind="natural_person",
        items=("admin_licence_person",), purpose="administrative_licensing",
        legal_basis="行政许可法", officer=officer,
    )  # fmt: skip


def run_queries(cluster: LocalCluster, n: int, tag: str) -> None:
    rt = cluster.runtime("tax")
    try:

        async def many() -> None:
            for i in range(n):
                await send_query(rt, ask(f"{tag}-{i}"))

        asyncio.run(many())
    finally:
        rt.close()


def witness(cluster: LocalCluster, state: WitnessState) -> WitnessOutcome:
    rt = cluster.runtime("platform")
    try:
        outcomes = asyncio.run(witness_round(rt, state))
    finally:
        rt.close()
    (market,) = [o for o in outcomes if o.peer == "market"]
    return market


def db_files(home: Path) -> list[Path]:
    return sorted((home / "data").glob("credex.db*"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("district")
    c = LocalCluster(
        root,
        nodes=[("platform", "platform"), ("market", "department"), ("tax", "department")],
        agreements=[
            {
                "provider": "market",
                "consumer": "tax",
                "items": ["admin_licence_person"],
                "purposes": ["administrative_licensing"],
                "kind": "query",
            },
        ],
    )
    c.init()
    c.start("market")
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def witnessed(cluster: LocalCluster) -> WitnessState:
    """Queries, then a checkpoint witnessed by the platform."""
    run_queries(cluster, 4, "a")
    cluster.cli("market", "log", "checkpoint", check=True)
    state = WitnessState(cluster.home("platform") / "data" / "witness.json")
    outcome = witness(cluster, state)
    assert outcome.status == "cosigned", outcome
    return state


def test_honest_log_verifies_with_the_witness_cosignature(
    cluster: LocalCluster, witnessed: WitnessState
) -> None:
    report = cluster.cli_json("market", "log", "verify")
    assert report["ok"] is True
    assert report["size"] >= 4
    assert report["witnesses_checked"] >= 1
    note = cluster.cli_json("market", "log", "checkpoint")
    assert note["witnessed_by"] == ["platform"] or note["size"] > witnessed_size(witnessed)


def witnessed_size(state: WitnessState) -> int:
    return int(state.latest["market"].split("\n")[1])


def test_search_by_subject_finds_its_accesses_and_is_logged(
    cluster: LocalCluster, witnessed: WitnessState
) -> None:
    del witnessed
    done = cluster.cli("market", "log", "search", "--subject", SUBJECT, "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert len(found) >= 4
    assert {e["requester"] for e in found} == {"tax"}
    assert SUBJECT not in done.stdout
    assert SUBJECT not in done.stderr
    reads = cluster.cli_json("market", "log", "search", "--kind", "admin_read")
    assert reads
    assert all(e["subject_index"] is None for e in reads)
    assert all(SUBJECT not in json.dumps(e) for e in reads)


def verify_line(record: dict[str, Any], verifiers: dict[str, bytes]) -> dict[str, Any]:
    """One exported line on its own: the checkpoint signed by the log key `market` and the
    leaf's inclusion proof to it. (accesslog.verify_export_record assumes the note's key name
    is the origin line, which the node does not use; see the report.)"""
    cp = keys.verify_checkpoint(record["checkpoint"], verifiers=verifiers, log_name="market")
    leaf = base64.b64decode(record["leaf"])
    keys.verify_inclusion(
        record["index"], cp.size, keys.leaf_hash(leaf),
        [base64.b64decode(p) for p in record["proof"]], cp.root,
    )  # fmt: skip
    entry, _previous = decode_leaf(leaf)
    assert entry.to_dict() == record["entry"]
    return entry.to_dict()


def test_export_lines_verify_on_their_own(cluster: LocalCluster, tmp_path: Path) -> None:
    out = tmp_path / "evidence.jsonl"
    cluster.cli("market", "log", "export", "--output", str(out), check=True)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    rt = cluster.runtime("market")
    try:
        verifiers = rt.log_verifiers()
    finally:
        rt.close()
    checked = [verify_line(r, verifiers) for r in lines if r["proof"] is not None]
    assert len(checked) >= 4
    assert all(c["kind"] for c in checked)
    assert lines[-1]["entry"]["kind"] in ("export", "admin_read", "query")
    assert any(r["entry"]["kind"] == "export" for r in lines)


def test_report_lists_requesters(cluster: LocalCluster) -> None:
    report = cluster.cli_json("market", "log", "report")
    assert "tax" in {r["requester"] for r in report["requesters"]}


def _tampered_copy(cluster: LocalCluster, tmp_path: Path, sql: str) -> Path:
    """A copy of the market node whose access log was changed by `sql`."""
    home = tmp_path / "copy"
    cluster.cli("market", "log", "checkpoint", check=True)
    shutil.copytree(cluster.home("market"), home)
    (home / "data" / "serve.json").unlink(missing_ok=True)
    with sqlite3.connect(home / "data" / "credex.db") as db:
        db.executescript(sql)
    return home


@pytest.mark.parametrize(
    ("name", "sql", "bad"),
    [
        (
            "edit",
            "UPDATE access_log SET leaf = CAST(replace(leaf, 'a-1', 'x-1') AS BLOB) WHERE idx = 1;",
            1,
        ),
        ("delete", "DELETE FROM access_log WHERE idx = 2;", 2),
        (
            "reorder",
            "UPDATE access_log SET idx = -1 WHERE idx = 1;"
            "UPDATE access_log SET idx = 1 WHERE idx = 2;"
            "UPDATE access_log SET idx = 2 WHERE idx = -1;",
            1,
        ),
        ("truncate", "DELETE FROM access_log WHERE idx >= 3;", 3),
    ],
)
def test_tampering_makes_verify_exit_3_naming_the_entry(
    cluster: LocalCluster, witnessed: WitnessState, tmp_path: Path, name: str, sql: str, bad: int
) -> None:
    del witnessed, name
    home = _tampered_copy(cluster, tmp_path, sql)
    env = cluster.env("market")
    env["CREDEX_HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "log", "verify", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["first_bad_index"] == bad


def test_witness_detects_a_fork(cluster: LocalCluster, witnessed: WitnessState) -> None:
    market = cluster.home("market")
    snapshot = market.parent / "market-snapshot"
    snapshot.mkdir()
    cluster.stop("market")
    for f in db_files(market):
        shutil.copy2(f, snapshot / f.name)
    cluster.start("market")
    run_queries(cluster, 2, "b")
    cluster.cli("market", "log", "checkpoint", check=True)
    assert witness(cluster, witnessed).status == "cosigned"
    # The department goes back to the old database and writes another history.
    cluster.stop("market")
    for f in db_files(market):
        f.unlink()
    for f in snapshot.iterdir():
        shutil.copy2(f, market / "data" / f.name)
    cluster.start("market")
    run_queries(cluster, 3, "c")
    cluster.cli("market", "log", "checkpoint", check=True)
    outcome = witness(cluster, witnessed)
    assert outcome.status == "fork", outcome
    report = cluster.cli_json("platform", "log", "report")
    assert [a["log"] for a in report["alarms"]] == ["market"]
    assert (cluster.home("platform") / "data" / "witness-alarms.jsonl").exists()
    # the witness did not move on to the forked history
    assert witness(cluster, witnessed).status == "fork"


def test_the_witness_loop_runs_only_on_the_platform(cluster: LocalCluster) -> None:
    for name, expected in (("platform", 1), ("market", 0)):
        rt = cluster.runtime(name)
        try:
            assert len(background(rt)) == expected
        finally:
            rt.close()
