"""Drop `ix_records_producer_key`: the unique (producer, record_key, version) index serves
every lookup it served (its leading columns), and each stored record paid for both.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the redundant index."""
    op.drop_index("ix_records_producer_key", table_name="records")


def downgrade() -> None:
    """Recreate it."""
    op.create_index("ix_records_producer_key", "records", ["producer", "record_key"])
