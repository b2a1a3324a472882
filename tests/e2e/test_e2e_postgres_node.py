"""A department node on PostgreSQL, end to end, as its operator runs it (node/cluster.py).

`market` keeps its store in a throwaway PostgreSQL database; `platform` and the requester `tax`
stay on SQLite. In order, on one district: a CSV ingest with `credex ingest`; `credex serve`
answering `tax`'s authorised query over mutual TLS with records that verify; the platform
pulling market's feed; the lifecycle operations (object, resolve with a correction, revoke,
repair) with the CLI, each leaving exactly one access-log entry committed with its change, and
`Store.joined` on PostgreSQL (nested store calls in one transaction, reads seeing its writes,
all rolled back together); `credex keys rotate`, a bundle revoking the old key, `credex keys
resign` and a query that verifies again; two `credex serve` replicas of market on the same
database answering at once; `credex log verify` (exit 0, then exit 3 naming the entry after one
`access_log` row is changed with SQL); a lifecycle scan with a pinned clock expiring and purging.

The tests share the district and run in file order: each continues from the state the one
before left.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import keys
from node import accesslog
from node.cluster import LocalCluster
from node.demo_data import numbered_uscc
from node.errors import ExitCode
from node.query import QueryAsk, QueryResult, send_query
from node.runtime import NodeRuntime, open_runtime
from node.scheduler import scan
from node.store import Store, StoredRecord, open_store
from node.store import lifecycle as ls
from node.transport import ChannelIdentity, client_channel
from tests.node.ingest_support import penalty_mapping

pytestmark = pytest.mark.slow

ITEM = "admin_penalty"
PURPOSE = "administrative_licensing"
# Inside its disclosure window whenever the suite runs (general severity: at most a year) and
# past its minimum period (three months), so it can be repaired.
RECENT = (dt.date.today() - dt.timedelta(days=120)).isoformat()
ROWS = 6
QUERIED, OBJECTED, REVOKED, REPAIRED = 0, 1, 2, 3

MAPPING = penalty_mapping()


def uscc(i: int) -> str:
    return numbered_uscc("91370303", 20_000 + i)


@pytest.fixture(scope="module")
def district(
    tmp_path_factory: pytest.TempPathFactory, throwaway_postgres: str
) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("pg-node")
    nodes = [("market", "department"), ("tax", "department"), ("platform", "platform")]
    agreements = [
        {"provider": "market", "consumer": "tax", "items": [ITEM], "purposes": [PURPOSE],
         "kind": "query"},
        {"provider": "market", "consumer": "platform", "items": [ITEM], "purposes": ["feed"],
         "kind": "feed"},
    ]  # fmt: skip
    with LocalCluster(root, nodes, agreements, store_urls={"market": throwaway_postgres}) as c:
        c.init()
        yield c


@pytest.fixture(scope="module")
def database(throwaway_postgres: str) -> str:
    """The libpq connection string of market's database (for the SQL a tamperer would run)."""
    return "postgresql://" + throwaway_postgres.split("://", 1)[1]


def market(district: LocalCluster) -> NodeRuntime:
    return district.runtime("market")


def log_size(district: LocalCluster) -> int:
    rt = market(district)
    try:
        return rt.log.backend.size()
    finally:
        rt.close()


def last_entries(district: LocalCluster, count: int) -> list[accesslog.LogEntry]:
    rt = market(district)
    try:
        size = rt.log.backend.size()
        found = accesslog.iter_entries(rt.log.backend, start=size - count)
        return [entry for _i, _hash, entry in found]
    finally:
        rt.close()


def record_key(district: LocalCluster, i: int) -> str:
    rt = market(district)
    try:
        found = rt.store.records_by_subject(rt.blind.token(uscc(i)))
        return found[-1].record_key
    finally:
        rt.close()


def query_cli(district: LocalCluster, i: int) -> Any:
    return district.cli(
        "tax", "query", "market", "--subject", uscc(i), "--subject-kind", "organisation",
        "--items", ITEM, "--purpose", PURPOSE, "--legal-basis", "行政许可法第三十一条",
        "--officer", "t-042", "--json",
    )  # fmt: skip


