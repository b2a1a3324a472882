"""Add `upstream_cursors.head_seq`: the provider's head as its last feed batch reported it
(`SealedBatch.head_seq`), so `credex status` shows how far a received feed lags. NULL until a
batch reports it (rows written before this revision, or a provider that predates the field).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column (no rewrite of existing rows)."""
    op.add_column("upstream_cursors", sa.Column("head_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop it (a table copy on SQLite, which cannot drop a column in place everywhere)."""
    with op.batch_alter_table("upstream_cursors") as batch:
        batch.drop_column("head_seq")
