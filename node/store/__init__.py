"""The node's own database (docs/decisions/0004-store-schema.md).

SQLite in WAL mode by default, PostgreSQL in production; the schema is created and upgraded by
Alembic at open. This package (with node/migrations) is the only code that imports SQLAlchemy,
SQLModel or Alembic; callers get typed dataclasses and `StoreError`s, never ORM objects or
driver exceptions.
"""

from node.store.engine import known_revisions, make_engine, migrate, schema_revision
from node.store.errors import (
    RecordTampered,
    StateChanged,
    StoreConflictError,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    redact_url,
)
from node.store.grantledger import GrantSealing, SqlGrantLedger
from node.store.logbackend import SqlLogBackend
from node.store.models import (
    CLOSED_STATES,
    EVENT_KINDS,
    RECORD_STATES,
    FeedEvent,
    NewRecord,
    RecordHead,
    ReleaseCandidate,
    StoredRecord,
    Subscription,
    UpstreamFeed,
)
from node.store.store import Store, from_db_time, open_store, to_db_time

__all__ = [
    "CLOSED_STATES",
    "EVENT_KINDS",
    "RECORD_STATES",
    "FeedEvent",
    "GrantSealing",
    "NewRecord",
    "RecordHead",
    "RecordTampered",
    "ReleaseCandidate",
    "SqlGrantLedger",
    "SqlLogBackend",
    "StateChanged",
    "Store",
    "StoreConflictError",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "StoredRecord",
    "Subscription",
    "UpstreamFeed",
    "from_db_time",
    "known_revisions",
    "make_engine",
    "migrate",
    "open_store",
    "redact_url",
    "schema_revision",
    "to_db_time",
]
