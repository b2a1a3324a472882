"""Sealing data for recipients: a fresh XChaCha20-Poly1305 data key per message, wrapped for
each recipient's X25519 key with a libsodium SealedBox.

Blob layout: `"CXS1" ‖ u32 header length ‖ header ‖ 24-byte nonce ‖ AEAD ciphertext`, where the
header is canonical JSON `{"kind", "count"?, "hdr": {caller header + "recipients"}, "keys":
{recipient id: base64 wrapped key}}`. The magic and the whole header (wrapped keys included)
are the AEAD's associated data, so changing the sender, purpose, sequence, recipient list or a
wrapped key makes the message fail to open.

Batches (`seal_batch`) put many payloads in ONE AEAD, framed as `u32 count ‖ (u32 length ‖
payload)*`, with `kind = "batch"` and the count in the authenticated header: a batch opens whole
or not at all, and can be neither truncated nor reordered. One key wrap per batch is what makes
batch sealing cheap.

What sealing does not give: sender authenticity. Any recipient holds the data key and could
re-seal the plaintext under a new header; who sent it is proven by the signatures on the content
(records, requests) and by mutual TLS, not by the seal.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.utils

from keys._codec import Reader, b64d, b64e, canonical_json, parse_json_object
from keys.errors import KeysError, VerificationError

_MAGIC = b"CXS1"
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_KEY = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
_MAX_HEADER = 1 << 20
_RESERVED = frozenset({"recipients"})


def _wrap(data_key: bytes, public_key: bytes, rid: str) -> str:
    if len(public_key) != nacl.public.PublicKey.SIZE:
        raise KeysError(f"recipient {rid!r} public key must be 32 bytes")
    try:
        # crypto_box_seal is what nacl.public.SealedBox.encrypt calls, without its two wrapper
        # objects.
        wrapped = nacl.bindings.crypto_box_seal(data_key, bytes(public_key))
    except nacl.exceptions.CryptoError:
        # libsodium refuses a point of small order: the shared secret would be known to all.
        raise KeysError(f"recipient {rid!r} public key is not a usable X25519 key") from None
    return b64e(wrapped)


# Public keys of the private keys this process opens with. Deriving one is an X25519 base-point
# multiplication, a third of what opening a wrapped key costs, and a node opens with one key.
# Keyed by a digest of the private key, so the cache holds no secret of its own.
_PUBLIC_OF: dict[bytes, bytes] = {}
_PUBLIC_OF_MAX = 64


def _public_key_of(private_key: bytes) -> bytes:
    tag = hashlib.blake2b(private_key, digest_size=32, person=b"credex-x25519pk").digest()
    public = _PUBLIC_OF.get(tag)
    if public is None:
        public = nacl.bindings.crypto_scalarmult_base(private_key)
        if len(_PUBLIC_OF) >= _PUBLIC_OF_MAX:
            _PUBLIC_OF.clear()
        _PUBLIC_OF[tag] = public
    return public


def _seal(
    kind: str,
    plaintext: bytes,
    header: Mapping[str, Any],
    recipients: Mapping[str, bytes],
    count: int | None,
) -> bytes:
    if not recipients:
        raise KeysError("seal needs at least one recipient")
    clash = _RESERVED & header.keys()
    if clash:
        raise KeysError(f"sealed header must not set {sorted(clash)}")
    data_key = nacl.utils.random(_KEY)
    hdr = dict(header)
    hdr["recipients"] = sorted(recipients)
    outer: dict[str, Any] = {
        "hdr": hdr,
        "keys": {rid: _wrap(data_key, pk, rid) for rid, pk in recipients.items()},
        "kind": kind,
    }
    if count is not None:
        outer["count"] = count
    head = canonical_json(outer)
    nonce = nacl.utils.random(_NONCE)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, _MAGIC + head, nonce, data_key
    )
    return b"".join((_MAGIC, struct.pack(">I", len(head)), head, nonce, ct))


def _open(
    blob: bytes, kind: str, recipient_id: str, private_key: bytes, expect: Mapping[str, Any] | None
) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    reader = Reader(blob)
    if reader.take(4) != _MAGIC:
        raise VerificationError("not a sealed credex message")
    head_len = reader.u32()
    if head_len > _MAX_HEADER:
        raise VerificationError("sealed header too large")
    head = reader.take(head_len)
    nonce = reader.take(_NONCE)
    ct = bytes(blob[4 + 4 + head_len + _NONCE :])
    outer = parse_json_object(head, "sealed header", VerificationError)
    hdr, keys_map = outer.get("hdr"), outer.get("keys")
    if outer.get("kind") != kind or not isinstance(hdr, dict) or not isinstance(keys_map, dict):
        raise VerificationError(f"not a sealed {kind} message")
    recipients = hdr.get("recipients")
    wrapped = keys_map.get(recipient_id)
    if not isinstance(recipients, list) or recipient_id not in recipients or wrapped is None:
        raise VerificationError("sealed message is not addressed to this recipient")
    if len(private_key) != nacl.public.PrivateKey.SIZE:
        raise KeysError("X25519 private key must be 32 bytes")
    private_key = bytes(private_key)
    try:
        # What nacl.public.SealedBox(PrivateKey(k)).decrypt does, without deriving the public
        # key again on every message.
        data_key = nacl.bindings.crypto_box_seal_open(
            b64d(wrapped, "wrapped key", VerificationError),
            _public_key_of(private_key),
            private_key,
        )
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, _MAGIC + head, nonce, data_key
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise VerificationError("sealed message does not open") from None
    for key, want in (expect or {}).items():
        # The header is authentic here; a mismatch means a replay or a misdirected message.
        if key not in hdr or hdr[key] != want:
            raise VerificationError(f"sealed header field {key!r} is not the expected one")
    return hdr, plaintext, outer


def encryption_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair `(private, public)` for sealing (tests, benchmarks, tools)."""
    private = nacl.public.PrivateKey.generate()
    return bytes(private), bytes(private.public_key)


