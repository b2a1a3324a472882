"""A node refuses to run with keys its own roster entry does not list (a node initialised
anew under a bundle that names the old keys): `doctor` fails naming both key ids, `serve`
will not start. The documented rotation flow is not a mismatch: after `credex keys rotate`
the roster still lists the retired key until the platform's next bundle, and both only warn.
A bundle that revokes this node's own signing key (it leaked) is a mismatch too: every peer
refuses what the node signs, so it must not look healthy.
"""

from __future__ import annotations

import datetime as dt
import shutil
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
    node_keys = keys.load_key_dir(home / "keys")
    found = roster_identity(node_keys, load_bundle(home / "trust", now=utc_now()))
    assert found is not None
    return found.status, found.detail


def _identity_check(cluster: LocalCluster) -> dict[str, object]:
    checks = doctor_checks(cluster.home("market"), peers=False)
    return next(c for c in checks if c["check"] == "identity")


def _reinit_keys(cluster: LocalCluster) -> tuple[str, str]:
    """Replace market's keys with new ones; return (old keyid, new keyid)."""
    directory = cluster.home("market") / "keys"
    old = keys.load_key_dir(directory).signing.keyid
    shutil.rmtree(directory)
    new = keys.create_key_dir(directory, node_id="market").signing.keyid
    return old, new


def test_keys_listed_in_the_roster_are_ok(cluster: LocalCluster) -> None:
    assert _identity(cluster)[0] == "ok"
    check = _identity_check(cluster)
    assert check["ok"] is True


def test_other_keys_fail_doctor_naming_both_keyids(cluster: LocalCluster) -> None:
    old, new = _reinit_keys(cluster)
    status, detail = _identity(cluster)
    assert status == "mismatch"
    assert old in detail
    assert new in detail
    assert "TLS certificate" in detail
    check = _identity_check(cluster)
    assert check["ok"] is False
    assert old in str(check["detail"])
    assert new in str(check["detail"])


def test_serve_refuses_keys_the_roster_does_not_list(cluster: LocalCluster) -> None:
    old, new = _reinit_keys(cluster)
    done = cluster.cli("market", "serve", "--listen", "127.0.0.1:0", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert old in message
    assert new in message
    assert "serving on" not in done.stdout
    assert "Traceback" not in done.stderr


def test_a_rotation_waiting_for_its_bundle_only_warns(cluster: LocalCluster) -> None:
    home = cluster.home("market")
    before = keys.load_key_dir(home / "keys").signing.keyid
    after = keys.rotate_signing_key(
        home / "keys", now=dt.datetime.now(dt.UTC), overlap=dt.timedelta(days=7)
    ).signing.keyid
    status, detail = _identity(cluster)
    assert status == "rotated"
    assert before in detail
    assert after in detail
    check = _identity_check(cluster)
    assert check["ok"] is True
    assert str(check["detail"]).startswith("warning: ")

    with cluster:
        cluster.start("market")
        cluster.stop("market")
    assert f"signing keyid {after} is not in the roster yet" in " ".join(
        cluster.server_log("market").split()
    )

    # once the platform's next bundle lists the new key, nothing is left to say
    spec = cluster.spec()
    for node in spec["node"]:
        if node["node_id"] == "market":
            node["identity"] = keys.public_identity(keys.load_key_dir(home / "keys"))
    cluster.reissue_bundle(node=spec["node"])
    assert _identity(cluster)[0] == "ok"


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
