"""Key directories: creation, permissions, markers, passphrases, rotation, public identity."""

from __future__ import annotations

import base64
import datetime
import fcntl
import ipaddress
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import keys
from keys import KeyFileError, KeysError, keydir

CHEAP = keys.KdfParams(opslimit=1, memlimit=8 * 1024 * 1024)
NODE = "zd-market"


@pytest.fixture
def key_dir(tmp_path: Path, now: datetime.datetime) -> Path:
    keys.create_key_dir(tmp_path / "keys", node_id=NODE, now=now)
    return tmp_path / "keys"


def test_layout_and_permissions(key_dir: Path) -> None:
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    names = sorted(p.name for p in key_dir.iterdir())
    assert names == sorted(
        ["signing.key", "encryption.key", "storage.key", "blind-index.key", "tls.key", "tls.crt"]
    )
    for p in key_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_load_gives_the_same_keys(key_dir: Path) -> None:
    a = keys.load_key_dir(key_dir)
    b = keys.load_key_dir(key_dir)
    assert a.node_id == NODE
    assert a.signing.public_key == b.signing.public_key
    assert len(a.storage_key) == len(a.blind_index_key) == 32
    assert a.storage_key != a.blind_index_key
    blob = keys.seal(b"x", header={}, recipients={"me": a.encryption_public})
    assert keys.open_sealed(blob, recipient_id="me", private_key=b.encryption_private)[1] == b"x"
    assert "key" not in repr(a).replace("keyid", "")


def test_certificate(key_dir: Path, now: datetime.datetime) -> None:
    k = keys.load_key_dir(key_dir)
    cert = x509.load_pem_x509_certificate(k.tls_cert_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {NODE, "localhost"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    days = (cert.not_valid_after_utc - now).days
    assert days == 825
    assert keys.tls_fingerprint(k.tls_cert_pem) == k.tls_fingerprint
    assert len(k.tls_fingerprint) == 64


def test_public_identity(key_dir: Path) -> None:
    k = keys.load_key_dir(key_dir)
    ident = keys.public_identity(k)
    assert json.loads(json.dumps(ident)) == ident
    assert ident["node_id"] == NODE
    assert ident["keyid"] == k.signing.keyid
    assert base64.b64decode(ident["signing_key"]) == k.signing.public_key
    assert base64.b64decode(ident["encryption_key"]) == k.encryption_public
    assert ident["tls_fingerprint"] == k.tls_fingerprint
    text = json.dumps(ident)
    for secret in (k.storage_key, k.blind_index_key, k.encryption_private):
        assert base64.b64encode(secret).decode() not in text
    assert "PRIVATE" not in text


def test_never_overwrites(key_dir: Path) -> None:
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        keys.create_key_dir(key_dir, node_id=NODE)


@pytest.mark.parametrize("node_id", ["", "UPPER", "has space", "-dash", "a" * 64, "x_y"])
def test_bad_node_ids(tmp_path: Path, node_id: str) -> None:
    with pytest.raises(KeysError):
        keys.create_key_dir(tmp_path / "k", node_id=node_id)


@pytest.mark.parametrize("name", ["signing.key", "storage.key", "tls.key", "tls.crt"])
def test_loose_file_permissions_are_refused(key_dir: Path, name: str) -> None:
    (key_dir / name).chmod(0o644)
    with pytest.raises(KeyFileError, match=re.escape(name)) as err:
        keys.load_key_dir(key_dir)
    assert "0644" in str(err.value)


def test_loose_directory_permissions_are_refused(key_dir: Path) -> None:
    key_dir.chmod(0o750)
    with pytest.raises(KeyFileError, match="0750"):
        keys.load_key_dir(key_dir)


def test_missing_file_is_named(key_dir: Path) -> None:
    (key_dir / "blind-index.key").unlink()
    with pytest.raises(KeyFileError, match=r"blind-index\.key"):
        keys.load_key_dir(key_dir)


def _rewrite(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc))


def test_wrong_type_marker_and_swapped_files(key_dir: Path) -> None:
    storage = (key_dir / "storage.key").read_bytes()
    (key_dir / "blind-index.key").write_bytes(storage)
    with pytest.raises(KeyFileError, match=r"blind-index\.key.*type"):
        keys.load_key_dir(key_dir)


@pytest.mark.parametrize(
    "name", ["signing.key", "encryption.key", "storage.key", "blind-index.key"]
)
@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_bad_key_length(key_dir: Path, name: str, length: int) -> None:
    path = key_dir / name
    doc = json.loads(path.read_text())
    doc["key"] = base64.b64encode(bytes(length)).decode()
    _rewrite(path, doc)
    with pytest.raises(KeyFileError, match=rf"{re.escape(name)}.*length"):
        keys.load_key_dir(key_dir)


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"type": "credex.storage-key"}'])
def test_garbage_key_file(key_dir: Path, content: bytes) -> None:
    (key_dir / "storage.key").write_bytes(content)
    with pytest.raises(KeyFileError, match=r"storage\.key"):
        keys.load_key_dir(key_dir)


