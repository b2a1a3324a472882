"""keys.seal_with_passphrase / open_with_passphrase: round trip and every way to fail."""

from __future__ import annotations

import nacl.exceptions
import nacl.pwhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from keys.passphrase_box import PASSPHRASE_BOX_MAGIC

CHEAP = keys.KdfParams(opslimit=1, memlimit=8192)


def test_round_trip() -> None:
    blob = keys.seal_with_passphrase(b"node backup", b"correct horse", kdf=CHEAP)
    assert blob.startswith(PASSPHRASE_BOX_MAGIC)
    assert b"node backup" not in blob
    assert keys.open_with_passphrase(blob, b"correct horse") == b"node backup"


def test_each_seal_is_fresh() -> None:
    one = keys.seal_with_passphrase(b"x", b"pw", kdf=CHEAP)
    two = keys.seal_with_passphrase(b"x", b"pw", kdf=CHEAP)
    assert one != two  # fresh salt and nonce


def test_wrong_passphrase_is_opaque() -> None:
    blob = keys.seal_with_passphrase(b"secret", b"right", kdf=CHEAP)
    with pytest.raises(keys.VerificationError, match="wrong passphrase or damaged") as info:
        keys.open_with_passphrase(blob, b"wrong")
    assert "right" not in str(info.value)


def test_empty_passphrase_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        keys.seal_with_passphrase(b"x", b"")


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("truncated header", lambda b: b[:20]),
        ("truncated body", lambda b: b[:-1]),
        ("other magic", lambda b: b"NOTCREDX" + b[8:]),
        ("other version", lambda b: b[:8] + b"\x02" + b[9:]),
        ("cheaper kdf in header", lambda b: b[:9] + (2).to_bytes(8, "big") + b[17:]),
        ("absurd memlimit", lambda b: b[:17] + (1 << 40).to_bytes(8, "big") + b[25:]),
        ("changed salt", lambda b: b[:25] + bytes([b[25] ^ 1]) + b[26:]),
        ("flipped last byte", lambda b: b[:-1] + bytes([b[-1] ^ 0x80])),
        ("empty", lambda b: b""),
    ],
)
def test_damaged_blob_refused(name: str, mutate: object) -> None:
    blob = keys.seal_with_passphrase(b"payload" * 10, b"pw", kdf=CHEAP)
    assert callable(mutate)
    with pytest.raises(keys.VerificationError):
        keys.open_with_passphrase(mutate(blob), b"pw")


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=2048), st.binary(min_size=1, max_size=64))
def test_round_trip_property(data: bytes, passphrase: bytes) -> None:
    blob = keys.seal_with_passphrase(data, passphrase, kdf=CHEAP)
    assert keys.open_with_passphrase(blob, passphrase) == data


@pytest.mark.parametrize(
    ("opslimit", "memlimit"),
    [(0, 8192), (5, 8192), (1, 8191), (1, (1 << 30) + 1), (1, 1 << 42)],
)
def test_kdf_params_out_of_bounds_are_refused(opslimit: int, memlimit: int) -> None:
    # The bounds a file may ask for (shared with the key directory): nothing is written that
    # could not be opened again.
    with pytest.raises(keys.KeysError, match="out of bounds"):
        keys.KdfParams(opslimit=opslimit, memlimit=memlimit)


def test_failed_key_derivation_is_a_keys_error(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = keys.seal_with_passphrase(b"x", b"pw", kdf=CHEAP)

    def out_of_memory(*_args: object) -> bytes:
        raise nacl.exceptions.RuntimeError("Unexpected failure in key derivation")

    # libsodium fails this way when it cannot allocate memlimit bytes.
    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", out_of_memory)
    with pytest.raises(keys.VerificationError, match="key derivation failed"):
        keys.open_with_passphrase(blob, b"pw")
    with pytest.raises(keys.KeysError, match="key derivation failed"):
        keys.seal_with_passphrase(b"x", b"pw", kdf=CHEAP)
