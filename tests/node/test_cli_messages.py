"""Messages that name what is wrong and where: a database that is not SQLite, a root key file
that cannot be read, a file that is not a trust bundle (bad input, exit 2, not tampering), a
backup opened with the wrong passphrase, a backup path under a file."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

import keys
from node.backup import create_backup, read_backup, restore_backup
from node.cli.feed_cmds import doctor_checks
from node.cli.init_cmds import init_node
from node.errors import ExitCode, InputError, exit_code_for
from node.runtime import open_runtime
from node.store import StoreUnavailableError
from tests.node.cli_support import credex

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
CHEAP = keys.KdfParams(opslimit=1, memlimit=8192)
PASS = b"district backup pass"


@pytest.fixture
def market(tmp_path: Path) -> Path:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    return home


def test_a_database_that_is_not_sqlite_is_named(market: Path) -> None:
    database = market / "data" / "credex.db"
    for companion in database.parent.glob("credex.db-*"):
        companion.unlink()
    database.write_bytes(os.urandom(4096))
    with pytest.raises(StoreUnavailableError, match="is not a SQLite database") as caught:
        open_runtime(market)
    assert str(database) in str(caught.value)
    check = next(c for c in doctor_checks(market, peers=False) if c["check"] == "database")
    assert check["ok"] is False
    assert "is not a SQLite database" in str(check["detail"])


def test_bundle_pin_of_a_missing_file_says_it_cannot_read_it(market: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "root.pub"
    done = credex("bundle", "pin", str(missing), "--home", str(market))
    assert done.returncode == ExitCode.INPUT
    message = " ".join(done.stderr.split())
    assert f"{missing}: cannot read" in message
    assert "base64" not in message


@pytest.mark.parametrize(
    "content",
    [b"hello\n", json.dumps({"payloadType": "application/x", "payload": ""}).encode()],
    ids=["text", "json-not-dsse"],
)
def test_bundle_install_of_a_non_bundle_is_bad_input_naming_the_file(
    market: Path, tmp_path: Path, content: bytes
) -> None:
    wrong = tmp_path / "not-a-bundle.json"
    wrong.write_bytes(content)
    done = credex("bundle", "install", str(wrong), "--home", str(market))
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert f"{wrong}: not a trust bundle" in " ".join(done.stderr.split())


def test_bundle_install_of_another_signed_document_is_bad_input(
    market: Path, tmp_path: Path
) -> None:
    signer = keys.load_key_dir(market / "keys").signing
    envelope = keys.sign_envelope("application/vnd.other+json", b"{}", signer)
    other = tmp_path / "other.json"
    other.write_text(envelope.to_json(), encoding="utf-8")
    done = credex("bundle", "install", str(other), "--home", str(market))
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert "not a trust bundle" in done.stderr


def test_a_wrong_backup_passphrase_names_the_file(market: Path, tmp_path: Path) -> None:
    backup = tmp_path / "b.credex"
    create_backup(market, backup, passphrase=PASS, now=NOW, kdf=CHEAP)
    with pytest.raises(keys.VerificationError) as caught:
        read_backup(backup, passphrase=b"not the passphrase")
    assert str(backup) in str(caught.value)
    assert exit_code_for(caught.value) == ExitCode.VERIFICATION


def test_a_backup_path_under_a_file_says_so(market: Path, tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="is not a directory") as caught:
        create_backup(market, plain / "b.credex", passphrase=PASS, now=NOW, kdf=CHEAP)
    assert str(plain) in str(caught.value)
    backup = tmp_path / "b.credex"
    create_backup(market, backup, passphrase=PASS, now=NOW, kdf=CHEAP)
    with pytest.raises(InputError, match="is not a directory"):
        restore_backup(backup, plain / "r", passphrase=PASS)
