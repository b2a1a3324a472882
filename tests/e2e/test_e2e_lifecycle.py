"""Lifecycle end to end with real `credex serve` processes on loopback (node/cluster.py).

market (department) feeds its administrative penalties to the platform and to health (a second
department, which may also query them). The platform files a credit repair for a subject over
Lifecycle.Repair; market's clerk corrects another record with `credex lifecycle correct`. Both
reach the platform and health through their feeds, the propagation report shows who has
acknowledged, and later queries and feeds no longer return the withdrawn record, while market's
access log still shows who saw it before the repair.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import keys
from node._pb.credex.v1 import lifecycle_pb2, lifecycle_pb2_grpc
from node.accesslog import search
from node.cluster import LocalCluster
from node.config import load_config
from node.demo_data import numbered_uscc
from node.ingest import run_ingest
from node.store import NewRecord
from node.store import lifecycle as ls
from tests.node.ingest_support import penalty_mapping

# A decision date inside its disclosure window whenever the suite runs (general severity:
# shown for at most a year), so the serving nodes' expiry scan never removes the test data.
RECENT = (dt.date.today() - dt.timedelta(days=120)).isoformat()

pytestmark = pytest.mark.slow

TODAY = dt.date(2026, 11, 25)
ITEMS = ["admin_penalty"]


MAPPING = penalty_mapping(decision_date=f'{{ const = "{RECENT}" }}')


def company(i: int) -> str:
    return numbered_uscc("91370303", 20_000 + i)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("lifecycle")
    feed = {"items": ITEMS, "purposes": ["feed"], "kind": "feed"}
    agreements = [
        {"provider": "market", "consumer": "platform", **feed},
        {"provider": "market", "consumer": "health", **feed},
        {"provider": "market", "consumer": "health", "items": ITEMS,
         "purposes": ["administrative_licensing"], "kind": "query"},
        {"provider": "market", "consumer": "health", "items": ["severe_dishonesty_list"],
         "purposes": ["push"], "kind": "push"},
    ]  # fmt: skip
    nodes = [("platform", "platform"), ("market", "department"), ("health", "department")]
    c = LocalCluster(root, nodes, agreements)
    c.init()
    source = root / "export"
    source.mkdir()
    with (source / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "uscc", "decision_no", "fine"])
        for i in range(1, 4):
            writer.writerow(
                [f"淄博张店某某商贸有限公司{i}", company(i), f"张市监罚〔2026〕{i}号", "1.5"]
            )
    (source / "penalties.toml").write_text(MAPPING, encoding="utf-8")
    summary = run_ingest(load_config(c.home("market")), source / "penalties.toml", today=TODAY)
    assert summary.accepted == 3
    c.start("market")
    try:
        yield c
    finally:
        c.stop_all()


def record_key(cluster: LocalCluster, i: int) -> str:
    rt = cluster.runtime("market")
    try:
        (record,) = rt.store.records_by_subject(rt.blind.token(company(i)), states=None)[:1]
        return record.record_key
    finally:
        rt.close()


def query(cluster: LocalCluster, i: int) -> Any:
    return cluster.cli(
        "health", "query", "market", "--subject", company(i), "--subject-kind", "organisation",
        "--items", "admin_penalty", "--purpose", "administrative_licensing",
        "--legal-basis", "行政许可法第三十一条", "--officer", "h-001", "--json",
    )  # fmt: skip


def lifecycle_call(cluster: LocalCluster, caller: str, method: str, body: Any) -> Any:
    """Call market's Lifecycle service as `caller`, signed with the caller's node key."""

    async def call() -> Any:
        rt = cluster.runtime(caller)
        try:
            signed = rt.sign_request(f"/credex.v1.Lifecycle/{method}", body.SerializeToString())
            channel = rt.channel("market")
            try:
                stub = lifecycle_pb2_grpc.LifecycleStub(channel)
                return await getattr(stub, method)(signed, timeout=30)
            finally:
                await channel.close()
        finally:
            rt.close()

    return asyncio.run(call())


def propagation(cluster: LocalCluster, key: str) -> dict[str, Any]:
    status = cluster.cli_json("market", "lifecycle", "status", "--record", key)
    report: dict[str, Any] = status["record"]["propagation"]
    return report


def test_repair_and_correction_reach_platform_and_second_department(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # both subscribers receive the three records; health can query subject 1
    assert cluster.cli_json("platform", "subscribe", "market")["stored"] == 3
    assert cluster.cli_json("health", "subscribe", "market")["stored"] == 3
    before = query(cluster, 1)
    assert before.returncode == 0, before.stderr
    assert len(json.loads(before.stdout)["records"]) == 1

    repaired, corrected = record_key(cluster, 1), record_key(cluster, 2)

    # a department may not act for subjects: only the platform role
    body = lifecycle_pb2.ObjectionBody(record_key=repaired, reason_code="dispute")
    with pytest.raises(grpc.RpcError) as info:
        lifecycle_call(cluster, "health", "Object", body)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not_platform" in (info.value.details() or "")

    # an inadmissible repair lists every failure
    bad = lifecycle_pb2.RepairBody(record_key=repaired, decision_no="张信修〔2026〕1号")
    with pytest.raises(grpc.RpcError) as info:
        lifecycle_call(cluster, "platform", "Repair", bad)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details() or ""
    assert "obligations_unfulfilled" in details
    assert "no_commitment" in details

    # the platform files the admissible repair for the subject
    good = lifecycle_pb2.RepairBody(
        record_key=repaired,
        decision_no="张信修〔2026〕1号",
        obligations_fulfilled=True,
        commitment_sha256=hashlib.sha256("信用承诺书".encode()).digest(),
    )
    receipt = lifecycle_call(cluster, "platform", "Repair", good)
    assert (receipt.state, receipt.events) == ("withdrawn", 2)

    # market's clerk corrects another record with the CLI
    out = cluster.cli_json(
        "market", "lifecycle", "correct", corrected, "--set", "fine_wan_yuan=0.8",
        "--reason", "张市监更〔2026〕1号",
    )  # fmt: skip
    assert (out["version"], out["superseded_version"], out["events"]) == (2, 1, 2)

    report = propagation(cluster, repaired)
    assert report["state"] == "withdrawn"
    assert not report["complete"]
    assert {s["subscriber"]: s["acknowledged"] for s in report["subscribers"]} == {
        "health": False,
        "platform": False,
    }

    # the feeds carry the withdraw and the correction; both acknowledge
    for subscriber in ("platform", "health"):
        pulled = cluster.cli_json(subscriber, "subscribe", "market")
        assert pulled["events"] == 2
    report = propagation(cluster, repaired)
    assert report["complete"]
    assert all(s["acknowledged"] for s in report["subscribers"])

    for subscriber in ("platform", "health"):
        rt = cluster.runtime(subscriber)
        try:
            mine = rt.store.records_by_subject(rt.blind.token(company(1)))
            assert mine == []  # the withdrawn copy is no longer active anywhere
            (current,) = rt.store.records_by_subject(rt.blind.token(company(2)))
            assert current.version == 2
        finally:
            rt.close()

    # later queries no longer return the withdrawn record; the corrected one answers v2
    after = query(cluster, 1)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["records"] == []
    fixed = query(cluster, 2)
    assert fixed.returncode == 0, fixed.stderr
    (rec,) = json.loads(fixed.stdout)["records"]
    assert rec["fields"]["fine_wan_yuan"] == "0.8"

    # the access log still shows who saw the repaired record before, and the repair itself
    rt = cluster.runtime("market")
    try:
        subject = rt.blind.token(company(1))
        kinds = [(e.kind, e.requester) for _i, e in search(rt.log.backend, subject_index=subject)]
        assert ("query", "health") in kinds
        assert ("lifecycle_repair", "platform") in kinds
        tasks = ls.list_tasks(rt.store, record_key=repaired)
        assert [t.kind for t in tasks] == ["repair"]
    finally:
        rt.close()

    # every row each node wrote on the way (records, received copies, withdrawals, the
    # correction) still matches its integrity tag (docs/decisions/0018)
    for name in ("market", "platform", "health"):
        assert cluster.cli_json(name, "store", "verify")["bad_rows"] == []


def seed_severe_list_entry(cluster: LocalCluster) -> str:
    """Sign and store a severe-dishonesty list entry at market the way ingest does."""
    rt = cluster.runtime("market")
    try:
        now = rt.clock()
        token = rt.blind.token(company(9))
        record_key = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        header = {
            "item": "severe_dishonesty_list",
            "catalog_version": rt.catalogue.version,
            "record_key": record_key,
            "version": 1,
            "producer": "market",
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": token,
        }
        fields = {"list_name": "严重违法失信名单", "decision_no": "张市监列〔2026〕1号",
                  "listed_date": "2026-06-01", "status": "列入"}  # fmt: skip
        signed = keys.sign_record(header, fields, rt.node_keys.signing)
        row_id = str(uuid.uuid4())
        rt.store.store_batch(
            [
                NewRecord(
                    row_id=row_id,
                    producer="market",
                    record_key=record_key,
                    version=1,
                    item_id="severe_dishonesty_list",
                    catalog_version=rt.catalogue.version,
                    subject_index=token,
                    body=rt.cipher.encrypt(row_id, signed.to_bytes()),
                    content_hash=hashlib.sha256(b"x").hexdigest(),
                    severity="severe",
                    decided_on=dt.date(2026, 6, 1),
                    disclosure_min_end=dt.date(2027, 6, 1),
                    disclosure_max_end=dt.date(2029, 6, 1),
                    disclosure_rule="test",
                    created_at=now,
                )
            ],
            now=now,
        )
        return record_key
    finally:
        rt.close()


def test_severe_list_entry_is_pushed_with_a_verified_receipt(cluster: LocalCluster) -> None:
    cluster.start("health")
    key = seed_severe_list_entry(cluster)
    out = cluster.cli_json("market", "lifecycle", "push", key)
    (push,) = out["pushes"]
    assert (push["to_node"], push["receipt"], push["error"]) == ("health", True, None)
    again = cluster.cli_json("market", "lifecycle", "push", key)
    assert again["pushes"] == out["pushes"]  # same notice id; the receipt is kept
    status = cluster.cli_json("market", "lifecycle", "status", "--record", key)
    (row,) = status["record"]["pushes"]
    assert row["receipt_at"] is not None
    rt = cluster.runtime("health")
    try:
        (copy,) = rt.store.record_versions("market", key)
        assert (copy.producer, copy.item_id, copy.origin) == (
            "market",
            "severe_dishonesty_list",
            "received",
        )
    finally:
        rt.close()
    # an ordinary penalty is not a joint-punishment notice
    refused = cluster.cli("market", "lifecycle", "push", record_key(cluster, 3))
    assert refused.returncode == 2
    assert "nothing to push" in refused.stderr
