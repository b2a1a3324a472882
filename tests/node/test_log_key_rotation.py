"""A node's signing key rotates; its access-log history must not turn into "tampering".

Checkpoints are signed notes under the node's signing key. After `credex keys rotate` (and
again once the overlap has ended), the node still verifies its whole log and serves its latest
checkpoint, `credex log verify` exits 0, and the platform's witness keeps cosigning: the last
note it witnessed was signed by a key that is now retired.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import keys
from node.accesslog import AccessLog, LogEntry, MemoryLogBackend, utc_iso, verify_log
from node.cli.init_cmds import init_node
from node.runtime import open_runtime
from node.witness import cosign_extension

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


def _entry(i: int) -> LogEntry:
    return LogEntry(
        time=utc_iso(NOW), kind="query", requester="hrss", officer=f"officer-{i % 3}",
        purpose="administrative_licensing", legal_basis="x", decision="allow", reason="ok",
        request_id=uuid.uuid4().hex, result_count=1,
    )  # fmt: skip


def _log_some(home: Path, start: int, count: int, clock: dt.datetime) -> None:
    rt = open_runtime(home, clock=lambda: clock)
    try:
        for i in range(start, start + count):
            rt.log.append_sync(_entry(i))
            if i % 4 == 3:
                rt.log.checkpoint()
        rt.log.checkpoint()
    finally:
        rt.close()


def test_verify_note_accepts_any_of_several_keys_for_a_name() -> None:
    old, new = keys.Signer.generate(), keys.Signer.generate()
    text = "zhangdian.credex/market\n1\n" + "A" * 43 + "=\n"
    note = keys.sign_note(text, name="market", signer=old)
    assert keys.verify_note(note, verifiers={"market": (new.public_key, old.public_key)})[1] == {
        "market"
    }
    with pytest.raises(keys.VerificationError):
        keys.verify_note(note, verifiers={"market": (new.public_key,)})
    with pytest.raises(keys.VerificationError):
        keys.verify_note(note, verifiers={"market": ()})


def test_retired_keys_are_kept_after_their_overlap(tmp_path: Path) -> None:
    init_node(tmp_path / "n", name="market", role="department", now=NOW)
    key_dir = tmp_path / "n" / "keys"
    first = keys.load_key_dir(key_dir).signing.public_key
    keys.rotate_signing_key(key_dir, now=NOW, overlap=dt.timedelta(days=1))
    again = keys.rotate_signing_key(key_dir, now=NOW + dt.timedelta(days=30))
    retired = [k for k, _until in again.previous_signing]
    assert retired[0] == first
    assert len(retired) == 2
    # peers accept a retired key only until its accepted_until: the first one is long past
    identity = keys.public_identity(again)
    assert identity["previous_signing_keys"][0]["accepted_until"] == "2026-11-26T02:00:00Z"


def test_the_log_verifies_across_two_rotations(tmp_path: Path) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    _log_some(home, 0, 10, NOW)
    keys.rotate_signing_key(home / "keys", now=NOW, overlap=dt.timedelta(days=1))
    later = NOW + dt.timedelta(days=10)
    _log_some(home, 10, 5, later)
    keys.rotate_signing_key(home / "keys", now=later, overlap=dt.timedelta(days=1))
    rt = open_runtime(home, clock=lambda: later + dt.timedelta(days=10))
    try:
        report = verify_log(rt.log.backend, rt.log_verifiers(), log_name=rt.node_id)
        assert report.ok, report.problems
        assert report.size == 15
        assert report.checkpoints_checked >= 4
        # the newest checkpoint, under the second key, verifies as before
        latest = rt.log.backend.latest_checkpoint()
        assert latest is not None
        keys.verify_checkpoint(latest[1], verifiers=rt.log_verifiers(), log_name=rt.node_id)
    finally:
        rt.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDEX_")}
    done = subprocess.run(
        [sys.executable, "-c", "from node.cli import main; main()", "log", "verify",
         "--home", str(home)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_witness_keeps_cosigning_after_the_log_key_retires() -> None:
    old_key, new_key = keys.Signer.generate(), keys.Signer.generate()
    witness = keys.Signer.generate()
    backend = MemoryLogBackend()
    access = AccessLog(backend, origin="zhangdian.credex/market", signer=old_key, key_name="market")
    for i in range(5):
        access.append_sync(_entry(i))
    witnessed = access.checkpoint()
    # the node rotated and its overlap ended: the bundle lists only the new key now
    access = AccessLog(backend, origin="zhangdian.credex/market", signer=new_key, key_name="market")
    for i in range(5, 9):
        access.append_sync(_entry(i))
    shown = access.checkpoint()
    cosigned = cosign_extension(
        witnessed, shown, access.consistency_proof(5, 9), log_name="market",
        log_keys=[new_key.public_key], name="platform", signer=witness,
    )  # fmt: skip
    cp = keys.verify_checkpoint(
        cosigned, verifiers={"platform": witness.public_key}, log_name="platform"
    )
    assert cp.size == 9
