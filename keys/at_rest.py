"""Encryption of stored rows and blind indexes of subject identifiers.

StorageCipher: XChaCha20-Poly1305 with the storage key; the row id is associated data, so a
stored body copied or swapped into another row fails to decrypt. Layout: `0x01 ‖ 24-byte nonce
‖ ciphertext`. It does not hide the body length, and it does not stop a whole row (id and body)
being rolled back to an older value; the node's versions and Merkle log cover that.

BlindIndex: `hex(BLAKE2b-128(key = blind-index key, person = "credex-blindidx", identifier))`.
Equal identifiers give equal tokens, so the store can look a subject up without holding the
identifier; without the key the token cannot be recomputed from a guessed ID number.
"""

from __future__ import annotations

import hashlib
import unicodedata

import nacl.bindings
import nacl.exceptions
import nacl.utils

from keys.errors import KeysError, VerificationError

_VERSION = b"\x01"
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_KEY_SIZE = 32
_AAD_PREFIX = b"credex-row\x00"
_PERSON = b"credex-blindidx"


class StorageCipher:
    """Authenticated encryption of stored bodies, bound to their row id."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Use the 32-byte storage key; refuses any other length."""
        if len(key) != _KEY_SIZE:
            raise KeysError("the storage key must be 32 bytes")
        self._key = bytes(key)

    def encrypt(self, row_id: str, body: bytes) -> bytes:
        """Encrypt `body` for row `row_id` with a fresh random nonce."""
        nonce = nacl.utils.random(_NONCE)
        aad = _AAD_PREFIX + row_id.encode("utf-8")
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, aad, nonce, self._key)
        return _VERSION + nonce + ct

    def decrypt(self, row_id: str, blob: bytes) -> bytes:
        """Decrypt a body stored for `row_id`; raises VerificationError when it was changed,
        truncated, written for another row or under another key."""
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
            raise VerificationError("stored row does not decrypt")
        aad = _AAD_PREFIX + row_id.encode("utf-8")
        try:
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                blob[1 + _NONCE :], aad, blob[1 : 1 + _NONCE], self._key
            )
        except nacl.exceptions.CryptoError:
            raise VerificationError("stored row does not decrypt") from None

    def __repr__(self) -> str:
        return "StorageCipher(<key hidden>)"


class BlindIndex:
    """Keyed BLAKE2b tokens for normalised identifiers (32 hex chars)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Use the 32-byte blind-index key; refuses any other length."""
        if len(key) != _KEY_SIZE:
            raise KeysError("the blind-index key must be 32 bytes")
        self._key = bytes(key)

    def token(self, normalised_identifier: str) -> str:
        """The token of an identifier already normalised by the catalogue.

        As a last guard against two spellings of one subject it applies NFKC, strips blanks and
        upper-cases ("x" and "X" check digits give one token). Refuses an empty identifier.
        """
        text = unicodedata.normalize("NFKC", normalised_identifier).strip().upper()
        if not text:
            raise KeysError("cannot index an empty identifier")
        # hashlib's BLAKE2b is the same function as libsodium's generichash (person padded
        # with zeros to 16 bytes in both) at a tenth of the cost through PyNaCl's wrapper; the
        # pinned vectors in tests/keys keep the tokens of stored rows unchanged.
        return hashlib.blake2b(
            text.encode("utf-8"), digest_size=16, key=self._key, person=_PERSON
        ).hexdigest()

    def __repr__(self) -> str:
        return "BlindIndex(<key hidden>)"
