"""Signed records with selective disclosure (DESIGN.md section 5, decision 0002).

The producer signs a canonical JSON payload (a DSSE envelope of type RECORD_PAYLOAD_TYPE) that
carries the record header and, per field, `base64(SHA-256(salt ‖ field id ‖ value))` with a fresh
16-byte salt. Values travel beside the envelope as disclosures `field id -> (salt, value)`.
Dropping a disclosure hides a field without breaking the signature; changing a value or a salt,
or inventing a field the producer did not sign, fails verification.

The digest input needs no separator between field id and value: the verifier takes the field id
from the signed digest map, so it is fixed, and the salt has a fixed length.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import json
import operator
import os
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keys._codec import b64d, loads_unique_keys
from keys.envelope import Envelope, pae, verified_signers
from keys.errors import KeysError, VerificationError
from keys.signing import Signer

RECORD_PAYLOAD_TYPE = "application/vnd.credex.record.v1+json"
RECORD_HEADER_KEYS = frozenset(
    {"item", "catalog_version", "record_key", "version", "producer", "issued_at", "subject"}
)
SALT_SIZE = 16
_RESERVED = frozenset({"v", "digests"})
_FIELD_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAGIC = b"CXR1"
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TYPE_BYTES = RECORD_PAYLOAD_TYPE.encode("ascii")
_PLACEHOLDER = b'"digests":null'


@dataclass(frozen=True, repr=False)
class SignedRecord:
    """A record envelope plus the disclosures its holder may pass on. Its repr shows the
    disclosed field ids, never a value or a salt (personal data; a salt makes a hidden value
    guessable)."""

    envelope: Envelope
    disclosures: Mapping[str, tuple[bytes, str]]

    def __repr__(self) -> str:
        disclosed = tuple(sorted(self.disclosures))
        return f"SignedRecord(envelope={self.envelope!r}, disclosed={disclosed!r})"

    def minimise(self, field_ids: Iterable[str]) -> SignedRecord:
        """Keep only the disclosures named in `field_ids` (names without one are ignored).

        The envelope is untouched, so the result still verifies against the producer's key.
        """
        wanted = set(field_ids)
        kept = {fid: d for fid, d in self.disclosures.items() if fid in wanted}
        return SignedRecord(self.envelope, kept)

    def to_bytes(self) -> bytes:
        """Compact form: magic, compact envelope, then the disclosures sorted by field id."""
        env = self.envelope.to_bytes()
        disclosures = self.disclosures
        parts = [_MAGIC, _U32.pack(len(env)), env, _U16.pack(len(disclosures))]
        append = parts.append
        for fid in sorted(disclosures):
            salt, value = disclosures[fid]
            fid_b = fid.encode("utf-8")
            val_b = value.encode("utf-8")
            if len(fid_b) > 255 or len(salt) != SALT_SIZE:
                # a disclosure that could never verify (a peer's malformed map form)
                raise VerificationError("record disclosure is malformed")
            append(_U8.pack(len(fid_b)))
            append(fid_b)
            append(salt)
            append(_U32.pack(len(val_b)))
            append(val_b)
        return b"".join(parts)

    @staticmethod
    def envelope_of(b: bytes) -> Envelope:
        """The (unverified) envelope of a compact signed record, without parsing its
        disclosures: enough to route a stored record. Refuses what from_bytes refuses in the
        magic and the envelope; the disclosures are checked when the whole record is parsed."""
        return _split_envelope(bytes(b))[0]

    @classmethod
    def from_bytes(cls, b: bytes) -> SignedRecord:
        """Parse the compact form; refuses truncation, trailing bytes, duplicate fields."""
        # Hand-inlined bounds checks instead of keys._codec.Reader: a feed parses thousands of
        # records per second, each with dozens of disclosures.
        data = bytes(b)
        size = len(data)
        env, pos = _split_envelope(data)
        count = _U16.unpack_from(data, pos)[0]
        pos += 2
        disclosures: dict[str, tuple[bytes, str]] = {}
        try:
            for _ in range(count):
                fid_end = pos + 1 + data[pos]
                salt_end = fid_end + SALT_SIZE
                if salt_end + 4 > size:
                    raise VerificationError("truncated data")
                fid = data[pos + 1 : fid_end].decode("utf-8")
                start = salt_end + 4
                pos = start + _U32.unpack_from(data, salt_end)[0]
                if pos > size:
                    raise VerificationError("truncated data")
                if fid in disclosures:
                    raise VerificationError("duplicate disclosure")
                disclosures[fid] = (data[fid_end:salt_end], data[start:pos].decode("utf-8"))
        except IndexError:
            raise VerificationError("truncated data") from None
        except UnicodeDecodeError:
            raise VerificationError("malformed text") from None
        if pos != size:
            raise VerificationError("trailing bytes")
        return cls(env, disclosures)


def _split_envelope(data: bytes) -> tuple[Envelope, int]:
    """The envelope of a compact signed record and the offset of its disclosure count."""
    if data[:4] != _MAGIC:
        raise VerificationError("not a credex signed record")
    if len(data) < 8:
        raise VerificationError("truncated data")
    end = 8 + _U32.unpack_from(data, 4)[0]
    if end + 2 > len(data):
        raise VerificationError("truncated data")
    return Envelope.from_bytes(data[8:end]), end


@dataclass(frozen=True, repr=False)
class VerifiedRecord:
    """A record whose signature and disclosed values were checked by verify_record. Its repr
    shows field ids and the signer, never the header (the subject) or a value."""

    header: Mapping[str, Any]
    fields: Mapping[str, str]
    hidden: frozenset[str]
    signer_keyid: str

    def __repr__(self) -> str:
        item, fields = self.header.get("item"), tuple(sorted(self.fields))
        return (
            f"VerifiedRecord(item={item!r}, fields={fields!r}, "
            f"hidden={tuple(sorted(self.hidden))!r}, signer_keyid={self.signer_keyid!r})"
        )


def field_digest(salt: bytes, field_id: str, value: str) -> bytes:
    """`SHA-256(salt ‖ field id ‖ value)` (UTF-8), the raw 32-byte digest."""
    return hashlib.sha256(salt + field_id.encode("utf-8") + value.encode("utf-8")).digest()


_SCALAR_TYPES = frozenset({str, int, bool, type(None)})
# canonical_json's settings; built once, as json.dumps builds an encoder per call with them
_HEAD_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# Base64 of a 32-byte digest is 43 significant characters and one "=". Each digest is encoded
# followed by a zero byte (33 bytes, a whole number of base64 groups), so one call encodes all
# of them: each 44-character group holds the digest's 43 characters and an "A" for the zero
# byte, which the digest-map template replaces by the "=" the standard encoding ends with.
_B64_GROUP = 44
_LAYOUTS_MAX = 256


@dataclass(frozen=True, slots=True)
class _Layout:
    """What sign_record derives from a record's field ids alone, cached per id sequence."""

    ids: tuple[str, ...]
    values_of: Callable[[Mapping[str, str]], tuple[str, ...]]
    fids: tuple[bytes, ...]
    salts: struct.Struct
    digests_b64: struct.Struct
    digest_map: bytes


