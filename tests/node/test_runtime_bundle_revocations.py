"""Every bundle a runtime puts in use has its `revoked_grants` recorded in the grant ledger:
the one loaded at start and every one `reload_bundle` picks up (`credex serve` reloads a newly
installed bundle while serving), before the bundle is handed to anyone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from node.cluster import LocalCluster
from node.store import StoreError


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    c = LocalCluster(tmp_path, [("platform", "platform"), ("market", "department")], [])
    c.init()
    return c


def test_the_bundle_loaded_at_start_has_its_revocations_recorded(cluster: LocalCluster) -> None:
    cluster.reissue_bundle(revoked_grants=["g-at-start"])
    market = cluster.runtime("market")
    try:
        assert market.grants.revocation("g-at-start") is None  # nothing loaded yet
        market.bundle()
        recorded = market.grants.revocation("g-at-start")
        assert recorded is not None
        assert recorded.reason == "revoked_by_bundle"
    finally:
        market.close()


def test_a_reloaded_bundle_has_its_revocations_recorded(cluster: LocalCluster) -> None:
    market = cluster.runtime("market")
    try:
        assert market.bundle().revoked_grants == frozenset()
        cluster.reissue_bundle(revoked_grants=["g-reload"])
        bundle = market.reload_bundle()
        assert bundle.revoked_grants == frozenset({"g-reload"})
        recorded = market.grants.revocation("g-reload")
        assert recorded is not None
        assert recorded.reason == "revoked_by_bundle"
        # final: a later bundle that drops the id revokes nothing back
        cluster.reissue_bundle(revoked_grants=[])
        market.reload_bundle()
        assert market.grants.revocation("g-reload") == recorded
    finally:
        market.close()


def test_no_bundle_is_handed_out_before_its_revocations_are_recorded(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = cluster.runtime("market")
    try:
        market.bundle()
        cluster.reissue_bundle(revoked_grants=["g-later"])
        failing = True

        def revoke(grant_id: str, at: dt.datetime, reason: str, **kw: Any) -> Any:
            if failing:
                raise StoreError("store: the database is locked")
            return real(grant_id, at, reason, **kw)

        real = market.grants.revoke
        monkeypatch.setattr(market.grants, "revoke", revoke)
        with pytest.raises(StoreError):
            market.reload_bundle()
        with pytest.raises(StoreError):
            market.bundle()  # the new bundle is not used while its revocations are not kept
        failing = False
        assert market.bundle().revoked_grants == frozenset({"g-later"})
        assert market.grants.revocation("g-later") is not None
    finally:
        market.close()
