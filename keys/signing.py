"""Ed25519 signing keys and signature verification.

A `Signer` holds a secret key and never shows it (no repr, no export method); key files are
written by `keys.keydir` through the private `_seed` accessor. Key ids are
`hex(sha256(public key))[:16]` everywhere in credex.
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils

from keys.errors import KeysError, VerificationError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32


def keyid(public_key: bytes) -> str:
    """Return `hex(sha256(public_key))[:16]`, the credex key id."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class Signer:
    """An Ed25519 signing key. `sign` returns the 64-byte detached signature."""

    __slots__ = ("_secret", "_seed_bytes", "keyid", "public_key")

    def __init__(self, seed: bytes) -> None:
        """Build a signer from a 32-byte seed; refuses any other length."""
        if len(seed) != SEED_SIZE:
            raise KeysError("an Ed25519 seed must be 32 bytes")
        public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(seed))
        self._seed_bytes = bytes(seed)
        self._secret = secret
        self.public_key: bytes = public
        self.keyid: str = keyid(public)

    @classmethod
    def generate(cls) -> Signer:
        """A fresh random signing key."""
        return cls(nacl.utils.random(SEED_SIZE))

    def sign(self, message: bytes) -> bytes:
        """Sign `message`; returns the 64-byte Ed25519 signature only."""
        # The bindings call skips PyNaCl's SignedMessage wrapper: record signing is hot.
        return nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_SIZE]

    def _seed(self) -> bytes:
        # Private on purpose: only keys.keydir writes secret key material to disk.
        return self._seed_bytes

    def __repr__(self) -> str:
        return f"Signer(keyid={self.keyid!r})"


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; raises VerificationError (opaque) when it does not verify."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise VerificationError("signature does not verify")
    try:
        # The bindings call skips building a VerifyKey per call: feeds verify every record.
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise VerificationError("signature does not verify") from None
