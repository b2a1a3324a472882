"""Argon2id key derivation for passphrase-protected files (key directory and sealed backups).

The cost of a derivation is read from the file being opened, so a hostile or damaged file
chooses it. Every derivation from file-supplied parameters goes through `derive_key`, which
refuses costs outside [MIN, libsodium 'sensitive'] before any memory is allocated: a file
cannot make us allocate more than 1 GiB or loop for minutes. Costs we write ourselves
(`KdfParams`, default libsodium 'moderate') are always inside these bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.exceptions
import nacl.pwhash
import nacl.secret

from keys.errors import KeysError

MIN_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MIN
MAX_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE
MIN_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MIN
MAX_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE
SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost for passphrase-protected files (libsodium 'moderate' by default).

    Refuses (KeysError) a cost outside the bounds `derive_key` accepts, so that nothing is
    written that could not be opened again.
    """

    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE

    def __post_init__(self) -> None:
        if not cost_in_bounds(self.opslimit, self.memlimit):
            raise KeysError(
                f"Argon2id cost out of bounds (opslimit {MIN_OPSLIMIT}..{MAX_OPSLIMIT}, "
                f"memlimit {MIN_MEMLIMIT}..{MAX_MEMLIMIT} bytes)"
            )


def cost_in_bounds(opslimit: int, memlimit: int) -> bool:
    """True when an Argon2id cost read from a file is one we agree to compute."""
    return MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT and MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT


def derive_key(
    passphrase: bytes,
    salt: bytes,
    opslimit: int,
    memlimit: int,
    *,
    what: str,
    error: type[KeysError],
) -> bytes:
    """The SecretBox key Argon2id(passphrase, salt, opslimit, memlimit).

    Raises `error` naming `what` (never the passphrase) when the cost is outside the bounds,
    the salt is not 16 bytes, or libsodium cannot run the derivation (usually: not enough
    memory for `memlimit`).
    """
    if not cost_in_bounds(opslimit, memlimit):
        raise error(
            f"{what}: Argon2id cost out of bounds (opslimit {MIN_OPSLIMIT}..{MAX_OPSLIMIT}, "
            f"memlimit {MIN_MEMLIMIT}..{MAX_MEMLIMIT} bytes)"
        )
    if len(salt) != SALT_SIZE:
        raise error(f"{what}: Argon2id salt must be {SALT_SIZE} bytes")
    try:
        key: bytes = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit, memlimit
        )
    except nacl.exceptions.RuntimeError:
        raise error(
            f"{what}: Argon2id key derivation failed (not enough memory for memlimit "
            f"{memlimit} bytes?)"
        ) from None
    return key
