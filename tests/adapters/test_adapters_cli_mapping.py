"""`credex mapping check`: exit 0 for a sound mapping with a dry-run summary, 2 when invalid."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from node.cli import main


def _credex(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["credex", *args])
    try:
        main()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def test_sound_mapping_dry_run_in_json(
    penalty_mapping: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _credex(monkeypatch, "mapping", "check", str(penalty_mapping), "--sample", "5", "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["ok"] is True
    assert out["dry_run"]["read"] == 5
    assert out["dry_run"]["accepted"] + out["dry_run"]["rejected"] == 5
    reasons = {(r["field"], r["code"]) for r in out["dry_run"]["top_reasons"]}
    assert ("decision_date", "bad_date") in reasons


def test_human_output_shows_the_summary_table_and_writes_rejects(
    penalty_mapping: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    report = tmp_path / "rejects.jsonl"
    code = _credex(monkeypatch, "mapping", "check", str(penalty_mapping), "--rejects", str(report))
    out = capsys.readouterr().out
    assert code == 0
    assert "read" in out
    assert "rejected" in out
    assert "bad_date" in out
    assert "王某某" not in out  # no cell values on screen
    assert len(report.read_text("utf-8").splitlines()) == 4


def test_invalid_mapping_exits_2_with_problems(
    penalty_mapping: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = penalty_mapping.read_text("utf-8").replace("remarks = ", "religion = ")
    penalty_mapping.write_text(text, encoding="utf-8")
    code = _credex(monkeypatch, "mapping", "check", str(penalty_mapping), "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert out["ok"] is False
    assert {p["code"] for p in out["problems"]} >= {"prohibited", "unknown_field"}


def test_missing_column_exits_2(
    penalty_mapping: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = penalty_mapping.read_text("utf-8").replace('"违法事实"', '"事实"')
    penalty_mapping.write_text(text, encoding="utf-8")
    assert _credex(monkeypatch, "mapping", "check", str(penalty_mapping)) == 2
    assert "unknown_column" in capsys.readouterr().out


def test_jsonl_key_no_object_holds_exits_2(
    penalty_mapping: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kit: Any,
) -> None:
    text = penalty_mapping.read_text("utf-8")
    text = text.replace('kind = "csv"\npath = "penalties.csv"', 'kind = "jsonl"\npath = "p.jsonl"')
    penalty_mapping.write_text(text.replace('"违法事实"', '"事实"'), encoding="utf-8")
    line = json.dumps(kit.row(1), ensure_ascii=False)
    (penalty_mapping.parent / "p.jsonl").write_text(line + "\n", encoding="utf-8")
    assert _credex(monkeypatch, "mapping", "check", str(penalty_mapping), "--json") == 2
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [(p["key"], p["code"]) for p in problems if p["severity"] == "error"] == [
        ("fields.violation_facts", "unknown_column")
    ]


@pytest.mark.parametrize("where", ["a-directory.csv", "a-file/rejects.csv"])
def test_unwritable_reject_report_exits_2_naming_the_path(
    penalty_mapping: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: str,
) -> None:
    (tmp_path / "a-directory.csv").mkdir()
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    report = tmp_path / where
    code = _credex(monkeypatch, "mapping", "check", str(penalty_mapping), "--rejects", str(report))
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot write the reject report" in err
    assert "Traceback" not in err


def test_broken_mapping_file_exits_2_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("item = \n", encoding="utf-8")
    assert _credex(monkeypatch, "mapping", "check", str(path)) == 2
    err = capsys.readouterr().err
    assert "not valid TOML" in err
    assert "Traceback" not in err


def test_wrong_encoding_exits_2_naming_row_and_offset(
    penalty_mapping: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = penalty_mapping.read_text("utf-8").replace(
        'kind = "csv"', 'kind = "csv"\nencoding = "utf-8"'
    )
    penalty_mapping.write_text(text, encoding="utf-8")
    assert _credex(monkeypatch, "mapping", "check", str(penalty_mapping)) == 2
    err = capsys.readouterr().err
    assert "byte offset" in err


def test_the_dry_run_judges_future_dates_by_the_china_day(
    penalty_mapping: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the dry run validates as ingest will: on today's date in China Standard Time (UTC+8),
    # not on the machine's local date; at 23:00 UTC on 2019-12-31 it is 2020-01-01 in Zibo,
    # and every decision of the sample is later still
    monkeypatch.setattr(
        "node.cli.common._utcnow", lambda: dt.datetime(2019, 12, 31, 23, 0, tzinfo=dt.UTC)
    )
    code = _credex(monkeypatch, "mapping", "check", str(penalty_mapping), "--sample", "5", "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    reasons = {(r["field"], r["code"]) for r in out["dry_run"]["top_reasons"]}
    assert ("decision_date", "future_date") in reasons
