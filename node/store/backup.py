"""A consistent copy of a live SQLite store (for `credex backup`).

SQLite's online backup API copies the database page by page inside one read transaction, so
the copy is the database exactly as it was at one commit, even while `credex serve` or an
ingest keeps writing (WAL mode: readers never block writers, writers never block this reader).
Copying the file with `cp` instead could catch the main file and the WAL at different moments.

PostgreSQL is refused here on purpose: its consistent snapshot is `pg_dump` (or the server's
own base backups), which the operator guide documents.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.store.errors import StoreError, StoreFullError, translate_errors
from node.store.store import Store

__all__ = ["backup_sqlite_to"]


def backup_sqlite_to(store: Store, path: Path) -> int:
    """Write a consistent copy of the SQLite `store` to the new file `path`; return its size.

    Refuses (StoreError) a PostgreSQL store and an existing `path`. The copy is checked with
    `PRAGMA integrity_check` before this returns, and switched out of WAL mode so it is one
    self-contained file.
    """
    if store.dialect != "sqlite":
        raise StoreError(
            f"store: {store.dialect} databases are backed up with their own tools "
            "(PostgreSQL: pg_dump, see docs/operator-guide.md), not by credex backup"
        )
    if path.exists():
        raise StoreError(f"store backup: {path} already exists; refusing to overwrite it")
    try:
        verdict = _copy(store, path)
    except sqlite3.Error as error:
        path.unlink(missing_ok=True)
        # The driver's text is classified, never echoed (it could quote data).
        if "full" in str(error).lower():
            raise StoreFullError(
                f"store backup: no space left for the copy at {path} (free space and retry)"
            ) from None
        raise StoreError(
            f"store backup: SQLite refused the copy to {path} ({type(error).__name__})"
        ) from None
    if verdict != "ok":
        path.unlink(missing_ok=True)
        raise StoreError("store backup: the copy failed SQLite's integrity check")
    return path.stat().st_size


def _copy(store: Store, path: Path) -> str:
    with translate_errors("backing up the store"):
        raw = store.engine.raw_connection()
        try:
            source = raw.driver_connection
            if not isinstance(source, sqlite3.Connection):  # pragma: no cover - dialect checked
                raise StoreError("store backup: not a SQLite connection")
            target = sqlite3.connect(path)
            try:
                # pages=-1: one step, one read transaction, hence one consistent snapshot.
                source.backup(target, pages=-1)
                target.execute("PRAGMA journal_mode=DELETE")
                row = target.execute("PRAGMA integrity_check").fetchone()
            finally:
                target.close()
        finally:
            raw.close()
    return str(row[0]) if row else "no answer"
