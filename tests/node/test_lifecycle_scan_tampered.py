"""A lifecycle scan that meets a row failing its integrity tag (decision 0018) leaves that row
alone, names it, and still expires and purges every other record that is due: one edited row
must not keep the rest of the store disclosed past its legal period."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from node.cli import app
from node.cli.init_cmds import init_node
from node.runtime import NodeRuntime, open_runtime
from node.scheduler import scan
from node.store.store import RECORDS
from tests.node.test_lifecycle_retention import put

INIT = dt.datetime(2026, 5, 20, 2, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 26, 2, 0, tzinfo=dt.UTC)  # 2026-11-26 10:00 in China


def _runtime(home: Path) -> NodeRuntime:
    return open_runtime(home, clock=lambda: NOW)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    node = tmp_path / "market"
    init_node(node, name="market", role="department", now=INIT)
    return node


@pytest.fixture
def rt(home: Path) -> Iterator[NodeRuntime]:
    runtime = _runtime(home)
    try:
        yield runtime
    finally:
        runtime.close()


def _edit(rt: NodeRuntime, row_id: str) -> None:
    """An insider's UPDATE, without the storage key."""
    with rt.store.write("test: edit a row with SQL") as conn:
        conn.execute(update(RECORDS).where(RECORDS.c.row_id == row_id).values(disclosure_rule="x"))


def _raw_state(rt: NodeRuntime, row_id: str) -> str:
    with rt.store.read("test: raw state") as conn:
        value = conn.execute(select(RECORDS.c.state).where(RECORDS.c.row_id == row_id)).scalar()
    assert isinstance(value, str)
    return value


def _four(rt: NodeRuntime) -> dict[str, str]:
    """Two records due for expiry and two expired ones due for purge; one of each edited."""
    rows = {
        name: put(rt, key=name * 64, severity="general", decided_on=decided, max_end=end)
        for name, decided, end in (
            ("a", dt.date(2025, 1, 2), dt.date(2026, 1, 2)),  # due for expiry
            ("b", dt.date(2025, 1, 2), dt.date(2026, 1, 2)),  # due for expiry
            ("c", dt.date(2018, 1, 2), dt.date(2019, 1, 2)),  # expired, then purged
            ("d", dt.date(2018, 1, 2), dt.date(2019, 1, 2)),  # expired, then purged
        )
    }
    for name in ("c", "d"):  # already expired by an earlier scan
        rt.store.set_record_state(rows[name], "expired", event_kind="expire", now=rt.clock())
    _edit(rt, rows["a"])
    _edit(rt, rows["c"])
    return rows


def test_the_scan_skips_and_names_edited_rows_and_does_the_rest(rt: NodeRuntime) -> None:
    rows = _four(rt)
    report = scan(rt, retention_months=60)
    assert report.expired == 1
    assert report.purged == 1
    assert report.tampered == tuple(sorted((rows["a"], rows["c"])))
    assert _raw_state(rt, rows["a"]) == "active"  # left as it is: nothing acts on it
    assert _raw_state(rt, rows["b"]) == "expired"
    assert _raw_state(rt, rows["c"]) == "expired"
    assert _raw_state(rt, rows["d"]) == "purged"
    # the next pass names them again, and does nothing more
    again = scan(rt, retention_months=60)
    assert (again.expired, again.purged, again.tampered) == (0, 0, report.tampered)


def test_cli_scan_reports_edited_rows_and_exits_3(home: Path) -> None:
    runtime = _runtime(home)
    try:
        rows = _four(runtime)
    finally:
        runtime.close()
    result = CliRunner().invoke(app, ["lifecycle", "scan", "--home", str(home), "--json"])
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["expired"] == 1
    assert data["purged"] == 1
    assert data["tampered"] == sorted((rows["a"], rows["c"]))
    plain = CliRunner().invoke(app, ["lifecycle", "scan", "--home", str(home)])
    assert plain.exit_code == 3
    assert "credex store verify" in plain.output
