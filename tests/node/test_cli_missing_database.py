"""A node whose SQLite database is gone is refused, never silently recreated empty: an empty
store would read as "no records" and an empty, valid access log. Only `credex init` and
`credex restore` create the database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from node.cli.init_cmds import init_node
from node.config import load_config
from node.runtime import open_node_store, open_runtime
from node.store import StoreUnavailableError
from tests.node.cli_support import credex

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def lost(tmp_path: Path) -> Path:
    """A department node whose data/credex.db (and its WAL companions) were deleted."""
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    for path in (home / "data").iterdir():
        path.unlink()
    return home


def test_opening_the_runtime_refuses_and_creates_nothing(lost: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist") as caught:
        open_runtime(lost)
    assert str(lost / "data" / "credex.db") in str(caught.value)
    assert "credex restore" in str(caught.value)
    assert list((lost / "data").iterdir()) == []


def test_an_existing_database_still_opens(tmp_path: Path) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    open_node_store(load_config(home)).close()


@pytest.mark.parametrize(
    "command",
    [("status",), ("log", "verify"), ("lifecycle", "scan")],
    ids=["status", "log-verify", "lifecycle-scan"],
)
def test_commands_exit_1_naming_the_file(lost: Path, command: tuple[str, ...]) -> None:
    result = credex(*command, "--home", str(lost))
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert str(lost / "data" / "credex.db") in message
    assert "restore" in message
    assert "Traceback" not in result.stderr
    assert list((lost / "data").iterdir()) == []


def test_ingest_and_backup_refuse_too(lost: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text("", encoding="utf-8")
    passphrase = tmp_path / "pass"
    passphrase.write_text("backup pass\n", encoding="utf-8")
    backup = credex(
        "backup", str(tmp_path / "b.credex"), "--passphrase-file", str(passphrase),
        "--home", str(lost),
    )  # fmt: skip
    assert backup.returncode == 1, backup.stderr
    assert "does not exist" in backup.stderr
    assert not (tmp_path / "b.credex").exists()
    ingest = credex("ingest", str(mapping), "--home", str(lost))
    assert ingest.returncode == 1, ingest.stderr
    assert "does not exist" in ingest.stderr
    assert list((lost / "data").iterdir()) == []
