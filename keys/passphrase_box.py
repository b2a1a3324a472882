"""Sealing bytes under a passphrase (used for encrypted node backups).

Format (all integers big-endian):

    magic "CREDEXPB" (8) | version 1 (1) | opslimit (8) | memlimit (8) | salt (16) | SecretBox

The key is Argon2id(passphrase, salt, opslimit, memlimit); the SecretBox (XSalsa20-Poly1305,
random 24-byte nonce) authenticates the ciphertext AND the header: the header bytes are put in
front of the plaintext before sealing and checked after opening, so a changed cost parameter or
salt cannot go unnoticed. A wrong passphrase and a damaged blob give the same opaque error.
The KDF cost read from a blob is bounded, so a hostile file cannot make us allocate gigabytes.
"""

from __future__ import annotations

import struct

import nacl.exceptions
import nacl.secret
import nacl.utils

from keys._kdf import SALT_SIZE, KdfParams, cost_in_bounds, derive_key
from keys.errors import KeysError, VerificationError

__all__ = ["PASSPHRASE_BOX_MAGIC", "open_with_passphrase", "seal_with_passphrase"]

PASSPHRASE_BOX_MAGIC = b"CREDEXPB"
_VERSION = 1
_HEADER = struct.Struct(f">8sBQQ{SALT_SIZE}s")
_OPEN = "cannot open the sealed file"


def seal_with_passphrase(data: bytes, passphrase: bytes, *, kdf: KdfParams | None = None) -> bytes:
    """Encrypt and authenticate `data` under a key derived from `passphrase` (Argon2id).

    Refuses (ValueError) an empty passphrase; raises KeysError when libsodium cannot run the
    derivation (not enough memory). `kdf` sets the Argon2id cost (tests use a cheap one; the
    default is libsodium's 'moderate').
    """
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    params = kdf or KdfParams()
    salt = nacl.utils.random(SALT_SIZE)
    header = _HEADER.pack(PASSPHRASE_BOX_MAGIC, _VERSION, params.opslimit, params.memlimit, salt)
    key = derive_key(
        passphrase, salt, params.opslimit, params.memlimit, what="cannot seal", error=KeysError
    )
    box = nacl.secret.SecretBox(key)
    return header + bytes(box.encrypt(header + data))


def open_with_passphrase(blob: bytes, passphrase: bytes) -> bytes:
    """Return the data sealed in `blob` by `seal_with_passphrase`.

    Raises VerificationError for anything that is not an intact blob sealed under this
    passphrase (wrong passphrase, truncation, any changed byte, unknown version, absurd KDF
    cost); the message does not say which.
    """
    if len(blob) < _HEADER.size:
        raise VerificationError("not a credex passphrase-sealed file, or it is truncated")
    magic, version, ops, mem, salt = _HEADER.unpack_from(blob)
    if magic != PASSPHRASE_BOX_MAGIC or version != _VERSION:
        raise VerificationError("not a credex passphrase-sealed file (unknown format)")
    # Checked here as well as in derive_key, to keep the refusal as opaque as a wrong passphrase.
    if not cost_in_bounds(ops, mem):
        raise VerificationError(f"{_OPEN}: wrong passphrase or damaged file")
    header = blob[: _HEADER.size]
    box = nacl.secret.SecretBox(
        derive_key(passphrase, salt, ops, mem, what=_OPEN, error=VerificationError)
    )
    try:
        plain = bytes(box.decrypt(blob[_HEADER.size :]))
    except (nacl.exceptions.CryptoError, ValueError):
        raise VerificationError(
            "cannot open the sealed file: wrong passphrase or damaged file"
        ) from None
    if not plain.startswith(header):
        raise VerificationError("cannot open the sealed file: wrong passphrase or damaged file")
    return plain[len(header) :]
