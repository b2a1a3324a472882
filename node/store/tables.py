"""The store's tables, as SQLModel classes (docs/decisions/0004-store-schema.md).

These classes are the schema's single description in code: Alembic migrations create exactly
this (a test compares the migrated database with this metadata), and the hot paths of `Store`
use their `__table__` with SQLAlchemy Core for batch inserts. Timestamps are stored in UTC;
SQLite gives them back naive and `Store` re-attaches UTC.

Record bodies are encrypted (keys.StorageCipher, row id as associated data) and subjects appear
only as blind-index tokens: no table holds a raw identifier or name.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    LargeBinary,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel

__all__ = [
    "AccessLogRow",
    "CheckpointRow",
    "FeedEventRow",
    "GrantRevocationRow",
    "GrantRow",
    "IngestStateRow",
    "LifecycleTaskRow",
    "LogStateRow",
    "MaintenanceRow",
    "NonceRow",
    "ObjectionRow",
    "PushRow",
    "PushTombstoneRow",
    "RecordLinkRow",
    "RecordRow",
    "SubscriptionRow",
    "UpstreamCursorRow",
    "WitnessRow",
    "binary_value",
    "metadata",
]

metadata = SQLModel.metadata


def _ts(*, nullable: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable)


class RecordRow(SQLModel, table=True):
    """One version of one record; corrections add a row and supersede the old one."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("producer", "record_key", "version", name="uq_records_key_version"),
        Index("ix_records_subject_index", "subject_index"),
        Index("ix_records_item_state", "item_id", "state"),
        Index("ix_records_state_max_end", "state", "disclosure_max_end"),
    )

    row_id: str = Field(primary_key=True, max_length=36)
    producer: str = Field(max_length=64)
    record_key: str = Field(max_length=64)
    version: int
    item_id: str = Field(max_length=64)
    catalog_version: str = Field(max_length=32)
    subject_index: str = Field(max_length=64)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    content_hash: str = Field(max_length=64)
    state: str = Field(max_length=16)
    severity: str | None = Field(default=None, max_length=16)
    decided_on: dt.date | None = None
    disclosure_min_end: dt.date | None = None
    disclosure_max_end: dt.date | None = None
    disclosure_rule: str = Field(max_length=200)
    objection: bool = False
    created_at: dt.datetime = Field(sa_column=_ts())
    origin: str = Field(max_length=16)
    # True: stored by ingest from the producer's source rows; False: a lifecycle correction or
    # a peer's record (migration 0005; ingest compares rows with the newest source version)
    from_source: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    # keyed BLAKE2b over the row id and every other column (node.store.tags, decision 0018);
    # NULL only for a row of an older release not adopted yet (migration 0009)
    tag: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class RecordLinkRow(SQLModel, table=True):
    """A linked subject of a record (legal representative, Shandong Art. 31), by blind index."""

    __tablename__ = "record_links"
    __table_args__ = (
        PrimaryKeyConstraint("row_id", "subject_index", name="pk_record_links"),
        Index("ix_record_links_subject_index", "subject_index"),
    )

    row_id: str = Field(foreign_key="records.row_id", max_length=36)
    subject_index: str = Field(max_length=64)


class FeedEventRow(SQLModel, table=True):
    """One event of one subscriber's gap-free feed."""

    __tablename__ = "feed_events"
    __table_args__ = (PrimaryKeyConstraint("subscriber", "seq", name="pk_feed_events"),)

    subscriber: str = Field(max_length=64)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False, autoincrement=False))
    kind: str = Field(max_length=24)
    record_row_id: str = Field(max_length=36)
    record_key: str = Field(max_length=64)
    version: int
    created_at: dt.datetime = Field(sa_column=_ts())


class SubscriptionRow(SQLModel, table=True):
    """A subscriber's feed: items covered, last assigned, last sent and last acknowledged
    sequence."""

    __tablename__ = "subscriptions"

    subscriber: str = Field(primary_key=True, max_length=64)
    items: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of item ids
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    acked_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    # the last event of the batches sent to the subscriber: it acknowledges no further
    delivered_seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    acked_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: dt.datetime = Field(sa_column=_ts())


class UpstreamCursorRow(SQLModel, table=True):
    """On the receiving side: how far this node has applied a peer's feed, the peer's head as
    its last batch reported it (NULL: never reported), and when that batch was applied."""

    __tablename__ = "upstream_cursors"

    peer: str = Field(primary_key=True, max_length=64)
    cursor: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: dt.datetime = Field(sa_column=_ts())
    head_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class IngestStateRow(SQLModel, table=True):
    """The adapter resume state of one source, saved in the batch's transaction."""

    __tablename__ = "ingest_state"

    source_key: str = Field(primary_key=True, max_length=200)
    state: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    updated_at: dt.datetime = Field(sa_column=_ts())


class NonceRow(SQLModel, table=True):
    """A request nonce seen from a signer, kept until it could no longer be replayed."""

    __tablename__ = "nonces"
    __table_args__ = (
        PrimaryKeyConstraint("keyid", "nonce", name="pk_nonces"),
        Index("ix_nonces_expires_at", "expires_at"),
    )

    keyid: str = Field(max_length=64)
    nonce: str = Field(max_length=128)
    expires_at: dt.datetime = Field(sa_column=_ts())


class AccessLogRow(SQLModel, table=True):
    """One access-log leaf: the exact leaf bytes and their RFC 9162 leaf hash."""

    __tablename__ = "access_log"

    idx: int = Field(
        sa_column=Column(BigInteger, primary_key=True, autoincrement=False, nullable=False)
    )
    leaf: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: dt.datetime = Field(sa_column=_ts())


