"""Add `subscriptions.delivered_seq`: the last event of the batches this provider has sent to a
subscriber, so that an acknowledgement of events it never received is refused
(`Store.ack`, docs/feeds.md "Ack"). It commits with the batch's `feed_delivery` access entry,
before the batch leaves, so a restart keeps it.

Existing subscriptions start at their `last_seq`: a release before this one did not record
what it sent, and an honest subscriber's acknowledgement of a batch it received then must not
be refused after the upgrade. Only the events queued from here on are held to the new rule.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column and let what was queued so far count as sent."""
    op.add_column(
        "subscriptions",
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE subscriptions SET delivered_seq = last_seq")


def downgrade() -> None:
    """Drop it (an older release accepts any acknowledgement up to the last event)."""
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("delivered_seq")
