"""C2SP checkpoints and signed notes."""

from __future__ import annotations

import base64
import hashlib

import pytest

import keys
from keys import Checkpoint, KeysError, VerificationError

LOG = "zd-market.credex.example/log"
WITNESS = "platform.credex.example/witness"
ROOT = hashlib.sha256(b"root").digest()


def _note(signer: keys.Signer) -> str:
    return keys.sign_checkpoint(Checkpoint(LOG, 42, ROOT, ("ext line",)), name=LOG, signer=signer)


def test_format_follows_the_specs(signer: keys.Signer) -> None:
    note = _note(signer)
    body, sigs = note.split("\n\n")
    assert body == f"{LOG}\n42\n{base64.b64encode(ROOT).decode()}\next line"
    line = sigs.rstrip("\n")
    assert line.startswith(f"\u2014 {LOG} ")
    blob = base64.b64decode(line.split(" ")[2])
    key_id = hashlib.sha256(LOG.encode() + b"\n\x01" + signer.public_key).digest()[:4]
    assert blob[:4] == key_id == keys.note_key_id(LOG, signer.public_key)
    keys.verify_signature(signer.public_key, (body + "\n").encode(), blob[4:])


def test_vkey_round_trip(signer: keys.Signer) -> None:
    text = keys.vkey(LOG, signer.public_key)
    name, hex_id, b64 = text.split("+", 2)
    assert (name, bytes.fromhex(hex_id)) == (LOG, keys.note_key_id(LOG, signer.public_key))
    assert base64.b64decode(b64) == b"\x01" + signer.public_key
    assert keys.parse_vkey(text) == (LOG, signer.public_key)
    with pytest.raises(KeysError):
        keys.parse_vkey(f"{name}+00000000+{b64}")
    with pytest.raises(KeysError):
        keys.parse_vkey("no-plus-signs")


def test_verify_with_and_without_witness(signer: keys.Signer, other_signer: keys.Signer) -> None:
    note = _note(signer)
    cp = keys.verify_checkpoint(note, verifiers={LOG: signer.public_key})
    assert (cp.origin, cp.size, cp.root, cp.extensions) == (LOG, 42, ROOT, ("ext line",))
    cosigned = keys.cosign_note(note, name=WITNESS, signer=other_signer)
    both = {LOG: signer.public_key, WITNESS: other_signer.public_key}
    assert keys.verify_checkpoint(cosigned, verifiers=both) == cp
    assert keys.verify_note(cosigned, verifiers=both)[1] == frozenset({LOG, WITNESS})
    with pytest.raises(KeysError):
        keys.cosign_note(cosigned, name=WITNESS, signer=other_signer)


def test_witness_alone_is_not_enough(signer: keys.Signer, other_signer: keys.Signer) -> None:
    cosigned = keys.cosign_note(_note(signer), name=WITNESS, signer=other_signer)
    with pytest.raises(VerificationError):
        keys.verify_checkpoint(cosigned, verifiers={WITNESS: other_signer.public_key})


def test_unknown_signers_are_ignored(signer: keys.Signer, other_signer: keys.Signer) -> None:
    # Same name, other key: an unknown key for the verifier, so ignored, not fatal.
    cosigned = keys.cosign_note(_note(signer), name=WITNESS, signer=signer)
    keys.verify_checkpoint(
        cosigned, verifiers={LOG: signer.public_key, WITNESS: other_signer.public_key}
    )


def test_bad_known_signature_rejects_the_note(
    signer: keys.Signer, other_signer: keys.Signer
) -> None:
    cosigned = keys.cosign_note(_note(signer), name=WITNESS, signer=other_signer)
    head, last = cosigned.rstrip("\n").rsplit(" ", 1)
    blob = bytearray(base64.b64decode(last))
    blob[10] ^= 1
    bad = head + " " + base64.b64encode(bytes(blob)).decode() + "\n"
    with pytest.raises(VerificationError):
        keys.verify_checkpoint(
            bad, verifiers={LOG: signer.public_key, WITNESS: other_signer.public_key}
        )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace("\n42\n", "\n43\n"),
        lambda n: n.replace("ext line", "ext lime"),
        lambda n: n.rstrip("\n"),
        lambda n: n.replace("\n\n", "\n"),
        lambda n: n.replace("\u2014", "-"),
        lambda n: n.replace("\n42\n", "\n\t42\n"),
        lambda n: n[: n.index("\n\n") + 2],
    ],
)
def test_tampered_notes_are_refused(signer: keys.Signer, mutate: object) -> None:
    note = mutate(_note(signer))  # type: ignore[operator]
    with pytest.raises(VerificationError):
        keys.verify_checkpoint(note, verifiers={LOG: signer.public_key})


