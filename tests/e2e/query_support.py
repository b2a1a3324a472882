"""Shared by the end-to-end query tests: store a signed record at the provider as ingest does."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keys
from node.runtime import NodeRuntime
from node.store import NewRecord


@dataclass(frozen=True)
class Seeded:
    """The row and the record key of a stored record."""

    row_id: str
    record_key: str


def store_signed_record(
    rt: NodeRuntime,
    subject: str,
    item: str,
    fields: Mapping[str, str],
    *,
    linked: Sequence[str] = (),
    max_end: dt.date | None = None,
) -> Seeded:
    """Sign one active record of `subject` with `rt`'s key and store it the way ingest does
    (with the blind indexes of the `linked` persons, e.g. a legal representative; disclosed
    until `max_end`, or without end)."""
    now = rt.clock()
    token = rt.blind.token(subject)
    record_key = uuid.uuid4().hex
    header = {
        "item": item,
        "catalog_version": rt.catalogue.version,
        "record_key": record_key,
        "version": 1,
        "producer": rt.node_id,
        "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": token,
    }
    signed = keys.sign_record(header, dict(fields), rt.node_keys.signing)
    row_id = str(uuid.uuid4())
    rt.store.store_batch(
        [
            NewRecord(
                row_id=row_id,
                producer=rt.node_id,
                record_key=record_key,
                version=1,
                item_id=item,
                catalog_version=rt.catalogue.version,
                subject_index=token,
                body=rt.cipher.encrypt(row_id, signed.to_bytes()),
                content_hash=uuid.uuid4().hex,
                severity=None,
                decided_on=None,
                disclosure_min_end=None,
                disclosure_max_end=max_end,
                disclosure_rule="test",
                created_at=now,
                linked_subject_indexes=tuple(rt.blind.token(p) for p in linked),
            )
        ],
        now=now,
    )
    return Seeded(row_id, record_key)
