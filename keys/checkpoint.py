"""C2SP tlog checkpoints inside C2SP signed notes (c2sp.org/tlog-checkpoint, c2sp.org/signed-note).

Checkpoint body: origin line, decimal tree size, base64 root hash, then optional extension
lines, each ending in a newline. Signed note: body, a blank line, then one line per signature
`— <name> <base64(key id ‖ Ed25519 signature over the body)>`, where the 4-byte key id is
`SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key)[:4]`. Verifiers are configured by name and public key
(or a vkey string `<name>+<hex key id>+<base64(0x01 ‖ public key)>`).

Verification follows the spec: signatures by unknown (name, key id) pairs are ignored, a known
key whose signature fails rejects the whole note, and at least the log's own key must sign.
Witness cosignatures here are plain Ed25519 note signatures (type 0x01) over the same body, not
the timestamped c2sp tlog-cosignature (type 0x04).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from keys.errors import KeysError, VerificationError
from keys.signing import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Signer, verify_signature

_ED25519 = b"\x01"
_DASH = "\u2014 "
_MAX_SIGNATURES = 32
_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
MAX_TREE_SIZE = 2**64 - 1  # the tree size is a uint64 (c2sp.org/tlog-checkpoint)


def _is_text(text: str) -> bool:
    """True when `text` encodes as UTF-8 (a lone surrogate, e.g. from surrogateescape, does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _b64decode(text: str) -> bytes:
    """Standard padded base64, canonical only: binascii.Error (a ValueError) for a character
    outside the alphabet and for non-zero unused bits in the last character, which a lenient
    decoder ignores. One hash or signature has one spelling, so nobody without the key can turn
    a signed note into other text that verifies."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw) != text.encode("ascii"):
        raise binascii.Error("non-canonical base64")
    return raw


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: log origin, tree size, root hash, and extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The checkpoint note text (every line ends in a newline)."""
        if (
            not self.origin
            or "\n" in self.origin
            or not 0 <= self.size <= MAX_TREE_SIZE
            or len(self.root) != 32
        ):
            raise KeysError(
                "checkpoint needs an origin line, a size in 0..2**64-1 and a 32-byte root"
            )
        if any(not ext or "\n" in ext for ext in self.extensions):
            raise KeysError("checkpoint extension lines must be non-empty single lines")
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        return "".join(line + "\n" for line in (*lines, *self.extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (NOT its signatures); raises VerificationError when malformed."""
    if not text.endswith("\n"):
        raise VerificationError("checkpoint is malformed")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[0] or not _SIZE.fullmatch(lines[1]):
        raise VerificationError("checkpoint is malformed")
    try:
        root = _b64decode(lines[2])
    except (binascii.Error, ValueError):
        raise VerificationError("checkpoint is malformed") from None
    size = int(lines[1])
    if size > MAX_TREE_SIZE or len(root) != 32 or any(not ext for ext in lines[3:]):
        raise VerificationError("checkpoint is malformed")
    return Checkpoint(lines[0], size, root, tuple(lines[3:]))


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or not _is_text(name):
        raise KeysError("a note key name must be non-empty without spaces or '+'")


def note_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte signed-note key id of an Ed25519 key: SHA-256(name ‖ LF ‖ 0x01 ‖ pk)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + public_key).digest()[:4]


def vkey(name: str, public_key: bytes) -> str:
    """The verifier key string `<name>+<hex key id>+<base64(0x01 ‖ pk)>`."""
    _check_name(name)
    encoded = base64.b64encode(_ED25519 + public_key).decode("ascii")
    return f"{name}+{note_key_id(name, public_key).hex()}+{encoded}"


def parse_vkey(text: str) -> tuple[str, bytes]:
    """Parse a vkey string into (name, Ed25519 public key); KeysError when malformed."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not _NAME.fullmatch(parts[0]) or not _is_text(parts[0]):
        raise KeysError("a vkey is <name>+<hex key id>+<base64 key>")
    name, hex_id, encoded = parts
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise KeysError("the vkey's key is not base64") from None
    if len(raw) != 1 + PUBLIC_KEY_SIZE or raw[:1] != _ED25519:
        raise KeysError("the vkey is not an Ed25519 (type 0x01) key")
    public = raw[1:]
    if note_key_id(name, public).hex() != hex_id.lower():
        raise KeysError("the vkey's key id does not match its name and key")
    return name, public


def _signature_line(text: str, name: str, signer: Signer) -> str:
    _check_name(name)
    blob = note_key_id(name, signer.public_key) + signer.sign(text.encode("utf-8"))
    return f"{_DASH}{name} {base64.b64encode(blob).decode('ascii')}\n"


def _split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    bad_char = any(ord(c) < 0x20 and c != "\n" for c in note)
    if not note.endswith("\n") or bad_char or not _is_text(note):
        raise VerificationError("signed note is malformed")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise VerificationError("signed note is malformed")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    lines = sig_block[:-1].split("\n") if sig_block else []
    if not lines or len(lines) > _MAX_SIGNATURES:
        raise VerificationError("signed note has no or too many signatures")
    sigs = []
    for line in lines:
        if not line.startswith(_DASH):
            raise VerificationError("signed note is malformed")
        name, _, encoded = line[len(_DASH) :].partition(" ")
        try:
            blob = _b64decode(encoded)
        except (binascii.Error, ValueError):
            raise VerificationError("signed note is malformed") from None
        if not _NAME.fullmatch(name) or len(blob) < 5:
            raise VerificationError("signed note is malformed")
        sigs.append((name, blob))
    return text, sigs


def sign_note(text: str, *, name: str, signer: Signer) -> str:
    """Sign note `text` (must end with a newline) as `name`; returns the signed note."""
    bad_char = any(ord(c) < 0x20 and c != "\n" for c in text) or not _is_text(text)
    if not text.endswith("\n") or text.endswith("\n\n") or bad_char:
        raise KeysError(
            "note text must end with one newline and be UTF-8 text without control characters"
        )
    return text + "\n" + _signature_line(text, name, signer)


def sign_checkpoint(cp: Checkpoint, *, name: str, signer: Signer) -> str:
    """The signed-note text of `cp`, signed by the log's key named `name`."""
    return sign_note(cp.body(), name=name, signer=signer)


def cosign_note(note: str, *, name: str, signer: Signer) -> str:
    """Add a witness signature line to a signed note (the witness checks consistency first).

    Refuses (KeysError) a note that `name` with this key has already signed.
    """
    text, sigs = _split(note)
    kid = note_key_id(name, signer.public_key)
    if any(n == name and blob[:4] == kid for n, blob in sigs):
        raise KeysError(f"note already carries a signature by {name!r}")
    return note + _signature_line(text, name, signer)


NoteVerifiers = Mapping[str, bytes | tuple[bytes, ...]]
"""Known signed-note keys: name -> one Ed25519 public key, or several (a key that was rotated:
each signature line names its key by the key hash, so old notes still verify)."""


def verify_note(note: str, *, verifiers: NoteVerifiers) -> tuple[str, frozenset[str]]:
    """Check a signed note against known keys (name -> Ed25519 public key, or a tuple of them).

    Returns (text, names whose signature verified). Raises VerificationError when the note is
    malformed, a known key's signature fails, or no known key signed.
    """
    text, sigs = _split(note)
    message = text.encode("utf-8")
    good: set[str] = set()
    for name, blob in sigs:
        known = verifiers.get(name)
        candidates = (known,) if isinstance(known, bytes) else (known or ())
        public = next((k for k in candidates if note_key_id(name, k) == blob[:4]), None)
        if public is None:
            continue  # an unknown key: ignored, as the spec requires
        if len(blob) != 4 + SIGNATURE_SIZE:
            raise VerificationError("signed note does not verify")
        verify_signature(public, message, blob[4:])
        good.add(name)
    if not good:
        raise VerificationError("signed note does not verify")
    return text, frozenset(good)


def verify_checkpoint(
    note: str, *, verifiers: NoteVerifiers, log_name: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and return it.

    Every known signer present must verify, and the log's own key (`log_name`, default: the
    checkpoint's origin) must be among them. Raises VerificationError otherwise.
    """
    text, good = verify_note(note, verifiers=verifiers)
    cp = parse_checkpoint(text)
    if (log_name or cp.origin) not in good:
        raise VerificationError("checkpoint is not signed by its log")
    return cp


def read_checkpoint(note: str) -> Checkpoint:
    """The checkpoint of a signed note WITHOUT checking any signature: only for a note this
    process verified before and kept in its own state (a witness's last cosigned note, whose
    log key may since have been retired). Raises VerificationError when malformed."""
    text, _sigs = _split(note)
    return parse_checkpoint(text)
