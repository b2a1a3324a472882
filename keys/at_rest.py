"""Encryption of stored rows and blind indexes of subject identifiers.

StorageCipher: XChaCha20-Poly1305 with the storage key; the row id is associated data, so a
stored body copied or swapped into another row fails to decrypt. Layout: `0x01 ‖ 24-byte nonce
‖ ciphertext`. It does not hide the body length, and it does not stop a whole row (id and body)
being rolled back to an older value; the node's versions and Merkle log cover that.

BlindIndex: `hex(BLAKE2b-128(key = blind-index key, person = "credex-blindidx", identifier))`.
Equal identifiers give equal tokens, so the store can look a subject up without holding the
identifier; without the key the token cannot be recomputed from a guessed ID number.

RowTagger: `BLAKE2b-256(key = tag key, person = "credex-rowtag", row_encoding(...))` over a
row's id and columns (docs/decisions/0018-record-row-tags.md). The tag key is derived from the
storage key as libsodium's crypto_kdf derives a subkey (BLAKE2b keyed with the storage key,
salt = subkey id, personal = context, empty message), so it never equals the encryption key.
`row_encoding` is versioned and length-prefixed, with a type byte per value: two different
rows (None and "", True and 1, a value moved to another column) never encode alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import unicodedata
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions
import nacl.utils

from keys.errors import KeysError, VerificationError

_VERSION = b"\x01"
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_KEY_SIZE = 32
_AAD_PREFIX = b"credex-row\x00"
_PERSON = b"credex-blindidx"
_TAG_PERSON = b"credex-rowtag"
_TAG_SIZE = 32
_TAG_ENCODING = b"credex-rowtag\x00\x01"  # domain, then the encoding's version
# crypto_kdf's inputs: a 16-byte subkey id (salt) and a 16-byte context (personal)
_TAG_KEY_SALT = b"row-tag-key-v1".ljust(16, b"\x00")
_TAG_KEY_CONTEXT = b"credex-subkey".ljust(16, b"\x00")

# A column value as the store hands it over: datetimes must carry a time zone.
RowValue = str | bytes | bool | int | dt.date | dt.datetime | None


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


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


# Column names are few and repeat on every row: their encoded form is kept (bounded).
_NAMES: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    encoded = _NAMES.get(name)
    if encoded is None:
        encoded = _field(name.encode("utf-8", "surrogatepass"))
        if len(_NAMES) < 1024:
            _NAMES[name] = encoded
    return encoded


def _value(value: RowValue) -> bytes:
    # bool before int and datetime before date: each is a subclass of the other
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return b"i" + _field(str(value).encode("ascii"))
    if isinstance(value, str):
        return b"s" + _field(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return b"b" + _field(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise KeysError("a tagged time must carry a time zone")
        utc = value.astimezone(dt.UTC).isoformat(timespec="microseconds")
        return b"t" + _field(utc.encode("ascii"))
    if isinstance(value, dt.date):
        return b"d" + _field(value.isoformat().encode("ascii"))
    raise KeysError(f"cannot tag a value of type {type(value).__name__}")


def row_encoding(table: str, row_id: str, columns: Sequence[tuple[str, RowValue]]) -> bytes:
    """The bytes a row's tag is computed over: version, table, row id, then each column's
    name and typed value, all length-prefixed. Injective: different inputs (None versus "",
    True versus 1, an instant versus another) never give the same bytes; one instant in two
    time zones gives the same. Refuses (KeysError) a naive datetime or an unknown type."""
    parts = [
        _TAG_ENCODING,
        _field(table.encode("utf-8", "surrogatepass")),
        _field(row_id.encode("utf-8", "surrogatepass")),
        struct.pack(">I", len(columns)),
    ]
    for name, value in columns:
        parts.append(_name(name))
        parts.append(_value(value))
    return b"".join(parts)


class RowTagger:
    """Keyed BLAKE2b tags of store rows, under a key derived from the storage key.

    A tag proves the row's columns were written by a holder of the storage key; it does not
    say when, so a row restored with an older tag of its own still matches (decision 0018).
    """

    __slots__ = ("_key",)

    def __init__(self, storage_key: bytes) -> None:
        """Derive the tag key from the 32-byte storage key; refuses any other length."""
        if len(storage_key) != _KEY_SIZE:
            raise KeysError("the storage key must be 32 bytes")
        self._key: bytes = nacl.bindings.crypto_generichash_blake2b_salt_personal(
            b"",
            digest_size=_KEY_SIZE,
            key=storage_key,
            salt=_TAG_KEY_SALT,
            person=_TAG_KEY_CONTEXT,
        )

    def tag(self, table: str, row_id: str, columns: Sequence[tuple[str, RowValue]]) -> bytes:
        """The 32-byte tag of row `row_id` of `table` with `columns` (name, value) in order.
        Refuses (KeysError) what `row_encoding` refuses."""
        tag: bytes = nacl.bindings.crypto_generichash_blake2b_salt_personal(
            row_encoding(table, row_id, columns),
            digest_size=_TAG_SIZE,
            key=self._key,
            person=_TAG_PERSON,
        )
        return tag

    def matches(
        self,
        table: str,
        row_id: str,
        columns: Sequence[tuple[str, RowValue]],
        tag: bytes | None,
    ) -> bool:
        """True when `tag` is the tag of this row; compared in constant time. False for a
        missing tag or one of the wrong length, and for values `row_encoding` refuses."""
        if tag is None or len(tag) != _TAG_SIZE:
            return False
        try:
            expected = self.tag(table, row_id, columns)
        except KeysError:
            return False
        return bool(nacl.bindings.sodium_memcmp(expected, bytes(tag)))

    def __repr__(self) -> str:
        return "RowTagger(<key hidden>)"
