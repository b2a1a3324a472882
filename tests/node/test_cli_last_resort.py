"""`credex`'s last line of defence: whatever a command did not turn into a credex error still
ends as one line and exit 1, never a traceback, and never with the exception's own text when
that text could quote the data (personal data included) it failed on."""

from __future__ import annotations

import errno
import json
import sys

import pytest

import node.cli as cli
from node.cli.log_cmds import _parse_time
from node.errors import InputError


def _run_main_raising(
    error: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    def failing_app() -> None:
        raise error

    monkeypatch.setattr(cli, "app", failing_app)
    monkeypatch.delenv("CREDEX_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    code = stopped.value.code
    assert isinstance(code, int)
    return code, " ".join(capsys.readouterr().err.split())


def test_an_unanticipated_os_error_names_its_reason_and_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = PermissionError(errno.EACCES, "Permission denied", "/srv/credex/keys/signing.key")
    code, said = _run_main_raising(error, monkeypatch, capsys)
    assert code == 1
    assert said == "error: Permission denied: /srv/credex/keys/signing.key"


def test_an_unexpected_error_shows_its_type_and_place_but_not_its_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = UnicodeEncodeError("utf-8", "张三 11010519491231002X \ud800", 24, 25, "surrogates")
    code, said = _run_main_raising(error, monkeypatch, capsys)
    assert code == 1
    assert "unexpected UnicodeEncodeError at test_cli_last_resort.py:" in said
    assert "CREDEX_DEBUG=1" in said
    assert "11010519491231002X" not in said
    assert "张三" not in said
    assert "Traceback" not in said


def test_credex_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_app() -> None:
        raise LookupError("for the developer")

    monkeypatch.setattr(cli, "app", failing_app)
    monkeypatch.setenv("CREDEX_DEBUG", "1")
    with pytest.raises(LookupError, match="for the developer"):
        cli.main()


def test_an_interrupt_exits_130_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_main_raising(KeyboardInterrupt(), monkeypatch, capsys) == (
        130,
        "error: interrupted",
    )


def test_with_json_an_error_is_also_a_json_document_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["credex", "status", "--json", "--home", "/nowhere"])

    def failing_app() -> None:
        raise InputError("--home /nowhere: no credex node here")

    monkeypatch.setattr(cli, "app", failing_app)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    out = capsys.readouterr()
    assert stopped.value.code == 2
    assert json.loads(out.out) == {"error": "--home /nowhere: no credex node here", "exit": 2}
    assert "no credex node here" in out.err


@pytest.mark.parametrize("text", ["0001-01-01", "9999-12-31T23:00:00-05:00"])
def test_log_search_times_out_of_range_are_bad_input(text: str) -> None:
    with pytest.raises(InputError, match="out of the range"):
        _parse_time(text, "--since")


def test_a_search_time_without_a_zone_is_china_time() -> None:
    moment = _parse_time("2026-11-26T08:00:00", "--until")
    assert moment is not None
    assert moment.isoformat() == "2026-11-26T00:00:00+00:00"
