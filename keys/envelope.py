"""DSSE v1 envelopes (https://github.com/secure-systems-lab/dsse).

The signature covers `PAE(type, payload) = "DSSEv1" SP len(type) SP type SP len(payload) SP
payload`, so a signature made for one payload type never verifies under another. The JSON form
is the standard DSSE JSON (base64 payload and signatures, any DSSE verifier reads it); the
compact form is a length-prefixed binary encoding with exactly one byte string per envelope.

Verification fails closed: it needs the exact payload type and at least one valid signature by a
trusted key id; signatures by unknown key ids are ignored, as DSSE prescribes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from keys._codec import b64d, b64e, canonical_json, parse_json_object
from keys.errors import VerificationError
from keys.signing import SIGNATURE_SIZE, Signer, verify_signature

_COMPACT_MAGIC = b"CXE1"
_MAX_SIGNATURES = 16
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SIG_HEAD = struct.Struct(">BH")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of `payload_type` and `payload`."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True, repr=False)
class Envelope:
    """A DSSE envelope: payload bytes exactly as signed plus (keyid, signature) pairs."""

    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def __repr__(self) -> str:
        # The payload may be a record (its subject in the header): log lines and tracebacks
        # get its size and the signers' key ids only.
        keyids = tuple(kid for kid, _ in self.signatures)
        return (
            f"Envelope(payload_type={self.payload_type!r}, payload=<{len(self.payload)} bytes>, "
            f"keyids={keyids!r})"
        )

    def to_json(self) -> str:
        """Standard DSSE JSON (`payloadType`, base64 `payload`, `signatures[{keyid, sig}]`)."""
        doc = {
            "payload": b64e(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": kid, "sig": b64e(sig)} for kid, sig in self.signatures],
        }
        return canonical_json(doc).decode("utf-8")

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Parse DSSE JSON; raises VerificationError when it is malformed."""
        doc = parse_json_object(text, "DSSE envelope", VerificationError)
        payload_type = doc.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise VerificationError("DSSE envelope has no payloadType")
        payload = b64d(doc.get("payload"), "DSSE payload", VerificationError)
        raw_sigs = doc.get("signatures")
        if not isinstance(raw_sigs, list) or not raw_sigs or len(raw_sigs) > _MAX_SIGNATURES:
            raise VerificationError("DSSE envelope needs 1 to 16 signatures")
        sigs: list[tuple[str, bytes]] = []
        for item in raw_sigs:
            if not isinstance(item, dict):
                raise VerificationError("DSSE signature entries must be objects")
            kid = item.get("keyid", "")
            if not isinstance(kid, str):
                raise VerificationError("DSSE keyid must be a string")
            sigs.append((kid, b64d(item.get("sig"), "DSSE signature", VerificationError)))
        return cls(payload_type, payload, tuple(sigs))

    def to_bytes(self) -> bytes:
        """Compact form: magic, then length-prefixed type, payload and signatures."""
        type_bytes = self.payload_type.encode("utf-8")
        parts = [
            _COMPACT_MAGIC,
            struct.pack(">H", len(type_bytes)),
            type_bytes,
            struct.pack(">I", len(self.payload)),
            self.payload,
            struct.pack(">B", len(self.signatures)),
        ]
        for kid, sig in self.signatures:
            kid_bytes = kid.encode("utf-8")
            parts += [struct.pack(">BH", len(kid_bytes), len(sig)), kid_bytes, sig]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, b: bytes) -> Envelope:
        """Parse the compact form; refuses truncation, trailing bytes and bad lengths."""
        # Bounds checked inline (not keys._codec.Reader): every feed record carries one.
        data = bytes(b)
        size = len(data)
        if data[:4] != _COMPACT_MAGIC:
            raise VerificationError("not a compact credex envelope")
        try:
            type_end = 6 + _U16.unpack_from(data, 4)[0]
            payload_end = type_end + 4 + _U32.unpack_from(data, type_end)[0]
            if payload_end >= size:
                raise VerificationError("truncated data")
            payload_type = data[6:type_end].decode("utf-8")
            payload = data[type_end + 4 : payload_end]
            count = data[payload_end]
            if not 1 <= count <= _MAX_SIGNATURES:
                raise VerificationError("envelope needs 1 to 16 signatures")
            pos = payload_end + 1
            sigs = []
            for _ in range(count):
                kid_len, sig_len = _SIG_HEAD.unpack_from(data, pos)
                kid_start = pos + 3
                kid_end = kid_start + kid_len
                pos = kid_end + sig_len
                if pos > size:
                    raise VerificationError("truncated data")
                sigs.append((data[kid_start:kid_end].decode("utf-8"), data[kid_end:pos]))
        except struct.error:
            raise VerificationError("truncated data") from None
        except UnicodeDecodeError:
            raise VerificationError("malformed text") from None
        if pos != size:
            raise VerificationError("trailing bytes")
        if not payload_type:
            raise VerificationError("envelope has no payload type")
        return cls(payload_type, payload, tuple(sigs))


def sign_envelope(payload_type: str, payload: bytes, signer: Signer) -> Envelope:
    """Sign `payload` under `payload_type` with one key; returns a one-signature envelope."""
    return Envelope(
        payload_type, payload, ((signer.keyid, signer.sign(pae(payload_type, payload))),)
    )


def add_signature(env: Envelope, signer: Signer) -> Envelope:
    """Return `env` with one more signature (same payload and type) by `signer`."""
    sig = signer.sign(pae(env.payload_type, env.payload))
    return Envelope(env.payload_type, env.payload, (*env.signatures, (signer.keyid, sig)))


def verify_envelope(env: Envelope, *, payload_type: str, trusted: Mapping[str, bytes]) -> bytes:
    """Return the payload when the type matches exactly and a trusted key id signed it.

    `trusted` maps key id to Ed25519 public key. Raises VerificationError otherwise (wrong type,
    no trusted signer, every trusted signature invalid); the message never says which.
    """
    return _verify(env, payload_type, trusted)[0]


def verified_signers(
    env: Envelope, *, payload_type: str, trusted: Mapping[str, bytes]
) -> frozenset[str]:
    """The trusted key ids with a valid signature on `env`; VerificationError when none."""
    return _verify(env, payload_type, trusted)[1]


def _verify(
    env: Envelope, payload_type: str, trusted: Mapping[str, bytes]
) -> tuple[bytes, frozenset[str]]:
    if env.payload_type != payload_type:
        raise VerificationError("envelope does not verify")
    message = pae(env.payload_type, env.payload)
    good: set[str] = set()
    for kid, sig in env.signatures:
        public = trusted.get(kid)
        if public is None or len(sig) != SIGNATURE_SIZE or kid in good:
            continue
        try:
            verify_signature(public, message, sig)
        except VerificationError:
            continue
        good.add(kid)
    if not good:
        raise VerificationError("envelope does not verify")
    return env.payload, frozenset(good)
