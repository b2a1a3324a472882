"""A passphrase problem at start says where the passphrase comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

import keys
from node.cli.init_cmds import init_node
from node.errors import StaleBundle
from node.runtime import load_bundle, open_runtime, utc_now


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
