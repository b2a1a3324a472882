"""The one module that converts between protobuf messages (`node._pb`) and credex's domain types.

Everything that arrives from the wire passes through here first: bytes are parsed into a typed
message and malformed input becomes an `InputError` that names the message, never a protobuf
traceback. Signed bytes (DSSE envelopes, sealed blobs) are carried through untouched: this module
never re-encodes what was signed (docs/decisions/0002).

Conversions, by concern:
- parsing: `parse` (any message from bytes);
- time: `timestamp_to_pb` / `timestamp_from_pb` (timezone-aware UTC datetimes only);
- records: `record_to_pb` / `record_to_pb_compact` / `record_from_pb` / `check_record_routing`;
- feed events: `event_kind_to_pb` / `event_kind_from_pb` (the `EVENT_KINDS` names);
- signed requests and receipts: `request_payload_to_bytes` / `request_payload_from_bytes`,
  `receipt_to_bytes` / `receipt_from_bytes`;
- catalogue: `item_to_pb` / `catalog_to_pb`;
- transparency: `checkpoint_to_pb`, `inclusion_proof_to_pb`, `consistency_proof_to_pb`;
- reflection: `SERVICE_NAMES`, `file_descriptor_set`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

import catalog
import keys
from node._pb.credex.v1 import (
    catalog_pb2,
    common_pb2,
    exchange_pb2,
    lifecycle_pb2,
    query_pb2,
    transparency_pb2,
)
from node.errors import InputError

__all__ = [
    "EVENT_KINDS",
    "SERVICE_NAMES",
    "ReceiptFields",
    "RequestFields",
    "Routing",
    "catalog_to_pb",
    "check_record_routing",
    "checkpoint_to_pb",
    "consistency_proof_to_pb",
    "event_kind_from_pb",
    "event_kind_to_pb",
    "file_descriptor_set",
    "inclusion_proof_to_pb",
    "item_to_pb",
    "parse",
    "receipt_from_bytes",
    "receipt_to_bytes",
    "record_from_pb",
    "record_to_pb",
    "record_to_pb_compact",
    "request_payload_from_bytes",
    "request_payload_to_bytes",
    "timestamp_from_pb",
    "timestamp_to_pb",
]

M = TypeVar("M", bound=Message)

_FILES: tuple[FileDescriptor, ...] = (
    common_pb2.DESCRIPTOR,
    catalog_pb2.DESCRIPTOR,
    exchange_pb2.DESCRIPTOR,
    query_pb2.DESCRIPTOR,
    lifecycle_pb2.DESCRIPTOR,
    transparency_pb2.DESCRIPTOR,
)

SERVICE_NAMES: tuple[str, ...] = tuple(
    sorted(service.full_name for file in _FILES for service in file.services_by_name.values())
)
"""Full names of the credex services, e.g. "credex.v1.Query" (what reflection lists)."""

EVENT_KINDS: Mapping[str, int] = {
    "upsert": common_pb2.EVENT_KIND_UPSERT,
    "correct": common_pb2.EVENT_KIND_CORRECT,
    "withdraw": common_pb2.EVENT_KIND_WITHDRAW,
    "expire": common_pb2.EVENT_KIND_EXPIRE,
    "objection_set": common_pb2.EVENT_KIND_OBJECTION_SET,
    "objection_cleared": common_pb2.EVENT_KIND_OBJECTION_CLEARED,
}
"""Domain names of feed event kinds and their wire values."""
_EVENT_NAMES = {value: name for name, value in EVENT_KINDS.items()}


def parse(message_type: type[M], data: bytes, *, what: str | None = None) -> M:
    """Parse `data` as a `message_type` message.

    Refuses (InputError naming the message) bytes that are not a valid encoding. Never echoes
    the bytes themselves: they may hold personal data.
    """
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError:
        name = what or message_type.DESCRIPTOR.full_name
        raise InputError(
            f"malformed {name}: {len(data)} bytes that are not a valid protobuf encoding"
        ) from None
    return message


def timestamp_to_pb(moment: dt.datetime) -> Timestamp:
    """Return a protobuf Timestamp for a timezone-aware datetime; refuses naive datetimes."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamp_to_pb needs a timezone-aware datetime")
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(dt.UTC))
    return stamp


