"""A `credex bundle install` cut short (power loss, kill -9) between the trust files it writes:
the node may refuse the file left behind, but installing the same bundle again must work
and must leave the version mark and the bundle in agreement (docs/keys.md, "Trust bundle")."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest

import keys
import node.runtime
from node.bundles import sign_bundle_spec
from node.runtime import (
    BUNDLE_FILE,
    BUNDLE_VERSION_FILE,
    install_bundle,
    load_bundle,
)
from tests.node.bundle_support import bundle_spec, copy_homes, pinned_platform_and_market

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install-crash")
    pinned_platform_and_market(root, now=NOW)
    return root


@pytest.fixture
def homes(made: Path, tmp_path: Path) -> dict[str, Path]:
    return copy_homes(made, tmp_path)


class PowerCut(Exception):
    """The machine stops here."""


def _cut_before(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the trust-file write of `name` (and everything after it) never happen."""
    real = node.runtime._atomic_write

    def write(path: Path, data: bytes) -> None:
        if path.name == name:
            raise PowerCut(name)
        real(path, data)

    monkeypatch.setattr(node.runtime, "_atomic_write", write)


@pytest.mark.parametrize("cut", [BUNDLE_FILE, BUNDLE_VERSION_FILE])
def test_an_install_cut_short_can_be_run_again(
    homes: dict[str, Path], monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    platform, market = homes["platform"], homes["market"] / "trust"
    _, v2 = sign_bundle_spec(platform, bundle_spec(homes, 2), now=NOW)
    with monkeypatch.context() as patch:
        _cut_before(patch, cut)
        with pytest.raises(PowerCut):
            install_bundle(market, v2, now=NOW)
    # the operator runs the same command again
    assert install_bundle(market, v2, now=NOW).version == 2
    assert (market / BUNDLE_VERSION_FILE).read_text() == "2\n"
    assert load_bundle(market, now=NOW).version == 2


def test_a_bundle_found_ahead_of_its_mark_raises_the_mark_at_load(
    homes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, market = homes["platform"], homes["market"] / "trust"
    v1 = (market / BUNDLE_FILE).read_bytes()
    _, v2 = sign_bundle_spec(platform, bundle_spec(homes, 2), now=NOW)
    with monkeypatch.context() as patch:
        _cut_before(patch, BUNDLE_VERSION_FILE)
        with pytest.raises(PowerCut):
            install_bundle(market, v2, now=NOW)
    assert load_bundle(market, now=NOW).version == 2
    assert (market / BUNDLE_VERSION_FILE).read_text() == "2\n"
    # so v1 put back in place is now refused as the rollback it is
    (market / BUNDLE_FILE).write_bytes(v1)
    with pytest.raises(keys.BundleError, match="older than the current 2"):
        load_bundle(market, now=NOW)


def test_two_installs_at_once_cannot_leave_the_older_bundle(
    homes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older bundle being installed while a newer one is (an operator's old file, a fetch
    job's new one) must not overwrite it after the newer one's check passed."""
    platform, market = homes["platform"], homes["market"] / "trust"
    _, v2 = sign_bundle_spec(platform, bundle_spec(homes, 2), now=NOW)
    _, v3 = sign_bundle_spec(platform, bundle_spec(homes, 3), now=NOW)
    real = keys.accept_bundle
    newer: list[BaseException | keys.TrustBundle] = []

    def install_v3() -> None:
        try:
            newer.append(install_bundle(market, v3, now=NOW))
        except BaseException as error:  # reported by the assertion below
            newer.append(error)

    other = threading.Thread(target=install_v3)

    def accept(raw: bytes, **kwargs: Any) -> keys.TrustBundle:
        accepted = real(raw, **kwargs)
        if raw == v2 and not other.is_alive() and not newer:
            # v2 passed its check against v1; v3 is installed meanwhile by another process
            other.start()
            other.join(timeout=1.0)  # with the install lock it waits for v2 to finish
        return accepted

    monkeypatch.setattr(keys, "accept_bundle", accept)
    install_bundle(market, v2, now=NOW)
    other.join()
    assert [getattr(b, "version", b) for b in newer] == [3]
    assert (market / BUNDLE_VERSION_FILE).read_text() == "3\n"
    assert load_bundle(market, now=NOW).version == 3
