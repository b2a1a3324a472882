"""`credex bundle pin`: the pinned root is the node's trust anchor. It is written whole and
durably (a crash cannot leave half a key that later reads as "a different root is already
pinned"), and a damaged pin is named as such, never an unexpected error."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

import keys
from node.cli.bundle_cmds import pin_command
from node.cli.init_cmds import init_node
from node.errors import ExitCode
from node.runtime import ROOT_PUB
from tests.node.cli_support import credex


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pin")
    market = root / "market"
    init_node(market, name="market", role="department")
    platform_pub = root / "root.pub"
    platform_pub.write_text(base64.b64encode(keys.Signer.generate().public_key).decode() + "\n")
    return market, platform_pub


def test_a_damaged_pin_is_named(made: tuple[Path, Path], tmp_path: Path) -> None:
    market, platform_pub = made
    pin = market / "trust" / ROOT_PUB
    pin.write_bytes(b"\xff\xfe half a key")
    try:
        done = credex("bundle", "pin", str(platform_pub), "--home", str(market))
    finally:
        pin.unlink()
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert "unexpected" not in done.stderr
    assert str(pin) in " ".join(done.stderr.split())
    assert "damaged" in done.stderr


def test_the_pin_is_written_durably(
    made: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    market, platform_pub = made
    pin = market / "trust" / ROOT_PUB
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        pin_command(platform_pub, home=market)
        assert pin.stat().st_ino in synced  # the file
        assert (market / "trust").stat().st_ino in synced  # its rename
        assert stat.S_IMODE(pin.stat().st_mode) == 0o600
        assert pin.read_text().strip() == platform_pub.read_text().strip()
        pin_command(platform_pub, home=market)  # pinning the same root again is fine
    finally:
        pin.unlink(missing_ok=True)