def test_certificate_of_another_key_is_refused(key_dir: Path, tmp_path: Path) -> None:
    keys.create_key_dir(tmp_path / "other", node_id=NODE)
    (key_dir / "tls.crt").write_bytes((tmp_path / "other" / "tls.crt").read_bytes())
    with pytest.raises(KeyFileError, match=r"tls\.crt"):
        keys.load_key_dir(key_dir)


def test_a_certificate_file_with_a_second_certificate_is_refused(
    key_dir: Path, tmp_path: Path
) -> None:
    # The loader would read the first certificate only; the node would publish the whole
    # file as its tls_cert, which every peer takes as trusted roots.
    keys.create_key_dir(tmp_path / "other", node_id=NODE)
    own = (key_dir / "tls.crt").read_bytes()
    (key_dir / "tls.crt").write_bytes(own + (tmp_path / "other" / "tls.crt").read_bytes())
    with pytest.raises(KeyFileError, match=r"tls\.crt.*exactly one"):
        keys.load_key_dir(key_dir)
    (key_dir / "tls.crt").write_bytes(own)
    assert keys.load_key_dir(key_dir).tls_cert_pem == own


def test_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    made = keys.create_key_dir(path, node_id=NODE, passphrase=b"correct horse", kdf=CHEAP)
    doc = json.loads((path / "signing.key").read_text())
    assert "key" not in doc
    assert doc["kdf"]["alg"] == "argon2id13"
    loaded = keys.load_key_dir(path, passphrase=b"correct horse")
    assert loaded.signing.public_key == made.signing.public_key
    assert loaded.tls_key_pem == made.tls_key_pem
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keys.load_key_dir(path, passphrase=b"wrong")
    with pytest.raises(KeyFileError, match="passphrase-protected"):
        keys.load_key_dir(path)
    with pytest.raises(KeysError, match="empty passphrase"):
        keys.load_key_dir(path, passphrase=b"")


