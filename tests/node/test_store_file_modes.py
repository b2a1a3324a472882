"""A database SQLite could open only read-only (the file, its -wal or -shm, or their
directory not writable by the node's user) is refused naming each file and its mode, and
`doctor` fails it too instead of reporting "database ok"."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.feed_cmds import doctor_checks
from node.cli.init_cmds import init_node
from node.runtime import open_runtime
from node.store import StoreUnavailableError

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def market(tmp_path: Path) -> Path:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    return home


def _database_check(home: Path) -> dict[str, object]:
    return next(c for c in doctor_checks(home, peers=False) if c["check"] == "database")


def test_a_read_only_shm_is_named_with_its_mode(
    market: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root every file is writable, so the refusal of os.access is simulated.
    shm = market / "data" / "credex.db-shm"
    shm.touch()
    shm.chmod(0o400)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == shm else real(p, m))
    with pytest.raises(StoreUnavailableError) as caught:
        open_runtime(market)
    assert f"{shm} (mode 0400)" in str(caught.value)
    check = _database_check(market)
    assert check["ok"] is False
    assert f"{shm} (mode 0400)" in str(check["detail"])


def test_doctor_says_the_database_is_writable(market: Path) -> None:
    check = _database_check(market)
    assert check["ok"] is True
    assert "writable" in str(check["detail"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a 0400 file")
def test_really_read_only_files_fail_the_command_and_doctor(market: Path) -> None:
    shm = market / "data" / "credex.db-shm"
    shm.touch()
    shm.chmod(0o400)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDEX_")}
    cli = [sys.executable, "-c", "from node.cli import main; main()"]
    done = subprocess.run(
        [*cli, "status", "--home", str(market)],
        capture_output=True, text=True, env={**env, "COLUMNS": "300"}, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"{shm} (mode 0400)" in " ".join(done.stderr.split())
    assert _database_check(market)["ok"] is False
