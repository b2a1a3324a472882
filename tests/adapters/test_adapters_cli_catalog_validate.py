"""`credex catalog validate` reads JSON Lines as the adapters do: lines end at "\\n" alone.

Kept beside the adapters tests because the line splitting follows the JSON Lines reader here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from node.cli import app
from tests.catalog.catalog_testdata import penalty_org

runner = CliRunner()
ARGS = ["--item", "admin_penalty", "--today", "2026-11-25", "--json"]


def _validate(path: Path) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["catalog", "validate", str(path), *ARGS])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def test_a_line_separator_inside_a_value_keeps_the_record_whole(tmp_path: Path) -> None:
    record = penalty_org(violation_facts="发布虚假广告\u2028第二段\u0085第三段")
    path = tmp_path / "sep.jsonl"
    lines = [json.dumps(record, ensure_ascii=False), json.dumps(penalty_org(), ensure_ascii=False)]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")  # CRLF endings too
    code, out = _validate(path)
    assert (out["checked"], out["valid"], out["invalid"]) == (2, 2, 0), out
    assert code == 0


def test_a_line_nested_too_deeply_is_a_line_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    good = json.dumps(penalty_org(), ensure_ascii=False)
    path.write_text(good + "\n" + "[" * 5000 + "]" * 5000 + "\n" + good + "\n", encoding="utf-8")
    code, out = _validate(path)
    assert code == 2
    assert (out["checked"], out["valid"], out["invalid"]) == (3, 2, 1)
    assert [(e["line"], e["code"]) for e in out["errors"]] == [(2, "bad_json")]
