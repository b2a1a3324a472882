"""Files the node cannot read or write become the package's error, naming the path and the
reason, never a traceback: an unreadable key file, a backup or restore target the user
cannot write, a full disk, an overlap that runs off the calendar.

Running as root, permissions do not stop anything, so most cases simulate the refusal with
monkeypatch; the real chmod versions run only as an ordinary user."""

from __future__ import annotations

import datetime as dt
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

import keys
from node import backup as backup_module
from node.backup import create_backup, restore_backup
from node.cli.init_cmds import init_node
from node.errors import ExitCode, InputError, NodeError, exit_code_for
from tests.node.cli_support import credex

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
CHEAP = keys.KdfParams(opslimit=1, memlimit=8192)
PASS = b"district backup pass"
AS_ROOT = os.geteuid() == 0


def _refuse(code: int) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    return refuse


@pytest.fixture
def market(tmp_path: Path) -> Path:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    return home


# -- key files ---------------------------------------------------------------------------------


def test_an_unreadable_key_file_is_named(market: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signing = market / "keys" / "signing.key"
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == signing:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(keys.KeyFileError, match="cannot read the key file") as caught:
        keys.load_key_dir(market / "keys")
    assert str(signing) in str(caught.value)
    assert exit_code_for(caught.value) == ExitCode.INPUT


@pytest.mark.skipif(AS_ROOT, reason="root reads a 0000 file")
def test_chmod_000_key_file_exits_2_naming_it(market: Path) -> None:
    signing = market / "keys" / "signing.key"
    signing.chmod(0)
    try:
        result = credex("keys", "show", "--home", str(market))
    finally:
        signing.chmod(0o600)
    assert result.returncode == 2, result.stderr
    assert str(signing) in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_a_key_directory_that_cannot_be_searched_is_named(
    market: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = market / "keys"
    real = Path.stat

    def stat(path: Path, **kwargs: Any) -> os.stat_result:
        if path == directory:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(keys.KeyFileError, match="cannot read the key directory"):
        keys.load_key_dir(directory)


def test_rotation_past_the_calendar_is_refused_before_anything_changes(market: Path) -> None:
    before = (market / "keys" / "signing.key").read_bytes()
    with pytest.raises(keys.KeysError, match="after the year 9999"):
        keys.rotate_signing_key(market / "keys", now=NOW, overlap=dt.timedelta(days=999_999_999))
    assert (market / "keys" / "signing.key").read_bytes() == before
    assert not (market / "keys" / "signing-previous.json").exists()


def test_cli_caps_the_overlap(market: Path) -> None:
    result = credex("keys", "rotate", "--overlap-days", "100000000", "--home", str(market))
    assert result.returncode == 2
    assert "--overlap-days" in result.stderr
    assert "Traceback" not in result.stderr


# -- backup and restore ----------------------------------------------------------------------


def test_backup_into_a_directory_it_cannot_write(
    market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "TemporaryDirectory", _refuse(errno.EACCES))
    out = tmp_path / "ro" / "b.credex"
    out.parent.mkdir()
    with pytest.raises(InputError, match="Permission denied") as caught:
        create_backup(market, out, passphrase=PASS, now=NOW, kdf=CHEAP)
    assert f"cannot write in {out.parent}" in str(caught.value)
    assert not out.exists()


def test_backup_on_a_full_disk_fails_with_exit_1(
    market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup_module, "replace_file", _refuse(errno.ENOSPC))
    out = tmp_path / "b.credex"
    with pytest.raises(NodeError, match="No space left") as caught:
        create_backup(market, out, passphrase=PASS, now=NOW, kdf=CHEAP)
    assert str(out) in str(caught.value)
    assert exit_code_for(caught.value) == ExitCode.FAILURE


@pytest.fixture
def backup_file(market: Path, tmp_path: Path) -> Path:
    out = tmp_path / "b.credex"
    create_backup(market, out, passphrase=PASS, now=NOW, kdf=CHEAP)
    return out


def test_restore_beside_a_parent_it_cannot_write(
    backup_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "mkdtemp", _refuse(errno.EACCES))
    target = tmp_path / "ro" / "r"
    target.parent.mkdir()
    with pytest.raises(InputError, match="Permission denied") as caught:
        restore_backup(backup_file, target, passphrase=PASS)
    assert str(target.parent) in str(caught.value)
    assert not target.exists()


def test_restore_on_a_full_disk_leaves_nothing(
    backup_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r"
    real_fsync = os.fsync
    calls = [0]

    def fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == 2:  # after the first file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(NodeError, match="No space left") as caught:
        restore_backup(backup_file, target, passphrase=PASS)
    assert str(target) in str(caught.value)
    assert exit_code_for(caught.value) == ExitCode.FAILURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.credex", "market"]


@pytest.mark.skipif(AS_ROOT, reason="root writes anywhere")
def test_real_read_only_directories_exit_2(backup_file: Path, market: Path, tmp_path: Path) -> None:
    ro = Path(tempfile.mkdtemp(dir=tmp_path))
    passphrase = tmp_path / "pass"
    passphrase.write_text(PASS.decode() + "\n", encoding="utf-8")
    ro.chmod(0o500)
    try:
        backed = credex(
            "backup", str(ro / "b.credex"), "--passphrase-file", str(passphrase),
            "--home", str(market),
        )  # fmt: skip
        restored = credex(
            "restore", str(backup_file), str(ro / "r"), "--passphrase-file", str(passphrase)
        )
    finally:
        ro.chmod(0o700)
    for result in (backed, restored):
        assert result.returncode == 2, result.stderr
        assert str(ro) in " ".join(result.stderr.split())
        assert "Traceback" not in result.stderr