def test_tls_key_uses_the_same_argon2id_as_the_other_key_files(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    made = keys.create_key_dir(path, node_id=NODE, passphrase=b"correct horse", kdf=CHEAP)
    raw = (path / "tls.key").read_bytes()
    # Not the PBKDF2 (2048 iterations) of encrypted PKCS#8 PEM: guessing it would be cheaper.
    assert b"PRIVATE KEY" not in raw
    doc = json.loads(raw)
    assert doc["type"] == "credex.p256-pkcs8"
    assert doc["node_id"] == NODE
    assert "key" not in doc
    assert doc["kdf"] == json.loads((path / "signing.key").read_text())["kdf"]
    # In memory it stays the clear PKCS#8 PEM that gRPC needs.
    assert made.tls_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(made.tls_key_pem, password=None)
    cert = x509.load_pem_x509_certificate(made.tls_cert_pem)
    assert key.public_key() == cert.public_key()
    with pytest.raises(KeyFileError, match=r"tls\.key.*passphrase-protected"):
        keys.load_key_dir(_with_file(tmp_path, "clear", "tls.key", raw))


def _with_file(tmp_path: Path, name: str, file: str, content: bytes) -> Path:
    """A clear key directory whose `file` is replaced by `content`."""
    path = tmp_path / name
    keys.create_key_dir(path, node_id=NODE)
    (path / file).write_bytes(content)
    return path


def test_legacy_pbkdf2_tls_key_still_loads(tmp_path: Path) -> None:
    # In a directory of its time (format version 1): beside version-2 files it is refused.
    path = _v1_copy(tmp_path, "protected")
    made = keys.load_key_dir(path, passphrase=b"pw")
    key = serialization.load_pem_private_key(made.tls_key_pem, password=None)

    def legacy(passphrase: bytes) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )

    assert b"ENCRYPTED PRIVATE KEY" in legacy(b"pw")
    (path / "tls.key").write_bytes(legacy(b"pw"))
    assert keys.load_key_dir(path, passphrase=b"pw").tls_key_pem == made.tls_key_pem
    (path / "tls.key").write_bytes(legacy(b"another passphrase"))
    with pytest.raises(KeyFileError, match=r"tls\.key.*wrong passphrase"):
        keys.load_key_dir(path, passphrase=b"pw")


SECRET_FILES = ["signing.key", "encryption.key", "storage.key", "blind-index.key"]


@pytest.mark.parametrize("name", SECRET_FILES)
def test_planted_clear_key_file_in_a_passphrase_dir(tmp_path: Path, name: str) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    doc = json.loads((path / name).read_text())
    # Someone without the passphrase swaps in a key they know.
    planted = {"key": base64.b64encode(b"A" * 32).decode(), "node_id": NODE}
    _rewrite(path / name, {**planted, "type": doc["type"], "v": 1})
    with pytest.raises(KeyFileError, match=rf"{re.escape(name)}.*not passphrase-protected"):
        keys.load_key_dir(path, passphrase=b"pw")
    # Both a clear and a protected key in one file: refused as well.
    _rewrite(path / name, {**doc, **planted})
    with pytest.raises(KeyFileError, match=rf"{re.escape(name)}.*both"):
        keys.load_key_dir(path, passphrase=b"pw")