def timestamp_from_pb(stamp: Timestamp, *, what: str) -> dt.datetime:
    """Return the UTC datetime of a Timestamp; refuses an unset or out-of-range one (InputError)."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        raise InputError(f"{what}: the timestamp is missing")
    try:
        return stamp.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InputError(f"{what}: the timestamp is out of range") from None


# -- records -----------------------------------------------------------------------------------


def _unverified_header(envelope: keys.Envelope) -> Mapping[str, Any]:
    """The record payload's header fields, read WITHOUT verifying (routing only)."""
    try:
        header = keys.loads_unique_keys(envelope.payload)
    except (ValueError, UnicodeDecodeError):
        raise InputError("record envelope: the payload is not JSON with unique keys") from None
    if not isinstance(header, dict):
        raise InputError("record envelope: the payload is not a JSON object")
    return header


@dataclass(frozen=True, slots=True)
class Routing:
    """A record's routing copies as a provider's store holds them: columns that ingest (or the
    feed that brought the record) took from the verified payload."""

    item_id: str
    record_key: str
    version: int
    producer: str


def record_to_pb(
    record: keys.SignedRecord,
    *,
    objection: bool = False,
    red_list: bool = False,
    withdrawn: bool = False,
    expired: bool = False,
    routing: Routing | None = None,
) -> common_pb2.Record:
    """Return the wire form of a signed record (envelope bytes exactly as signed).

    The routing copies (item, record key, version, producer) are taken from the record's own
    payload (docs/decisions/0002), or from `routing`, the store's copy of them, which spares
    parsing the payload again on a hot path. Either way a receiver checks them against the
    signed payload after verifying (check_record_routing), so a copy that disagrees (a tampered
    store row) gets the record refused, never filed under another key, item or version.
    """
    flags = common_pb2.RecordFlags(
        objection=objection, red_list=red_list, withdrawn=withdrawn, expired=expired
    )
    message = _routed(record.envelope, flags, routing)
    message.envelope = record.envelope.to_bytes()
    disclosures = message.disclosures
    for field_id, (salt, value) in sorted(record.disclosures.items()):
        # Set in place: building a Disclosure and copying it in costs twice as much per field.
        entry = disclosures[field_id]
        entry.salt = salt
        entry.value = value
    return message


def record_to_pb_compact(
    signed_record: bytes,
    *,
    objection: bool = False,
    red_list: bool = False,
    withdrawn: bool = False,
    expired: bool = False,
    routing: Routing | None = None,
) -> common_pb2.Record:
    """Return the wire form of a record already in compact form (keys.SignedRecord.to_bytes(),
    e.g. a decrypted stored body) as Record.signed_record, its bytes untouched.

    The routing copies come from the record's own payload or from `routing`, as in
    record_to_pb. Refuses (keys.VerificationError) bytes whose magic or envelope is malformed.
    """
    flags = common_pb2.RecordFlags(
        objection=objection, red_list=red_list, withdrawn=withdrawn, expired=expired
    )
    message = _routed(keys.SignedRecord.envelope_of(signed_record), flags, routing)
    message.signed_record = signed_record
    return message


def _routed(
    envelope: keys.Envelope, flags: common_pb2.RecordFlags, routing: Routing | None
) -> common_pb2.Record:
    """A Record holding the routing copies (`routing`, else `envelope`'s payload's); the caller
    sets its form."""
    if routing is not None:
        return common_pb2.Record(
            item_id=routing.item_id,
            record_key=routing.record_key,
            version=routing.version,
            producer=routing.producer,
            flags=flags,
        )
    header = _unverified_header(envelope)
    return common_pb2.Record(
        item_id=str(header.get("item", "")),
        record_key=str(header.get("record_key", "")),
        version=int(header.get("version", 0)),
        producer=str(header.get("producer", "")),
        flags=flags,
    )


def record_from_pb(message: common_pb2.Record) -> keys.SignedRecord:
    """Return the (still unverified) signed record carried by a wire Record, in either form
    (envelope + disclosures, or the compact `signed_record`).

    Refuses (InputError) an envelope that is not a well-formed DSSE envelope, a compact form
    that does not parse, and a Record that sets both forms. The caller must verify it
    (keys.verify_record) before using anything inside.
    """
    if message.signed_record:
        if message.envelope or message.disclosures:
            raise InputError("credex.v1.Record: sets both signed_record and envelope/disclosures")
        try:
            return keys.SignedRecord.from_bytes(message.signed_record)
        except keys.KeysError:
            raise InputError("credex.v1.Record: signed_record is not a compact record") from None
    if not message.envelope:
        raise InputError("credex.v1.Record: the envelope is empty")
    try:
        envelope = keys.Envelope.from_bytes(message.envelope)
    except (keys.KeysError, ValueError):
        raise InputError("credex.v1.Record: the envelope is not a valid DSSE envelope") from None
    disclosures = {
        field_id: (bytes(d.salt), d.value) for field_id, d in message.disclosures.items()
    }
    return keys.SignedRecord(envelope=envelope, disclosures=disclosures)


