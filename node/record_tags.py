"""Integrity tags of stored records: the node's side (docs/decisions/0018-record-row-tags.md).

Every `records` row carries a keyed tag over its columns (node.store.tags); only a holder of
the storage key can write one. Rows an older release wrote have none; they are adopted once:

- migration 0009 marks adoption pending (`maintenance` row `record_tags`) in a store that
  holds records, done in one that holds none;
- the first process that opens the store with the node's keys (`ensure_adopted`, from
  `open_runtime` and ingest) tags every untagged row and stamps the marker done, in ONE
  transaction with an access-log entry (`admin_read`, reason `record_tags_adopted`);
- adoption never runs again. A pending marker with an adoption already in the access log
  means someone reset the marker to get edited rows re-adopted: refused, and logged as an
  error. A missing marker is refused likewise. Either way the untagged rows stay untagged,
  and every reader treats them as tampered (fail closed); `credex store verify` names them.

The access log is the anchor because it is tamper-evident: its leaves are hash-chained and
its checkpoints signed (and cosigned by witnesses); an adoption entry edited away breaks
`credex log verify`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Literal

import keys
from node.accesslog import AccessLog, LogEntry, utc_iso
from node.store import Store, StoreError
from node.store.integrity import adopt_untagged, logged_adoptions, marker_state

__all__ = ["ADOPTION_REASON", "Adoption", "ensure_adopted", "row_tagger"]

log = logging.getLogger(__name__)

ADOPTION_REASON = "record_tags_adopted"

# "done": nothing to do (adopted before, or nothing to adopt); "adopted": rows tagged now;
# "refused": the marker was reset or removed after an adoption, nothing tagged.
Adoption = Literal["done", "adopted", "refused"]


def row_tagger(node_keys: keys.NodeKeys) -> keys.RowTagger:
    """The row tagger of a node: derived from its storage key (never the key itself)."""
    return keys.RowTagger(node_keys.storage_key)


def ensure_adopted(
    store: Store, access_log: Callable[[], AccessLog], *, node_id: str, now: dt.datetime
) -> Adoption:
    """Adopt the untagged rows of an upgraded store once (module docstring); cheap (one read)
    when done. `access_log` builds the node's log only when an entry must be written.

    Returns "done", "adopted" or "refused". Refusal is logged as an error naming what was
    found (never a row's values) and is not raised: the node keeps working, the untagged
    rows fail every check. LogUnavailable or StoreError when adoption fails (nothing tagged).
    """
    state = marker_state(store)
    if state == "adopted":
        return "done"
    if state == "missing":
        log.error(
            "store: the record-tag marker (maintenance row record_tags) is missing: deleted "
            "outside credex. No row is adopted; untagged rows are treated as tampered. Run "
            "`credex store verify` and restore the store from a backup"
        )
        return "refused"
    earlier = logged_adoptions(store, node_id, ADOPTION_REASON)
    if earlier:
        log.error(
            "store: record-tag adoption is marked pending, but access-log entry %d already "
            "records one: the marker was reset outside credex. No row is adopted again; "
            "untagged rows are treated as tampered. Run `credex store verify`",
            earlier[0],
        )
        return "refused"
    entry_log = access_log()

    def entry(count: int) -> LogEntry:
        return LogEntry(
            time=utc_iso(now),
            kind="admin_read",
            requester=node_id,
            officer="system",
            purpose="store_integrity",
            legal_basis="integrity tags for record rows stored before schema 0009",
            decision="allow",
            reason=ADOPTION_REASON,
            request_id=secrets.token_hex(16),
            result_count=count,
        )

    try:
        _index, count = entry_log.append_with(
            entry, lambda: adopt_untagged(store, now=now), what="adopt record tags"
        )
    except StoreError:
        if marker_state(store) == "adopted":
            return "done"  # another process of this node adopted them meanwhile
        raise
    log.info("store: integrity tags adopted for %d record rows of an older release", count)
    return "adopted"
