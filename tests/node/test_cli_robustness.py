"""The CLI's edges: escaped error text, `bundle sign` (passphrase, order, exit codes), `init`
refusals, `doctor` checks that each run on their own, and flag-naming messages.

Commands whose exit code and stderr matter run through the real console entry point
(`node.cli.main`) in a subprocess, so the error handling of `main` is what is tested.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

import catalog
import keys
from node.cli import feed_cmds
from node.cli.common import check_listen
from node.cli.init_cmds import init_node, node_passphrase
from node.config import CONFIG_FILE, parse_config
from node.errors import BundleSpecError, ConfigError, ExitCode, InputError, exit_code_for
from node.transport import Diagnosis, UnavailableCause
from tests.node.cli_support import credex

PASSPHRASE = b"correct horse battery"


def one_line(text: str) -> str:
    return " ".join(text.split())


def identity(home: Path, passphrase: bytes | None = None) -> dict[str, Any]:
    return keys.public_identity(keys.load_key_dir(home / "keys", passphrase=passphrase))


def spec_for(nodes: dict[str, tuple[Path, str]], **over: Any) -> dict[str, Any]:
    """A bundle spec listing `nodes` (name -> (home, role)), with `over` applied."""
    roster = [
        {
            "node_id": name,
            "name": name,
            "roles": [role],
            "endpoint": f"127.0.0.1:{7600 + i}",
            "identity": identity(home, PASSPHRASE if name == "locked" else None),
        }
        for i, (name, (home, role)) in enumerate(sorted(nodes.items()))
    ]
    spec: dict[str, Any] = {
        "version": 1,
        "catalog_version": catalog.default_catalog().version,
        "valid_days": 30,
        "node": roster,
        "agreement": [],
    }
    spec.update(over)
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A platform and a department, made once (key generation is the slow part)."""
    root = tmp_path_factory.mktemp("district")
    init_node(root / "platform", name="platform", role="platform")
    init_node(root / "market", name="market", role="department")
    return {"platform": root / "platform", "market": root / "market", "root": root}


@pytest.fixture
def platform(district: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of the district's platform (each test installs its own bundles)."""
    home = tmp_path / "platform"
    shutil.copytree(district["platform"], home, symlinks=True)
    return home


# -- 1. error text is printed as text, never as rich markup -----------------------------------


def test_a_config_error_keeps_its_bracketed_section(platform: Path) -> None:
    config = platform / CONFIG_FILE
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("retention_days = 180", "retention_days = 30"))
    done = credex("status", "--home", str(platform))
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert "[log] retention_days = 30" in one_line(done.stderr)


def test_a_home_with_markup_characters_is_named_not_a_crash(tmp_path: Path) -> None:
    odd = tmp_path / "odd[/]dir"
    done = credex("status", "--home", str(odd))
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert "Traceback" not in done.stderr
    assert "MarkupError" not in done.stderr
    assert f"{odd}/credex.toml" in one_line(done.stderr)


