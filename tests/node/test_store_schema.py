"""The Alembic migrations create exactly the schema the SQLModel tables describe."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from node.store import known_revisions, migrate, open_store, schema_revision
from node.store.engine import MIGRATIONS_DIR, SCHEMA_HEAD, make_engine
from node.store.tables import metadata

# The newest revision: one head, whichever migrations are added after this test was written.
HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_the_schema_head_constant_is_the_newest_migration() -> None:
    # bump node.store.engine.SCHEMA_HEAD with every new migration, or stores stay behind it
    assert SCHEMA_HEAD == HEAD == known_revisions()[1]


def test_a_store_at_the_head_opens_without_loading_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credex.db'}"
    open_store(url).close()  # created and migrated here
    probe = (
        "import sys; from node.store import open_store; "
        f"open_store({url!r}).close(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout


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
    assert schema_revision(engine) == HEAD
    engine.dispose()


def test_a_store_made_at_revision_0001_upgrades_and_keeps_its_records(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'credex.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    engine.dispose()
    store = open_store(f"sqlite:///{tmp_path / 'credex.db'}")  # migrates to the newest
    assert schema_revision(store.engine) == HEAD
    with store.read("list the indexes") as conn:
        names = {r[1] for r in conn.exec_driver_sql("PRAGMA index_list(records)")}
        plan = " ".join(
            str(r[-1])
            for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT version FROM records "
                "WHERE producer = 'p' AND record_key = 'k'"
            )
        )
    assert "ix_records_producer_key" not in names
    # lookups by (producer, record_key) still use an index: the unique one's leading columns
    assert "uq_records_key_version" in plan or "sqlite_autoindex_records" in plan, plan
    store.close()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    db = tmp_path / "credex.db"
    store = open_store(f"sqlite:///{db}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_pushes_are_read_by_record_key_through_an_index(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'credex.db'}")
    with store.read("plan a query") as conn:
        plan = " ".join(
            str(r[-1])
            for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT push_id FROM pushes WHERE record_key = 'k'"
            )
        )
    assert "ix_pushes_record_key" in plan, plan
    store.close()


def test_subscriptions_from_before_0008_count_what_was_queued_as_sent(tmp_path: Path) -> None:
    # An older release did not record what it sent: an honest subscriber's acknowledgement of
    # a batch it received before the upgrade must still be accepted after it.
    engine = make_engine(f"sqlite:///{tmp_path / 'credex.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
        conn.exec_driver_sql(
            "INSERT INTO subscriptions (subscriber, items, last_seq, acked_seq, created_at) "
            "VALUES ('platform', '[]', 7, 2, '2026-11-25 00:00:00')"
        )
    engine.dispose()
    store = open_store(f"sqlite:///{tmp_path / 'credex.db'}")
    sub = store.subscription("platform")
    assert sub is not None
    assert (sub.last_seq, sub.acked_seq, sub.delivered_seq) == (7, 2, 7)
    store.close()
