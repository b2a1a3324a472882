"""`credex store verify` (docs/decisions/0018) through the real script: every record row
checked against its integrity tag, the bad ones named by row id, exit 3 on tampering. The
node (two ingested penalties of market) is test_lifecycle_cli.py's."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from node.runtime import open_runtime
from tests.node.cli_support import credex
from tests.node.test_lifecycle_cli import home, invoke, keys_in

__all__ = ["home"]  # the fixture, imported for pytest


def _row_ids(node: Path) -> dict[str, str]:
    rt = open_runtime(node)
    try:
        return {key: rt.store.record_versions(rt.node_id, key)[-1].row_id for key in keys_in(node)}
    finally:
        rt.close()


def _sql(node: Path, statement: str, *params: str) -> None:
    """An insider's edit of market's database: no keys."""
    db = sqlite3.connect(node / "data" / "credex.db")
    try:
        db.execute(statement, params)
        db.commit()
    finally:
        db.close()


def test_a_store_kept_by_credex_verifies_through_a_whole_lifecycle(
    home: Path, tmp_path: Path
) -> None:
    first, second = keys_in(home)
    invoke(home, "object", first, "--reason", "dispute")
    invoke(home, "correct", first, "--set", "fine_wan_yuan=0.8", "--reason", "更正")
    commitment = tmp_path / "commitment.pdf"
    commitment.write_bytes(b"%PDF credit commitment")
    invoke(home, "repair", second, "--obligations-fulfilled", "--commitment-file", str(commitment))
    invoke(home, "scan")
    done = credex("store", "verify", "--home", str(home), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {
        "ok": True,
        "checked": 3,
        "bad_rows": [],
        "more_bad_rows": False,
        "adoption": "adopted",
    }
    plain = credex("store", "verify", "--home", str(home))
    assert plain.returncode == 0
    assert "record rows OK: 3 checked" in plain.stdout


def test_an_edited_row_is_named_and_exits_3(home: Path) -> None:
    first, second = keys_in(home)
    rows = _row_ids(home)
    invoke(home, "object", first, "--reason", "dispute")
    _sql(home, "UPDATE records SET objection = 0 WHERE row_id = ?", rows[first])
    _sql(home, "UPDATE records SET tag = NULL WHERE row_id = ?", rows[second])
    result = credex("store", "verify", "--home", str(home), "--json")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert sorted(report["bad_rows"]) == sorted(rows.values())
    plain = credex("store", "verify", "--home", str(home))
    assert plain.returncode == 3
    for row_id in rows.values():
        assert f"record row {row_id} fails its integrity tag" in plain.stdout
    assert "91370303" not in plain.stdout + plain.stderr  # no credit code, no name
    assert "某某" not in plain.stdout + plain.stderr


def test_a_deleted_marker_is_reported(home: Path) -> None:
    _sql(home, "DELETE FROM maintenance WHERE task = 'record_tags'")
    result = credex("store", "verify", "--home", str(home), "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["adoption"] == "missing"
