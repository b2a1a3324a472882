"""`credex catalog show|validate` through Typer's CliRunner and the real console script."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli import app
from tests.catalog.catalog_testdata import PERSON_ID, penalty_org

runner = CliRunner()


def test_show_lists_items() -> None:
    result = runner.invoke(app, ["catalog", "show", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["version"] == "2026.1"
    assert "admin_penalty" in {i["id"] for i in data["items"]}
    table = runner.invoke(app, ["catalog", "show"])
    assert table.exit_code == 0
    assert "admin_penalty" in table.stdout


def test_show_one_item() -> None:
    result = runner.invoke(app, ["catalog", "show", "admin_penalty", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["share_type"] == "unconditional"
    fine = next(f for f in data["fields"] if f["id"] == "fine_wan_yuan")
    assert fine["unit"] == "万元"
    human = runner.invoke(app, ["catalog", "show", "utility_account"])
    assert human.exit_code == 0
    assert "account_no" in human.stdout


def test_show_unknown_item_exits_2() -> None:
    result = runner.invoke(app, ["catalog", "show", "nope"])
    assert result.exit_code == 2
    assert "nope" in result.stderr


def _write(path: Path, rows: list[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_validate_good_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.jsonl", [penalty_org(), penalty_org(decision_no="2号")])
    result = runner.invoke(
        app, ["catalog", "validate", str(path), "--item", "admin_penalty", "--today", "2026-11-25"]
    )
    assert result.exit_code == 0, result.output
    assert "2 checked, 2 valid, 0 invalid" in result.stdout


def test_validate_reports_line_and_field(tmp_path: Path) -> None:
    bad = dict(penalty_org(decision_date="2024-13-01"), fine_wan_yuan=5)  # a JSON number is fine
    person = dict(
        penalty_org(), subject_category="自然人", id_type="身份证", id_number=PERSON_ID[:-1] + "0"
    )
    path = _write(tmp_path / "bad.jsonl", [penalty_org(), bad, "{not json", [1, 2], person])
    args = ["catalog", "validate", str(path), "--item", "admin_penalty", "--today", "2026-11-25"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert (data["checked"], data["valid"], data["invalid"]) == (5, 1, 4)
    found = {(e["line"], e["field_id"], e["code"]) for e in data["errors"]}
    assert (2, "decision_date", "bad_date") in found
    assert (3, "", "bad_json") in found
    assert (4, "", "bad_json") in found
    assert (5, "id_number", "bad_identifier") in found
    assert PERSON_ID[:-1] not in result.stdout  # masked
    human = runner.invoke(app, args)
    assert human.exit_code == 2
    shown = " ".join(human.stdout.split())
    hidden = "处罚决定日期: 日期无效 （值已隐藏 value hidden）"
    assert f"line 2, decision_date: [bad_date] {hidden}" in shown
    assert "2024-13-01" not in human.stdout  # no cell value in a message, public or not


def test_validate_input_errors(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["catalog", "validate", str(tmp_path / "x.jsonl"), "--item", "admin_penalty"]
    )
    assert missing.exit_code == 2
    path = _write(tmp_path / "ok.jsonl", [penalty_org()])
    unknown = runner.invoke(app, ["catalog", "validate", str(path), "--item", "nope"])
    assert unknown.exit_code == 2
    bad_day = runner.invoke(
        app, ["catalog", "validate", str(path), "--item", "admin_penalty", "--today", "x"]
    )
    assert bad_day.exit_code == 2
    broken = tmp_path / "broken.toml"
    broken.write_text("version = 1\n", encoding="utf-8")
    bad_catalog = runner.invoke(app, ["catalog", "show", "--catalog", str(broken)])
    assert bad_catalog.exit_code == 2
    assert "version" in bad_catalog.stderr


def test_console_script_exit_codes(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [penalty_org(uscc="91350100M000100Y4Z")])
    code = "from node.cli import main; main()"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "catalog",
            "validate",
            str(path),
            "--item",
            "admin_penalty",
            "--today",
            "2026-11-25",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "bad_identifier" in run.stdout
    assert "Traceback" not in run.stderr


def test_validate_judges_today_in_china_standard_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/lifecycle.md: all days are China Standard Time (UTC+8), as ingest judges them. A
    # decision of 2031-03-05 is in the future until 16:00 UTC on 2031-03-04 (00:00 in Zibo) and
    # lawful from then on, whatever the machine's own time zone says.
    row = penalty_org(decision_date="2031-03-05", penalty_valid_until="2032-03-05")
    path = _write(tmp_path / "day.jsonl", [row])
    args = ["catalog", "validate", str(path), "--item", "admin_penalty", "--json"]
    before = datetime.datetime(2031, 3, 4, 15, 59, 59, tzinfo=datetime.UTC)
    monkeypatch.setattr("node.cli.common._utcnow", lambda: before)
    early = runner.invoke(app, args)
    assert early.exit_code == 2, early.output
    assert "future_date" in early.stdout
    midnight = datetime.datetime(2031, 3, 4, 16, 0, tzinfo=datetime.UTC)
    monkeypatch.setattr("node.cli.common._utcnow", lambda: midnight)
    on_time = runner.invoke(app, args)
    assert on_time.exit_code == 0, on_time.output
