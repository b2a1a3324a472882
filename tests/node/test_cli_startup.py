"""`credex --help`, every command's help and the commands that need no node start without the
store, grpc or OpenTelemetry (node/cli/__init__.py): loading them took about a second before
anything was done. Each case runs a fresh process, as an operator's shell does, and reads the
modules it loaded when it exited."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.demo_data import write_demo_data

# What a command that needs no node must not load; the store is named too, as it could one day
# be reached without SQLAlchemy.
HEAVY = ("sqlalchemy", "sqlmodel", "grpc", "opentelemetry", "alembic", "node.store")

# `main()`, then the names of the loaded modules written to the file $CREDEX_TEST_MODULES names
# (atexit: main always ends in SystemExit).
_PROBE = """
import atexit, json, os, sys

def _dump():
    with open(os.environ["CREDEX_TEST_MODULES"], "w", encoding="utf-8") as out:
        json.dump(sorted(sys.modules), out)

atexit.register(_dump)
sys.argv[0] = "credex"
from node.cli import main
main()
"""

# Renders the help of every command and group, as `credex ... --help` does, in one process.
_EVERY_HELP = """
import sys
from typer.main import get_command
from typer.testing import CliRunner
from node.cli import app

def paths(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, [*path, name])

runner = CliRunner()
failed = [p for p in paths(get_command(app), []) if runner.invoke(app, [*p, "--help"]).exit_code]
if failed:
    sys.exit(f"help failed for {failed}")
"""


def _loaded(
    tmp_path: Path, *args: str, code: str = _PROBE, heavy: tuple[str, ...] = HEAVY
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `credex ARGS` (or `code` in place of `main()`) in a fresh interpreter; the finished
    process and which of `heavy` (packages or modules) it loaded."""
    modules = tmp_path / "modules.json"
    env = {**os.environ, "CREDEX_TEST_MODULES": str(modules)}
    if code is not _PROBE:
        code = _PROBE.replace("from node.cli import main\nmain()", code)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert modules.exists(), done.stderr
    names = json.loads(modules.read_text(encoding="utf-8"))
    return done, [h for h in heavy if any(n == h or n.startswith(h + ".") for n in names)]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["status", "--help"],
        ["log", "verify", "--help"],
        ["catalog", "show"],
        ["catalog", "show", "admin_penalty", "--json"],
    ],
)
def test_help_and_the_catalogue_load_no_store_grpc_or_telemetry(
    tmp_path: Path, args: list[str]
) -> None:
    done, heavy = _loaded(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert heavy == []


def test_every_commands_help_loads_no_store_grpc_or_telemetry(tmp_path: Path) -> None:
    # also catches a command module that imports the store at its top (a new one included)
    done, heavy = _loaded(tmp_path, code=_EVERY_HELP)
    assert done.returncode == 0, done.stderr
    assert heavy == []


def test_mapping_check_loads_no_store_grpc_or_telemetry(tmp_path: Path) -> None:
    data = write_demo_data(tmp_path / "exports", today=dt.date(2026, 5, 1))
    for mapping in (data.penalties_mapping, data.licences_mapping):
        done, heavy = _loaded(tmp_path, "mapping", "check", str(mapping), "--sample", "20")
        assert done.returncode == 0, done.stderr
        assert heavy == [], mapping


def test_a_node_command_that_calls_no_peer_loads_no_grpc_or_telemetry_sdk(tmp_path: Path) -> None:
    # the store it needs (which also shows that the probe sees what a command loads), but not
    # grpc or the OpenTelemetry SDK, with [telemetry] exporter = "none" (the default)
    watched = (*HEAVY, "opentelemetry.sdk")
    # the node is "home", not "node": with -c the working directory is first on sys.path
    done, heavy = _loaded(tmp_path, "init", "--name", "x", "--role", "department", "home")
    assert done.returncode == 0, done.stderr
    assert {"sqlalchemy", "sqlmodel", "node.store"} <= set(heavy)
    done, heavy = _loaded(tmp_path, "log", "verify", "--home", "home", heavy=watched)
    assert done.returncode == 0, done.stderr
    assert "node.store" in heavy
    assert "grpc" not in heavy
    assert "opentelemetry.sdk" not in heavy
    # `keys show` reads the key directory and credex.toml, never the store
    done, heavy = _loaded(tmp_path, "keys", "show", "--home", "home")
    assert done.returncode == 0, done.stderr
    assert heavy == []


def test_an_error_still_becomes_a_line_and_an_exit_code(tmp_path: Path) -> None:
    # main() imports the error families it catches only when an exception reaches it
    done, _heavy = _loaded(tmp_path, "status", "--home", str(tmp_path / "nowhere"), "--json")
    assert done.returncode == 2
    assert done.stderr.startswith("error:")
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)["exit"] == 2
