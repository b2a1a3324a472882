"""A platform's backup carries its witness: what it cosigned (data/witness.json) and the fork
evidence it kept (data/witness-alarms.jsonl), so a restored platform neither forgets a log it
witnessed nor loses the proof that a department forked its log."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import keys
from node.backup import create_backup, restore_backup
from node.cli.init_cmds import init_node
from node.witness import ALARMS_FILE, STATE_FILE, WitnessState

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
CHEAP = keys.KdfParams(opslimit=1, memlimit=8192)
PASS = b"district backup pass"
NOTE = "zhangdian.credex/market\n7\nq83Qmz6v3a1f5P0Tq7s1O9mV8d9yHq3E2C+V1b8W0xk=\n\n— market abc\n"


def _platform(tmp_path: Path) -> Path:
    home = tmp_path / "platform"
    init_node(home, name="platform", role="platform", now=NOW)
    state = WitnessState(home / "data" / STATE_FILE, {"market": NOTE})
    state.save()
    return home


def test_witness_state_and_alarms_survive_backup_and_restore(tmp_path: Path) -> None:
    home = _platform(tmp_path)
    alarm = json.dumps({"log": "hrss", "why": "fork", "witnessed": NOTE, "shown": NOTE}) + "\n"
    (home / "data" / ALARMS_FILE).write_text(alarm, encoding="utf-8")

    manifest = create_backup(home, tmp_path / "b.credex", passphrase=PASS, now=NOW, kdf=CHEAP)
    assert {"data/witness.json", "data/witness-alarms.jsonl"} <= set(manifest.files)

    restored = restore_backup(tmp_path / "b.credex", tmp_path / "restored", passphrase=PASS)
    (warning,) = [w for w in restored.warnings if "witness state" in w]
    assert manifest.created_at in warning  # what it remembers is that day's
    data = restored.home / "data"
    assert WitnessState.load(data).latest == {"market": NOTE}
    assert (data / ALARMS_FILE).read_text(encoding="utf-8") == alarm
    assert (data / STATE_FILE).stat().st_mode & 0o777 == 0o600


def test_an_alarm_being_appended_is_left_for_the_next_backup(tmp_path: Path) -> None:
    home = _platform(tmp_path)
    whole = json.dumps({"log": "hrss", "why": "fork"}) + "\n"
    (home / "data" / ALARMS_FILE).write_text(whole + '{"log": "hr', encoding="utf-8")

    create_backup(home, tmp_path / "b.credex", passphrase=PASS, now=NOW, kdf=CHEAP)
    restored = restore_backup(tmp_path / "b.credex", tmp_path / "restored", passphrase=PASS)
    assert (restored.home / "data" / ALARMS_FILE).read_text(encoding="utf-8") == whole


def test_witness_state_is_kept_without_the_database(tmp_path: Path) -> None:
    # --skip-database (PostgreSQL): the witness files are on disk, not in the database.
    home = _platform(tmp_path)
    manifest = create_backup(
        home, tmp_path / "b.credex", passphrase=PASS, now=NOW, kdf=CHEAP, skip_database=True
    )
    assert "data/witness.json" in manifest.files
    assert "data/credex.db" not in manifest.files


def test_a_department_backup_has_no_witness_files(tmp_path: Path) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=NOW)
    manifest = create_backup(home, tmp_path / "b.credex", passphrase=PASS, now=NOW, kdf=CHEAP)
    assert not any("witness" in name for name in manifest.files)
