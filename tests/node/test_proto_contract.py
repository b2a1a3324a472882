"""The wire contract: generated code is fresh, field numbers never move, wire.py conversions.

- `node/_pb` is byte-for-byte what `scripts/gen_proto.py` makes from `proto/credex/v1` now.
- WIRE_LOCK pins every field's number and type as first published: a field may be added, never
  renumbered, retyped or silently dropped (remove it with `reserved`, then drop it here).
- The FileDescriptorSet served for tools lists every credex service and parses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given
from hypothesis import strategies as st

import catalog
import keys
from node import wire
from node._pb.credex.v1 import catalog_pb2, common_pb2, query_pb2
from node.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

# Published field numbers and types (message -> field -> (number, type)). Append, never edit.
WIRE_LOCK: dict[str, dict[str, tuple[int, str]]] = {
    "credex.v1.Disclosure": {"salt": (1, "bytes"), "value": (2, "string")},
    "credex.v1.RecordFlags": {
        "objection": (1, "bool"),
        "red_list": (2, "bool"),
        "withdrawn": (3, "bool"),
        "expired": (4, "bool"),
    },
    "credex.v1.Record": {
        "envelope": (1, "bytes"),
        "disclosures": (2, "repeated credex.v1.Record.DisclosuresEntry"),
        "item_id": (3, "string"),
        "record_key": (4, "string"),
        "version": (5, "uint64"),
        "producer": (6, "string"),
        "flags": (7, "credex.v1.RecordFlags"),
        "signed_record": (8, "bytes"),
    },
    "credex.v1.FeedEvent": {
        "seq": (1, "uint64"),
        "kind": (2, "credex.v1.EventKind"),
        "record_key": (3, "string"),
        "version": (4, "uint64"),
        "item_id": (5, "string"),
        "record": (6, "credex.v1.Record"),
        "at": (7, "google.protobuf.Timestamp"),
        "reason": (8, "string"),
    },
    "credex.v1.SignedRequest": {"envelope": (1, "bytes")},
    "credex.v1.RequestPayload": {
        "method": (1, "string"),
        "nonce": (2, "bytes"),
        "issued_at": (3, "google.protobuf.Timestamp"),
        "signer": (4, "string"),
        "body": (5, "bytes"),
    },
    "credex.v1.Receipt": {
        "issuer": (1, "string"),
        "subject": (2, "string"),
        "cursor": (3, "uint64"),
        "issued_at": (4, "google.protobuf.Timestamp"),
        "digest": (5, "bytes"),
    },
    "credex.v1.SignedReceipt": {"envelope": (1, "bytes")},
    "credex.v1.EventKind": {
        "EVENT_KIND_UNSPECIFIED": (0, "enum"),
        "EVENT_KIND_UPSERT": (1, "enum"),
        "EVENT_KIND_CORRECT": (2, "enum"),
        "EVENT_KIND_WITHDRAW": (3, "enum"),
        "EVENT_KIND_EXPIRE": (4, "enum"),
        "EVENT_KIND_OBJECTION_SET": (5, "enum"),
        "EVENT_KIND_OBJECTION_CLEARED": (6, "enum"),
    },
    "credex.v1.GetCatalogRequest": {},
    "credex.v1.CatalogDocument": {
        "version": (1, "string"),
        "items": (2, "repeated credex.v1.Item"),
        "code_tables": (3, "repeated credex.v1.CodeTable"),
        "title": (4, "string"),
    },
    "credex.v1.ListItemsRequest": {},
    "credex.v1.ListItemsResponse": {
        "catalog_version": (1, "string"),
        "items": (2, "repeated credex.v1.Item"),
    },
    "credex.v1.Item": {
        "id": (1, "string"),
        "name_zh": (2, "string"),
        "name_en": (3, "string"),
        "category": (4, "string"),
        "subject_kinds": (5, "repeated string"),
        "fields": (6, "repeated credex.v1.Field"),
        "share_type": (7, "string"),
        "disclosure_modes": (8, "repeated string"),
        "info_nature": (9, "string"),
        "severity_rule": (10, "string"),
        "legal_basis": (11, "string"),
        "provider": (12, "string"),
        "natural_key": (13, "repeated string"),
        "personal": (14, "bool"),
        "decided_on_field": (15, "string"),
        "linked_id_fields": (16, "repeated string"),
        "max_disclosure_months": (17, "uint32"),
        "data_standard": (18, "string"),
    },
    "credex.v1.Field": {
        "id": (1, "string"),
        "name_zh": (2, "string"),
        "kind": (3, "string"),
        "max_len": (4, "uint32"),
        "precision": (5, "uint32"),
        "scale": (6, "uint32"),
        "required": (7, "string"),
        "code_table": (8, "string"),
        "sensitivity": (9, "string"),
        "unit": (10, "string"),
        "check": (11, "string"),
        "past": (12, "bool"),
        "note": (13, "string"),
    },
    "credex.v1.CodeTable": {
        "id": (1, "string"),
        "name_zh": (2, "string"),
        "entries": (3, "repeated credex.v1.CodeEntry"),
        "source": (4, "string"),
        "open_prefix": (5, "string"),
    },
    "credex.v1.CodeEntry": {
        "label": (1, "string"),
        "codes": (2, "repeated string"),
        "aliases": (3, "repeated string"),
        "key": (4, "string"),
        "until": (5, "string"),
    },
    "credex.v1.SubscribeRequest": {"signed": (1, "credex.v1.SignedRequest")},
    "credex.v1.SubscribeBody": {
        "cursor": (1, "uint64"),
        "items": (2, "repeated string"),
        "max_batch": (3, "uint32"),
        "follow": (4, "bool"),
        "compact_records": (5, "bool"),
    },
    "credex.v1.SealedBatch": {
        "sealed": (1, "bytes"),
        "first_seq": (2, "uint64"),
        "last_seq": (3, "uint64"),
        "count": (4, "uint32"),
        "provider": (5, "string"),
        "caught_up": (6, "bool"),
        "head_seq": (7, "uint64"),
    },
    "credex.v1.AckResponse": {"cursor": (1, "uint64")},
    "credex.v1.PushRequest": {"signed": (1, "credex.v1.SignedRequest")},
    "credex.v1.PushNotice": {
        "notice_id": (1, "string"),
        "sealed": (2, "bytes"),
        "items": (3, "repeated string"),
        "kind": (4, "credex.v1.EventKind"),
    },
    "credex.v1.QueryBody": {
        "request_id": (1, "string"),
        "officer": (2, "string"),
        "purpose": (3, "string"),
        "legal_basis": (4, "string"),
        "items": (5, "repeated string"),
        "subject_kind": (6, "string"),
        "sealed_subject": (7, "bytes"),
        "grant": (8, "bytes"),
        "grant_id": (9, "string"),
        "fields": (10, "repeated string"),
    },
    "credex.v1.QueryAnswer": {
        "sealed": (1, "bytes"),
        "decision": (2, "string"),
        "reason": (3, "string"),
        "result_count": (4, "uint32"),
        "request_id": (5, "string"),
        "log_index": (6, "uint64"),
        "released_fields": (7, "repeated string"),
    },
    "credex.v1.ObjectionBody": {
        "record_key": (1, "string"),
        "item_id": (2, "string"),
        "reason_code": (3, "string"),
        "evidence_hash": (4, "bytes"),
        "objection_id": (5, "string"),
        "needs_other_unit": (6, "bool"),
    },
    "credex.v1.ResolveObjectionBody": {
        "objection_id": (1, "string"),
        "record_key": (2, "string"),
        "outcome": (3, "credex.v1.ObjectionOutcome"),
        "note_code": (4, "string"),
        "changes": (5, "repeated credex.v1.ResolveObjectionBody.ChangesEntry"),
    },
    "credex.v1.CorrectBody": {
        "record_key": (1, "string"),
        "supersedes_version": (2, "uint64"),
        "corrected": (3, "credex.v1.Record"),
        "reason_code": (4, "string"),
        "changes": (5, "repeated credex.v1.CorrectBody.ChangesEntry"),
    },
    "credex.v1.RepairBody": {
        "record_key": (1, "string"),
        "item_id": (2, "string"),
        "decision_no": (3, "string"),
        "decided_at": (4, "google.protobuf.Timestamp"),
        "reason_code": (5, "string"),
        "obligations_fulfilled": (6, "bool"),
        "commitment_sha256": (7, "bytes"),
    },
    "credex.v1.RevokeBody": {
        "record_key": (1, "string"),
        "reason_code": (2, "string"),
        "known_on": (3, "string"),
    },
    "credex.v1.LifecycleReceipt": {
        "event_id": (1, "string"),
        "kind": (2, "credex.v1.EventKind"),
        "record_key": (3, "string"),
        "version": (4, "uint64"),
        "state": (5, "string"),
        "review_due": (6, "google.protobuf.Timestamp"),
        "review_due_approximate": (7, "bool"),
        "events": (8, "uint32"),
    },
    "credex.v1.ObjectionOutcome": {
        "OBJECTION_OUTCOME_UNSPECIFIED": (0, "enum"),
        "OBJECTION_OUTCOME_UPHELD": (1, "enum"),
        "OBJECTION_OUTCOME_REJECTED": (2, "enum"),
    },
    "credex.v1.GetCheckpointRequest": {},
    "credex.v1.SignedCheckpoint": {
        "note": (1, "string"),
        "origin": (2, "string"),
        "size": (3, "uint64"),
        "root": (4, "bytes"),
    },
    "credex.v1.GetInclusionProofRequest": {"index": (1, "uint64"), "size": (2, "uint64")},
    "credex.v1.InclusionProof": {
        "index": (1, "uint64"),
        "size": (2, "uint64"),
        "leaf_hash": (3, "bytes"),
        "hashes": (4, "repeated bytes"),
    },
    "credex.v1.GetConsistencyProofRequest": {"size1": (1, "uint64"), "size2": (2, "uint64")},
    "credex.v1.ConsistencyProof": {
        "size1": (1, "uint64"),
        "size2": (2, "uint64"),
        "hashes": (3, "repeated bytes"),
    },
    "credex.v1.CosignRequest": {
        "note": (1, "string"),
        "old_size": (2, "uint64"),
        "consistency_proof": (3, "repeated bytes"),
    },
    "credex.v1.CosignResponse": {"note": (1, "string")},
}


def _gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_proto", module)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    _gen_proto().generate(tmp_path)
    fresh = _tree(tmp_path)
    committed = _tree(ROOT / "node" / "_pb")
    assert sorted(fresh) == sorted(committed), "run `make proto`: the generated file set differs"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make proto`: stale generated files {stale}"


def test_generated_files_say_do_not_edit() -> None:
    for path in (ROOT / "node" / "_pb").rglob("*.py*"):
        if "__pycache__" in path.parts:
            continue
        assert path.read_text(encoding="utf-8").startswith("# Generated by scripts/gen_proto.py")
        assert "from credex.v1 import" not in path.read_text(encoding="utf-8"), path


def test_generator_removes_generated_files_of_deleted_protos(tmp_path: Path) -> None:
    orphan = tmp_path / "credex" / "v1" / "gone_pb2.py"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("# stale\n")
    keep = tmp_path / "credex" / "v1" / "README.txt"
    keep.write_text("not generated\n")
    _gen_proto().generate(tmp_path)
    assert not orphan.exists()
    assert keep.exists()


def _current_shape() -> dict[str, dict[str, tuple[int, str]]]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(wire.file_descriptor_set())
    names = {v: k[5:].lower() for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}
    shape: dict[str, dict[str, tuple[int, str]]] = {}
    for file in fds.file:
        if file.package != "credex.v1":
            continue
        for message in file.message_type:
            fields: dict[str, tuple[int, str]] = {}
            for f in message.field:
                base = f.type_name.lstrip(".") if f.type_name else names[f.type]
                repeated = f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                fields[f.name] = (f.number, ("repeated " if repeated else "") + base)
            shape[f"{file.package}.{message.name}"] = fields
        for enum in file.enum_type:
            shape[f"{file.package}.{enum.name}"] = {v.name: (v.number, "enum") for v in enum.value}
    return shape


def test_published_fields_keep_their_numbers_and_types() -> None:
    shape = _current_shape()
    problems = []
    for message, fields in WIRE_LOCK.items():
        if message not in shape:
            problems.append(f"{message} was removed")
            continue
        for name, expected in fields.items():
            actual = shape[message].get(name)
            if actual != expected:
                problems.append(f"{message}.{name}: published as {expected}, now {actual}")
    assert not problems, "\n".join(problems)


def test_new_fields_do_not_reuse_published_numbers() -> None:
    shape = _current_shape()
    for message, fields in shape.items():
        published = {number: name for name, (number, _) in WIRE_LOCK.get(message, {}).items()}
        for name, (number, _) in fields.items():
            assert published.get(number, name) == name, f"{message}.{name} reuses {number}"


def test_descriptor_set_lists_every_service() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(wire.file_descriptor_set())
    files = [f.name for f in fds.file]
    assert files.index("google/protobuf/timestamp.proto") < files.index("credex/v1/common.proto")
    services = sorted(f"{f.package}.{s.name}" for f in fds.file for s in f.service)
    assert services == list(wire.SERVICE_NAMES)
    assert services == [
        "credex.v1.Catalog",
        "credex.v1.Exchange",
        "credex.v1.Lifecycle",
        "credex.v1.Query",
        "credex.v1.Transparency",
    ]


# -- wire.py conversions -------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"\x0a\xff", id="truncated-length"),
    pytest.param(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", id="overlong-varint"),
    pytest.param(b"\x0b", id="group-start-without-end"),
    pytest.param(b"\x0a\x05abc", id="declared-longer-than-data"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_parse_refuses_malformed_bytes_without_echoing_them(data: bytes) -> None:
    with pytest.raises(InputError) as caught:
        wire.parse(query_pb2.QueryBody, data)
    assert "credex.v1.QueryBody" in str(caught.value)
    assert repr(data) not in str(caught.value)


@given(st.binary(max_size=200))
def test_parse_never_raises_anything_but_input_error(data: bytes) -> None:
    with contextlib.suppress(InputError):
        wire.parse(common_pb2.RequestPayload, data)


def test_timestamps_round_trip_in_utc() -> None:
    beijing = dt.timezone(dt.timedelta(hours=8))
    moment = dt.datetime(2026, 11, 25, 9, 30, 1, 250000, tzinfo=beijing)
    back = wire.timestamp_from_pb(wire.timestamp_to_pb(moment), what="t")
    assert back == moment
    assert back.tzinfo == dt.UTC


def test_naive_and_missing_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        wire.timestamp_to_pb(dt.datetime(2026, 1, 1))
    with pytest.raises(InputError, match="missing"):
        wire.timestamp_from_pb(common_pb2.RequestPayload().issued_at, what="request")


@pytest.mark.parametrize("kind", sorted(wire.EVENT_KINDS))
def test_event_kinds_round_trip(kind: str) -> None:
    assert wire.event_kind_from_pb(wire.event_kind_to_pb(kind)) == kind


@pytest.mark.parametrize("value", [common_pb2.EVENT_KIND_UNSPECIFIED, 99])
def test_unspecified_or_unknown_event_kinds_are_refused(value: int) -> None:
    with pytest.raises(InputError):
        wire.event_kind_from_pb(value)


def test_every_wire_event_kind_has_a_name() -> None:
    wire_values = set(common_pb2.EventKind.values()) - {common_pb2.EVENT_KIND_UNSPECIFIED}
    assert wire_values == set(wire.EVENT_KINDS.values())


def test_unknown_event_kind_name_is_refused() -> None:
    with pytest.raises(InputError, match="unknown event kind"):
        wire.event_kind_to_pb("delete")


@given(
    method=st.text(min_size=1, max_size=40),
    nonce=st.binary(min_size=8, max_size=64),
    signer=st.text(min_size=1, max_size=20),
    body=st.binary(max_size=100),
    seconds=st.integers(min_value=1, max_value=4_000_000_000),
)
def test_request_payload_round_trips(
    method: str, nonce: bytes, signer: str, body: bytes, seconds: int
) -> None:
    fields = wire.RequestFields(
        method=method,
        nonce=nonce,
        issued_at=dt.datetime.fromtimestamp(seconds, dt.UTC),
        signer=signer,
        body=body,
    )
    assert wire.request_payload_from_bytes(wire.request_payload_to_bytes(fields)) == fields


def test_request_payload_without_signer_is_refused() -> None:
    data = common_pb2.RequestPayload(method="/credex.v1.Query/Query").SerializeToString()
    with pytest.raises(InputError, match="signer"):
        wire.request_payload_from_bytes(data)


def test_receipt_round_trips() -> None:
    fields = wire.ReceiptFields(
        issuer="dept-b",
        subject="feed:dept-a",
        cursor=42,
        issued_at=dt.datetime(2026, 11, 25, tzinfo=dt.UTC),
        digest=b"\x01" * 32,
    )
    assert wire.receipt_from_bytes(wire.receipt_to_bytes(fields)) == fields


def test_catalog_document_carries_every_item_and_field() -> None:
    cat = catalog.default_catalog()
    document = wire.catalog_to_pb(cat)
    assert document.version == cat.version
    assert [i.id for i in document.items] == sorted(cat.items)
    for message in document.items:
        item = cat.item(message.id)
        assert [f.id for f in message.fields] == [f.id for f in item.fields]
        assert message.personal == item.personal
        assert list(message.subject_kinds) == sorted(item.subject_kinds)
        for field_message, field in zip(message.fields, item.fields, strict=True):
            assert field_message.HasField("max_len") == (field.max_len is not None)
    assert {t.id for t in document.code_tables} == set(cat.code_tables)
    # The document survives the wire.
    again = wire.parse(catalog_pb2.CatalogDocument, document.SerializeToString())
    assert again == document


def _signed_record() -> tuple[keys.SignedRecord, keys.Signer]:
    signer = keys.Signer.generate()
    header = {
        "item": "admin_penalty",
        "catalog_version": "2026.1",
        "record_key": "ab" * 32,
        "version": 3,
        "producer": "dept-a",
        "issued_at": "2026-11-25T10:00:00Z",
        "subject": "cd" * 16,
    }
    fields = {"decision_no": "张市监罚〔2026〕12号", "penalty_content": "罚款"}
    return keys.sign_record(header, fields, signer), signer


def test_records_cross_the_wire_unchanged_and_still_verify() -> None:
    record, signer = _signed_record()
    message = wire.record_to_pb(record.minimise(["decision_no"]), objection=True)
    assert (message.item_id, message.version, message.producer) == ("admin_penalty", 3, "dept-a")
    assert message.flags.objection
    assert not message.flags.withdrawn
    assert message.envelope == record.envelope.to_bytes()
    received = wire.parse(common_pb2.Record, message.SerializeToString())
    back = wire.record_from_pb(received)
    verified = keys.verify_record(back, trusted={signer.keyid: signer.public_key})
    assert verified.fields == {"decision_no": "张市监罚〔2026〕12号"}
    assert verified.hidden == frozenset({"penalty_content"})
    wire.check_record_routing(received, verified.header)


@pytest.mark.parametrize(
    ("field", "value"),
    [("item_id", "other_item"), ("record_key", "ef" * 32), ("version", 4), ("producer", "dept-z")],
)
def test_routing_copies_that_disagree_with_the_signed_payload_are_refused(
    field: str, value: object
) -> None:
    record, signer = _signed_record()
    message = wire.record_to_pb(record)
    setattr(message, field, value)
    verified = keys.verify_record(
        wire.record_from_pb(message), trusted={signer.keyid: signer.public_key}
    )
    with pytest.raises(InputError, match=field):
        wire.check_record_routing(message, verified.header)


def test_the_sender_names_every_row_column_its_signed_header_does_not_hold() -> None:
    record, _signer = _signed_record()
    payload = record.envelope.payload
    row = {"item": "admin_penalty", "record_key": "ab" * 32, "version": 3, "producer": "dept-a"}
    assert wire.stored_row_problem(payload, row) is None
    moved = {**row, "item": "other_item", "version": 2}
    assert wire.stored_row_problem(payload, moved) == (
        "the row's item, version disagree with the signed header"
    )
    assert wire.stored_row_problem(b"\xff not json", row) == "the signed payload is not JSON"
    assert wire.stored_row_problem(b"[1]", row) == "the signed payload is not a JSON object"


def test_routing_copies_from_the_store_are_used_as_given_and_checked_by_the_receiver() -> None:
    # Providers pass their store's routing columns (wire.Routing) instead of parsing each
    # payload again. Right copies are the payload's; a tampered store row's wrong copies reach
    # the receiver, which refuses the record after verifying it, in either wire form.
    record, signer = _signed_record()
    trusted = {signer.keyid: signer.public_key}
    right = wire.Routing("admin_penalty", "ab" * 32, 3, "dept-a")
    wrong = wire.Routing("admin_penalty", "ab" * 32, 2, "dept-a")

    def envelope_form(routing: wire.Routing | None) -> common_pb2.Record:
        return wire.record_to_pb(record, routing=routing)

    def compact_form(routing: wire.Routing | None) -> common_pb2.Record:
        return wire.record_to_pb_compact(record.to_bytes(), routing=routing)

    for build in (envelope_form, compact_form):
        message = build(right)
        assert message == build(None)
        verified = keys.verify_record(wire.record_from_pb(message), trusted=trusted)
        wire.check_record_routing(message, verified.header)
        tampered = build(wrong)
        assert tampered.version == 2
        verified = keys.verify_record(wire.record_from_pb(tampered), trusted=trusted)
        with pytest.raises(InputError, match="version"):
            wire.check_record_routing(tampered, verified.header)


@pytest.mark.parametrize("envelope", [b"", b"CXE1", b"not an envelope"])
def test_a_record_with_a_malformed_envelope_is_refused(envelope: bytes) -> None:
    with pytest.raises(InputError, match="envelope"):
        wire.record_from_pb(common_pb2.Record(envelope=envelope))


def test_compact_records_cross_the_wire_as_stored() -> None:
    record, signer = _signed_record()
    stored = record.to_bytes()
    message = wire.record_to_pb_compact(stored, objection=True, red_list=True)
    assert (message.item_id, message.version, message.producer) == ("admin_penalty", 3, "dept-a")
    assert message.record_key == "ab" * 32
    flags = message.flags
    assert (flags.objection, flags.red_list, flags.expired) == (True, True, False)
    assert message.signed_record == stored
    assert not message.envelope
    assert not message.disclosures
    received = wire.parse(common_pb2.Record, message.SerializeToString())
    back = wire.record_from_pb(received)
    assert back == record
    verified = keys.verify_record(back, trusted={signer.keyid: signer.public_key})
    wire.check_record_routing(received, verified.header)


def test_a_record_in_both_forms_or_a_bad_compact_form_is_refused() -> None:
    record, _ = _signed_record()
    both = wire.record_to_pb_compact(record.to_bytes())
    both.envelope = record.envelope.to_bytes()
    with pytest.raises(InputError, match="both"):
        wire.record_from_pb(both)
    for bad in (b"CXR1", record.to_bytes()[:-1], record.to_bytes() + b"!", b"nonsense"):
        with pytest.raises(InputError, match="signed_record"):
            wire.record_from_pb(common_pb2.Record(signed_record=bad))
    with pytest.raises(keys.VerificationError):
        wire.record_to_pb_compact(b"CXR1\x00\x00\x00\x05CXE")