def seal(payload: bytes, *, header: Mapping[str, Any], recipients: Mapping[str, bytes]) -> bytes:
    """Encrypt `payload` for every recipient (id -> X25519 public key), binding `header`.

    `header` is JSON data (sender, purpose, sequence ...); the key `recipients` is reserved and
    set to the sorted recipient ids. Raises KeysError for no recipients or a bad key.
    """
    return _seal("one", payload, header, recipients, None)


def open_sealed(
    blob: bytes, *, recipient_id: str, private_key: bytes, expect: Mapping[str, Any] | None = None
) -> tuple[Mapping[str, Any], bytes]:
    """Open a sealed message as `recipient_id`; returns (authenticated header, payload).

    Raises VerificationError when the blob is malformed, not addressed to `recipient_id`, was
    changed, cannot be decrypted with `private_key`, or any `expect` entry differs from the header.
    """
    hdr, plaintext, _ = _open(blob, "one", recipient_id, private_key, expect)
    return hdr, plaintext


def seal_batch(
    payloads: Sequence[bytes],
    *,
    header: Mapping[str, Any],
    recipient_id: str,
    recipient_public: bytes,
) -> bytes:
    """Seal many payloads for one recipient in one AEAD (see the module docstring)."""
    parts = [struct.pack(">I", len(payloads))]
    for item in payloads:
        parts += [struct.pack(">I", len(item)), item]
    return _seal("batch", b"".join(parts), header, {recipient_id: recipient_public}, len(payloads))


def open_batch(
    blob: bytes, *, recipient_id: str, private_key: bytes, expect: Mapping[str, Any] | None = None
) -> tuple[Mapping[str, Any], list[bytes]]:
    """Open a sealed batch; returns (authenticated header, payloads in order).

    Raises VerificationError as open_sealed does, and when the framing or count is inconsistent.
    """
    hdr, plaintext, outer = _open(blob, "batch", recipient_id, private_key, expect)
    reader = Reader(plaintext)
    count = reader.u32()
    if count != outer.get("count"):
        raise VerificationError("sealed batch count mismatch")
    payloads = [reader.take(reader.u32()) for _ in range(count)]
    reader.end()
    return hdr, payloads
