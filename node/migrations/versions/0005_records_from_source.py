"""Add `records.from_source`: True for a version ingest stored from the producer's own source
rows, False for a version a lifecycle correction wrote (or one received from a peer). Ingest
compares a source row with the newest version that came from the source, so an unchanged
export never undoes a correction (docs/lifecycle.md, "Re-ingest and the lifecycle").

Existing local versions are marked as from the source, except those a correction task names
(`lifecycle_tasks` kind `correction`, outcome `version N: ...`, as `credex lifecycle correct`
writes it). A correction stored by a release before this one whose task was never written (a
crash between the two) cannot be told apart and counts as from the source.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (False by default) and mark the existing versions (module doc)."""
    op.add_column(
        "records",
        sa.Column("from_source", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(
        sa.text(
            "UPDATE records SET from_source = :yes WHERE origin = 'local' AND NOT EXISTS ("
            "SELECT 1 FROM lifecycle_tasks t WHERE t.kind = 'correction' "
            "AND t.record_key = records.record_key "
            "AND t.outcome LIKE 'version ' || CAST(records.version AS VARCHAR) || ':%')"
        ).bindparams(sa.bindparam("yes", True, type_=sa.Boolean()))
    )


def downgrade() -> None:
    """Drop it (a table copy on SQLite)."""
    with op.batch_alter_table("records") as batch:
        batch.drop_column("from_source")
