"""A passphrase problem at start says where the passphrase comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

import keys
from node.cli.init_cmds import init_node
from node.errors import ExitCode, StaleBundle
from node.runtime import load_bundle, open_runtime, utc_now
from tests.node.cli_support import credex


def test_protected_keys_without_a_passphrase_say_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDEX_PASSPHRASE_FILE", raising=False)
    home = tmp_path / "market"
    init_node(home, name="market", role="department", passphrase=b"correct horse battery")
    with pytest.raises(keys.KeyFileError, match="set CREDEX_PASSPHRASE_FILE"):
        open_runtime(home)


def test_a_passphrase_from_the_environment_for_clear_keys_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department")
    other = tmp_path / "platform-pass.txt"
    other.write_text("the platform's passphrase\n", encoding="utf-8")
    monkeypatch.setenv("CREDEX_PASSPHRASE_FILE", str(other))
    with pytest.raises(keys.KeyFileError, match="came from CREDEX_PASSPHRASE_FILE=") as caught:
        open_runtime(home)
    assert "another node" in str(caught.value)
    assert "the platform's passphrase" not in str(caught.value)


def test_installing_before_pinning_points_to_bundle_pin(tmp_path: Path) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department")
    (home / "trust" / "bundle.json").write_bytes(b"{}")
    with pytest.raises(StaleBundle, match=r"credex bundle pin root\.pub"):
        load_bundle(home / "trust", now=utc_now())


def test_every_command_says_how_to_give_a_missing_passphrase(tmp_path: Path) -> None:
    """`keys show` (and others that load the keys without a runtime) said only "give the
    passphrase", not how."""
    home = tmp_path / "market"
    init_node(home, name="market", role="department", passphrase=b"correct horse battery")
    for command in (["keys", "show"], ["keys", "show", "--json"]):
        shown = credex(*command, "--home", str(home))
        assert shown.returncode == ExitCode.INPUT, shown.stderr
        assert "--passphrase-file" in shown.stderr
        assert "CREDEX_PASSPHRASE_FILE" in shown.stderr