def test_planted_clear_tls_key_in_a_passphrase_dir(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    clear = keys.load_key_dir(path, passphrase=b"pw").tls_key_pem
    (path / "tls.key").write_bytes(clear)
    with pytest.raises(KeyFileError, match=r"tls\.key.*not passphrase-protected"):
        keys.load_key_dir(path, passphrase=b"pw")


def _forge(path: Path, kind: str, secret: bytes, passphrase: bytes | None = b"pw") -> bytes:
    """A key file as keys.keydir writes it, around any secret (to forge bad contents)."""
    return keydir._encode_key_file(path, kind, secret, NODE, keydir._Kdf(passphrase, CHEAP))


@pytest.mark.parametrize(
    "other",
    [
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p384", "ed25519"],
)
def test_tls_key_of_the_wrong_type(tmp_path: Path, other: object) -> None:
    assert isinstance(other, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match=r"tls\.key.*P-256"):
        keys.load_key_dir(_with_file(tmp_path, "clear", "tls.key", pem))
    path = tmp_path / "protected"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    der = other.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (path / "tls.key").write_bytes(_forge(path / "tls.key", "credex.p256-pkcs8", der))
    with pytest.raises(KeyFileError, match=r"tls\.key.*P-256"):
        keys.load_key_dir(path, passphrase=b"pw")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key", "not a credex key file"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM"),
    ],
)
def test_garbage_tls_key(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(KeyFileError, match=rf"tls\.key.*{message}"):
        keys.load_key_dir(_with_file(tmp_path, "clear", "tls.key", content))


def test_protected_tls_key_with_another_type_or_node(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    tls = json.loads((path / "tls.key").read_text())
    storage = json.loads((path / "storage.key").read_text())
    _rewrite(path / "tls.key", {**tls, "box": storage["box"]})
    with pytest.raises(KeyFileError, match=r"tls\.key.*type marker"):
        keys.load_key_dir(path, passphrase=b"pw")
    _rewrite(path / "tls.key", {**storage, "type": "credex.p256-pkcs8"})
    with pytest.raises(KeyFileError, match=r"tls\.key.*type marker"):
        keys.load_key_dir(path, passphrase=b"pw")
    _rewrite(path / "tls.key", {**tls, "node_id": "zd-other"})
    with pytest.raises(KeyFileError, match=r"tls\.key.*another node"):
        keys.load_key_dir(path, passphrase=b"pw")


def test_clear_json_tls_key_is_not_a_format(tmp_path: Path) -> None:
    pem = keys.create_key_dir(tmp_path / "src", node_id=NODE).tls_key_pem
    der = serialization.load_pem_private_key(pem, password=None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    content = _forge(tmp_path / "tls.key", "credex.p256-pkcs8", der, passphrase=None)
    with pytest.raises(KeyFileError, match=r"tls\.key.*not a PEM"):
        keys.load_key_dir(_with_file(tmp_path, "clear", "tls.key", content))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memlimit", 4398046510080),  # libsodium's MEMLIMIT_MAX, 4 TiB
        ("memlimit", nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE + 1),
        ("memlimit", nacl.pwhash.argon2id.MEMLIMIT_MIN - 1),
        ("opslimit", nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE + 1),
        ("opslimit", 2**32),
        ("opslimit", 0),
    ],
)
def test_kdf_cost_from_the_file_is_bounded(tmp_path: Path, field: str, value: int) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    doc = json.loads((path / "signing.key").read_text())
    doc["kdf"][field] = value
    _rewrite(path / "signing.key", doc)
    with pytest.raises(KeyFileError, match=r"signing\.key.*out of bounds"):
        keys.load_key_dir(path, passphrase=b"pw")


@pytest.mark.parametrize(
    ("field", "value"),
    [("memlimit", "8388608"), ("opslimit", 1.0), ("alg", "argon2i13"), ("salt", "AAAA")],
)
def test_malformed_kdf_parameters(tmp_path: Path, field: str, value: object) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    doc = json.loads((path / "storage.key").read_text())
    doc["kdf"][field] = value
    _rewrite(path / "storage.key", doc)
    with pytest.raises(KeyFileError, match=r"storage\.key.*(malformed|salt)"):
        keys.load_key_dir(path, passphrase=b"pw")


def test_failed_key_derivation_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)

    def out_of_memory(*_args: object) -> bytes:
        raise nacl.exceptions.RuntimeError("Unexpected failure in key derivation")

    # libsodium fails this way when it cannot allocate memlimit bytes.
    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", out_of_memory)
    with pytest.raises(KeyFileError, match=r"signing\.key.*key derivation failed"):
        keys.load_key_dir(path, passphrase=b"pw")


