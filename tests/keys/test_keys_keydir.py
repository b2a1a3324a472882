"""Key directories: creation, permissions, markers, passphrases, rotation, public identity."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

import keys
from keys import KeyFileError, KeysError

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


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_bad_key_length(key_dir: Path, length: int) -> None:
    path = key_dir / "storage.key"
    doc = json.loads(path.read_text())
    doc["key"] = base64.b64encode(bytes(length)).decode()
    _rewrite(path, doc)
    with pytest.raises(KeyFileError, match=r"storage\.key.*length"):
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


def test_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    made = keys.create_key_dir(path, node_id=NODE, passphrase=b"correct horse", kdf=CHEAP)
    doc = json.loads((path / "signing.key").read_text())
    assert "key" not in doc
    assert doc["kdf"]["alg"] == "argon2id13"
    assert b"ENCRYPTED" in (path / "tls.key").read_bytes()
    loaded = keys.load_key_dir(path, passphrase=b"correct horse")
    assert loaded.signing.public_key == made.signing.public_key
    assert loaded.tls_key_pem == made.tls_key_pem
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keys.load_key_dir(path, passphrase=b"wrong")
    with pytest.raises(KeyFileError, match="passphrase-protected"):
        keys.load_key_dir(path)


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
    with pytest.raises(KeyFileError, match=r"tls\.key"):
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
    # A second rotation after the window drops the first retired key.
    later = now + datetime.timedelta(days=10)
    again = keys.rotate_signing_key(key_dir, now=later)
    assert [k for k, _ in again.previous_signing] == [after.signing.public_key]
    assert not list(key_dir.glob(".*.tmp"))


def test_rotation_of_a_passphrase_dir(tmp_path: Path, now: datetime.datetime) -> None:
    path = tmp_path / "keys"
    keys.create_key_dir(path, node_id=NODE, passphrase=b"pw", kdf=CHEAP)
    rotated = keys.rotate_signing_key(path, now=now, passphrase=b"pw", kdf=CHEAP)
    assert keys.load_key_dir(path, passphrase=b"pw").signing.keyid == rotated.signing.keyid
    assert "box" in json.loads((path / "signing.key").read_text())
