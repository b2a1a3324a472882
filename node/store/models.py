"""The typed values the store takes and gives back (plain frozen dataclasses, no ORM objects)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = [
    "CLOSED_STATES",
    "EVENT_KINDS",
    "RECORD_STATES",
    "FeedEvent",
    "NewRecord",
    "RecordHead",
    "StoredRecord",
    "Subscription",
]

RECORD_STATES = frozenset({"active", "superseded", "withdrawn", "expired", "purged"})
# States the lifecycle closes a record in: a source row never brings such a record back
# (docs/lifecycle.md, "Re-ingest and the lifecycle").
CLOSED_STATES = frozenset({"withdrawn", "expired", "purged"})
EVENT_KINDS = frozenset(
    {"upsert", "correct", "withdraw", "expire", "objection_set", "objection_cleared"}
)


@dataclass(frozen=True)
class NewRecord:
    """A record version to store: `body` is already encrypted with `row_id` as associated data."""

    row_id: str
    producer: str
    record_key: str
    version: int
    item_id: str
    catalog_version: str
    subject_index: str
    body: bytes
    content_hash: str
    severity: str | None
    decided_on: dt.date | None
    disclosure_min_end: dt.date | None
    disclosure_max_end: dt.date | None
    disclosure_rule: str
    created_at: dt.datetime
    origin: str = "local"  # "local" | "received"
    linked_subject_indexes: tuple[str, ...] = ()
    # A received copy's objection flag as its producer sent it, stored with the row (a local
    # record is flagged only by an objection, with its event: refused here).
    objection: bool = False


@dataclass(frozen=True)
class StoredRecord:
    """A stored record version with its lifecycle state (body still encrypted)."""

    row_id: str
    producer: str
    record_key: str
    version: int
    item_id: str
    catalog_version: str
    subject_index: str
    body: bytes
    content_hash: str
    state: str
    severity: str | None
    decided_on: dt.date | None
    disclosure_min_end: dt.date | None
    disclosure_max_end: dt.date | None
    disclosure_rule: str
    objection: bool
    created_at: dt.datetime
    origin: str
    from_source: bool = False  # stored by ingest from the producer's source rows


@dataclass(frozen=True, slots=True)
class RecordHead:
    """What ingest plans a record key's next version on: the newest version's number, content
    hash and state, and the content hash of the newest version that came from the source
    (None when no version did; equal to `content_hash` unless a lifecycle correction is
    newest)."""

    version: int
    content_hash: str
    state: str
    source_hash: str | None


@dataclass(frozen=True, slots=True)
class ReleaseCandidate:
    """What a query needs of a stored record version: its state, what
    `node.lifecycle.visible` judges on the day of the query (a record past its disclosure end
    is held back even before the lifecycle scan has marked it expired), and its encrypted
    body."""

    row_id: str
    item_id: str
    record_key: str
    version: int
    state: str
    objection: bool
    body: bytes
    severity: str | None
    decided_on: dt.date | None
    disclosure_max_end: dt.date | None
    # the blind index of the record's own subject: another one than the query's means the
    # record was found through a link (Shandong Art. 31)
    subject_index: str = ""
    # False: the row fails its integrity tag (decision 0018); it must not be judged or released
    intact: bool = True


@dataclass(frozen=True)
class FeedEvent:
    """One event of a subscriber's feed; `seq` is gap-free per subscriber, from 1."""

    subscriber: str
    seq: int
    kind: str
    record_row_id: str
    record_key: str
    version: int
    created_at: dt.datetime


@dataclass(frozen=True)
class UpstreamFeed:
    """On the receiving side, a peer's feed: the cursor applied, the peer's head as its last
    batch reported it (None: never reported), and when the last batch was applied."""

    peer: str
    cursor: int
    head: int | None
    last_batch_at: dt.datetime

    @property
    def lag(self) -> int | None:
        """Events the peer had and this node had not applied, as of the last batch (None when
        the peer never reported its head)."""
        return None if self.head is None else max(self.head - self.cursor, 0)


@dataclass(frozen=True)
class Subscription:
    """A subscriber's feed state: items covered, last assigned, last sent and last acknowledged
    sequence."""

    subscriber: str
    items: frozenset[str]
    last_seq: int
    acked_seq: int
    acked_at: dt.datetime | None
    created_at: dt.datetime
    delivered_seq: int = 0  # the last event of the batches sent to it (it acks no further)
