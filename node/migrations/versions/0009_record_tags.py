"""Add `records.tag`, the keyed integrity tag of a row's columns (docs/decisions/0018).

The tag is written by the node with a key derived from its storage key, which a migration
does not hold: every row of an older release starts without one (NULL). The `maintenance`
row `record_tags` written here tells the node what to do about them:

- `finished_at` NULL (a store holding records): adoption is pending. The first node that
  opens the store with its keys tags every untagged row once, records that in the access log
  (an `admin_read` entry, reason `record_tags_adopted`) and stamps `finished_at`;
- `finished_at` set (a store without records, new or empty): nothing to adopt. Every row it
  will hold is tagged when written.

From then on a row without a tag is a row written outside credex. The row is inserted in every
store, so a missing row is itself a sign of tampering (node.record_tags).
Plain SQL, for both stores credex runs on (SQLite, PostgreSQL).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TASK = "record_tags"
_FINGERPRINT = "v1"  # the encoding version of keys.row_encoding


def upgrade() -> None:
    """Add the column (NULL for every existing row) and the adoption marker (module doc)."""
    op.add_column("records", sa.Column("tag", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    held = bind.execute(sa.text("SELECT row_id FROM records LIMIT 1")).first()
    maintenance = sa.table(
        "maintenance",
        sa.column("task", sa.String(64)),
        sa.column("fingerprint", sa.String(64)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    # The server's clock stamps it, in the database's own time type.
    bind.execute(
        maintenance.insert().values(
            task=_TASK,
            fingerprint=_FINGERPRINT,
            updated_at=sa.func.current_timestamp(),
            finished_at=None if held is not None else sa.func.current_timestamp(),
        )
    )


def downgrade() -> None:
    """Drop the column (a table copy on SQLite) and the marker."""
    op.execute(sa.text("DELETE FROM maintenance WHERE task = 'record_tags'"))
    with op.batch_alter_table("records") as batch:
        batch.drop_column("tag")