_LAYOUTS: dict[tuple[Any, ...], _Layout] = {}


def _values_in_order(ids: tuple[str, ...], fields: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(fields[fid] for fid in ids)


def _layout(given: tuple[Any, ...]) -> _Layout:
    """The layout of the field ids `given` (in the caller's order); KeysError on a bad id."""
    layout = _LAYOUTS.get(given)
    if layout is not None:
        return layout
    for fid in given:
        if not isinstance(fid, str) or not _FIELD_ID.fullmatch(fid):
            raise KeysError(f"field id {fid!r} is not a valid credex field id")
    ids = tuple(sorted(given))
    count = len(ids)
    # itemgetter of one id returns the bare value and of none is refused, hence the fallback.
    values_of: Callable[[Mapping[str, str]], tuple[str, ...]] = (
        operator.itemgetter(*ids) if count > 1 else functools.partial(_values_in_order, ids)
    )
    # Field ids are checked JSON-safe and hold no "%", so they are written into the template.
    entries = ",".join(f'"{fid}":"%b="' for fid in ids)
    layout = _Layout(
        ids=ids,
        values_of=values_of,
        fids=tuple(fid.encode("ascii") for fid in ids),
        salts=struct.Struct(f"{SALT_SIZE}s" * count),
        digests_b64=struct.Struct(f"{_B64_GROUP - 1}sx" * count),
        digest_map=("{" + entries + "}").encode("ascii"),
    )
    if len(_LAYOUTS) < _LAYOUTS_MAX:
        _LAYOUTS[given] = layout
    return layout


def _check_header(header: Mapping[str, Any]) -> None:
    keys_ = header.keys()
    if not keys_ >= RECORD_HEADER_KEYS:
        raise KeysError(f"record header lacks {sorted(RECORD_HEADER_KEYS - keys_)}")
    reserved = _RESERVED & keys_
    if reserved:
        raise KeysError(f"record header must not set {sorted(reserved)}")
    for key, value in header.items():
        if type(value) in _SCALAR_TYPES and type(key) is str:
            continue  # the usual case, without the isinstance checks below
        # Scalars only: the payload is spliced around the digest map (see sign_record).
        if not (value is None or isinstance(value, bool | int | str)) or not isinstance(key, str):
            raise KeysError(f"record header value {key!r} must be a string, integer or boolean")


def sign_record(
    header: Mapping[str, Any], fields: Mapping[str, str], signer: Signer
) -> SignedRecord:
    """Sign a record with per-field salted digests; returns the envelope and all disclosures.

    `header` needs the decision-0002 keys (item, catalog_version, record_key, version, producer,
    issued_at, subject) with scalar values; field ids are 1-64 chars of `[A-Za-z0-9_.-]`, values
    strings. Raises KeysError on anything else.
    """
    _check_header(header)
    layout = _layout(tuple(fields))
    values = layout.values_of(fields)
    # One random call for every salt: per-field urandom calls cost more than the hashing.
    salts: tuple[bytes, ...] = layout.salts.unpack(os.urandom(layout.salts.size))
    sha = hashlib.sha256
    try:
        digests = [
            sha(salt + fid + value.encode("utf-8")).digest()
            for salt, fid, value in zip(salts, layout.fids, values, strict=True)
        ]
    except AttributeError:
        bad = next(fid for fid in layout.ids if not isinstance(fields[fid], str))
        raise KeysError(f"field {bad!r} must be a string value") from None
    if digests:
        digests.append(b"")
        encoded = binascii.b2a_base64(b"\0".join(digests), newline=False)
        digest_json = layout.digest_map % layout.digests_b64.unpack(encoded)
    else:
        digest_json = b"{}"
    # The digest map is spliced into the json-encoded header: the same bytes as canonical_json
    # (keys sorted, base64 needs no escaping), much faster.
    head = dict(header)
    head["v"] = 1
    head["digests"] = None
    head_json = _HEAD_ENCODER.encode(head)
    payload = head_json.encode("utf-8").replace(_PLACEHOLDER, b'"digests":' + digest_json, 1)
    sig = signer.sign(pae(RECORD_PAYLOAD_TYPE, payload))
    envelope = Envelope(RECORD_PAYLOAD_TYPE, payload, ((signer.keyid, sig),))
    return SignedRecord(
        envelope, dict(zip(layout.ids, zip(salts, values, strict=True), strict=True))
    )


def verify_record(rec: SignedRecord, *, trusted: Mapping[str, bytes]) -> VerifiedRecord:
    """Verify the producer's signature and every disclosure; returns only verified data.

    Raises VerificationError when the envelope does not verify under `trusted` (key id -> public
    key) with the record payload type, the payload is malformed, a disclosure names a field
    without a digest, or a disclosed value or salt does not match its digest.
    """
    signers = verified_signers(rec.envelope, payload_type=RECORD_PAYLOAD_TYPE, trusted=trusted)
    try:
        doc = loads_unique_keys(rec.envelope.payload)
    except (ValueError, UnicodeDecodeError):
        raise VerificationError("record payload is malformed") from None
    if not isinstance(doc, dict) or type(doc.get("v")) is not int or doc["v"] != 1:
        raise VerificationError("record payload is malformed")
    digests = doc.pop("digests", None)
    doc.pop("v")
    if not isinstance(digests, dict) or not doc.keys() >= RECORD_HEADER_KEYS:
        raise VerificationError("record payload is malformed")
    verified: dict[str, str] = {}
    sha, b64 = hashlib.sha256, binascii.b2a_base64
    for fid, (salt, value) in rec.disclosures.items():
        expected = digests.get(fid)
        if not isinstance(expected, str) or len(salt) != SALT_SIZE or not isinstance(value, str):
            raise VerificationError("record disclosure does not verify")
        digest = sha(salt + fid.encode("utf-8") + value.encode("utf-8")).digest()
        # Fast path: the producer writes standard padded base64 (sign_record), so comparing
        # the encoded forms decides without decoding; any other spelling of the digest takes
        # the strict decoding path below and is judged on the decoded bytes, as before.
        if hmac.compare_digest(b64(digest, newline=False), expected.encode("utf-8")):
            verified[fid] = value
            continue
        want = b64d(expected, "record digest", VerificationError)
        if not hmac.compare_digest(want, digest):
            raise VerificationError("record disclosure does not verify")
        verified[fid] = value
    hidden = frozenset(digests) - verified.keys()
    return VerifiedRecord(doc, verified, hidden, min(signers))