def check_record_routing(message: common_pb2.Record, header: Mapping[str, Any]) -> None:
    """Check that a wire Record's routing copies agree with its VERIFIED header.

    Refuses (InputError naming the field) any disagreement: a relay must not be able to file a
    correctly signed record under another key, item or version.
    """
    expected = {
        "item_id": str(header.get("item", "")),
        "record_key": str(header.get("record_key", "")),
        "version": int(header.get("version", 0)),
        "producer": str(header.get("producer", "")),
    }
    for name, value in expected.items():
        if getattr(message, name) != value:
            raise InputError(f"credex.v1.Record: {name} disagrees with the signed payload")


def stored_row_problem(payload: bytes, row: Mapping[str, object]) -> str | None:
    """What of a stored row's columns `row` (header name -> the row's value: item,
    record_key, version, producer, subject ...) the signed record header `payload` does not
    hold, as a message naming the columns; None when it holds them all.

    The sending side's check before a record leaves (query, feed, push): those columns decide
    who may receive it, and someone with write access to the database but no keys can change
    them, never the body (AEAD under the storage key, bound to the row id). Plain json: the
    receiver parses the payload strictly when it verifies the signature."""
    try:
        header = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "the signed payload is not JSON"
    if not isinstance(header, dict):
        return "the signed payload is not a JSON object"
    wrong = [name for name, value in row.items() if header.get(name) != value]
    if not wrong:
        return None
    return f"the row's {', '.join(sorted(wrong))} disagree with the signed header"


def event_kind_to_pb(kind: str) -> common_pb2.EventKind.ValueType:
    """Return the wire value of an event kind name; refuses an unknown name (InputError)."""
    try:
        return common_pb2.EventKind.ValueType(EVENT_KINDS[kind])
    except KeyError:
        raise InputError(f"unknown event kind {kind!r} (known: {', '.join(EVENT_KINDS)})") from None


def event_kind_from_pb(value: int) -> str:
    """Return the name of a wire event kind; refuses UNSPECIFIED and unknown values (InputError)."""
    try:
        return _EVENT_NAMES[value]
    except KeyError:
        raise InputError(f"credex.v1.EventKind: value {value} is unspecified or unknown") from None


# -- signed requests and receipts ---------------------------------------------------------------


@dataclass(frozen=True)
class RequestFields:
    """The parsed payload of a signed request (credex.v1.RequestPayload)."""

    method: str
    nonce: bytes
    issued_at: dt.datetime
    signer: str
    body: bytes


def request_payload_to_bytes(fields: RequestFields) -> bytes:
    """Serialize a request payload (the bytes that a node signs)."""
    return common_pb2.RequestPayload(
        method=fields.method,
        nonce=fields.nonce,
        issued_at=timestamp_to_pb(fields.issued_at),
        signer=fields.signer,
        body=fields.body,
    ).SerializeToString()


def request_payload_from_bytes(data: bytes) -> RequestFields:
    """Parse a (verified) request payload; refuses malformed bytes, missing fields (InputError)."""
    message = parse(common_pb2.RequestPayload, data, what="signed request payload")
    if not message.method or not message.signer:
        raise InputError("signed request payload: the method or the signer is missing")
    return RequestFields(
        method=message.method,
        nonce=bytes(message.nonce),
        issued_at=timestamp_from_pb(message.issued_at, what="signed request payload"),
        signer=message.signer,
        body=bytes(message.body),
    )


@dataclass(frozen=True)
class ReceiptFields:
    """The parsed payload of a signed receipt (credex.v1.Receipt)."""

    issuer: str
    subject: str
    cursor: int
    issued_at: dt.datetime
    digest: bytes


def receipt_to_bytes(fields: ReceiptFields) -> bytes:
    """Serialize a receipt (the bytes that the issuer signs)."""
    return common_pb2.Receipt(
        issuer=fields.issuer,
        subject=fields.subject,
        cursor=fields.cursor,
        issued_at=timestamp_to_pb(fields.issued_at),
        digest=fields.digest,
    ).SerializeToString()


def receipt_from_bytes(data: bytes) -> ReceiptFields:
    """Parse a (verified) receipt payload; refuses malformed bytes or a missing issuer."""
    message = parse(common_pb2.Receipt, data, what="receipt")
    if not message.issuer:
        raise InputError("receipt: the issuer is missing")
    return ReceiptFields(
        issuer=message.issuer,
        subject=message.subject,
        cursor=message.cursor,
        issued_at=timestamp_from_pb(message.issued_at, what="receipt"),
        digest=bytes(message.digest),
    )


