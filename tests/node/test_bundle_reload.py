"""A bundle reload while serving is all or nothing, and a failed one is tried again.

- `NodeRuntime.reload_bundle` put the new bundle in force before it built the TLS roster from
  it; when that failed (trust/peers/ unreadable), the node ran on the new bundle
  with the old handshake roots, and the watcher logged "not reloaded".
- The watcher (`credex serve`) marked a file as seen before loading it: a reload that failed was
  not tried again until the file changed, so fixing what stopped it did nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.cluster import LocalCluster
from node.services.exchange_service import _watch_bundle


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    c = LocalCluster(tmp_path, [("platform", "platform"), ("market", "department")], [])
    c.init()
    return c


def _broken_peer_directory(cluster: LocalCluster) -> Path:
    """A directory where trust/peers/ holds a certificate file: the roster cannot be read."""
    broken = cluster.home("market") / "trust" / "peers" / "court.crt"
    broken.mkdir(mode=0o700, parents=True)
    return broken


def test_a_reload_whose_roster_cannot_be_built_changes_nothing(cluster: LocalCluster) -> None:
    market = cluster.runtime("market")
    try:
        market.server_tls()
        before = market.bundle().version
        _broken_peer_directory(cluster)
        cluster.reissue_bundle(revoked_grants=["g-1"])
        with pytest.raises(IsADirectoryError):
            market.reload_bundle()
        assert market.bundle().version == before  # the old bundle, with the old roster
    finally:
        market.close()


def test_the_watcher_tries_a_failed_reload_again_until_it_loads(cluster: LocalCluster) -> None:
    market = cluster.runtime("market")
    try:
        market.server_tls()
        before = market.bundle().version
        broken = _broken_peer_directory(cluster)

        async def scenario() -> int:
            stop = asyncio.Event()
            watcher = asyncio.create_task(_watch_bundle(market, stop, interval=0.02))
            await asyncio.sleep(0.05)
            cluster.reissue_bundle(revoked_grants=["g-2"])
            for _ in range(20):  # fails: the peer directory cannot be read
                await asyncio.sleep(0.02)
            failed_version = market.bundle().version
            broken.rmdir()  # the fix touches trust/peers/, not bundle.json
            for _ in range(250):
                await asyncio.sleep(0.02)
                if market.bundle().version > before:
                    break
            stop.set()
            await watcher
            return failed_version

        assert asyncio.run(scenario()) == before
        assert market.bundle().version == before + 1
    finally:
        market.close()
