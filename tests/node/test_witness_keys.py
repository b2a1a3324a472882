"""The platform rotates its own signing key; the departments' logs it witnessed stay honest.

A witness cosignature made before the rotation stays valid: `credex log verify` checks it (and
an `--anchor` note cosigned with the old key) against every key the roster lists for the
platform, current and previous, whatever their accepted_until. A key the roster does not list,
or a key of the log itself, is still no witness.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keys
from node.accesslog import verify_cosignature
from node.cli import app
from node.cli.log_cmds import witness_verifiers
from node.cluster import LocalCluster
from node.errors import ExitCode
from node.runtime import open_runtime
from tests.node.accesslog_support import query_entry

runner = CliRunner()


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalCluster, str]:
    """market's log (8 entries, one checkpoint) cosigned by the platform's first key; then the
    platform rotated with no overlap and the bundle lists the first key as previous only.
    Returns the cluster and the cosigned note; no server runs."""
    c = LocalCluster(
        tmp_path_factory.mktemp("cluster"),
        nodes=[("market", "department"), ("platform", "platform")],
    )
    c.init()
    platform_keys = c.home("platform") / "keys"
    first = keys.load_key_dir(platform_keys).signing
    rt = open_runtime(c.home("market"))
    try:
        for i in range(8):
            rt.log.append_sync(query_entry(i))
        note = rt.log.checkpoint()
        cosigned = keys.cosign_note(note, name="platform", signer=first)
        rt.log.backend.save_witness(8, "platform", cosigned)
    finally:
        rt.close()
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    after = keys.rotate_signing_key(platform_keys, now=now, overlap=dt.timedelta(0))
    assert after.signing.public_key != first.public_key
    spec = c.spec()
    for node in spec["node"]:
        if node["node_id"] == "platform":
            node["identity"] = keys.public_identity(after)
    bundle = c.reissue_bundle(node=spec["node"])
    (entry,) = [e for e in bundle.roster if e.node_id == "platform"]
    assert [k for k, _until in entry.previous_signing_keys] == [first.public_key]
    assert entry.previous_signing_keys[0][1] < dt.datetime.now(dt.UTC)  # overlap over
    return c, cosigned


def _cli(cluster: LocalCluster, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["log", *args, "--home", str(cluster.home("market")), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_a_cosignature_by_the_platforms_previous_key_still_verifies(
    rotated: tuple[LocalCluster, str],
) -> None:
    cluster, _cosigned = rotated
    code, report = _cli(cluster, "verify")
    assert code == 0, report["problems"]
    assert report["ok"] is True
    assert report["witnesses_checked"] == 1
    code, shown = _cli(cluster, "checkpoint")
    assert (code, shown["size"], shown["witnessed_by"]) == (0, 8, ["platform"])


def test_an_anchor_cosigned_by_the_previous_key_still_anchors(
    rotated: tuple[LocalCluster, str], tmp_path: Path
) -> None:
    cluster, cosigned = rotated
    anchor = tmp_path / "market.note"
    anchor.write_text(cosigned, encoding="utf-8")
    code, report = _cli(cluster, "verify", "--anchor", str(anchor))
    assert code == 0, report["problems"]
    assert report["anchors_checked"] == 1


def test_a_key_the_roster_does_not_list_is_still_no_witness(
    rotated: tuple[LocalCluster, str], tmp_path: Path
) -> None:
    cluster, cosigned = rotated
    stranger = keys.Signer.generate()
    rt = open_runtime(cluster.home("market"))
    try:
        latest = rt.log.backend.latest_checkpoint()
        assert latest is not None
        forged = keys.cosign_note(latest[1], name="platform", signer=stranger)
    finally:
        rt.close()
    anchor = tmp_path / "forged.note"
    anchor.write_text(forged, encoding="utf-8")
    code, report = _cli(cluster, "verify", "--anchor", str(anchor))
    assert code == ExitCode.VERIFICATION
    assert [p["code"] for p in report["problems"]] == ["anchor_signature"]
    _save_witness_row(cluster, forged)  # in place of the honest one
    try:
        code, report = _cli(cluster, "verify")
        assert code == ExitCode.VERIFICATION
        assert [p["code"] for p in report["problems"]] == ["witness_signature"]
        assert _cli(cluster, "checkpoint")[1]["witnessed_by"] == []
    finally:
        _save_witness_row(cluster, cosigned)


def _save_witness_row(cluster: LocalCluster, note: str) -> None:
    rt = open_runtime(cluster.home("market"))
    try:
        rt.log.backend.save_witness(8, "platform", note)
    finally:
        rt.close()


def test_several_keys_per_witness_but_never_the_logs_own() -> None:
    log, old, new = keys.Signer.generate(), keys.Signer.generate(), keys.Signer.generate()
    text = "zhangdian.credex/market\n3\n" + "A" * 43 + "=\n"
    note = keys.sign_note(text, name="market", signer=log)
    verifiers = {"market": log.public_key}
    by_old = keys.cosign_note(note, name="platform", signer=old)
    both = {"platform": (new.public_key, old.public_key)}
    cp = verify_cosignature(by_old, verifiers, both, witness="platform", log_name="market")
    assert cp.size == 3
    with pytest.raises(keys.VerificationError, match="bad cosignature"):
        verify_cosignature(
            by_old, verifiers, {"platform": (new.public_key,)}, witness="platform",
            log_name="market",
        )  # fmt: skip
    # the log's key listed among a witness's keys is left out; alone, the witness is none
    by_log = keys.cosign_note(note, name="platform", signer=log)
    with pytest.raises(keys.VerificationError, match="bad cosignature"):
        verify_cosignature(
            by_log, verifiers, {"platform": (new.public_key, log.public_key)},
            witness="platform", log_name="market",
        )  # fmt: skip
    with pytest.raises(keys.VerificationError, match="the log's own key is no witness"):
        verify_cosignature(
            by_log, verifiers, {"platform": (log.public_key,)}, witness="platform",
            log_name="market",
        )  # fmt: skip
    with pytest.raises(keys.VerificationError, match="the log's own key is no witness"):
        verify_cosignature(
            note, verifiers, {"market": (old.public_key,)}, witness="market", log_name="market"
        )


def test_a_revoked_platform_key_witnesses_nothing(tmp_path: Path) -> None:
    """A leaked platform key, once revoked, must not vouch for cosignatures any more, not
    even as a previous key the roster still lists."""
    c = LocalCluster(tmp_path, nodes=[("market", "department"), ("platform", "platform")])
    c.init()
    platform_keys = c.home("platform") / "keys"
    first = keys.load_key_dir(platform_keys).signing
    rt = open_runtime(c.home("market"))
    try:
        for i in range(3):
            rt.log.append_sync(query_entry(i))
        cosigned = keys.cosign_note(rt.log.checkpoint(), name="platform", signer=first)
        rt.log.backend.save_witness(3, "platform", cosigned)
    finally:
        rt.close()
    after = keys.rotate_signing_key(platform_keys, now=dt.datetime.now(dt.UTC))
    spec = c.spec()
    for node in spec["node"]:
        if node["node_id"] == "platform":
            node["identity"] = keys.public_identity(after)
    c.reissue_bundle(node=spec["node"], revoked_keyids=[first.keyid])
    rt = open_runtime(c.home("market"))
    try:
        assert witness_verifiers(rt) == {"platform": (after.signing.public_key,)}
    finally:
        rt.close()
    code, report = _cli(c, "verify")
    assert code == ExitCode.VERIFICATION
    assert [p["code"] for p in report["problems"]] == ["witness_signature"]
    anchor = tmp_path / "market.note"
    anchor.write_text(cosigned, encoding="utf-8")
    code, report = _cli(c, "verify", "--anchor", str(anchor))
    assert code == ExitCode.VERIFICATION
    assert "anchor_signature" in [p["code"] for p in report["problems"]]
