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
import nacl.pwhash
import nacl.secret
import nacl.utils

from keys.errors import VerificationError
from keys.keydir import KdfParams

__all__ = ["PASSPHRASE_BOX_MAGIC", "open_with_passphrase", "seal_with_passphrase"]

PASSPHRASE_BOX_MAGIC = b"CREDEXPB"
_VERSION = 1
_HEADER = struct.Struct(">8sBQQ16s")
_MAX_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE
_MAX_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    key: bytes = nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit, memlimit
    )
    return key


def seal_with_passphrase(data: bytes, passphrase: bytes, *, kdf: KdfParams | None = None) -> bytes:
    """Encrypt and authenticate `data` under a key derived from `passphrase` (Argon2id).

    Refuses (ValueError) an empty passphrase. `kdf` sets the Argon2id cost (tests use a cheap
    one; the default is libsodium's 'moderate').
    """
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    params = kdf or KdfParams()
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    header = _HEADER.pack(PASSPHRASE_BOX_MAGIC, _VERSION, params.opslimit, params.memlimit, salt)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, params.opslimit, params.memlimit))
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
    if not (
        nacl.pwhash.argon2id.OPSLIMIT_MIN <= ops <= _MAX_OPSLIMIT
        and nacl.pwhash.argon2id.MEMLIMIT_MIN <= mem <= _MAX_MEMLIMIT
    ):
        raise VerificationError("cannot open the sealed file: wrong passphrase or damaged file")
    header = blob[: _HEADER.size]
    box = nacl.secret.SecretBox(_derive(passphrase, salt, ops, mem))
    try:
        plain = bytes(box.decrypt(blob[_HEADER.size :]))
    except (nacl.exceptions.CryptoError, ValueError):
        raise VerificationError(
            "cannot open the sealed file: wrong passphrase or damaged file"
        ) from None
    if not plain.startswith(header):
        raise VerificationError("cannot open the sealed file: wrong passphrase or damaged file")
    return plain[len(header) :]
