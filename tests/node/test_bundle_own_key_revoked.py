"""A bundle that revokes this node's own signing key (it leaked): every peer now refuses what
the node signs, so the node must not look healthy. `doctor` fails and `serve` refuses to
start, both naming the revoked key id and the way out (rotate, send the identity)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import keys
from node.cli.feed_cmds import doctor_checks
from node.cluster import LocalCluster
from node.runtime import load_bundle, roster_identity, utc_now


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    c = LocalCluster(tmp_path, [("platform", "platform"), ("market", "department")], [])
    c.init()
    return c


def _identity(cluster: LocalCluster) -> tuple[str, str]:
    home = cluster.home("market")
    found = roster_identity(
        keys.load_key_dir(home / "keys"), load_bundle(home / "trust", now=utc_now())
    )
    assert found is not None
    return found.status, found.detail


def test_a_revoked_own_key_fails_doctor_and_serve(cluster: LocalCluster) -> None:
    home = cluster.home("market")
    leaked = keys.load_key_dir(home / "keys").signing.keyid
    cluster.reissue_bundle(revoked_keyids=[leaked])
    status, detail = _identity(cluster)
    assert status == "mismatch"
    assert leaked in detail
    assert "revoked" in detail
    assert "credex keys rotate" in detail
    check = next(c for c in doctor_checks(home, peers=False) if c["check"] == "identity")
    assert check["ok"] is False
    done = cluster.cli("market", "serve", "--listen", "127.0.0.1:0", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert leaked in " ".join(done.stderr.split())
    assert "serving on" not in done.stdout

    # the way out: a new key, listed by the platform's next bundle
    keys.rotate_signing_key(home / "keys", now=dt.datetime.now(dt.UTC), overlap=dt.timedelta(0))
    spec = cluster.spec()
    for node in spec["node"]:
        if node["node_id"] == "market":
            node["identity"] = keys.public_identity(keys.load_key_dir(home / "keys"))
    cluster.reissue_bundle(node=spec["node"])
    assert _identity(cluster)[0] == "ok"
