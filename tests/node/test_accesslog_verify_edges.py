"""`credex log verify` and `credex log checkpoint` on a node's real (SQL) log: a witness row is
only a claim, and a row stored beyond the committed size is tampering."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keys
from node.accesslog import verify_log
from node.cli import app
from node.cli.init_cmds import init_node
from node.cluster import LocalCluster
from node.errors import ExitCode, InputError, LogUnavailable, TamperDetected
from node.runtime import open_runtime
from node.store import SqlLogBackend
from tests.node.accesslog_support import query_entry

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> LocalCluster:
    """market (20 entries, a checkpoint every 5) and the platform, whose bundle both hold;
    no server runs."""
    c = LocalCluster(
        tmp_path_factory.mktemp("cluster"),
        nodes=[("market", "department"), ("platform", "platform")],
    )
    c.init()
    rt = open_runtime(c.home("market"))
    try:
        for i in range(20):
            rt.log.append_sync(query_entry(i))
            if i % 5 == 4:
                rt.log.checkpoint()
    finally:
        rt.close()
    return c


def _db(cluster: LocalCluster) -> Path:
    return cluster.home("market") / "data" / "credex.db"


def _cli(cluster: LocalCluster, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["log", *args, "--home", str(cluster.home("market")), "--json"])
    return result.exit_code, json.loads(result.stdout)


def _store_witness_rows(cluster: LocalCluster, rows: list[tuple[str, str]]) -> None:
    rt = open_runtime(cluster.home("market"))
    try:
        size, _note = rt.log.backend.latest_checkpoint() or (0, "")
        for name, note in rows:
            rt.log.backend.save_witness(size, name, note)
    finally:
        rt.close()


@pytest.fixture
def witness_rows(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """market's latest checkpoint note and a real platform cosignature of it; the witness rows
    a test stores are removed afterwards."""
    rt = open_runtime(cluster.home("market"))
    try:
        latest = rt.log.backend.latest_checkpoint()
        assert latest is not None
        note = latest[1]
    finally:
        rt.close()
    platform = keys.load_key_dir(cluster.home("platform") / "keys").signing
    yield note, keys.cosign_note(note, name="platform", signer=platform)
    with sqlite3.connect(_db(cluster)) as db:
        db.execute("DELETE FROM witness")


def test_checkpoint_lists_only_witnesses_whose_cosignature_verifies(
    cluster: LocalCluster, witness_rows: tuple[str, str]
) -> None:
    own, cosigned = witness_rows
    _store_witness_rows(cluster, [("platform", "garbage"), ("market", own)])
    code, shown = _cli(cluster, "checkpoint")
    assert code == 0
    assert shown["witnessed_by"] == []
    _store_witness_rows(cluster, [("platform", cosigned)])
    assert _cli(cluster, "checkpoint")[1]["witnessed_by"] == ["platform"]


def test_verify_refuses_the_logs_own_checkpoint_as_a_witness_row(
    cluster: LocalCluster, witness_rows: tuple[str, str]
) -> None:
    own, cosigned = witness_rows
    _store_witness_rows(cluster, [("platform", cosigned)])
    code, report = _cli(cluster, "verify")
    assert (code, report["witnesses_checked"]) == (0, 1)
    _store_witness_rows(cluster, [("market", own)])
    code, report = _cli(cluster, "verify")
    assert code == ExitCode.VERIFICATION
    assert report["witnesses_checked"] == 1
    assert [(p["code"], p["message"]) for p in report["problems"]] == [
        ("witness_signature", "witness market at size 20: the log's own key is no witness")
    ]


def test_a_row_beyond_the_committed_size_is_tampering(cluster: LocalCluster) -> None:
    # a copy of entry 19 stored as entry 20 while the log's committed size stays 20
    with sqlite3.connect(_db(cluster)) as db:
        db.execute(
            "INSERT INTO access_log (idx, leaf, leaf_hash, created_at) "
            "SELECT 20, leaf, leaf_hash, created_at FROM access_log WHERE idx = 19"
        )
    try:
        rt = open_runtime(cluster.home("market"))
        try:
            report = verify_log(SqlLogBackend(rt.store), rt.log_verifiers(), log_name="market")
            with pytest.raises(LogUnavailable):  # why it matters: the node can no longer log
                rt.log.append_sync(query_entry(20))
        finally:
            rt.close()
        assert report.size == 20
        assert [(p.code, p.index) for p in report.problems] == [("extra_rows", 20)]
        with pytest.raises(TamperDetected, match="first bad entry 20"):
            report.raise_for_problems()
        code, shown = _cli(cluster, "verify")
        assert code == ExitCode.VERIFICATION
        assert (shown["first_bad_index"], shown["problems"][0]["code"]) == (20, "extra_rows")
    finally:
        with sqlite3.connect(_db(cluster)) as db:
            db.execute("DELETE FROM access_log WHERE idx >= 20")
    assert _cli(cluster, "verify")[0] == 0


def test_an_officer_name_is_refused_by_the_log_tools_without_echoing_it(
    cluster: LocalCluster,
) -> None:
    size = _size(cluster)
    result = runner.invoke(
        app, ["log", "report", "--officer", "张三", "--home", str(cluster.home("market"))]
    )
    # main() turns InputError into exit 2 with its message (tests/node/test_cli_robustness.py)
    assert isinstance(result.exception, InputError), result.output
    assert "--officer" in str(result.exception)
    assert "张三" not in str(result.exception)
    assert _size(cluster) == size  # nothing was logged for it


def _size(cluster: LocalCluster) -> int:
    rt = cluster.runtime("market")
    try:
        return rt.log.backend.size()
    finally:
        rt.close()


def test_verify_without_an_anchor_says_what_it_cannot_exclude(tmp_path: Path) -> None:
    init_node(tmp_path / "n", name="market", role="department")
    rt = open_runtime(tmp_path / "n")
    try:
        for i in range(3):
            rt.log.append_sync(query_entry(i))
        rt.log.checkpoint()
    finally:
        rt.close()
    result = runner.invoke(app, ["log", "verify", "--home", str(tmp_path / "n")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "access log OK: 3 entries" in text
    assert "no --anchor given: a cut at a checkpoint" in text