def ok_json(done: Any) -> Any:
    assert done.returncode == 0, done.stderr[-1500:]
    return json.loads(done.stdout)


def test_ingest_serve_query_and_feed(district: LocalCluster, tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    with (export / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "uscc", "decision_no", "fine", "date"])
        for i in range(ROWS):
            writer.writerow(
                [f"淄博张店某某商贸有限公司{i}", uscc(i), f"张市监罚〔2026〕{i}号", "1.5", RECENT]
            )
    (export / "penalties.toml").write_text(MAPPING, encoding="utf-8")
    summary = district.cli_json("market", "ingest", str(export / "penalties.toml"))
    assert summary["accepted"] == ROWS, summary
    district.start("market")
    answer = ok_json(query_cli(district, QUERIED))
    (record,) = answer["records"]
    assert (record["producer"], record["version"], record["verified"]) == ("market", 1, True)
    assert record["fields"]["uscc"] == uscc(QUERIED)
    (logged,) = last_entries(district, 1)
    assert (logged.kind, logged.requester, logged.decision) == ("query", "tax", "allow")
    pulled = district.cli_json("platform", "subscribe", "market")
    assert (pulled["events"], pulled["stored"], pulled["cursor"]) == (ROWS, ROWS, ROWS)


def test_joined_store_calls_are_one_postgres_transaction(
    district: LocalCluster, throwaway_postgres: str
) -> None:
    """What AccessLog.append_with relies on: store calls inside `joined` run in the caller's
    transaction, read what it wrote so far, and vanish with it; another connection sees
    nothing before the commit."""
    rt = market(district)
    other = open_store(throwaway_postgres, migrate_schema=False)
    try:
        key = record_key(district, ROWS - 1)
        (version,) = rt.store.record_versions("market", key)
        now = rt.clock()

        class Abandon(Exception):
            pass

        # one block: the transaction is what is tested
        with (  # noqa: PT012
            pytest.raises(Abandon),
            rt.store.write("test") as conn,
            rt.store.joined(conn),
        ):
            assert rt.store.set_objection(version.row_id, True, now=now) == 1
            (inside,) = rt.store.record_versions("market", key)
            assert inside.objection  # the read joined the transaction
            subject = rt.store.records_by_subject(version.subject_index)
            assert [r.objection for r in subject] == [True]
            candidates = rt.store.release_candidates(
                version.subject_index, producer="market", states=("active",)
            )
            assert [c.objection for c in candidates] == [True]
            (outside,) = other.record_versions("market", key)
            assert not outside.objection  # uncommitted: invisible elsewhere
            raise Abandon
        (after,) = rt.store.record_versions("market", key)
        assert not after.objection
        sub = rt.store.subscription("platform")
        assert sub is not None
        assert sub.last_seq == ROWS  # the objection_set event went with the rollback
    finally:
        other.close()
        rt.close()


def lifecycle(district: LocalCluster, *args: str) -> Any:
    """Run `credex lifecycle ARGS --json` on market; check it left exactly one log entry."""
    before = log_size(district)
    result = district.cli_json("market", "lifecycle", *args)
    assert log_size(district) == before + 1, args[0]
    return result


