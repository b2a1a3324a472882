"""Opening the database: engine settings per dialect, write transactions, migrations.

SQLite runs in WAL mode with `synchronous=FULL`: WAL alone already survives a killed process
(kill -9) with NORMAL, but the access log promises that an entry is durable before data leaves,
which includes a power cut, so every commit is fsynced; ingest commits once per batch of rows,
so the cost is one fsync per batch.

Write transactions start with `BEGIN IMMEDIATE` so two processes never both read and then both
try to upgrade to a write lock (which SQLite would refuse at once instead of waiting); readers
use plain deferred transactions and never block.

PostgreSQL serialises what must be single-writer with row locks (`SELECT ... FOR UPDATE` on the
log state and on a subscriber's sequence counter), so several replicas can share one database.
Migrations run under an advisory lock there, so replicas starting together migrate once.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError

from node.store.errors import StoreUnavailableError, redact_url, translate_errors

__all__ = ["SCHEMA_HEAD", "WRITE", "known_revisions", "make_engine", "migrate"]

# Execution option that marks a connection's transaction as a write (BEGIN IMMEDIATE on SQLite).
WRITE = "credex_write"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATION_LOCK = 0x63726578  # "crex": the advisory lock id migrations take on PostgreSQL
SQLITE_BUSY_TIMEOUT_MS = 30_000
# The newest migration in node/migrations/versions (a test holds the two equal). A store already
# there is opened without loading Alembic at all: a quarter of a second of every command.
SCHEMA_HEAD = "0009"


def make_engine(url: str) -> Engine:
    """Create an engine for a `sqlite:///PATH` or `postgresql+psycopg://` URL.

    Refuses other schemes and in-memory SQLite (a node's store must outlive the process).
    """
    if url.startswith("sqlite:///") and url != "sqlite:///" and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.parent.is_dir():
            raise StoreUnavailableError(
                f"store: the directory of the SQLite file does not exist ({path.parent})"
            )
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    if url.startswith(("postgresql+psycopg://", "postgresql://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        try:
            return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        except (ValueError, ArgumentError) as error:
            # e.g. a port that is not a number; the driver's text may quote the URL
            raise StoreUnavailableError(
                f"store: the [store] url {redact_url(url)!r} is malformed "
                f"({type(error).__name__}): check its host, port and database name"
            ) from None
    raise StoreUnavailableError(
        f"store: unsupported URL {redact_url(url)!r} (use sqlite:///PATH or postgresql+psycopg://)"
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below emit BEGIN itself (pysqlite's own is too late).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = bool(conn.get_execution_options().get(WRITE, False))
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (`alembic upgrade head`), idempotently.

    Concurrent callers are serialised (BEGIN IMMEDIATE on SQLite, an advisory lock on
    PostgreSQL), so several processes opening one store migrate it once. A store at
    SCHEMA_HEAD already is only read (a schema never goes back to an older revision).
    """
    with translate_errors("read the schema revision"), engine.connect() as conn:
        if _revision_in(conn) == SCHEMA_HEAD:
            return
    from alembic import command  # noqa: PLC0415 (only when there is something to migrate)
    from alembic.config import Config  # noqa: PLC0415
    from alembic.util import CommandError as AlembicError  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with translate_errors("migrate the schema"), engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            _check_known_revision(conn)
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
            except AlembicError as error:
                raise StoreUnavailableError(
                    f"store: the schema migration failed ({type(error).__name__}); "
                    "`credex doctor` shows the database's schema revision"
                ) from None


@functools.cache  # the migrations shipped with this release never change while it runs
def known_revisions() -> tuple[frozenset[str], str]:
    """The schema revisions this release can upgrade from, and the newest (head)."""
    from alembic.config import Config  # noqa: PLC0415 (see SCHEMA_HEAD)
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    assert head is not None  # the package ships its migrations
    return frozenset(r.revision for r in scripts.walk_revisions()), head


def _check_known_revision(conn: Connection) -> None:
    """Refuse a database at a revision this release does not know: a newer credex migrated
    it (after a rollback of the release, say), and this one must neither guess nor write."""
    current = _revision_in(conn)
    known, head = known_revisions()
    if current is not None and current not in known:
        raise StoreUnavailableError(
            f"store: the database is at schema revision {current}, which this release does not "
            f"know (its newest is {head}): a newer credex wrote it. Run that release again, or "
            "restore a backup made with this one"
        )


def schema_revision(engine: Engine) -> str | None:
    """Return the store's current Alembic revision, or None before the first migration."""
    with translate_errors("read the schema revision"), engine.connect() as conn:
        return _revision_in(conn)


def _revision_in(conn: Connection) -> str | None:
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(value) if value is not None else None