# -- catalogue ---------------------------------------------------------------------------------


def _field_to_pb(field: catalog.Field) -> catalog_pb2.Field:
    message = catalog_pb2.Field(
        id=field.id,
        name_zh=field.name_zh,
        kind=field.kind,
        required=field.required,
        sensitivity=field.sensitivity,
        past=field.past,
        note=field.note,
    )
    if field.max_len is not None:
        message.max_len = field.max_len
    if field.precision is not None:
        message.precision = field.precision
    if field.scale is not None:
        message.scale = field.scale
    if field.code_table is not None:
        message.code_table = field.code_table
    if field.unit is not None:
        message.unit = field.unit
    if field.check is not None:
        message.check = field.check
    return message


def item_to_pb(item: catalog.Item) -> catalog_pb2.Item:
    """Return the wire form of a catalogue item (sets sorted, field order kept)."""
    message = catalog_pb2.Item(
        id=item.id,
        name_zh=item.name_zh,
        name_en=item.name_en,
        category=item.category,
        subject_kinds=sorted(item.subject_kinds),
        fields=[_field_to_pb(f) for f in item.fields],
        share_type=item.share_type,
        disclosure_modes=sorted(item.disclosure_modes),
        info_nature=item.info_nature,
        severity_rule=item.severity_rule,
        legal_basis=item.legal_basis,
        provider=item.provider,
        natural_key=list(item.natural_key),
        personal=item.personal,
        linked_id_fields=list(item.linked_id_fields),
        data_standard=item.data_standard,
    )
    if item.decided_on_field is not None:
        message.decided_on_field = item.decided_on_field
    if item.max_disclosure_months is not None:
        message.max_disclosure_months = item.max_disclosure_months
    return message


def _code_table_to_pb(table: catalog.CodeTable) -> catalog_pb2.CodeTable:
    message = catalog_pb2.CodeTable(id=table.id, name_zh=table.name_zh, source=table.source)
    if table.open_prefix is not None:
        message.open_prefix = table.open_prefix
    for entry in table.entries:
        wire = message.entries.add(label=entry.label, codes=entry.codes, aliases=entry.aliases)
        if entry.key is not None:
            wire.key = entry.key
        if entry.until is not None:
            wire.until = entry.until.isoformat()
    return message


def catalog_to_pb(cat: catalog.Catalog) -> catalog_pb2.CatalogDocument:
    """Return the whole catalogue as a CatalogDocument (items and code tables sorted by id)."""
    return catalog_pb2.CatalogDocument(
        version=cat.version,
        title=cat.title,
        items=[item_to_pb(cat.items[i]) for i in sorted(cat.items)],
        code_tables=[_code_table_to_pb(cat.code_tables[t]) for t in sorted(cat.code_tables)],
    )


# -- transparency ------------------------------------------------------------------------------


def checkpoint_to_pb(note: str, checkpoint: keys.Checkpoint) -> transparency_pb2.SignedCheckpoint:
    """Return a signed checkpoint: the signed-note text and its parsed (origin, size, root)."""
    return transparency_pb2.SignedCheckpoint(
        note=note, origin=checkpoint.origin, size=checkpoint.size, root=checkpoint.root
    )


def inclusion_proof_to_pb(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> transparency_pb2.InclusionProof:
    """Return an inclusion proof message (RFC 9162 audit path)."""
    return transparency_pb2.InclusionProof(
        index=index, size=size, leaf_hash=leaf_hash, hashes=list(proof)
    )


def consistency_proof_to_pb(
    size1: int, size2: int, proof: Sequence[bytes]
) -> transparency_pb2.ConsistencyProof:
    """Return a consistency proof message (RFC 9162)."""
    return transparency_pb2.ConsistencyProof(size1=size1, size2=size2, hashes=list(proof))


# -- reflection --------------------------------------------------------------------------------


def file_descriptor_set() -> bytes:
    """Return a serialized FileDescriptorSet of the credex .proto files and their imports.

    Dependencies come before the files that import them, as protoc's --include_imports writes
    them; `grpcurl -protoset` and other tools read it. Reflection serves the same descriptors.
    """
    seen: set[str] = set()
    ordered: list[FileDescriptor] = []

    def visit(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for file in _FILES:
        visit(file)
    result = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        file.CopyToProto(result.file.add())
    return result.SerializeToString()
