"""Add `push_tombstones` and index `pushes.record_key`.

`push_tombstones` (receiving side): a producer's joint-punishment withdraw/expire notice that
found no copy of the version it ends, because the entry was still on its way (sent by another
process of the producer, its receipt lost). The entry, when it lands, is then not stored
active, so the person is not punished by a copy nobody will withdraw again (docs/lifecycle.md,
"Stopping the punishment"). One row per (producer, record_key), the highest version.

`ix_pushes_record_key` (sending side): every send and report about one record reads its
pushes by record key, which scanned the whole table, receipts included.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and the index."""
    op.create_table(
        "push_tombstones",
        sa.Column("producer", sa.String(64), nullable=False),
        sa.Column("record_key", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("producer", "record_key", name="pk_push_tombstones"),
    )
    op.create_index("ix_pushes_record_key", "pushes", ["record_key"])


def downgrade() -> None:
    """Drop them (an older release neither reads nor writes tombstones)."""
    op.drop_index("ix_pushes_record_key", table_name="pushes")
    op.drop_table("push_tombstones")
