"""An installed bundle that has expired freezes the node: it acts on no stale trust, and every
command that needs the bundle says so plainly (the bundle is out of date, not tampered with:
exit 1, not 3) with what to do; installing the platform's current bundle thaws it."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

import keys
from node.bundles import sign_bundle_spec
from node.errors import ExitCode, StaleBundle, exit_code_for, status_for
from node.runtime import BUNDLE_FILE, load_bundle
from tests.node.bundle_support import bundle_spec, pinned_platform_and_market
from tests.node.cli_support import credex

THEN = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)  # v1 issued; valid 30 days
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pinned_platform_and_market(tmp_path_factory.mktemp("freeze"), now=THEN)


def test_an_expired_bundle_is_stale_trust_with_advice(homes: dict[str, Path]) -> None:
    trust = homes["market"] / "trust"
    with pytest.raises(StaleBundle) as caught:
        load_bundle(trust, now=NOW)
    message = str(caught.value)
    assert "v1 expired at 2026-10-31T09:00:00Z" in message
    assert "credex bundle install" in message
    assert exit_code_for(caught.value) == ExitCode.FAILURE
    assert status_for(caught.value).name == "FAILED_PRECONDITION"
    # still valid a moment before it expires
    assert load_bundle(trust, now=THEN + dt.timedelta(days=29)).version == 1


def test_a_tampered_expired_bundle_is_still_a_verification_failure(
    homes: dict[str, Path], tmp_path: Path
) -> None:
    trust = tmp_path / "trust"
    shutil.copytree(homes["market"] / "trust", trust)
    env = keys.Envelope.from_json((trust / BUNDLE_FILE).read_bytes())
    forged = keys.Envelope(
        env.payload_type, env.payload.replace(b'"v":1', b'"v":1 '), env.signatures
    )
    (trust / BUNDLE_FILE).write_text(forged.to_json())
    with pytest.raises(keys.BundleError, match="not signed by the pinned root"):
        load_bundle(trust, now=NOW)


def test_the_cli_names_the_freeze_and_a_fresh_bundle_thaws_it(
    homes: dict[str, Path], tmp_path: Path
) -> None:
    market = tmp_path / "market"
    shutil.copytree(homes["market"], market, symlinks=True)
    shown = credex("bundle", "show", "--home", str(market))
    assert shown.returncode == ExitCode.FAILURE, shown.stderr
    assert "expired" in shown.stderr
    assert "credex bundle install" in shown.stderr
    assert "Traceback" not in shown.stderr
    # the freeze does not block the way out
    fresh = dt.datetime.now(dt.UTC)
    _, v2 = sign_bundle_spec(homes["platform"], bundle_spec(homes, 2), now=fresh)
    (tmp_path / "v2.json").write_bytes(v2)
    installed = credex("bundle", "install", str(tmp_path / "v2.json"), "--home", str(market))
    assert installed.returncode == 0, installed.stderr
    assert credex("bundle", "show", "--home", str(market)).returncode == 0
