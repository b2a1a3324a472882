"""`credex backup` / `credex restore`: a consistent, encrypted snapshot that restores into a
working node elsewhere, and refuses every damaged, tampered or unsafe archive."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import uuid
from pathlib import Path

import pytest

import keys
from node.accesslog import LogEntry, utc_iso, verify_log
from node.backup import BackupManifest, _tar, create_backup, read_backup, restore_backup
from node.cli.init_cmds import init_node
from node.cluster import LocalCluster
from node.config import load_config
from node.demo_data import write_demo_data
from node.errors import InputError, TamperDetected
from node.ingest import run_ingest
from node.runtime import open_runtime
from node.store import SqlLogBackend, StoreError

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
CHEAP = keys.KdfParams(opslimit=1, memlimit=8192)
PASS = b"district backup pass"


def _entry(i: int) -> LogEntry:
    return LogEntry(
        time=utc_iso(NOW), kind="query", requester="hrss", officer=f"officer-{i % 3}",
        purpose="行政管理", legal_basis="《社会信用条例》", decision="allow", reason="ok",
        request_id=uuid.uuid4().hex, result_count=1,
    )  # fmt: skip


@pytest.fixture
def market(tmp_path: Path) -> Path:
    """A department node holding the demo's penalties and licences and a few log entries."""
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    data = write_demo_data(tmp_path / "exports", today=TODAY)
    for mapping in (data.penalties_mapping, data.licences_mapping):
        run_ingest(load_config(home), mapping, today=TODAY, clock=lambda: NOW)
    runtime = open_runtime(home, clock=lambda: NOW)
    try:
        for i in range(5):
            runtime.log.append_sync(_entry(i))
        runtime.log.checkpoint()
    finally:
        runtime.close()
    return home


def _verify(home: Path) -> int:
    runtime = open_runtime(home)
    try:
        report = verify_log(
            SqlLogBackend(runtime.store),
            runtime.log_verifiers(),
            origin=runtime.config.log.origin,
            log_name=runtime.node_id,
        )
        assert report.ok, report.problems
        return report.size
    finally:
        runtime.close()


def test_backup_during_writes_restores_a_consistent_prefix(market: Path, tmp_path: Path) -> None:
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        runtime = open_runtime(market, clock=lambda: NOW)
        try:
            i = 0
            while not stop.is_set() or i < 20:  # at least 20 appends race the backup
                runtime.log.append_sync(_entry(i))
                i += 1
                if i % 7 == 0:
                    runtime.log.checkpoint()
            written[0] = i
        finally:
            runtime.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        manifest = create_backup(
            market, tmp_path / "b.credex", passphrase=PASS, now=NOW, include_keys=True, kdf=CHEAP
        )
    finally:
        stop.set()
        thread.join()
    assert (tmp_path / "b.credex").stat().st_mode & 0o777 == 0o600

    restored = restore_backup(tmp_path / "b.credex", tmp_path / "elsewhere", passphrase=PASS)
    assert restored.warnings == ()
    size = _verify(restored.home)
    assert size == manifest.log_size >= 5
    assert manifest.records > 0

    # The snapshot is exactly a prefix of the live log: same leaves, in the same order.
    live, copy = open_runtime(market), open_runtime(restored.home)
    try:
        live_leaves = SqlLogBackend(live.store).leaves(0, size)
        assert SqlLogBackend(copy.store).leaves(0, size) == live_leaves
        assert SqlLogBackend(live.store).size() == 5 + written[0] >= size
        assert copy.store.count_records() == live.store.count_records() == manifest.records
        # the restored keys still open the restored record bodies
        row = copy.store.records_by_subject(
            copy.blind.token(_any_subject(tmp_path)), include_linked=False
        )
        assert row
        assert copy.cipher.decrypt(row[0].row_id, row[0].body)
    finally:
        live.close()
        copy.close()


def _any_subject(tmp_path: Path) -> str:
    return write_demo_data(tmp_path / "again", today=TODAY).focus.uscc


