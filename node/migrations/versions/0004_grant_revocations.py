"""Add `grant_revocations`: revocations kept by grant id, registered grant or not, so a grant
revoked before it was first presented here starts revoked (PIPL Art. 15). Revocations already
stored on `grants` rows are copied in. `grants.grant_id` widens from 64 to 128 characters, the
longest grant id `node.grants` accepts (a longer valid id could not be registered before).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Widen `grants.grant_id`, create the table and copy the revocations of registered grants
    into it."""
    # batch mode: SQLite cannot alter a column's type in place (a table copy there; a plain
    # ALTER COLUMN on PostgreSQL)
    with op.batch_alter_table("grants") as batch:
        batch.alter_column(
            "grant_id", existing_type=sa.String(64), type_=sa.String(128), existing_nullable=False
        )
    op.create_table(
        "grant_revocations",
        sa.Column("grant_id", sa.String(128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    op.execute(
        "INSERT INTO grant_revocations (grant_id, revoked_at, reason, body) "
        "SELECT grant_id, revoked_at, COALESCE(revoked_reason, 'revoked'), NULL "
        "FROM grants WHERE revoked_at IS NOT NULL"
    )


def downgrade() -> None:
    """Drop it (revocations of registered grants stay on their `grants` rows; those of
    grants never registered are lost) and narrow `grants.grant_id` back to 64 characters
    (fails on PostgreSQL while a longer id is registered, rather than truncating it)."""
    op.drop_table("grant_revocations")
    with op.batch_alter_table("grants") as batch:
        batch.alter_column(
            "grant_id", existing_type=sa.String(128), type_=sa.String(64), existing_nullable=False
        )
