"""A full disk and an unreachable database end in a clear message and an exit code (never a
traceback), and the same command run again after the cause is fixed finishes the job without
losing or doubling anything."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli.init_cmds import init_node
from node.config import load_config
from node.demo_data import write_demo_data
from node.store import open_store
from tests.node.store_support import TEST_TAGGER

TODAY = dt.datetime.now(dt.UTC).date()


def _credex(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args, "--home", str(home)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def _set_store(home: Path, url: str) -> None:
    config = home / "credex.toml"
    text = config.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("url = ")]
    at = lines.index("[store]") + 1
    lines.insert(at, f'url = "{url}"')
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (we run as root in CI); unmounted afterwards."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        reason = f"cannot mount a small tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it (CI runs as root)")
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_is_a_clear_error_and_the_retry_completes(
    tmp_path: Path, small_disk: Path
) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department")
    url = f"sqlite:///{small_disk / 'credex.db'}"
    _set_store(home, url)
    open_store(url).close()  # the schema fits; the records will not
    data = write_demo_data(tmp_path / "exports", today=TODAY, companies=1500)

    full = _credex(home, "ingest", str(data.penalties_mapping), "--batch-size", "100")
    assert full.returncode == 1, full.stdout + full.stderr
    assert "Traceback" not in full.stdout + full.stderr
    assert "full" in full.stderr, full.stderr
    store = open_store(url, tagger=TEST_TAGGER)
    try:
        stored_before = store.count_records()
    finally:
        store.close()
    assert 0 <= stored_before < data.penalties_good

    grown = subprocess.run(
        ["mount", "-o", "remount,size=64m", str(small_disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert grown.returncode == 0, grown.stderr
    retry = _credex(home, "ingest", str(data.penalties_mapping), "--json")
    assert retry.returncode == 0, retry.stderr
    store = open_store(url, tagger=TEST_TAGGER)
    try:
        assert store.count_records() == data.penalties_good
        with store.read("check") as conn:
            doubled = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM (SELECT record_key FROM records GROUP BY record_key "
                "HAVING COUNT(*) > 1)"
            ).scalar_one()
        assert doubled == 0
    finally:
        store.close()
    assert _credex(home, "log", "verify").returncode == 0


@pytest.mark.slow
def test_database_unavailable_is_a_clear_error_and_the_retry_completes(tmp_path: Path) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department")
    data = write_demo_data(tmp_path / "exports", today=TODAY)
    sqlite_url = load_config(home).store.url
    _set_store(home, "postgresql+psycopg://credex:secret-pw@127.0.0.1:1/credex")

    for args in (
        ("ingest", str(data.penalties_mapping)),
        ("status",),
        ("log", "verify"),
        ("backup", str(tmp_path / "b.credex"), "--passphrase-file", str(data.penalties_mapping)),
    ):
        done = _credex(home, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, args
        assert "secret-pw" not in done.stdout + done.stderr, args
        assert "unavailable" in done.stderr or "pg_dump" in done.stderr, (args, done.stderr)

    _set_store(home, sqlite_url)
    retry = _credex(home, "ingest", str(data.penalties_mapping), "--json")
    assert retry.returncode == 0, retry.stderr
    store = open_store(sqlite_url, tagger=TEST_TAGGER)
    try:
        assert store.count_records() == data.penalties_good
    finally:
        store.close()