class LogStateRow(SQLModel, table=True):
    """The single row (id 1) holding the log size and the compact-range state; appends lock it."""

    __tablename__ = "log_state"

    id: int = Field(primary_key=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    updated_at: dt.datetime = Field(sa_column=_ts())


class CheckpointRow(SQLModel, table=True):
    """A signed checkpoint note of the access log, by tree size."""

    __tablename__ = "checkpoints"

    size: int = Field(
        sa_column=Column(BigInteger, primary_key=True, autoincrement=False, nullable=False)
    )
    note: str = Field(sa_column=Column(Text, nullable=False))
    created_at: dt.datetime = Field(sa_column=_ts())


class WitnessRow(SQLModel, table=True):
    """A witness's cosigned note for one checkpoint size."""

    __tablename__ = "witness"
    __table_args__ = (PrimaryKeyConstraint("size", "witness", name="pk_witness"),)

    size: int = Field(sa_column=Column(BigInteger, nullable=False, autoincrement=False))
    witness: str = Field(max_length=200)
    note: str = Field(sa_column=Column(Text, nullable=False))
    created_at: dt.datetime = Field(sa_column=_ts())


class GrantRow(SQLModel, table=True):
    """A subject's signed authorisation (node.grants.Grant) as registered, with its use count."""

    __tablename__ = "grants"
    __table_args__ = (Index("ix_grants_subject_digest", "subject_digest"),)

    # 128: the longest grant id node.grants accepts (`_GRANT_ID`)
    grant_id: str = Field(primary_key=True, max_length=128)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # signed DSSE, as received
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # Grant.to_payload()
    subject_digest: str = Field(max_length=64)
    grantee: str = Field(max_length=64)
    purpose: str = Field(max_length=64)
    items: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of item ids
    valid_from: dt.datetime = Field(sa_column=_ts())
    valid_until: dt.datetime = Field(sa_column=_ts())
    use_limit: int
    uses: int = 0
    revoked_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    revoked_reason: str | None = Field(default=None, max_length=200)


class GrantRevocationRow(SQLModel, table=True):
    """A grant revocation as received (node.grants.RecordedRevocation), kept by grant id whether
    or not the grant is registered here: a grant presented after it starts revoked."""

    __tablename__ = "grant_revocations"

    grant_id: str = Field(primary_key=True, max_length=128)
    revoked_at: dt.datetime = Field(sa_column=_ts())
    reason: str = Field(max_length=200)
    # the signed revocation envelope as received (evidence); NULL for the bundle's list
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class ObjectionRow(SQLModel, table=True):
    """An objection to a record and its review clock (Shandong Art. 39)."""

    __tablename__ = "objections"
    __table_args__ = (Index("ix_objections_record_key", "record_key"),)

    objection_id: str = Field(primary_key=True, max_length=64)
    record_row_id: str = Field(max_length=36)
    record_key: str = Field(max_length=64)
    reason: str = Field(max_length=200)
    opened_at: dt.datetime = Field(sa_column=_ts())
    due_on: dt.date
    closed_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    outcome: str | None = Field(default=None, max_length=200)


class LifecycleTaskRow(SQLModel, table=True):
    """An open or closed lifecycle task (objection review, correction, repair) with its due day."""

    __tablename__ = "lifecycle_tasks"
    __table_args__ = (Index("ix_lifecycle_tasks_open", "closed_at", "due_on"),)

    task_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=32)
    record_key: str = Field(max_length=64)
    opened_at: dt.datetime = Field(sa_column=_ts())
    due_on: dt.date
    approximate_due: bool = False
    closed_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    outcome: str | None = Field(default=None, max_length=200)


class MaintenanceRow(SQLModel, table=True):
    """A data task the node runs on itself after an upgrade (docs/decisions/0014): the rules it
    last ran for (`fingerprint`), where an interrupted pass resumes (`resume_after`, a row id)
    and when the pass for `fingerprint` finished (NULL: pending or under way)."""

    __tablename__ = "maintenance"

    task: str = Field(primary_key=True, max_length=64)
    fingerprint: str = Field(max_length=64)
    resume_after: str | None = Field(default=None, max_length=36)
    updated_at: dt.datetime = Field(sa_column=_ts())
    finished_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class PushRow(SQLModel, table=True):
    """A joint-punishment push sent to a node, and its signed receipt when it came back."""

    __tablename__ = "pushes"
    # every per-record read (the sends about one record, the propagation report) is by key
    __table_args__ = (Index("ix_pushes_record_key", "record_key"),)

    push_id: str = Field(primary_key=True, max_length=64)
    to_node: str = Field(max_length=64)
    record_key: str = Field(max_length=64)
    sent_at: dt.datetime = Field(sa_column=_ts())
    receipt: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    receipt_at: dt.datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class PushTombstoneRow(SQLModel, table=True):
    """On the receiving side: a producer's withdraw/expire notice that found no copy of the
    version it ends (the entry was still on its way), kept so that the entry, when it lands,
    is not stored active. The highest version per record; `created_at` is when it was
    recorded (retention counts from it)."""

    __tablename__ = "push_tombstones"
    __table_args__ = (PrimaryKeyConstraint("producer", "record_key", name="pk_push_tombstones"),)

    producer: str = Field(max_length=64)
    record_key: str = Field(max_length=64)
    version: int
    kind: str = Field(max_length=16)
    created_at: dt.datetime = Field(sa_column=_ts())


def binary_value(value: object) -> bytes:
    """A binary column's value as bytes, whatever someone editing the database stored there.

    SQLite keeps the type a value was written with, not the column's: a leaf or a record body
    rewritten with `UPDATE ... SET leaf = replace(leaf, ...)` comes back as text. Its UTF-8
    bytes (any other value's text form) are handed on, so that what checks them (the access
    log's hashes, a body's authenticated encryption) reports the edit as it reports any other,
    instead of the read failing with a TypeError."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")