def test_lifecycle_operations_log_one_entry_each(district: LocalCluster, tmp_path: Path) -> None:
    objected = record_key(district, OBJECTED)
    opened = lifecycle(district, "object", objected, "--reason", "wrong amount")
    assert last_entries(district, 1)[0].kind == "lifecycle_object"
    corrected = lifecycle(
        district, "resolve", opened["task_id"], "--outcome", "correct", "--set", "fine_wan_yuan=0.8"
    )
    assert corrected["version"] == 2
    assert last_entries(district, 1)[0].kind == "lifecycle_correct"
    rt = market(district)
    try:
        versions = rt.store.record_versions("market", objected)
        assert [(v.version, v.state, v.objection) for v in versions] == [
            (1, "superseded", True),
            (2, "active", False),
        ]
        assert ls.get_objection(rt.store, opened["task_id"]).outcome == "corrected: version 2"
    finally:
        rt.close()

    lifecycle(
        district, "revoke", record_key(district, REVOKED), "--reason", "行政复议决定〔2026〕1号"
    )
    assert last_entries(district, 1)[0].kind == "lifecycle_revoke"
    commitment = tmp_path / "commitment.pdf"
    commitment.write_bytes(b"%PDF-1.4 signed credit commitment")
    repaired = lifecycle(
        district, "repair", record_key(district, REPAIRED), "--obligations-fulfilled",
        "--commitment-file", str(commitment), "--decision-no", "修复〔2026〕1号",
    )  # fmt: skip
    assert repaired["state"] == "withdrawn"
    assert last_entries(district, 1)[0].kind == "lifecycle_repair"
    # the corrections and withdrawals travel to the platform
    pulled = district.cli_json("platform", "subscribe", "market")
    assert pulled["events"] >= 4
    assert district.cli("market", "log", "verify").returncode == 0


def test_rotated_key_revoked_then_resigned(district: LocalCluster) -> None:
    home = district.home("market") / "keys"
    old = keys.load_key_dir(home).signing.public_key
    identity = district.cli_json("market", "keys", "rotate", "--overlap-days", "0")
    spec = district.spec()
    for node in spec["node"]:
        if node["node_id"] == "market":
            node["identity"] = identity
    district.reissue_bundle(node=spec["node"], revoked_keyids=[keys.keyid(old)])
    district.stop("market")
    district.start("market")  # a running node takes its new key at restart
    refused = query_cli(district, QUERIED)
    assert refused.returncode == ExitCode.VERIFICATION, refused.stderr[-1500:]
    report = district.cli_json("market", "keys", "resign", "--officer", "sec-007")
    assert report["resigned"] >= ROWS
    answer = ok_json(query_cli(district, QUERIED))
    assert [r["verified"] for r in answer["records"]] == [True]


def test_two_replicas_on_one_database_answer_at_once(district: LocalCluster) -> None:
    district.add_replica("market-2", of="market")
    district.start("market-2")
    before = log_size(district)
    per_replica = 8
    tax = district.runtime("tax")

    async def ask_both() -> list[QueryResult]:
        identity = ChannelIdentity(
            key_pem=tax.node_keys.tls_key_pem, cert_pem=tax.node_keys.tls_cert_pem
        )
        peer = tax.tls_roster().peer("market")
        channels = [
            client_channel(district.node(name).endpoint, peer=peer, identity=identity)
            for name in ("market", "market-2")
        ]
        try:
            asks = [
                send_query(tax, ask(QUERIED), channel=channel)
                for channel in channels
                for _ in range(per_replica)
            ]
            return await asyncio.gather(*asks)
        finally:
            for channel in channels:
                await channel.close()

    try:
        answers = asyncio.run(ask_both())
    finally:
        tax.close()
    assert len({a.log_index for a in answers}) == 2 * per_replica
    assert all(len(a.records) == 1 for a in answers)
    assert log_size(district) == before + 2 * per_replica
    for name in ("market", "market-2"):
        done = district.cli(name, "log", "verify", "--json")
        assert ok_json(done)["size"] == before + 2 * per_replica
    district.stop("market-2")


def ask(i: int) -> QueryAsk:
    return QueryAsk(
        peer="market",
        subject=uscc(i),
        subject_kind="organisation",
        items=(ITEM,),
        purpose=PURPOSE,
        legal_basis="行政许可法第三十一条",
        officer="t-042",
    )