@pytest.mark.parametrize(
    "body",
    [
        "o\n",
        "o\n1\n",
        "o\n01\nAAAA\n",
        "o\n-1\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n1\nAAAA\n",
        "\n1\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",
    ],
)
def test_malformed_bodies_are_refused(body: str) -> None:
    with pytest.raises(VerificationError):
        keys.parse_checkpoint(body)


def test_tree_size_is_a_uint64(signer: keys.Signer) -> None:
    root = base64.b64encode(ROOT).decode()
    top = 2**64 - 1
    assert keys.parse_checkpoint(f"o\n{top}\n{root}\n").size == top
    for size in (2**64, 2**66, 10**19 * 9):
        with pytest.raises(VerificationError, match="malformed"):
            keys.parse_checkpoint(f"o\n{size}\n{root}\n")
        with pytest.raises(KeysError, match="2\\*\\*64"):
            Checkpoint("o", size, ROOT).body()
    note = keys.sign_note(f"{LOG}\n{2**64}\n{root}\n", name=LOG, signer=signer)
    with pytest.raises(VerificationError, match="malformed"):
        keys.verify_checkpoint(note, verifiers={LOG: signer.public_key})


def test_text_that_is_not_utf8_is_refused(signer: keys.Signer) -> None:
    # A lone surrogate, as str(bytes, errors="surrogateescape") makes of invalid UTF-8.
    note = _note(signer).replace("\n42\n", "\n42\udcff\n", 1)
    with pytest.raises(VerificationError, match="malformed"):
        keys.verify_note(note, verifiers={LOG: signer.public_key})
    with pytest.raises(VerificationError, match="malformed"):
        keys.verify_checkpoint(note, verifiers={LOG: signer.public_key})
    with pytest.raises(VerificationError, match="malformed"):
        keys.cosign_note(note, name=WITNESS, signer=signer)
    with pytest.raises(KeysError, match="UTF-8"):
        keys.sign_note("o\ud800\n", name=LOG, signer=signer)
    with pytest.raises(KeysError, match="name"):
        keys.sign_note("o\n", name="log\udcff", signer=signer)
    encoded = keys.vkey(LOG, signer.public_key).split("+", 2)
    with pytest.raises(KeysError, match="vkey"):
        keys.parse_vkey("\udcff+" + "+".join(encoded[1:]))


def test_bad_checkpoints_and_names_are_refused(signer: keys.Signer) -> None:
    with pytest.raises(KeysError):
        Checkpoint("o", 1, b"short").body()
    with pytest.raises(KeysError):
        Checkpoint("o\nx", 1, ROOT).body()
    with pytest.raises(KeysError):
        keys.sign_checkpoint(Checkpoint("o", 1, ROOT), name="has space", signer=signer)
    with pytest.raises(KeysError):
        keys.sign_note("text\n\n", name="n", signer=signer)


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _respell(text: str, bits: int) -> str:
    """`text` (base64 with one "=") with `bits` (1..3) set in the last character's unused bits:
    lenient decoders read the same bytes."""
    assert text.endswith("=")
    assert not text.endswith("==")
    return text[:-2] + _B64[_B64.index(text[-2]) | bits] + "="


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_a_respelled_signature_line_is_refused(signer: keys.Signer, bits: int) -> None:
    # Without the key, nobody may turn a signed checkpoint into other text that verifies:
    # witnesses and monitors compare notes as text.
    note = _note(signer)
    head, _, line = note.rstrip("\n").rpartition(" ")
    other = f"{head} {_respell(line, bits)}\n"
    assert other != note
    assert base64.b64decode(other.rstrip("\n").rpartition(" ")[2]) == base64.b64decode(line)
    with pytest.raises(VerificationError, match="malformed"):
        keys.verify_checkpoint(other, verifiers={LOG: signer.public_key})
    with pytest.raises(VerificationError, match="malformed"):
        keys.read_checkpoint(other)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_a_respelled_root_is_refused(bits: int) -> None:
    root = base64.b64encode(ROOT).decode()
    assert keys.parse_checkpoint(f"o\n1\n{root}\n").root == ROOT
    with pytest.raises(VerificationError, match="malformed"):
        keys.parse_checkpoint(f"o\n1\n{_respell(root, bits)}\n")
