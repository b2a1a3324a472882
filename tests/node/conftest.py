"""Stores for the node tests on both dialects: SQLite, then PostgreSQL.

A module's PostgreSQL tests share one throwaway database (`pg_database`, migrated once);
`empty_postgres` gives each test an empty store there. A module that needs another store
(SQLite only, say) defines its own `store` fixture, which takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store import Store, open_store
from node.store.tables import metadata
from tests.node.store_support import TEST_TAGGER


@pytest.fixture(scope="module")
def pg_database(throwaway_postgres: str) -> str:
    """One migrated throwaway PostgreSQL database for the module."""
    open_store(throwaway_postgres).close()
    return throwaway_postgres


def empty_postgres(url: str) -> None:
    """Delete every row of the store at `url` (PostgreSQL) and reset the access log's state
    and the record-tag marker to what a new store has."""
    opened = open_store(url, migrate_schema=False)
    try:
        with opened.write("reset") as conn:
            tables = [t.name for t in reversed(metadata.sorted_tables) if t.name != "log_state"]
            conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)}")
            conn.exec_driver_sql("UPDATE log_state SET size = 0, state = NULL")
            # as migration 0008 leaves a store without records: nothing to adopt
            conn.exec_driver_sql(
                "INSERT INTO maintenance (task, fingerprint, updated_at, finished_at) "
                "VALUES ('record_tags', 'v1', now(), now())"
            )
    finally:
        opened.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store: a new SQLite file, then the module's PostgreSQL database
    emptied for this test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'credex.db'}"
    url: str = request.getfixturevalue("pg_database")
    empty_postgres(url)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, migrated, empty store on each dialect (see `store_url`), tagging its records
    with TEST_TAGGER."""
    opened = open_store(store_url, tagger=TEST_TAGGER)
    yield opened
    opened.close()