def test_log_verify_names_a_row_changed_with_sql(district: LocalCluster, database: str) -> None:
    assert district.cli("market", "log", "verify").returncode == 0
    target = log_size(district) // 2
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute("SELECT leaf FROM access_log WHERE idx = %s", (target,)).fetchone()
        assert row is not None
        original = bytes(row[0])
        forged = original.replace(b'"t-042"', b'"t-043"').replace(b'"officer"', b'"offic3r"')
        assert forged != original
        conn.execute("UPDATE access_log SET leaf = %s WHERE idx = %s", (forged, target))
        try:
            done = district.cli("market", "log", "verify", "--json")
            assert done.returncode == ExitCode.VERIFICATION, done.stderr[-1500:]
            report = json.loads(done.stdout)
            assert report["first_bad_index"] == target
            assert not report["ok"]
        finally:
            conn.execute("UPDATE access_log SET leaf = %s WHERE idx = %s", (original, target))
    assert district.cli("market", "log", "verify").returncode == 0


def test_two_replicas_scanning_at_once_expire_and_purge_each_record_once(
    district: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both replicas run the lifecycle scan (at start, then every interval) on one database,
    with a pinned clock three years on: the second reads what is due at the moment the first
    does, before the first changed it. Each record is still expired once (one `expire` feed
    event) and purged once (one `purge` access-log entry).

    Before, the second replica changed the state again: a second `expire` event to every
    subscriber and a second purge entry for a record already purged."""
    district.stop("market")  # the serving replicas' own scans run on the wall clock
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)
    first = open_runtime(district.home("market"), clock=lambda: later)
    second = open_runtime(district.home("market-2"), clock=lambda: later)
    try:
        active = first.store.count_records(state="active", producer="market")
        assert active > 0
        sub = first.store.subscription("platform")
        assert sub is not None
        feed_before, log_before = sub.last_seq, first.log.backend.size()
        seen = same_moment_reads(monkeypatch, first, second)
        done = scan(first, retention_months=6)
        assert done.expired == active
        assert done.purged >= active  # expired and past the retention: purged in the pass
        assert len(seen["expiry"]) == active
        again = scan(second, retention_months=6)
        assert (again.expired, again.purged) == (0, 0)
        events = first.store.events_after("platform", feed_before, limit=10_000)
        expires = [e.record_key for e in events if e.kind == "expire"]
        assert len(expires) == len(set(expires)) == active
        entries = list(accesslog.iter_entries(first.log.backend, start=log_before))
        purges = [e.request_id for _i, _leaf, e in entries if e.kind == "purge"]
        assert len(purges) == len(set(purges)) == done.purged
        assert first.store.count_records(state="active", producer="market") == 0
    finally:
        monkeypatch.undo()
        second.close()
        first.close()
    assert district.cli("market", "log", "verify").returncode == 0


def same_moment_reads(
    monkeypatch: pytest.MonkeyPatch, first: NodeRuntime, second: NodeRuntime
) -> dict[str, list[StoredRecord]]:
    """Make `second`'s next scan find due exactly what `first`'s scan found (as if both read
    at the same moment), once; returns those reads."""
    seen: dict[str, list[StoredRecord]] = {"expiry": [], "purge": []}
    real_expiry, real_purge = first.store.records_due_for_expiry, ls.records_due_for_purge

    def first_expiry(
        today: dt.date, *, limit: int = 1000, exclude: Collection[str] = ()
    ) -> list[StoredRecord]:
        batch = real_expiry(today, limit=limit, exclude=exclude)
        seen["expiry"] += batch
        return batch

    def second_expiry(
        today: dt.date, *, limit: int = 1000, exclude: Collection[str] = ()
    ) -> list[StoredRecord]:
        batch, seen["expiry"] = seen["expiry"], []
        return batch

    def due_for_purge(
        store: Store, before: dt.date, *, limit: int, exclude: Collection[str] = ()
    ) -> list[StoredRecord]:
        if store is second.store:
            batch, seen["purge"] = seen["purge"], []
            return batch
        batch = real_purge(store, before, limit=limit, exclude=exclude)
        seen["purge"] += batch
        return batch

    monkeypatch.setattr(first.store, "records_due_for_expiry", first_expiry)
    monkeypatch.setattr(second.store, "records_due_for_expiry", second_expiry)
    monkeypatch.setattr(ls, "records_due_for_purge", due_for_purge)
    return seen
