"""DSSE envelopes: PAE, JSON and compact forms, and fail-closed verification."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys
from keys import Envelope, VerificationError

TYPE = "application/vnd.example+json"


def test_pae_matches_the_dsse_spec_example() -> None:
    # The worked example of the DSSE v1 protocol document.
    assert keys.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_keyid_is_sha256_prefix(signer: keys.Signer) -> None:
    assert signer.keyid == hashlib.sha256(signer.public_key).hexdigest()[:16]
    assert keys.keyid(signer.public_key) == signer.keyid


def test_round_trip_and_verify(signer: keys.Signer) -> None:
    env = keys.sign_envelope(TYPE, b'{"a":1}', signer)
    trusted = {signer.keyid: signer.public_key}
    assert keys.verify_envelope(env, payload_type=TYPE, trusted=trusted) == b'{"a":1}'
    assert Envelope.from_json(env.to_json()) == env
    assert Envelope.from_bytes(env.to_bytes()) == env


def test_json_form_is_standard_dsse(signer: keys.Signer) -> None:
    env = keys.sign_envelope(TYPE, b"payload", signer)
    doc = json.loads(env.to_json())
    assert set(doc) == {"payload", "payloadType", "signatures"}
    assert base64.b64decode(doc["payload"]) == b"payload"
    sig = base64.b64decode(doc["signatures"][0]["sig"])
    # Any Ed25519 verifier can check it over PAE.
    keys.verify_signature(signer.public_key, keys.pae(TYPE, b"payload"), sig)


def test_accepts_url_safe_base64(signer: keys.Signer) -> None:
    env = keys.sign_envelope(TYPE, b"\xfb\xff" * 10, signer)
    doc = json.loads(env.to_json())
    doc["payload"] = base64.urlsafe_b64encode(env.payload).decode()
    assert Envelope.from_json(json.dumps(doc)) == env


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "!!" + t,
        lambda t: t + "@@",
        lambda t: t[:3] + " " + t[3:],
        lambda t: t[:3] + "\n" + t[3:],
        lambda t: t[:3] + "$" + t[3:],
        lambda t: t.rstrip("="),
        lambda t: t + "=",
    ],
    ids=["junk-before", "junk-after", "space", "newline", "dollar", "no-padding", "extra-padding"],
)
@pytest.mark.parametrize("alphabet", ["standard", "url-safe"])
def test_base64_is_strict_in_both_alphabets(
    signer: keys.Signer, mangle: object, alphabet: str
) -> None:
    env = keys.sign_envelope(TYPE, b"\xfb\xffhello", signer)
    doc = json.loads(env.to_json())
    text = doc["payload"]
    if alphabet == "url-safe":
        text = text.replace("+", "-").replace("/", "_")
    assert ("-" in text) == (alphabet == "url-safe")
    assert callable(mangle)
    doc["payload"] = mangle(text)
    with pytest.raises(VerificationError, match="not valid base64"):
        Envelope.from_json(json.dumps(doc))


def test_wrong_payload_type_is_refused(signer: keys.Signer) -> None:
    env = keys.sign_envelope(TYPE, b"x", signer)
    with pytest.raises(VerificationError):
        keys.verify_envelope(
            env, payload_type=TYPE + "x", trusted={signer.keyid: signer.public_key}
        )
    # Relabelling the envelope's type breaks the signature too: PAE binds it.
    relabelled = Envelope(TYPE + "x", env.payload, env.signatures)
    with pytest.raises(VerificationError):
        keys.verify_envelope(
            relabelled, payload_type=TYPE + "x", trusted={signer.keyid: signer.public_key}
        )


def test_untrusted_key_is_refused(signer: keys.Signer, other_signer: keys.Signer) -> None:
    env = keys.sign_envelope(TYPE, b"x", signer)
    with pytest.raises(VerificationError):
        keys.verify_envelope(env, payload_type=TYPE, trusted={})
    # A trusted key id mapped to another key (forged key id) does not verify either.
    with pytest.raises(VerificationError):
        keys.verify_envelope(
            env, payload_type=TYPE, trusted={signer.keyid: other_signer.public_key}
        )


@pytest.mark.parametrize("where", ["payload", "sig", "truncated_sig", "swapped"])
def test_tampering_is_refused(where: str, signer: keys.Signer, other_signer: keys.Signer) -> None:
    env = keys.sign_envelope(TYPE, b"pay", signer)
    kid, sig = env.signatures[0]
    if where == "payload":
        env = Envelope(TYPE, b"paz", env.signatures)
    elif where == "sig":
        env = Envelope(TYPE, env.payload, ((kid, bytes([sig[0] ^ 1]) + sig[1:]),))
    elif where == "truncated_sig":
        env = Envelope(TYPE, env.payload, ((kid, sig[:-1]),))
    else:  # a valid signature of another payload, swapped in
        other = keys.sign_envelope(TYPE, b"other", signer)
        env = Envelope(TYPE, env.payload, other.signatures)
    trusted = {signer.keyid: signer.public_key, other_signer.keyid: other_signer.public_key}
    with pytest.raises(VerificationError):
        keys.verify_envelope(env, payload_type=TYPE, trusted=trusted)


def test_one_good_signature_among_bad_ones(signer: keys.Signer, other_signer: keys.Signer) -> None:
    env = keys.add_signature(keys.sign_envelope(TYPE, b"x", other_signer), signer)
    assert keys.verified_signers(
        env, payload_type=TYPE, trusted={signer.keyid: signer.public_key}
    ) == frozenset({signer.keyid})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"payloadType": "t", "payload": "eA==", "signatures": []}',
        '{"payloadType": "t", "payload": "!!", "signatures": [{"keyid": "k", "sig": "eA=="}]}',
        '{"payloadType": 1, "payload": "eA==", "signatures": [{"keyid": "k", "sig": "eA=="}]}',
        '{"payloadType": "t", "payload": "eA==", "signatures": ["x"]}',
        '{"payloadType": "t", "payloadType": "t", "payload": "eA==", "signatures": []}',
    ],
)
def test_malformed_json_is_refused(text: str) -> None:
    with pytest.raises(VerificationError):
        Envelope.from_json(text)


def test_compact_form_refuses_truncation_and_trailing_bytes(signer: keys.Signer) -> None:
    raw = keys.sign_envelope(TYPE, b"payload", signer).to_bytes()
    for cut in range(len(raw)):
        with pytest.raises(VerificationError):
            Envelope.from_bytes(raw[:cut])
    with pytest.raises(VerificationError):
        Envelope.from_bytes(raw + b"\x00")


@given(payload=st.binary(max_size=300), ptype=st.text(min_size=1, max_size=40))
def test_compact_and_json_round_trip(payload: bytes, ptype: str) -> None:
    env = keys.sign_envelope(ptype, payload, keys.Signer(bytes(32)))
    assert Envelope.from_bytes(env.to_bytes()) == env
    assert Envelope.from_json(env.to_json()) == env


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _respellings(text: str) -> list[str]:
    """Other spellings of the same bytes: the last significant character with non-zero
    unused bits (every decoder that does not check them decodes them the same)."""
    body = text.rstrip("=")
    pad = len(text) - len(body)
    if not pad:
        return []
    unused = 0b1111 if pad == 2 else 0b11
    last = _B64.index(body[-1])
    return [body[:-1] + _B64[last | bits] + "=" * pad for bits in range(1, unused + 1)]


@given(payload=st.binary(min_size=1, max_size=40).filter(lambda b: len(b) % 3))
def test_one_payload_has_one_spelling(payload: bytes) -> None:
    # A third party re-spelling the payload or signature must not get a different envelope
    # text that verifies as the same envelope (canonical base64: unused bits are zero).
    signer = keys.Signer(bytes(range(32)))
    env = keys.sign_envelope(TYPE, payload, signer)
    doc = json.loads(env.to_json())
    for key, text in (("payload", doc["payload"]), ("sig", doc["signatures"][0]["sig"])):
        for other in _respellings(text):
            changed = json.loads(env.to_json())
            if key == "payload":
                changed["payload"] = other
            else:
                changed["signatures"][0]["sig"] = other
            with pytest.raises(VerificationError, match="not valid base64"):
                Envelope.from_json(json.dumps(changed))
    assert Envelope.from_json(env.to_json()) == env


def test_base64_alphabets_are_not_mixed(signer: keys.Signer) -> None:
    env = keys.sign_envelope(TYPE, b"\xfb\xff\xbf" * 4, signer)
    doc = json.loads(env.to_json())
    assert doc["payload"] == "+/+/" * 4
    doc["payload"] = "+_-/" * 4  # neither the standard nor the URL-safe alphabet
    with pytest.raises(VerificationError, match="not valid base64"):
        Envelope.from_json(json.dumps(doc))
    doc["payload"] = "-_-_" * 4
    assert Envelope.from_json(json.dumps(doc)) == env


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_too_deeply_is_refused_not_a_crash(opener: str) -> None:
    """`[[[[...` a hundred thousand deep made the parser raise RecursionError, which no caller
    handles: every DSSE envelope, sealed header and bundle parse reaches it."""
    with pytest.raises(VerificationError, match="not valid JSON"):
        Envelope.from_json(opener * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        keys.loads_unique_keys(opener * 100_000)