def test_default_backup_leaves_keys_out(market: Path, tmp_path: Path) -> None:
    manifest = create_backup(market, tmp_path / "b", passphrase=PASS, now=NOW, kdf=CHEAP)
    assert not manifest.includes_keys
    assert not any(name.startswith("keys/") for name in manifest.files)
    assert "data/credex.db" in manifest.files
    assert not any(name.startswith("rejects/") for name in manifest.files)
    result = restore_backup(tmp_path / "b", tmp_path / "r", passphrase=PASS)
    assert not (result.home / "keys").exists()
    assert any("keys/" in w for w in result.warnings)


def test_platform_root_key_only_with_include_keys(tmp_path: Path) -> None:
    home = tmp_path / "platform"
    init_node(home, name="platform", role="platform", now=NOW)
    without = create_backup(home, tmp_path / "a", passphrase=PASS, now=NOW, kdf=CHEAP)
    assert "trust/root.pub" in without.files
    assert not any(n.startswith("trust/root/") for n in without.files)
    with_keys = create_backup(
        home, tmp_path / "b", passphrase=PASS, now=NOW, include_keys=True, kdf=CHEAP
    )
    assert any(n.startswith("trust/root/") for n in with_keys.files)
    result = restore_backup(tmp_path / "b", tmp_path / "r", passphrase=PASS)
    for path in [result.home, *result.home.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_root_keys_of_a_rotation_under_way_are_keys_too(tmp_path: Path) -> None:
    home = tmp_path / "platform"
    init_node(home, name="platform", role="platform", now=NOW)
    # as a `bundle rotate-root` that stopped half way leaves them
    shutil.copytree(home / "trust" / "root", home / "trust" / "root.next")
    shutil.copytree(home / "trust" / "root", home / "trust" / "root.retired-0123456789abcdef")
    without = create_backup(home, tmp_path / "a", passphrase=PASS, now=NOW, kdf=CHEAP)
    assert not any(n.startswith("trust/root.") for n in without.files if n != "trust/root.pub")
    with_keys = create_backup(
        home, tmp_path / "b", passphrase=PASS, now=NOW, include_keys=True, kdf=CHEAP
    )
    assert any(n.startswith("trust/root.next/") for n in with_keys.files)
    assert any(n.startswith("trust/root.retired-") for n in with_keys.files)


def test_wrong_passphrase_and_damage_are_refused(market: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    create_backup(market, out, passphrase=PASS, now=NOW, kdf=CHEAP)
    with pytest.raises(keys.VerificationError):
        read_backup(out, passphrase=b"guess")
    blob = bytearray(out.read_bytes())
    blob[len(blob) // 2] ^= 1
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(blob))
    with pytest.raises(keys.VerificationError):
        restore_backup(damaged, tmp_path / "r", passphrase=PASS)
    assert not (tmp_path / "r").exists()


def _sealed(tmp_path: Path, name: str, archive: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(keys.seal_with_passphrase(archive, PASS, kdf=CHEAP))
    return path


def _manifest(files: dict[str, bytes]) -> BackupManifest:
    return BackupManifest(
        node_id="market", role="department", created_at=NOW.isoformat(), database="sqlite",
        includes_keys=False, files={k: hashlib.sha256(v).hexdigest() for k, v in files.items()},
        log_size=0, records=0,
    )  # fmt: skip


def test_archive_not_matching_its_manifest_is_refused(tmp_path: Path) -> None:
    files = {"credex.toml": b"[node]\n", "trust/root.pub": b"x"}
    changed = _sealed(tmp_path, "changed", _tar(_manifest(files), {**files, "credex.toml": b"!"}))
    with pytest.raises(TamperDetected, match="does not match"):
        read_backup(changed, passphrase=PASS)
    extra = _sealed(tmp_path, "extra", _tar(_manifest(files), {**files, "keys/x": b"k"}))
    with pytest.raises(TamperDetected, match="differ"):
        read_backup(extra, passphrase=PASS)
    escaping = {"../outside": b"x"}
    evil = _sealed(tmp_path, "evil", _tar(_manifest(escaping), escaping))
    with pytest.raises(TamperDetected, match="escape"):
        restore_backup(evil, tmp_path / "r", passphrase=PASS)
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "r").exists()


def test_links_and_garbage_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("credex.toml")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(TamperDetected, match="not a regular file"):
        read_backup(_sealed(tmp_path, "link", buffer.getvalue()), passphrase=PASS)
    with pytest.raises(TamperDetected, match="not a valid tar"):
        read_backup(_sealed(tmp_path, "junk", b"\x01" * 1024), passphrase=PASS)


def test_refuses_existing_output_and_non_empty_target(market: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    create_backup(market, out, passphrase=PASS, now=NOW, kdf=CHEAP)
    with pytest.raises(InputError, match="already exists"):
        create_backup(market, out, passphrase=PASS, now=NOW, kdf=CHEAP)
    with pytest.raises(InputError, match="empty"):
        create_backup(market, tmp_path / "c", passphrase=b"", now=NOW, kdf=CHEAP)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        restore_backup(out, busy, passphrase=PASS)
    assert (busy / "something").read_text() == "x"


def test_postgresql_store_is_refused_with_pg_dump_advice(tmp_path: Path) -> None:
    home = tmp_path / "pg"
    init_node(home, name="market", role="department", now=NOW)
    config = home / "credex.toml"
    text = config.read_text(encoding="utf-8").replace(
        '# url = "sqlite:///data/credex.db"',
        'url = "postgresql+psycopg://credex@127.0.0.1:1/credex"',
    )
    config.write_text(text, encoding="utf-8")
    with pytest.raises(StoreError, match="pg_dump"):
        create_backup(home, tmp_path / "b", passphrase=PASS, now=NOW, kdf=CHEAP)
    assert not (tmp_path / "b").exists()
    manifest = create_backup(
        home, tmp_path / "b", passphrase=PASS, now=NOW, include_keys=True, skip_database=True,
        kdf=CHEAP,
    )  # fmt: skip
    assert manifest.database == "none"
    result = restore_backup(tmp_path / "b", tmp_path / "r", passphrase=PASS)
    assert any("pg_restore" in w for w in result.warnings)
    # the CLI says why the log was not checked: no database in the backup, not missing keys
    passfile = tmp_path / "pass.txt"
    passfile.write_bytes(PASS + b"\n")
    said = _credex("restore", str(tmp_path / "b"), str(tmp_path / "r2"),
                   "--passphrase-file", str(passfile))  # fmt: skip
    assert said.returncode == 0, said.stderr
    assert "the backup holds no database" in " ".join(said.stdout.split())


def _credex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True, text=True, check=False, timeout=120, env=env,
    )  # fmt: skip


def test_cli_round_trip_then_log_verify_on_the_new_machine(market: Path, tmp_path: Path) -> None:
    passfile = tmp_path / "pass.txt"
    passfile.write_text("correct horse battery\n")
    out = tmp_path / "market.credex"
    done = _credex(
        "backup", str(out), "--home", str(market), "--include-keys",
        "--passphrase-file", str(passfile), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"includes_keys": true' in done.stdout

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not it\n")
    refused = _credex("restore", str(out), str(tmp_path / "x"), "--passphrase-file", str(wrong))
    assert refused.returncode == 3
    assert "Traceback" not in refused.stderr
    assert "wrong passphrase" in refused.stderr

    env = {**os.environ, "CREDEX_BACKUP_PASSPHRASE_FILE": str(passfile)}
    restored = _credex("restore", str(out), str(tmp_path / "new-machine"), "--json", env=env)
    assert restored.returncode == 0, restored.stderr
    assert '"checked": true' in restored.stdout
    verify = _credex("log", "verify", "--home", str(tmp_path / "new-machine"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_restored_bundle_is_flagged_as_the_backup_days_trust(tmp_path: Path) -> None:
    """A restored node trusted its backup's bundle silently: a key or grant revoked since the
    backup was trusted again until someone installed a newer bundle."""
    cluster = LocalCluster(
        tmp_path / "district", [("platform", "platform"), ("market", "department")], []
    )
    cluster.init()
    home = cluster.home("market")
    create_backup(home, tmp_path / "b.credex", passphrase=PASS, now=NOW, kdf=CHEAP)
    restored = restore_backup(tmp_path / "b.credex", tmp_path / "restored", passphrase=PASS)
    (warning,) = [w for w in restored.warnings if "trust bundle" in w]
    assert NOW.isoformat()[:10] in warning
    assert "credex bundle install" in warning