def test_passphrase_blob_swapped_between_types(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    storage = json.loads((path / "storage.key").read_text())
    index = json.loads((path / "blind-index.key").read_text())
    index["box"], index["kdf"] = storage["box"], storage["kdf"]
    _rewrite(path / "blind-index.key", index)
    with pytest.raises(KeyFileError, match=r"blind-index\.key"):
        keys.load_key_dir(path, passphrase=b"pw")


def test_unencrypted_dir_with_a_passphrase(key_dir: Path) -> None:
    with pytest.raises(KeyFileError, match=r"signing\.key.*not passphrase-protected"):
        keys.load_key_dir(key_dir, passphrase=b"pw")


def test_rotation_keeps_the_old_key_for_the_overlap(key_dir: Path, now: datetime.datetime) -> None:
    before = keys.load_key_dir(key_dir)
    after = keys.rotate_signing_key(key_dir, now=now, overlap=datetime.timedelta(days=3))
    assert after.signing.public_key != before.signing.public_key
    assert after.storage_key == before.storage_key
    assert after.previous_signing == (
        (before.signing.public_key, now + datetime.timedelta(days=3)),
    )
    assert stat.S_IMODE((key_dir / "signing-previous.json").stat().st_mode) == 0o600
    ident = keys.public_identity(after)
    assert ident["previous_signing_keys"][0]["accepted_until"] == "2026-11-28T12:00:00Z"
    # A second rotation after the window keeps the first retired key too, with its window
    # over (peers no longer accept it; the node still verifies its own history with it).
    later = now + datetime.timedelta(days=10)
    again = keys.rotate_signing_key(key_dir, now=later)
    assert again.previous_signing == (
        (before.signing.public_key, now + datetime.timedelta(days=3)),
        (after.signing.public_key, later + datetime.timedelta(days=7)),
    )
    assert not list(key_dir.glob(".*.tmp"))


def test_rotation_of_a_passphrase_dir(tmp_path: Path, now: datetime.datetime) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    rotated = keys.rotate_signing_key(path, now=now, passphrase=b"pw", kdf=CHEAP)
    assert keys.load_key_dir(path, passphrase=b"pw").signing.keyid == rotated.signing.keyid
    assert "box" in json.loads((path / "signing.key").read_text())


def test_the_previous_keys_of_a_passphrase_dir_are_boxed(
    tmp_path: Path, now: datetime.datetime
) -> None:
    path = tmp_path / "keys"
    made = keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    keys.rotate_signing_key(path, now=now, passphrase=b"pw", kdf=CHEAP)
    listing = json.loads((path / "signing-previous.json").read_text())
    assert listing["type"] == "credex.previous-signing-keys"
    assert "box" in listing
    assert "previous" not in listing
    loaded = keys.load_key_dir(path, passphrase=b"pw")
    assert [k for k, _ in loaded.previous_signing] == [made.signing.public_key]


def test_a_planted_clear_previous_key_is_refused_in_a_passphrase_dir(
    tmp_path: Path, now: datetime.datetime
) -> None:
    # Someone who can write the directory but lacks the passphrase must not be able to add a
    # "retired" key of theirs: keys show and the roster would publish it as this node's.
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    attacker = keys.Signer.generate()
    planted = {
        "previous": [{"accepted_until": "2099-01-01T00:00:00Z", "key": b64(attacker.public_key)}]
    }
    target = path / "signing-previous.json"
    target.write_text(json.dumps(planted))
    target.chmod(0o600)
    with pytest.raises(keys.KeyFileError, match=r"signing-previous\.json"):
        keys.load_key_dir(path, passphrase=b"pw")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _rotated(key_dir: Path, now: datetime.datetime) -> Path:
    keys.rotate_signing_key(key_dir, now=now)
    return key_dir / "signing-previous.json"


def test_loose_permissions_on_the_previous_keys(key_dir: Path, now: datetime.datetime) -> None:
    _rotated(key_dir, now).chmod(0o644)
    with pytest.raises(KeyFileError, match=r"signing-previous\.json.*0644"):
        keys.load_key_dir(key_dir)


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: "not json",
        lambda doc: [],
        lambda doc: {},
        lambda doc: {"previous": {}},
        lambda doc: {"previous": [{}]},
        lambda doc: {"previous": ["x"]},
        lambda doc: {"previous": [{**doc["previous"][0], "key": "AAAA"}]},
        lambda doc: {"previous": [{**doc["previous"][0], "key": "not base64!"}]},
        lambda doc: {"previous": [{**doc["previous"][0], "accepted_until": "2026-12-01T00:00"}]},
        lambda doc: {"previous": [{**doc["previous"][0], "accepted_until": "soon"}]},
        lambda doc: {"previous": [{**doc["previous"][0], "accepted_until": 1}]},
    ],
    ids=[
        "not-json",
        "list",
        "no-previous",
        "previous-not-list",
        "empty-item",
        "item-not-table",
        "short-key",
        "key-not-base64",
        "naive-time",
        "bad-time",
        "time-not-text",
    ],
)
def test_malformed_previous_keys(key_dir: Path, now: datetime.datetime, change: Any) -> None:
    path = _rotated(key_dir, now)
    changed = change(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(KeyFileError, match=r"signing-previous\.json: malformed"):
        keys.load_key_dir(key_dir)


def test_a_symlinked_key_file_is_refused(tmp_path: Path, key_dir: Path) -> None:
    other = tmp_path / "other"
    keys.create_key_dir(other, node_id="zd-other")
    (key_dir / "signing.key").unlink()
    (key_dir / "signing.key").symlink_to(other / "signing.key")
    with pytest.raises(KeyFileError, match=r"signing\.key: is a symbolic link"):
        keys.load_key_dir(key_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize("what", ["file", "directory"])
def test_key_files_owned_by_another_user_are_refused(key_dir: Path, what: str) -> None:
    target = key_dir / "signing.key" if what == "file" else key_dir
    os.chown(target, 4242, 4242)
    with pytest.raises(KeyFileError, match="owned by uid 4242"):
        keys.load_key_dir(key_dir)


# ----------------------------------------------------------------------------- format v2

V1 = Path(__file__).parent / "vectors" / "keydir-v1"
KEY_FILES = [*SECRET_FILES, "tls.key"]


def _v1_copy(tmp_path: Path, name: str) -> Path:
    """A copy of a version-1 key directory written by the previous code, with private modes."""
    target = tmp_path / name
    target.mkdir(mode=0o700)
    for file in (V1 / name).iterdir():
        (target / file.name).write_bytes(file.read_bytes())
        (target / file.name).chmod(0o600)
    return target


def _versions(path: Path) -> set[object]:
    return {json.loads((path / name).read_text())["v"] for name in SECRET_FILES}


def test_new_key_files_bind_type_and_node_inside_the_box(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    assert _versions(path) == {2}
    assert json.loads((path / "tls.key").read_text())["v"] == 2
    assert keys.load_key_dir(path, passphrase=b"pw").key_file_version == 2


@pytest.mark.parametrize("name", KEY_FILES)
def test_a_key_file_copied_from_another_node_is_refused(tmp_path: Path, name: str) -> None:
    # Same passphrase on both nodes: the box opens, so only the binding can tell.
    path, other = tmp_path / "keys", tmp_path / "other"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    keys.create_key_dir(other, node_id="zd-tax", passphrase=b"pw", kdf=CHEAP)
    stolen = json.loads((other / name).read_text())
    _rewrite(path / name, stolen)
    with pytest.raises(KeyFileError, match=rf"{re.escape(name)}.*another node"):
        keys.load_key_dir(path, passphrase=b"pw")
    # Its clear node_id edited to this node's: the boxed one still says zd-tax.
    _rewrite(path / name, {**stolen, "node_id": NODE})
    with pytest.raises(KeyFileError, match=rf"{re.escape(name)}.*another node") as caught:
        keys.load_key_dir(path, passphrase=b"pw")
    assert "zd-tax" not in str(caught.value)


@pytest.mark.parametrize(
    ("source", "target"), [("storage.key", "blind-index.key"), ("signing.key", "encryption.key")]
)
def test_a_v2_box_swapped_between_kinds_is_refused(
    tmp_path: Path, source: str, target: str
) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    doc = json.loads((path / target).read_text())
    _rewrite(path / target, {**doc, "box": json.loads((path / source).read_text())["box"]})
    with pytest.raises(KeyFileError, match=rf"{re.escape(target)}.*type marker"):
        keys.load_key_dir(path, passphrase=b"pw")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "not a credex key file"),
        (lambda raw: raw.replace(b'"v": 2', b'"v": 3'), "unknown key file format"),
        (lambda raw: raw.replace(b'"v": 2', b'"v": "2"'), "unknown key file format"),
        (lambda raw: raw.replace(b'"box": "', b'"box": "AAAA'), "cannot decrypt"),
        (lambda raw: re.sub(rb'"box": "[^"]{8}', b'"box": "AAAAAAAA', raw), "cannot decrypt"),
        (lambda raw: re.sub(rb'"box": "[^"]*"', b'"box": "AAAA"', raw), "cannot decrypt"),
    ],
    ids=[
        "truncated-file",
        "unknown-version",
        "version-as-text",
        "box-prefixed",
        "box-garbled",
        "box-truncated",
    ],
)
def test_a_damaged_v2_key_file_is_refused(tmp_path: Path, damage: Any, message: str) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    raw = (path / "storage.key").read_bytes()
    (path / "storage.key").write_bytes(damage(raw))
    with pytest.raises(KeyFileError, match=rf"storage\.key.*{message}"):
        keys.load_key_dir(path, passphrase=b"pw")


