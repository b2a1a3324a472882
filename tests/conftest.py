"""Fixtures shared by every test package."""

from __future__ import annotations

import compileall
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from node.cluster import PORTS_ENV
from tests.workers import worker_port_range, worker_tag

PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
_PACKAGES = ("catalog", "keys", "adapters", "node")


def pytest_configure(config: pytest.Config) -> None:
    """Give this process (each xdist worker, or the one pytest process) its own range of
    cluster ports, unless the caller set one."""
    os.environ.setdefault(PORTS_ENV, worker_port_range())


def pytest_sessionstart(session: pytest.Session) -> None:
    """Write the bytecode of credex's own packages before any test starts a `credex` process.

    The tests start a few hundred of them, and each imports ~130 credex modules. Where
    PYTHONDONTWRITEBYTECODE is set (as in many CI images) no process ever writes their .pyc,
    so every one compiled them all from source again: about 0.2 s of CPU per process. Reading
    a .pyc is unaffected by that setting. Up-to-date files are skipped, so this costs nothing
    on the next run; the xdist controller does it once, before its workers start.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    root = Path(__file__).resolve().parent.parent
    for package in _PACKAGES:
        compileall.compile_dir(root / package, quiet=1)


@pytest.fixture(scope="module")
def throwaway_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 for one test module, dropped afterwards.

    Skips (with the reason) when the server is unreachable, except under CI=true, where a
    missing server fails the tests that need it.
    """
    name = f"credex_test_{worker_tag()}_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable ({type(error).__name__})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