def test_doctor_details_are_printed_as_text(district: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "odd[" / "]node"  # "[/]" in the path: the closing-tag shape
    home.parent.mkdir()
    shutil.copytree(district["market"], home, symlinks=True)
    done = credex("doctor", "--no-peers", "--home", str(home))
    assert "Traceback" not in done.stderr
    assert done.returncode == ExitCode.FAILURE  # no bundle installed
    assert f"{home}/keys" in done.stdout.replace("\n", "")


# -- 2. bundle sign / keys show take the passphrase like every other command ----------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A passphrase-protected platform and the file holding its passphrase."""
    root = tmp_path_factory.mktemp("locked")
    secret = root / "pass"
    secret.write_bytes(PASSPHRASE + b"\n")
    init_node(root / "locked", name="locked", role="platform", passphrase=PASSPHRASE)
    spec = write_spec(root / "bundle.json", spec_for({"locked": (root / "locked", "platform")}))
    return {"home": root / "locked", "pass": secret, "spec": spec, "root": root}


def test_bundle_sign_takes_passphrase_file(locked: dict[str, Path]) -> None:
    out = locked["root"] / "signed-file.json"
    done = credex(
        "bundle", "sign", str(locked["spec"]), "--home", str(locked["home"]),
        "--passphrase-file", str(locked["pass"]), "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.is_file()


def test_bundle_sign_and_keys_show_read_the_passphrase_env(locked: dict[str, Path]) -> None:
    env = {"CREDEX_PASSPHRASE_FILE": str(locked["pass"])}
    out = locked["root"] / "signed-env.json"
    # A version of its own: the module's other test may have installed version 1 already.
    spec = spec_for({"locked": (locked["home"], "platform")}, version=2)
    signed = credex(
        "bundle", "sign", str(write_spec(locked["root"] / "v2.json", spec)),
        "--home", str(locked["home"]),
        "--output", str(out), env=env,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    shown = credex("keys", "show", "--json", "--home", str(locked["home"]), env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["node_id"] == "locked"


def test_an_unreadable_passphrase_env_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDEX_PASSPHRASE_FILE", str(tmp_path / "missing"))
    with pytest.raises(InputError, match=r"\$CREDEX_PASSPHRASE_FILE: .*missing"):
        node_passphrase(None)
    explicit = tmp_path / "explicit"
    explicit.write_bytes(b"from the flag\n")
    assert node_passphrase(explicit) == b"from the flag"  # the flag wins over the variable


# -- 3. bundle sign: install first, write after; spec errors exit 2 -------------------------


def test_a_refused_resign_writes_nothing(platform: Path, district: dict[str, Path]) -> None:
    nodes = {"platform": (platform, "platform"), "market": (district["market"], "department")}
    spec = write_spec(platform.parent / "spec.json", spec_for(nodes))
    first = platform.parent / "v1.json"
    done = credex("bundle", "sign", str(spec), "--home", str(platform), "--output", str(first))
    assert done.returncode == 0, done.stderr
    # Same version, other content: the platform refuses it, so it must not reach the disk.
    write_spec(spec, spec_for(nodes, valid_days=60))
    second = platform.parent / "v1-again.json"
    again = credex("bundle", "sign", str(spec), "--home", str(platform), "--output", str(second))
    assert again.returncode == ExitCode.VERIFICATION, again.stderr
    assert "Traceback" not in again.stderr
    assert not second.exists()
    assert sorted(p.name for p in platform.parent.iterdir()) == ["platform", "spec.json", "v1.json"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"valid_days": 0}, "valid_days"),
        (
            {
                "agreement": [
                    {
                        "provider": "market",
                        "consumer": "platform",
                        "items": ["x"],
                        "purposes": ["y"],
                        "kind": "gossip",
                    }
                ]
            },
            "kind",
        ),
        ("no-roles", "roles"),
    ],
    ids=["valid_days=0", "unknown-kind", "missing-roles"],
)
def test_a_malformed_spec_is_bad_input_not_tampering(
    platform: Path, district: dict[str, Path], change: dict[str, Any] | str, needle: str
) -> None:
    nodes = {"platform": (platform, "platform"), "market": (district["market"], "department")}
    spec = spec_for(nodes)
    if change == "no-roles":
        del spec["node"][0]["roles"]
    else:
        assert isinstance(change, dict)
        spec.update(change)
    path = write_spec(platform.parent / "bad.json", spec)
    done = credex("bundle", "sign", str(path), "--home", str(platform))
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert needle in done.stderr
    assert str(path) in one_line(done.stderr)
    assert not list((platform / "trust").glob("bundle-v*.json"))


def test_spec_errors_and_bundle_errors_map_to_different_exit_codes() -> None:
    assert exit_code_for(BundleSpecError("bundle.toml.valid_days: must be 1 or more")) == 2
    assert exit_code_for(keys.BundleError("trust bundle is not signed by the pinned root")) == 3


# -- 4. init refuses a directory it cannot create, with the reason -----------------------------


def test_init_under_a_file_names_the_blocker(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a directory") as info:
        init_node(blocker / "node", name="market", role="department")
    assert str(blocker / "node") in str(info.value)
    done = credex("init", "--name", "market", str(blocker / "node"))
    assert done.returncode == ExitCode.INPUT
    assert "Traceback" not in done.stderr
    assert "not a directory" in done.stderr


def test_init_in_an_unwritable_parent_names_the_os_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(InputError, match="Permission denied") as info:
        init_node(tmp_path / "node", name="market", role="department")
    assert str(tmp_path / "node") in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_init_in_a_read_only_directory_really_fails_cleanly(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    done = credex("init", "--name", "market", str(ro / "node"))
    assert done.returncode == ExitCode.INPUT
    assert "Traceback" not in done.stderr
    assert "Permission denied" in done.stderr


# -- 5. doctor: every check on its own -----------------------------------------------------------


@pytest.fixture
def market(district: dict[str, Path], tmp_path: Path) -> Path:
    home = tmp_path / "market"
    shutil.copytree(district["market"], home, symlinks=True)
    return home


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in checks}


def test_doctor_reports_an_open_key_file_and_still_checks_the_rest(market: Path) -> None:
    (market / "keys" / "signing.key").chmod(0o644)
    checks = by_name(feed_cmds.doctor_checks(market, peers=False))
    assert not checks["keys"]["ok"]
    assert "0644" in checks["keys"]["detail"]
    assert "signing.key" in checks["keys"]["detail"]
    assert checks["config"]["ok"]
    assert checks["database"]["ok"], checks["database"]
    assert not checks["bundle"]["ok"]  # none installed, reported, not raised


def test_doctor_reports_a_missing_key_file(market: Path) -> None:
    (market / "keys" / "storage.key").unlink()
    checks = by_name(feed_cmds.doctor_checks(market, peers=True))
    assert not checks["keys"]["ok"]
    assert "storage.key" in checks["keys"]["detail"]
    assert checks["database"]["ok"]
    assert not checks["peers"]["ok"]  # cannot probe without keys: says so
    assert "not checked" in checks["peers"]["detail"]


def test_doctor_reports_an_unreachable_database_without_its_password(market: Path) -> None:
    config = market / CONFIG_FILE
    url = "postgresql://credex:s3cret-pw@127.0.0.1:1/credex"  # nothing listens on port 1
    text = config.read_text(encoding="utf-8").replace("[store]\n", f'[store]\nurl = "{url}"\n', 1)
    config.write_text(text, encoding="utf-8")
    checks = by_name(feed_cmds.doctor_checks(market, peers=False))
    assert not checks["database"]["ok"]
    assert "unavailable" in checks["database"]["detail"]
    assert "s3cret-pw" not in json.dumps(list(checks.values()))
    assert checks["keys"]["ok"]


def test_doctor_flags_files_others_can_write(market: Path) -> None:
    (market / CONFIG_FILE).chmod(0o666)
    (market / "keys").chmod(0o770)
    (market / "data" / "credex.db").chmod(0o620)
    checks = by_name(feed_cmds.doctor_checks(market, peers=False))
    detail = checks["permissions"]["detail"]
    assert not checks["permissions"]["ok"]
    assert f"{market / CONFIG_FILE} is group and world-writable" in detail
    assert f"{market / 'keys'} is group-writable" in detail
    assert f"{market / 'data' / 'credex.db'} is group-writable" in detail


def test_doctor_without_a_node_reports_the_config(tmp_path: Path) -> None:
    checks = feed_cmds.doctor_checks(tmp_path / "nowhere")
    assert [c["check"] for c in checks] == ["config"]
    assert not checks[0]["ok"]


def test_doctor_json_shape_and_exit_code(market: Path) -> None:
    (market / "keys" / "signing.key").chmod(0o644)
    done = credex("doctor", "--json", "--home", str(market))
    assert done.returncode == ExitCode.FAILURE, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert set(report) == {"ok", "checks"}
    assert report["ok"] is False
    for check in report["checks"]:
        assert set(check) == {"check", "ok", "detail"}
        assert isinstance(check["check"], str)
        assert isinstance(check["ok"], bool)
        assert isinstance(check["detail"], str)
        assert check["detail"]
    names = [c["check"] for c in report["checks"]]
    assert names == ["config", "permissions", "keys", "bundle", "database", "peers"]
    table = credex("doctor", "--home", str(market))
    assert table.returncode == ExitCode.FAILURE
    assert "FAIL" in table.stdout
    assert "0644" in table.stdout


def test_doctor_says_a_reachable_peer_is_fine(
    platform: Path, district: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = {"platform": (platform, "platform"), "market": (district["market"], "department")}
    spec = write_spec(platform.parent / "spec.json", spec_for(nodes))
    done = credex("bundle", "sign", str(spec), "--home", str(platform))
    assert done.returncode == 0, done.stderr

    async def handshake_ok(target: str, **_kwargs: Any) -> Diagnosis:
        return Diagnosis(
            UnavailableCause.TLS_OK,
            f"market at {target} is up and accepts our certificate; the failure was "
            "transient or above TLS (retry, then check the peer's logs)",
        )

    # feed_cmds imports it from node.transport when the check runs (a command's imports are
    # its own, so `credex --help` loads no grpc), so it is replaced there
    monkeypatch.setattr("node.transport.diagnose_unavailable", handshake_ok)
    checks = by_name(feed_cmds.doctor_checks(platform))
    peer = checks["peer market"]
    assert peer["ok"], peer
    assert "failure" not in peer["detail"]
    assert "transient" not in peer["detail"]
    assert "127.0.0.1:" in peer["detail"]
    assert all(c["ok"] for c in checks.values()), checks


# -- 6. nits: the init hint, and --listen named as a flag ------------------------------------


def test_init_hints_at_bundle_pin_for_a_department_only(tmp_path: Path) -> None:
    department = credex("init", "--name", "market", str(tmp_path / "market"))
    assert department.returncode == 0, department.stderr
    hint = one_line(department.stdout)
    assert "credex bundle pin" in hint
    assert "into trust/" not in hint
    platform = credex("init", "--name", "platform", "--role", "platform", str(tmp_path / "p"))
    assert platform.returncode == 0, platform.stderr
    hint = one_line(platform.stdout)
    assert "credex bundle sign" in hint
    assert "copy the platform's root.pub" not in hint


def test_a_bad_listen_flag_is_named_as_the_flag(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--listen 'nohostport'") as info:
        init_node(tmp_path / "node", name="market", role="department", listen="nohostport")
    assert CONFIG_FILE not in str(info.value)
    served = credex("serve", "--listen", "nohostport", "--home", str(tmp_path / "nowhere"))
    assert served.returncode == ExitCode.INPUT
    assert "--listen 'nohostport'" in served.stderr
    assert "Traceback" not in served.stderr


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:7443", "[::1]:7443", "node.example:1", "nohostport", "h:0", "h:65536", ":7443"],
)
def test_the_listen_flag_rule_is_the_config_rule(listen: str) -> None:
    def config_accepts(value: str) -> bool:
        text = f'[node]\nid = "market"\nrole = "department"\n[server]\nlisten = "{value}"\n'
        try:
            parse_config(text, home=Path("/nonexistent"))
        except ConfigError:
            return False
        return True

    try:
        check_listen(listen)
        flag_accepts = True
    except InputError:
        flag_accepts = False
    assert flag_accepts == config_accepts(listen)


def test_serve_may_bind_any_free_port() -> None:
    assert check_listen("127.0.0.1:0", ephemeral=True) == "127.0.0.1:0"
    with pytest.raises(InputError):
        check_listen("127.0.0.1:0")


def test_permission_bits_are_what_doctor_reads(market: Path) -> None:
    # Guards the assumption of the permissions check: init makes nothing group-writable.
    for path in (market, market / CONFIG_FILE, market / "keys", market / "data" / "credex.db"):
        assert not path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
    checks = by_name(feed_cmds.doctor_checks(market, peers=False))
    assert checks["permissions"]["ok"], checks["permissions"]


def test_a_database_from_a_newer_release_is_refused_and_doctor_says_why(market: Path) -> None:
    # after a rollback of the release: the schema is at a revision this one never shipped
    with sqlite3.connect(market / "data" / "credex.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    checks = by_name(feed_cmds.doctor_checks(market, peers=False))
    assert not checks["database"]["ok"]
    assert "0099 is not one this release knows" in checks["database"]["detail"]
    done = credex("status", "--home", str(market))
    assert done.returncode == 1, done.stderr
    said = one_line(done.stderr)
    assert "schema revision 0099, which this release does not know" in said
    assert "credex bug" not in said


def test_a_malformed_store_url_is_named_without_its_password(market: Path) -> None:
    config = market / CONFIG_FILE
    url = "postgresql+psycopg://credex:s3cret-pw@127.0.0.1:notaport/credex"
    text = config.read_text(encoding="utf-8").replace("[store]\n", f'[store]\nurl = "{url}"\n', 1)
    config.write_text(text, encoding="utf-8")
    done = credex("status", "--home", str(market))
    assert done.returncode == 1, done.stderr
    said = one_line(done.stderr)
    assert "[store] url" in said
    assert "malformed" in said
    assert "s3cret-pw" not in said
    assert "credex bug" not in said