def test_v1_key_directories_still_load(tmp_path: Path) -> None:
    protected = keys.load_key_dir(_v1_copy(tmp_path, "protected"), passphrase=b"pw")
    assert protected.node_id == NODE
    assert protected.key_file_version == 1
    assert len(protected.previous_signing) == 1
    clear = keys.load_key_dir(_v1_copy(tmp_path, "clear"))
    assert clear.node_id == NODE
    assert clear.key_file_version == 1


def test_rotation_keeps_a_v1_directory_in_one_format(
    tmp_path: Path, now: datetime.datetime
) -> None:
    path = _v1_copy(tmp_path, "protected")
    rotated = keys.rotate_signing_key(path, now=now, passphrase=b"pw", kdf=CHEAP)
    assert rotated.key_file_version == 1
    assert _versions(path) == {1}
    assert len(rotated.previous_signing) == 2


def test_a_v1_key_file_planted_in_a_v2_directory_is_refused(tmp_path: Path) -> None:
    # Another node's version-1 file under the same passphrase, its clear node_id edited: the
    # box opens and nothing inside names a node, so the directory's format must refuse it.
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    planted = json.loads((V1 / "other-node" / "storage.key").read_text())
    _rewrite(path / "storage.key", {**planted, "node_id": NODE})
    with pytest.raises(KeyFileError, match=r"storage\.key: older key file format"):
        keys.load_key_dir(path, passphrase=b"pw")


