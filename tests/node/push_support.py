"""Shared by the joint-punishment push tests: market pushes severe-dishonesty entries to hrss
(a push agreement, no feed), the entries it pushes, and what hrss keeps and logs."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import keys
from node import lifecycle as rules
from node import lifecycle_ops
from node.accesslog import LogEntry, iter_entries
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.store import NewRecord

ITEM = "severe_dishonesty_list"
COMMITMENT = hashlib.sha256(b"credit commitment").hexdigest()


def key(n: int) -> str:
    """The record key of entry `n`."""
    return f"{n:064x}"


def push_cluster(tmp_path: Path) -> LocalCluster:
    """market, hrss and the platform, initialised, with market's push agreement to hrss."""
    nodes = [("market", "department"), ("hrss", "department"), ("platform", "platform")]
    agreements = [
        {"provider": "market", "consumer": "hrss", "items": [ITEM], "purposes": ["push"],
         "kind": "push"},
    ]  # fmt: skip
    c = LocalCluster(tmp_path, nodes, agreements)
    c.init()
    return c


def feed_cluster(tmp_path: Path, *, item: str = ITEM, with_hrss: bool = False) -> LocalCluster:
    """market and the platform (and hrss, asked), initialised, with the platform's feed
    agreement for market's `item` records (default: severe-dishonesty entries)."""
    nodes = [("market", "department"), ("platform", "platform")]
    if with_hrss:
        nodes.insert(1, ("hrss", "department"))
    agreements = [
        {"provider": "market", "consumer": "platform", "items": [item], "purposes": ["feed"],
         "kind": "feed"},
    ]  # fmt: skip
    c = LocalCluster(tmp_path, nodes, agreements)
    c.init()
    return c


def seed_entry(
    runtime: NodeRuntime,
    n: int,
    *,
    decided_on: dt.date | None = None,
    min_end: dt.date | None = None,
    max_end: dt.date | None = None,
    issued_at: str = "2026-01-05T00:00:00Z",
) -> str:
    """Store entry `n`, active and signed by `runtime` (row `row-<n>`); returns its row id.

    The window defaults to a repairable one around `runtime`'s day: decided 400 days before,
    minimum period over 30 days ago, disclosed for 700 days more.
    """
    now = runtime.clock()
    today = now.date()
    header = {
        "item": ITEM,
        "catalog_version": runtime.catalogue.version,
        "record_key": key(n),
        "version": 1,
        "producer": runtime.node_id,
        "issued_at": issued_at,
        "subject": f"{n:032x}",
    }
    signed = keys.sign_record(header, {"decision_no": f"N{n}"}, runtime.node_keys.signing)
    row_id = f"row-{n}"
    runtime.store.store_batch(
        [
            NewRecord(
                row_id=row_id,
                producer=runtime.node_id,
                record_key=key(n),
                version=1,
                item_id=ITEM,
                catalog_version=runtime.catalogue.version,
                subject_index=f"{n:032x}",
                body=runtime.cipher.encrypt(row_id, signed.to_bytes()),
                content_hash=f"{n:064x}",
                severity="severe",
                decided_on=decided_on or today - dt.timedelta(days=400),
                disclosure_min_end=min_end or today - dt.timedelta(days=30),
                disclosure_max_end=max_end or today + dt.timedelta(days=700),
                disclosure_rule="test",
                created_at=now,
            )
        ],
        now=now,
    )
    return row_id


def repair(runtime: NodeRuntime, n: int) -> lifecycle_ops.LifecycleResult:
    """What `credex lifecycle repair` does: commit the repair of entry `n`, send nothing."""
    application = rules.RepairApplication(obligations_fulfilled=True, commitment_sha256=COMMITMENT)
    return lifecycle_ops.repair_record(runtime, key(n), application, decision_no="R1")


def copy_state(receiver: NodeRuntime, n: int) -> str:
    """The state of `receiver`'s one copy of market's entry `n`."""
    (copy,) = receiver.store.record_versions("market", key(n))
    return copy.state


def push_entries(receiver: NodeRuntime) -> list[LogEntry]:
    """The `push` entries of `receiver`'s access log, in order."""
    return [e for _i, _leaf, e in iter_entries(receiver.log.backend) if e.kind == "push"]


def close(*runtimes: NodeRuntime) -> None:
    """Close every runtime."""
    for r in runtimes:
        r.close()
