"""Initial schema: records, feeds, subscriptions, ingest state, nonces, access log, grants,
objections, lifecycle tasks and pushes (docs/decisions/0004-store-schema.md).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _s(name: str, length: int, *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    """Create every table, index and the single log_state row."""
    op.create_table(
        "records",
        _s("row_id", 36),
        _s("producer", 64),
        _s("record_key", 64),
        sa.Column("version", sa.Integer(), nullable=False),
        _s("item_id", 64),
        _s("catalog_version", 32),
        _s("subject_index", 64),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _s("content_hash", 64),
        _s("state", 16),
        _s("severity", 16, nullable=True),
        sa.Column("decided_on", sa.Date(), nullable=True),
        sa.Column("disclosure_min_end", sa.Date(), nullable=True),
        sa.Column("disclosure_max_end", sa.Date(), nullable=True),
        _s("disclosure_rule", 200),
        sa.Column("objection", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _s("origin", 16),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("producer", "record_key", "version", name="uq_records_key_version"),
    )
    op.create_index("ix_records_subject_index", "records", ["subject_index"])
    op.create_index("ix_records_producer_key", "records", ["producer", "record_key"])
    op.create_index("ix_records_item_state", "records", ["item_id", "state"])
    op.create_index("ix_records_state_max_end", "records", ["state", "disclosure_max_end"])

    op.create_table(
        "record_links",
        _s("row_id", 36),
        _s("subject_index", 64),
        sa.ForeignKeyConstraint(["row_id"], ["records.row_id"]),
        sa.PrimaryKeyConstraint("row_id", "subject_index", name="pk_record_links"),
    )
    op.create_index("ix_record_links_subject_index", "record_links", ["subject_index"])

    op.create_table(
        "feed_events",
        _s("subscriber", 64),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        _s("kind", 24),
        _s("record_row_id", 36),
        _s("record_key", 64),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("subscriber", "seq", name="pk_feed_events"),
    )
    op.create_table(
        "subscriptions",
        _s("subscriber", 64),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False),
        _ts("acked_at", nullable=True),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("subscriber"),
    )
    op.create_table(
        "upstream_cursors",
        _s("peer", 64),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("peer"),
    )
    op.create_table(
        "ingest_state",
        _s("source_key", 200),
        sa.Column("state", sa.Text(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("source_key"),
    )
    op.create_table(
        "nonces",
        _s("keyid", 64),
        _s("nonce", 128),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("keyid", "nonce", name="pk_nonces"),
    )
    op.create_index("ix_nonces_expires_at", "nonces", ["expires_at"])

    op.create_table(
        "access_log",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("idx"),
    )
    log_state = op.create_table(
        "log_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    # The one row appends lock (SELECT ... FOR UPDATE): it must exist before the first append.
    op.bulk_insert(
        log_state, [{"id": 1, "size": 0, "state": None, "updated_at": dt.datetime.now(dt.UTC)}]
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "witness",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        _s("witness", 200),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("size", "witness", name="pk_witness"),
    )

    op.create_table(
        "grants",
        _s("grant_id", 64),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _s("subject_digest", 64),
        _s("grantee", 64),
        _s("purpose", 64),
        sa.Column("items", sa.Text(), nullable=False),
        _ts("valid_from"),
        _ts("valid_until"),
        sa.Column("use_limit", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        _ts("revoked_at", nullable=True),
        _s("revoked_reason", 200, nullable=True),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    op.create_index("ix_grants_subject_digest", "grants", ["subject_digest"])
    op.create_table(
        "objections",
        _s("objection_id", 64),
        _s("record_row_id", 36),
        _s("record_key", 64),
        _s("reason", 200),
        _ts("opened_at"),
        sa.Column("due_on", sa.Date(), nullable=False),
        _ts("closed_at", nullable=True),
        _s("outcome", 200, nullable=True),
        sa.PrimaryKeyConstraint("objection_id"),
    )
    op.create_index("ix_objections_record_key", "objections", ["record_key"])
    op.create_table(
        "lifecycle_tasks",
        _s("task_id", 64),
        _s("kind", 32),
        _s("record_key", 64),
        _ts("opened_at"),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("approximate_due", sa.Boolean(), nullable=False),
        _ts("closed_at", nullable=True),
        _s("outcome", 200, nullable=True),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("ix_lifecycle_tasks_open", "lifecycle_tasks", ["closed_at", "due_on"])
    op.create_table(
        "pushes",
        _s("push_id", 64),
        _s("to_node", 64),
        _s("record_key", 64),
        _ts("sent_at"),
        sa.Column("receipt", sa.LargeBinary(), nullable=True),
        _ts("receipt_at", nullable=True),
        sa.PrimaryKeyConstraint("push_id"),
    )


def downgrade() -> None:
    """Drop every table (the access log with it: only for throwaway databases)."""
    for table in (
        "pushes",
        "lifecycle_tasks",
        "objections",
        "grants",
        "witness",
        "checkpoints",
        "log_state",
        "access_log",
        "nonces",
        "ingest_state",
        "upstream_cursors",
        "subscriptions",
        "feed_events",
        "record_links",
        "records",
    ):
        op.drop_table(table)