def test_an_encrypted_pem_tls_key_in_a_v2_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    made = keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    key = serialization.load_pem_private_key(made.tls_key_pem, password=None)
    (path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(KeyFileError, match=r"tls\.key: older key file format"):
        keys.load_key_dir(path, passphrase=b"pw")


@pytest.mark.parametrize(("name", "passphrase"), [("protected", b"pw"), ("clear", None)])
def test_upgrade_rewrites_a_v1_directory_with_the_same_keys(
    tmp_path: Path, name: str, passphrase: bytes | None
) -> None:
    path = _v1_copy(tmp_path, name)
    before = keys.load_key_dir(path, passphrase=passphrase)
    after = keys.upgrade_key_dir(path, passphrase=passphrase, kdf=CHEAP)
    assert after.key_file_version == 2
    assert _versions(path) == {2}
    for field in (
        "signing",
        "encryption_private",
        "storage_key",
        "blind_index_key",
        "tls_key_pem",
        "tls_cert_pem",
        "previous_signing",
    ):
        if field == "signing":
            assert after.signing.public_key == before.signing.public_key
        else:
            assert getattr(after, field) == getattr(before, field)
    assert not list(path.glob(".*"))
    for file in path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    if passphrase is not None:
        assert json.loads((path / "signing-previous.json").read_text())["v"] == 2
    # Idempotent: a second run finds nothing to do.
    contents = {file.name: file.read_bytes() for file in path.iterdir()}
    keys.upgrade_key_dir(path, passphrase=passphrase, kdf=CHEAP)
    assert contents == {file.name: file.read_bytes() for file in path.iterdir()}


def test_upgrade_replaces_an_encrypted_pem_tls_key(tmp_path: Path) -> None:
    path = _v1_copy(tmp_path, "protected")
    before = keys.load_key_dir(path, passphrase=b"pw")
    key = serialization.load_pem_private_key(before.tls_key_pem, password=None)
    (path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    after = keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP)
    assert json.loads((path / "tls.key").read_text())["v"] == 2
    assert after.tls_key_pem == before.tls_key_pem


def test_an_interrupted_upgrade_is_refused_then_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _v1_copy(tmp_path, "protected")
    before = keys.load_key_dir(path, passphrase=b"pw")
    real_replace = Path.replace
    calls = []

    def crash_on_the_third(self: Path, target: Any) -> Path:
        calls.append(self)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", crash_on_the_third)
    with pytest.raises(KeyFileError, match="run the upgrade again"):
        keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP)
    monkeypatch.setattr(Path, "replace", real_replace)
    with pytest.raises(KeyFileError, match="older key file format"):
        keys.load_key_dir(path, passphrase=b"pw")
    after = keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP)
    assert after.key_file_version == 2
    assert after.storage_key == before.storage_key
    assert not list(path.glob(".*"))


