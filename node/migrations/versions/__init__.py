"""Alembic revisions of the node's store, oldest first."""
