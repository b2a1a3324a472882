"""Sealing for recipients and batches; at-rest row encryption and blind indexes."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from keys import KeysError, VerificationError

A_PRIV, A_PUB = keys.encryption_keypair()
B_PRIV, B_PUB = keys.encryption_keypair()
C_PRIV, C_PUB = keys.encryption_keypair()
HDR = {"sender": "zd-market", "purpose": "feed", "sequence": 7, "item": "admin_penalty"}


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack(">I", blob[4:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _join(head: dict[str, Any], rest: bytes) -> bytes:
    raw = keys.canonical_json(head)
    return b"CXS1" + struct.pack(">I", len(raw)) + raw + rest


def test_every_recipient_opens_and_sees_the_header() -> None:
    blob = keys.seal(b"secret", header=HDR, recipients={"a": A_PUB, "b": B_PUB})
    for rid, priv in (("a", A_PRIV), ("b", B_PRIV)):
        hdr, body = keys.open_sealed(blob, recipient_id=rid, private_key=priv, expect=HDR)
        assert body == b"secret"
        assert hdr["recipients"] == ["a", "b"]
        assert hdr["sequence"] == 7
    assert b"secret" not in blob


def test_non_recipient_cannot_open() -> None:
    blob = keys.seal(b"secret", header=HDR, recipients={"a": A_PUB})
    with pytest.raises(VerificationError):
        keys.open_sealed(blob, recipient_id="c", private_key=C_PRIV)
    # Claiming to be "a" without a's key does not help either.
    with pytest.raises(VerificationError):
        keys.open_sealed(blob, recipient_id="a", private_key=C_PRIV)


def test_each_private_key_opens_with_its_own_public_key() -> None:
    # Opening remembers each private key's public key (derived once): more keys than that
    # memory holds, and a key met again after it was cleared, still open only their own blobs.
    pairs = [keys.encryption_keypair() for _ in range(70)]
    blobs = [
        keys.seal(b"m%d" % i, header=HDR, recipients={"a": pub}) for i, (_, pub) in enumerate(pairs)
    ]
    for _ in range(2):
        for i, (priv, _) in enumerate(pairs):
            assert keys.open_sealed(blobs[i], recipient_id="a", private_key=priv)[1] == b"m%d" % i
            with pytest.raises(VerificationError):
                keys.open_sealed(blobs[i - 1], recipient_id="a", private_key=priv)


def test_replay_with_other_expectations_is_refused() -> None:
    blob = keys.seal(b"secret", header=HDR, recipients={"a": A_PUB})
    for key, value in (("sequence", 8), ("purpose", "query"), ("sender", "zd-tax"), ("nope", 1)):
        with pytest.raises(VerificationError):
            keys.open_sealed(blob, recipient_id="a", private_key=A_PRIV, expect={key: value})


@pytest.mark.parametrize("change", ["sequence", "recipients", "wrapped_key", "add_recipient"])
def test_changed_header_is_refused(change: str) -> None:
    blob = keys.seal(b"secret", header=HDR, recipients={"a": A_PUB, "b": B_PUB})
    head, rest = _split(blob)
    hdr = dict(head["hdr"])
    wrapped = dict(head["keys"])
    if change == "sequence":
        hdr["sequence"] = 8
    elif change == "recipients":
        hdr["recipients"] = ["a"]
    elif change == "wrapped_key":
        wrapped["a"], wrapped["b"] = wrapped["b"], wrapped["a"]
    else:
        hdr["recipients"] = ["a", "b", "c"]
        other = keys.seal(b"x", header=HDR, recipients={"c": C_PUB})
        wrapped["c"] = _split(other)[0]["keys"]["c"]
    tampered = _join({**head, "hdr": hdr, "keys": wrapped}, rest)
    with pytest.raises(VerificationError):
        keys.open_sealed(tampered, recipient_id="a", private_key=A_PRIV)


def test_truncated_or_flipped_blob_is_refused() -> None:
    blob = keys.seal(b"secret payload", header=HDR, recipients={"a": A_PUB})
    for cut in (0, 3, 8, 40, len(blob) - 1):
        with pytest.raises(VerificationError):
            keys.open_sealed(blob[:cut], recipient_id="a", private_key=A_PRIV)
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(VerificationError):
        keys.open_sealed(flipped, recipient_id="a", private_key=A_PRIV)


def test_bad_seal_arguments() -> None:
    with pytest.raises(KeysError):
        keys.seal(b"x", header=HDR, recipients={})
    with pytest.raises(KeysError):
        keys.seal(b"x", header={"recipients": []}, recipients={"a": A_PUB})
    with pytest.raises(KeysError):
        keys.seal(b"x", header=HDR, recipients={"a": A_PUB[:31]})


def test_batch_round_trip_and_kind_separation() -> None:
    payloads = [b"", b"one", b"\x00" * 1024]
    blob = keys.seal_batch(payloads, header=HDR, recipient_id="a", recipient_public=A_PUB)
    hdr, got = keys.open_batch(blob, recipient_id="a", private_key=A_PRIV, expect={"sequence": 7})
    assert got == payloads
    assert hdr["recipients"] == ["a"]
    with pytest.raises(VerificationError):
        keys.open_sealed(blob, recipient_id="a", private_key=A_PRIV)
    single = keys.seal(b"x", header=HDR, recipients={"a": A_PUB})
    with pytest.raises(VerificationError):
        keys.open_batch(single, recipient_id="a", private_key=A_PRIV)


def test_batch_count_in_header_is_bound() -> None:
    blob = keys.seal_batch([b"a", b"b"], header=HDR, recipient_id="a", recipient_public=A_PUB)
    head, rest = _split(blob)
    with pytest.raises(VerificationError):
        keys.open_batch(_join({**head, "count": 1}, rest), recipient_id="a", private_key=A_PRIV)
    with pytest.raises(VerificationError):
        keys.open_batch(blob, recipient_id="b", private_key=B_PRIV)


@settings(max_examples=30)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_batch_property(payloads: list[bytes]) -> None:
    blob = keys.seal_batch(payloads, header={"s": 1}, recipient_id="a", recipient_public=A_PUB)
    assert keys.open_batch(blob, recipient_id="a", private_key=A_PRIV)[1] == payloads


# ----------------------------------------------------------------------------- at rest

KEY = bytes(range(32))


def test_storage_round_trip_and_fresh_nonces() -> None:
    cipher = keys.StorageCipher(KEY)
    one, two = cipher.encrypt("row-1", b"body"), cipher.encrypt("row-1", b"body")
    assert one != two
    assert cipher.decrypt("row-1", one) == b"body" == cipher.decrypt("row-1", two)
    assert b"body" not in one


def test_stored_row_swapped_into_another_row_is_refused() -> None:
    cipher = keys.StorageCipher(KEY)
    blob = cipher.encrypt("row-1", b"body")
    with pytest.raises(VerificationError):
        cipher.decrypt("row-2", blob)


@pytest.mark.parametrize("mutate", ["flip", "truncate", "empty", "version", "other_key"])
def test_tampered_rows_are_refused(mutate: str) -> None:
    cipher = keys.StorageCipher(KEY)
    blob = cipher.encrypt("row-1", b"body")
    if mutate == "flip":
        blob = blob[:-1] + bytes([blob[-1] ^ 0x80])
    elif mutate == "truncate":
        blob = blob[:-3]
    elif mutate == "empty":
        blob = b""
    elif mutate == "version":
        blob = b"\x02" + blob[1:]
    else:
        cipher = keys.StorageCipher(bytes(32))
    with pytest.raises(VerificationError):
        cipher.decrypt("row-1", blob)


def test_bad_key_lengths() -> None:
    with pytest.raises(KeysError):
        keys.StorageCipher(bytes(31))
    with pytest.raises(KeysError):
        keys.BlindIndex(bytes(33))


def test_blind_index_is_keyed_stable_and_normalised() -> None:
    index = keys.BlindIndex(KEY)
    token = index.token("37030319900101001X")
    assert len(token) == 32
    assert int(token, 16) >= 0
    assert index.token("37030319900101001x") == token
    assert index.token(" 37030319900101001X ") == token
    assert index.token("37030319900101002X") != token
    assert keys.BlindIndex(bytes(32)).token("37030319900101001X") != token
    assert "370303" not in repr(index)
    # Pinned to libsodium's keyed BLAKE2b (generichash with personalisation), which computed
    # the tokens already stored: a different token would orphan every stored subject.
    import nacl.encoding  # noqa: PLC0415 - tests may compare with nacl; keys alone uses it
    import nacl.hash  # noqa: PLC0415

    for text in ("37030319900101001X", "91370303MA3C00001X", "身份证:A1234567"):
        want = nacl.hash.blake2b(
            text.encode(), digest_size=16, key=KEY, person=b"credex-blindidx",
            encoder=nacl.encoding.HexEncoder,
        )  # fmt: skip
        assert index.token(text) == want.decode()
    with pytest.raises(KeysError):
        index.token("  ")


def test_blind_index_tokens_are_pinned() -> None:
    # Computed with libsodium's crypto_generichash (through PyNaCl) before the switch to
    # hashlib: stored rows are indexed by these tokens, so they must never change.
    index = keys.BlindIndex(bytes(range(32)))
    assert index.token("91370303MA3C12345X") == "4550ce5792a736b5f306c5ae994005bf"
    assert index.token("370303199001010113") == "cb85ba015811736048bd8984f7452c7a"
    assert index.token("ｘ１２３") == "32204954ee13964f9398aa84c9a7eaa1"  # NFKC, upper-cased


# X25519 points of small order (libsodium's blocklist): a wrap to one of them would share a
# known secret, and libsodium refuses it.
SMALL_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]


@pytest.mark.parametrize("bad", SMALL_ORDER, ids=lambda b: b.hex()[:8])
def test_a_small_order_recipient_key_is_a_keys_error(bad: bytes) -> None:
    # A roster entry's encryption key is any 32 bytes; one that libsodium refuses must give
    # the package's error naming the recipient, not a bare RuntimeError from the bindings.
    with pytest.raises(KeysError, match="'b'"):
        keys.seal(b"x", header=HDR, recipients={"a": A_PUB, "b": bad})
    with pytest.raises(KeysError, match="'b'"):
        keys.seal_batch([b"x"], header=HDR, recipient_id="b", recipient_public=bad)
