"""Selective disclosure: signing, minimising and verifying records (decision 0002)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from keys import KeysError, SignedRecord, VerificationError

HEADER: dict[str, Any] = {
    "item": "admin_penalty",
    "catalog_version": "2026.1",
    "record_key": "ab" * 32,
    "version": 1,
    "producer": "zd-market",
    "issued_at": "2026-11-25T00:00:00Z",
    "subject": "cd" * 16,
}
FIELDS = {"decision_no": "淄张市监罚〔2026〕12号", "penalty": "罚款", "amount": "2.5", "x": ""}


field_ids = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


def _trusted(s: keys.Signer) -> dict[str, bytes]:
    return {s.keyid: s.public_key}


def test_payload_is_canonical_json_with_digests(signer: keys.Signer) -> None:
    rec = keys.sign_record(HEADER, FIELDS, signer)
    payload = rec.envelope.payload
    doc = json.loads(payload)
    assert keys.canonical_json(doc) == payload
    assert doc["v"] == 1
    assert set(doc["digests"]) == set(FIELDS)
    assert rec.envelope.payload_type == keys.RECORD_PAYLOAD_TYPE
    for fid, (salt, value) in rec.disclosures.items():
        assert len(salt) == 16
        want = hashlib.sha256(salt + fid.encode() + value.encode()).digest()
        assert base64.b64decode(doc["digests"][fid]) == want
    # No value travels inside the signed payload.
    assert "罚款".encode() not in payload


def test_salts_are_fresh(signer: keys.Signer) -> None:
    a = keys.sign_record(HEADER, FIELDS, signer)
    b = keys.sign_record(HEADER, FIELDS, signer)
    salts = [s for r in (a, b) for s, _ in r.disclosures.values()]
    assert len(set(salts)) == len(salts)


def test_verify_full_and_minimised(signer: keys.Signer) -> None:
    rec = keys.sign_record(HEADER, FIELDS, signer)
    full = keys.verify_record(rec, trusted=_trusted(signer))
    assert dict(full.fields) == FIELDS
    assert full.hidden == frozenset()
    assert full.signer_keyid == signer.keyid
    assert full.header["record_key"] == HEADER["record_key"]
    assert "digests" not in full.header
    small = rec.minimise(["penalty", "not_there"])
    got = keys.verify_record(SignedRecord.from_bytes(small.to_bytes()), trusted=_trusted(signer))
    assert dict(got.fields) == {"penalty": "罚款"}
    assert got.hidden == frozenset({"decision_no", "amount", "x"})


def _tampered(
    rec: SignedRecord, fid: str, *, salt: bytes | None = None, value: str | None = None
) -> SignedRecord:
    old_salt, old_value = rec.disclosures[fid]
    d = dict(rec.disclosures)
    d[fid] = (salt if salt is not None else old_salt, value if value is not None else old_value)
    return SignedRecord(rec.envelope, d)


def test_changed_value_or_salt_is_refused(signer: keys.Signer) -> None:
    rec = keys.sign_record(HEADER, FIELDS, signer)
    with pytest.raises(VerificationError):
        keys.verify_record(_tampered(rec, "amount", value="0.5"), trusted=_trusted(signer))
    with pytest.raises(VerificationError):
        keys.verify_record(_tampered(rec, "amount", salt=bytes(16)), trusted=_trusted(signer))
    with pytest.raises(VerificationError):
        keys.verify_record(_tampered(rec, "amount", salt=bytes(15)), trusted=_trusted(signer))


def test_disclosure_without_digest_is_refused(signer: keys.Signer) -> None:
    rec = keys.sign_record(HEADER, FIELDS, signer)
    d = dict(rec.disclosures)
    d["invented"] = (bytes(16), "value")
    with pytest.raises(VerificationError):
        keys.verify_record(SignedRecord(rec.envelope, d), trusted=_trusted(signer))


def test_swapped_disclosures_between_fields_are_refused(signer: keys.Signer) -> None:
    rec = keys.sign_record(HEADER, {"a": "1", "b": "2"}, signer)
    d = {"a": rec.disclosures["b"], "b": rec.disclosures["a"]}
    with pytest.raises(VerificationError):
        keys.verify_record(SignedRecord(rec.envelope, d), trusted=_trusted(signer))


def test_disclosure_moved_to_another_record_is_refused(signer: keys.Signer) -> None:
    a = keys.sign_record(HEADER, {"a": "1"}, signer)
    b = keys.sign_record(HEADER, {"a": "2"}, signer)
    with pytest.raises(VerificationError):
        keys.verify_record(SignedRecord(a.envelope, b.disclosures), trusted=_trusted(signer))


def test_wrong_or_unknown_key_is_refused(signer: keys.Signer, other_signer: keys.Signer) -> None:
    rec = keys.sign_record(HEADER, FIELDS, signer)
    with pytest.raises(VerificationError):
        keys.verify_record(rec, trusted=_trusted(other_signer))


def test_envelope_of_another_type_is_refused(signer: keys.Signer) -> None:
    rec = keys.sign_record(HEADER, FIELDS, signer)
    env = keys.sign_envelope("application/json", rec.envelope.payload, signer)
    with pytest.raises(VerificationError):
        keys.verify_record(SignedRecord(env, rec.disclosures), trusted=_trusted(signer))


@pytest.mark.parametrize("where", ["header", "digests"])
def test_a_signed_payload_that_repeats_a_key_is_refused(signer: keys.Signer, where: str) -> None:
    # Parsers disagree on which of two equal keys wins: the producer's signature must not cover
    # a payload that could read one way here and another way in a different verifier.
    rec = keys.sign_record(HEADER, FIELDS, signer)
    payload = rec.envelope.payload
    if where == "header":
        forged = payload.replace(b'{"catalog_version"', b'{"subject":"other","catalog_version"', 1)
    else:
        fid = sorted(FIELDS)[0].encode()
        forged = payload.replace(b'"digests":{', b'"digests":{"' + fid + b'":"AAAA",', 1)
    assert forged != payload
    env = keys.sign_envelope(keys.RECORD_PAYLOAD_TYPE, forged, signer)
    with pytest.raises(VerificationError, match="malformed"):
        keys.verify_record(SignedRecord(env, rec.disclosures), trusted=_trusted(signer))


def test_loads_unique_keys_refuses_a_repeated_key_at_any_depth() -> None:
    nested = {"a": {"b": 1}, "c": [{"d": 2}]}
    assert keys.loads_unique_keys(b'{"a":{"b":1},"c":[{"d":2}]}') == nested
    for text in (b'{"a":1,"a":1}', b'{"a":{"b":1,"b":2}}', b'[{"d":1,"d":1}]'):
        with pytest.raises(ValueError, match="twice"):
            keys.loads_unique_keys(text)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"v":2,"digests":{}}',
        b'{"v":1,"digests":[]}',
        b'{"v":1,"digests":{}}',
        b'{"v":true,"digests":{}}',
        b'{"v":1.0,"digests":{}}',
    ],
)
def test_malformed_signed_payload_is_refused(signer: keys.Signer, payload: bytes) -> None:
    env = keys.sign_envelope(keys.RECORD_PAYLOAD_TYPE, payload, signer)
    with pytest.raises(VerificationError):
        keys.verify_record(SignedRecord(env, {}), trusted=_trusted(signer))


@pytest.mark.parametrize(
    ("header", "fields"),
    [
        ({k: v for k, v in HEADER.items() if k != "subject"}, FIELDS),
        ({**HEADER, "digests": "x"}, FIELDS),
        ({**HEADER, "extra": {"nested": 1}}, FIELDS),
        ({**HEADER, "extra": 1.5}, FIELDS),
        (HEADER, {"bad id": "x"}),
        (HEADER, {"": "x"}),
        (HEADER, {"a": 1}),
    ],
)
def test_bad_input_gets_a_keys_error(
    signer: keys.Signer, header: dict[str, Any], fields: dict[str, Any]
) -> None:
    with pytest.raises(KeysError):
        keys.sign_record(header, fields, signer)


def test_bad_field_ids_are_refused_every_time(signer: keys.Signer) -> None:
    # The per-layout cache must never remember a refused id set as good.
    for _ in range(3):
        with pytest.raises(KeysError, match="not a valid credex field id"):
            keys.sign_record(HEADER, {"ok": "1", "bad id": "x"}, signer)
    with pytest.raises(KeysError, match="not a valid credex field id"):
        keys.sign_record(HEADER, {"ok": "1", 7: "x"}, signer)  # type: ignore[dict-item]


@settings(max_examples=80)
@given(fields=st.dictionaries(field_ids, st.text(max_size=30), max_size=40), data=st.data())
def test_digests_are_standard_base64_in_any_field_order(
    fields: dict[str, str], data: st.DataObject
) -> None:
    # sign_record encodes every digest in one base64 call and caches a layout per id order;
    # each digest must still be exactly the standard padded base64 of its own SHA-256.
    s = keys.Signer(bytes(32))
    order = data.draw(st.permutations(sorted(fields)))
    for given_fields in (fields, {fid: fields[fid] for fid in order}):
        rec = keys.sign_record(HEADER, given_fields, s)
        digests = json.loads(rec.envelope.payload)["digests"]
        assert list(digests) == sorted(fields)
        assert {fid: value for fid, (_, value) in rec.disclosures.items()} == fields
        for fid, (salt, value) in rec.disclosures.items():
            want = hashlib.sha256(salt + fid.encode() + value.encode()).digest()
            assert digests[fid] == base64.b64encode(want).decode("ascii")


def test_compact_form_refuses_truncation(signer: keys.Signer) -> None:
    raw = keys.sign_record(HEADER, {"a": "1"}, signer).to_bytes()
    for cut in range(0, len(raw), 7):
        with pytest.raises(VerificationError):
            SignedRecord.from_bytes(raw[:cut])
    with pytest.raises(VerificationError):
        SignedRecord.from_bytes(raw + b"!")


@settings(max_examples=60)
@given(
    fields=st.dictionaries(field_ids, st.text(max_size=30), max_size=12),
    keep=st.sets(field_ids, max_size=6),
    extra=st.text(max_size=20),
)
def test_any_minimisation_verifies_and_payload_is_canonical(
    fields: dict[str, str], keep: set[str], extra: str
) -> None:
    s = keys.Signer(bytes(32))
    rec = keys.sign_record({**HEADER, "note": extra}, fields, s)
    assert keys.canonical_json(json.loads(rec.envelope.payload)) == rec.envelope.payload
    got = keys.verify_record(rec.minimise(keep), trusted={s.keyid: s.public_key})
    assert dict(got.fields) == {k: v for k, v in fields.items() if k in keep}
    assert got.hidden == frozenset(fields) - keep
    assert got.header["note"] == extra


def test_digests_in_another_base64_spelling_still_verify(signer: keys.Signer) -> None:
    # verify_record compares encoded digests first; a producer that wrote URL-safe or
    # unpadded-looking base64 must be judged on the decoded digest, as before that shortcut.
    fields = {f"f{i}": "值" * i for i in range(16)}
    rec = keys.sign_record(HEADER, fields, signer)
    doc = json.loads(rec.envelope.payload)
    doc["digests"] = {
        fid: base64.urlsafe_b64encode(base64.b64decode(d)).decode()
        for fid, d in doc["digests"].items()
    }
    assert any("-" in d or "_" in d for d in doc["digests"].values())  # 16 digests: ~never
    envelope = keys.sign_envelope(keys.RECORD_PAYLOAD_TYPE, keys.canonical_json(doc), signer)
    got = keys.verify_record(SignedRecord(envelope, rec.disclosures), trusted=_trusted(signer))
    assert dict(got.fields) == fields
    bad = dict(rec.disclosures)
    bad["f3"] = (bad["f3"][0], "other")
    with pytest.raises(VerificationError):
        keys.verify_record(SignedRecord(envelope, bad), trusted=_trusted(signer))


def test_compact_form_refuses_duplicates_and_bad_text(signer: keys.Signer) -> None:
    raw = keys.sign_record(HEADER, {"a": "1"}, signer).to_bytes()
    entry = raw[raw.rindex(b"\x01a") :]
    count_at = len(raw) - len(entry) - 2
    doubled = raw[:count_at] + b"\x00\x02" + entry + entry
    with pytest.raises(VerificationError, match="duplicate"):
        SignedRecord.from_bytes(doubled)
    not_utf8 = raw[: -len(b"1")] + b"\xff"
    with pytest.raises(VerificationError):
        SignedRecord.from_bytes(not_utf8)
    assert SignedRecord.from_bytes(raw).to_bytes() == raw


@pytest.mark.parametrize("bad", ["long field id", "short salt"])
def test_a_disclosure_that_could_never_verify_is_refused_in_compact_form(
    signer: keys.Signer, bad: str
) -> None:
    rec = keys.sign_record(HEADER, FIELDS, signer)
    fid, (salt, value) = next(iter(rec.disclosures.items()))
    disclosures = {"f" * 256: (salt, value)} if bad == "long field id" else {fid: (salt[:8], value)}
    with pytest.raises(VerificationError, match="disclosure is malformed"):
        SignedRecord(rec.envelope, disclosures).to_bytes()


_SECRET_VALUE = "张三丰110105194912310021"


# Chinese text, as names and addresses are: never a substring of an id, key id or type.
@given(value=st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=2))
@settings(max_examples=30)
def test_reprs_carry_no_values_salts_or_subject(value: str) -> None:
    # A repr ends up in log lines and tracebacks; it must not carry personal data (values,
    # the subject in the signed header) or the salts that keep hidden values unguessable.
    signer = keys.Signer(bytes(range(32)))
    header = {**HEADER, "subject": _SECRET_VALUE}
    rec = keys.sign_record(header, {"name": value, "other": _SECRET_VALUE}, signer)
    verified = keys.verify_record(rec.minimise(["name"]), trusted=_trusted(signer))
    salts = [salt for salt, _ in rec.disclosures.values()]
    for obj in (rec, rec.minimise(["name"]), rec.envelope, verified):
        for text in (repr(obj), str(obj)):
            assert value not in text
            assert repr(value) not in text
            assert _SECRET_VALUE not in text
            for salt in salts:
                assert repr(salt) not in text
                assert salt.hex() not in text
    # what is useful to debug stays: field ids, payload type, key ids
    assert "name" in repr(rec)
    assert signer.keyid in repr(rec.envelope)
    assert keys.RECORD_PAYLOAD_TYPE in repr(rec.envelope)
    assert "other" in repr(verified)
    assert signer.keyid in repr(verified)