def test_resuming_an_upgrade_refuses_a_pending_file_of_another_node(tmp_path: Path) -> None:
    path = _v1_copy(tmp_path, "protected")
    other = tmp_path / "other"
    keys.create_key_dir(other, node_id="zd-tax", passphrase=b"pw", kdf=CHEAP)
    pending = path / ".storage.key.upgrade"
    pending.write_bytes((other / "storage.key").read_bytes())
    pending.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"another node|different nodes"):
        keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP)
    assert json.loads((path / "storage.key").read_text())["v"] == 1


@pytest.mark.parametrize("torn", [False, True], ids=["unwritten", "torn"])
@pytest.mark.parametrize("crash_at", range(1, 7))
def test_an_upgrade_cut_short_while_writing_its_files_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int, torn: bool
) -> None:
    # A crash before every pending file is written: no file was renamed yet. The next run must
    # finish the upgrade, not rename the pending files it finds and leave two formats behind.
    path = _v1_copy(tmp_path, "protected")
    before = keys.load_key_dir(path, passphrase=b"pw")
    real_write = keydir._write_new
    calls = []

    def crash(file: Path, data: bytes) -> None:
        calls.append(file)
        if len(calls) == crash_at:
            if torn:
                real_write(file, data[: len(data) // 2])
            raise OSError(5, "Input/output error")
        real_write(file, data)

    monkeypatch.setattr(keydir, "_write_new", crash)
    with pytest.raises(KeyFileError):
        keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP)
    monkeypatch.setattr(keydir, "_write_new", real_write)
    after = keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP)
    assert after.key_file_version == 2
    assert _versions(path) == {2}
    assert after.storage_key == before.storage_key
    assert after.tls_key_pem == before.tls_key_pem
    assert not list(path.glob(".*"))


def test_an_upgrade_refuses_to_run_beside_another(tmp_path: Path) -> None:
    # Two runs at once would drop or rename each other's pending files half way and could
    # leave two formats with nothing pending; the second one stops before touching anything.
    path = _v1_copy(tmp_path, "protected")
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KeyFileError, match="another `credex keys upgrade`"):
            keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP)
    finally:
        os.close(fd)
    assert _versions(path) == {1}
    assert not list(path.glob(".*"))
    assert keys.upgrade_key_dir(path, passphrase=b"pw", kdf=CHEAP).key_file_version == 2
