"""Shared by the store tests: the row tagger of stores opened without a node's keys."""

from __future__ import annotations

from sqlalchemy import select, update

import keys
from node.store import Store
from node.store.store import RECORDS
from node.store.tags import row_tag

# A node's tagger comes from its storage key (node.record_tags.row_tagger); a test store's
# from this fixed one.
TEST_TAGGER = keys.RowTagger(bytes(range(32)))


def retag(store: Store, *row_ids: str) -> None:
    """Tag again, with `store`'s tagger, the `records` rows a test edited with SQL to play the
    rows of an older release (which adoption would have tagged as they were); every row when
    none is named."""
    tagger = store.require_tagger()
    with store.write("re-tag test rows") as conn:
        query = select(RECORDS)
        if row_ids:
            query = query.where(RECORDS.c.row_id.in_(row_ids))
        for row in conn.execute(query).all():
            conn.execute(
                update(RECORDS)
                .where(RECORDS.c.row_id == row.row_id)
                .values(tag=row_tag(tagger, row._mapping))
            )
