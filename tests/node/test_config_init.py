"""`credex init` and `credex keys show` through the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from node.cli.init_cmds import init_node, read_passphrase
from node.config import load_config
from node.errors import InputError, NodeError
from node.store import open_store, schema_revision
from node.store.engine import MIGRATIONS_DIR


def credex(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CREDEX_HOME", None)
    if home is not None:
        env["CREDEX_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", "from node.cli import main; main()", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


def test_init_creates_a_complete_node_and_refuses_to_overwrite(tmp_path: Path) -> None:
    home = tmp_path / "market"
    done = credex("init", "--name", "market", "--listen", "127.0.0.1:7500", "--json", str(home))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["node_id"] == "market"
    assert info["root_keyid"] is None
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    assert oct((home / "data" / "credex.db").stat().st_mode & 0o777) == "0o600"
    config = load_config(home)
    assert config.server.listen == "127.0.0.1:7500"
    store = open_store(config.store.url, migrate_schema=False)
    # init migrates to the newest revision (one head, whichever migrations came later)
    assert schema_revision(store.engine) == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    store.close()
    again = credex("init", "--name", "market", str(home))
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr
    assert "Traceback" not in again.stderr

    shown = credex("keys", "show", "--json", home=home)
    assert shown.returncode == 0, shown.stderr
    identity = json.loads(shown.stdout)
    assert identity["keyid"] == info["keyid"]
    assert "PRIVATE" not in shown.stdout
    table = credex("keys", "show", "--home", str(home))
    assert info["keyid"] in table.stdout


def test_platform_init_creates_the_root_key(tmp_path: Path) -> None:
    info = init_node(tmp_path / "platform", name="platform", role="platform")
    pub = (tmp_path / "platform" / "trust" / "root.pub").read_text().strip()
    assert len(pub) == 44  # base64 of 32 bytes
    assert info["root_keyid"] is not None
    assert info["root_keyid"] != info["keyid"]
    assert oct((tmp_path / "platform" / "trust" / "root").stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "Market"}, "--name"),
        ({"name": "market", "role": "bank"}, "--role"),
        ({"name": "market", "listen": "nope"}, "--listen"),
    ],
)
def test_bad_arguments_leave_nothing_behind(
    tmp_path: Path, kwargs: dict[str, str], needle: str
) -> None:
    target = tmp_path / "node"
    with pytest.raises(NodeError) as info:
        init_node(
            target,
            name=kwargs["name"],
            role=kwargs.get("role", "department"),
            listen=kwargs.get("listen", "127.0.0.1:7443"),
        )
    assert needle in str(info.value)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no half-built temporary directory either


def test_non_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        init_node(tmp_path, name="market", role="department")


def test_passphrase_protects_the_keys(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_bytes(b"correct horse\n")
    assert read_passphrase(secret) == b"correct horse"
    home = tmp_path / "node"
    done = credex("init", "--name", "market", "--passphrase-file", str(secret), str(home))
    assert done.returncode == 0, done.stderr
    without = credex("keys", "show", home=home)
    assert without.returncode != 0
    assert "Traceback" not in without.stderr
    with_it = credex("keys", "show", "--passphrase-file", str(secret), home=home)
    assert with_it.returncode == 0, with_it.stderr
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_passphrase(tmp_path / "empty")


def test_keys_rotate_keeps_the_old_key_for_the_overlap(tmp_path: Path) -> None:
    home = tmp_path / "market"
    assert credex("init", "--name", "market", str(home)).returncode == 0
    before = json.loads(credex("keys", "show", "--json", home=home).stdout)
    rotated = credex("keys", "rotate", "--overlap-days", "3", "--json", home=home)
    assert rotated.returncode == 0, rotated.stderr
    after = json.loads(rotated.stdout)
    assert after["keyid"] != before["keyid"]
    assert [p["key"] for p in after["previous_signing_keys"]] == [before["signing_key"]]
    assert json.loads(credex("keys", "show", "--json", home=home).stdout)["keyid"] == after["keyid"]
    bad = credex("keys", "rotate", "--overlap-days", "-1", home=home)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def test_keys_upgrade_rewrites_an_old_key_directory(tmp_path: Path) -> None:
    home = tmp_path / "market"
    assert credex("init", "--name", "market", str(home)).returncode == 0
    before = json.loads(credex("keys", "show", "--json", home=home).stdout)
    storage = home / "keys" / "storage.key"
    doc = json.loads(storage.read_text())
    storage.write_text(json.dumps({**doc, "v": 1}))  # a clear file: v is its only difference
    assert credex("keys", "show", "--json", home=home).returncode != 0  # two formats: refused
    for name in ("signing.key", "encryption.key", "blind-index.key"):
        file = home / "keys" / name
        file.write_text(json.dumps({**json.loads(file.read_text()), "v": 1}))
    upgraded = credex("keys", "upgrade", "--json", home=home)
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["key_file_version"] == 2
    assert json.loads(storage.read_text())["v"] == 2
    assert json.loads(credex("keys", "show", "--json", home=home).stdout) == before
