"""The Alembic migrations create exactly the schema the SQLModel tables describe."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from node.store import migrate, open_store, schema_revision
from node.store.engine import make_engine
from node.store.tables import metadata


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'credex.db'}")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    store.close()


def test_migration_is_idempotent_and_records_the_revision(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'credex.db'}")
    assert schema_revision(engine) is None
    migrate(engine)
    migrate(engine)
    assert schema_revision(engine) == "0001"
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    db = tmp_path / "credex.db"
    store = open_store(f"sqlite:///{db}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
