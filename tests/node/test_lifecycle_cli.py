"""`credex lifecycle ...` through Typer's CliRunner and, for exit codes, the real script."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from node.cli import app
from node.cli.common import console
from node.cli.init_cmds import init_node
from node.cli.lifecycle_cmds import _propagation_table
from node.config import load_config
from node.demo_data import numbered_uscc
from node.errors import InputError
from node.ingest import run_ingest
from node.runtime import open_runtime
from tests.node.ingest_support import penalty_mapping

runner = CliRunner()
NOW = dt.datetime(2026, 5, 20, 2, 0, tzinfo=dt.UTC)


MAPPING = penalty_mapping(
    "p.csv",
    decision_no='"no"',
    fine_wan_yuan='{ const = "1.5" }',
    decision_date='{ const = "2026-05-11" }',
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    node = tmp_path / "market"
    init_node(node, name="market", role="department", now=NOW)
    with (tmp_path / "p.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "uscc", "no"])
        for i in (1, 2):
            writer.writerow(
                [f"某某商贸有限公司{i}", numbered_uscc("91370303", 30_000 + i), f"罚〔2026〕{i}号"]
            )
    (tmp_path / "p.toml").write_text(MAPPING, encoding="utf-8")
    run_ingest(load_config(node), tmp_path / "p.toml", today=NOW.date(), clock=lambda: NOW)
    rt = open_runtime(node)
    try:
        rt.store.ensure_subscription("platform", ["admin_penalty"], now=NOW)
    finally:
        rt.close()
    return node


def keys_in(home: Path) -> list[str]:
    rt = open_runtime(home)
    try:
        return sorted(
            {e.record_key for e in rt.store.events_after("platform", 0)},
        )
    finally:
        rt.close()


def invoke(home: Path, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["lifecycle", *args, "--home", str(home), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_object_status_resolve(home: Path) -> None:
    key = keys_in(home)[0]
    out = invoke(home, "object", key, "--reason", "dispute", "--needs-other-unit")
    assert out["op"] == "object"
    assert out["state"] == "under_review"
    assert "7 working days" in str(out["due_rule"])
    status = invoke(home, "status")
    assert [t["kind"] for t in status["open_tasks"]] == ["objection"]
    human = runner.invoke(app, ["lifecycle", "status", "--home", str(home)])
    assert human.exit_code == 0
    assert "objection" in human.stdout
    out = invoke(home, "resolve", str(out["task_id"]), "--outcome", "confirm")
    assert out["outcome"] == "confirm"
    assert invoke(home, "status")["open_tasks"] == []


def test_correct_then_repair_then_status_report(home: Path, tmp_path: Path) -> None:
    first, second = keys_in(home)
    out = invoke(home, "correct", first, "--set", "fine_wan_yuan=0.8", "--reason", "更正")
    assert (out["version"], out["superseded_version"]) == (2, 1)
    commitment = tmp_path / "commitment.pdf"
    commitment.write_bytes(b"%PDF credit commitment")
    out = invoke(
        home, "repair", second, "--obligations-fulfilled", "--commitment-file", str(commitment)
    )
    assert out["state"] == "withdrawn"
    assert [p["subscriber"] for p in out["propagation"]] == ["platform"]
    status = invoke(home, "status", "--record", second)
    record = status["record"]
    assert isinstance(record, dict)
    assert record["versions"] == [{"version": 1, "state": "withdrawn", "objection": False}]
    assert record["propagation"]["complete"] is False
    scan = invoke(home, "scan")
    assert scan["purged"] == 0


def test_bad_input_is_refused_before_anything_changes(home: Path) -> None:
    key = keys_in(home)[0]
    result = runner.invoke(app, ["lifecycle", "correct", key, "--set", "oops", "--home", str(home)])
    assert isinstance(result.exception, InputError)
    result = runner.invoke(
        app, ["lifecycle", "object", "abc", "--reason", "x", "--home", str(home)]
    )
    assert isinstance(result.exception, InputError)
    result = runner.invoke(
        app, ["lifecycle", "revoke", key, "--reason", "x", "--known-on", "2026-13-01",
              "--home", str(home)],
    )  # fmt: skip
    assert isinstance(result.exception, InputError)


def test_inadmissible_repair_exits_1_listing_every_failure(home: Path) -> None:
    key = keys_in(home)[0]
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "lifecycle", "repair", key, "--home", str(home)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "repair_not_admissible" in done.stderr
    assert "obligations_unfulfilled" in done.stderr
    assert "no_commitment" in done.stderr
    assert "Traceback" not in done.stderr
    assert "91370303" not in done.stderr


def test_the_propagation_table_shows_no_ack_time_for_an_unacknowledged_event() -> None:
    """The time shown was the subscriber's last ack of anything, beside "no"."""
    rows = [
        {"subscriber": "platform", "event_seq": 9, "acknowledged": False,
         "acked_at": "2026-11-20T01:00:00+00:00", "pending_seconds": 30},
        {"subscriber": "health", "event_seq": 4, "acknowledged": True,
         "acked_at": "2026-11-21T02:00:00+00:00", "pending_seconds": None},
    ]  # fmt: skip
    with console.capture() as shown:
        _propagation_table(rows)
    text = shown.get()
    assert "2026-11-20" not in text
    assert "2026-11-21" in text


def test_revoke_withdraws_a_record_whose_window_ended(home: Path) -> None:
    # Shandong Art. 40: `credex lifecycle revoke` takes an expired record too (still held).
    key = keys_in(home)[0]
    rt = open_runtime(home)
    try:
        (version,) = rt.store.record_versions("market", key)
        rt.store.set_record_state(version.row_id, "expired", event_kind="expire", now=NOW)
    finally:
        rt.close()
    out = invoke(home, "revoke", key, "--reason", "复议决定书〔2026〕9号")
    assert (out["op"], out["state"]) == ("revoke", "withdrawn")
    status = invoke(home, "status", "--record", key)
    record = status["record"]
    assert isinstance(record, dict)
    assert record["versions"] == [{"version": 1, "state": "withdrawn", "objection": False}]
    again = runner.invoke(app, ["lifecycle", "revoke", key, "--reason", "x", "--home", str(home)])
    assert isinstance(again.exception, InputError)
    assert "only an active or expired record can be revoked" in str(again.exception)
