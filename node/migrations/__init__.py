"""Alembic migrations of the node's store (run by node.store.migrate at open)."""
