"""The node's key directory (decision 0003): creation, loading, rotation, public identity.

Layout (directory 0700, every file 0600):

    signing.key        Ed25519 seed            JSON {"type": "credex.ed25519-seed", ...}
    encryption.key     X25519 secret key       JSON {"type": "credex.x25519-secret", ...}
    storage.key        32-byte at-rest key     JSON {"type": "credex.storage-key", ...}
    blind-index.key    32-byte BLAKE2b key     JSON {"type": "credex.blind-index-key", ...}
    tls.key            P-256 key: PKCS#8 PEM in clear; under a passphrase, a JSON key file
                       {"type": "credex.p256-pkcs8", ...} boxing the PKCS#8 DER
    tls.crt            self-signed X.509 certificate, PEM (SAN: node id, localhost, 127.0.0.1)
    signing-previous.json   public keys retired by rotation, each with its accepted-until time
                       (with a passphrase: boxed like a key file, type
                       "credex.previous-signing-keys", so that no one without it can add one)

A JSON key file holds `"key"` (base64) in clear, or, with a passphrase, `"kdf"` (Argon2id salt,
opslimit, memlimit) and `"box"`. Format version 2 (`"v": 2`) boxes
`"credex.key-file.v2" ‖ 0x00 ‖ type ‖ 0x00 ‖ node id ‖ 0x00 ‖ key`, so a file renamed to
another key type, or copied from another node's directory (even one under the same
passphrase, with its clear `node_id` edited), does not load. Version 1 boxed only
`type ‖ 0x00 ‖ key`: its node id is not authenticated. Version 1 directories still load;
`upgrade_key_dir` rewrites them as version 2. A directory holds one version: once any file is
version 2, a version-1 file (or an encrypted-PEM `tls.key`) beside it is refused, as it may be
another node's file planted to get around the binding.

Every private file of a passphrase-protected directory is protected by the same Argon2id (one
salt per directory, so one derivation per load): a weaker file would lower the cost of guessing
the passphrase for all of them.

Loading refuses files or a directory readable by group or other, a wrong type marker, a bad
length, a wrong passphrase, a protected file without a passphrase, an unprotected file when a
passphrase is given (it may have been planted by someone without the passphrase), and an
Argon2id cost outside the bounds of `keys._kdf`, naming the file each time and never printing
key bytes. A `tls.key` written by older versions as encrypted PKCS#8 PEM (PBKDF2, 2048
iterations: far cheaper to guess than Argon2id) still loads under the passphrase; re-create
the key directory to upgrade it.
"""

from __future__ import annotations

import base64
import collections
import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.utils
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keys._codec import b64e, format_time
from keys._kdf import SALT_SIZE, KdfParams, derive_key
from keys.errors import KeyFileError, KeysError, PassphraseNotExpected, PassphraseRequired
from keys.signing import Signer

SIGNING_FILE = "signing.key"
ENCRYPTION_FILE = "encryption.key"
STORAGE_FILE = "storage.key"
BLIND_INDEX_FILE = "blind-index.key"
TLS_KEY_FILE = "tls.key"
TLS_CERT_FILE = "tls.crt"
PREVIOUS_FILE = "signing-previous.json"
CERT_VALIDITY = datetime.timedelta(days=825)

_TYPES = {
    SIGNING_FILE: "credex.ed25519-seed",
    ENCRYPTION_FILE: "credex.x25519-secret",
    STORAGE_FILE: "credex.storage-key",
    BLIND_INDEX_FILE: "credex.blind-index-key",
}
_TLS_TYPE = "credex.p256-pkcs8"
_PREVIOUS_TYPE = "credex.previous-signing-keys"  # boxed JSON list, in a protected directory
_KEY_SIZE = 32
_VERSION = 2
_V2_CONTEXT = b"credex.key-file.v2"
_UPGRADE_SUFFIX = ".upgrade"
_PEM_BEGIN = b"-----BEGIN "
_NODE_ID = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


@dataclass(frozen=True, repr=False)
class NodeKeys:
    """A loaded key directory. Its repr never shows key material."""

    node_id: str
    signing: Signer
    encryption_private: bytes
    encryption_public: bytes
    storage_key: bytes
    blind_index_key: bytes
    tls_key_pem: bytes
    tls_cert_pem: bytes
    tls_fingerprint: str
    previous_signing: tuple[tuple[bytes, datetime.datetime], ...] = field(default=())
    key_file_version: int = _VERSION

    def __repr__(self) -> str:
        return f"NodeKeys(node_id={self.node_id!r}, keyid={self.signing.keyid!r})"


def check_node_id(node_id: str) -> str:
    """Return `node_id` when it is a lowercase DNS name (it is the TLS SAN); else KeysError."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise KeysError(
            "node id must be a lowercase DNS name (letters, digits, '-', '.'), e.g. 'zd-market'"
        )
    return node_id


def _one_certificate(cert_pem: bytes) -> x509.Certificate:
    """The certificate of a PEM text holding exactly one PEM block, a CERTIFICATE; KeysError
    otherwise. The X.509 loader reads the first certificate and ignores what follows, but
    whoever uses the text (gRPC takes a roster's tls_cert as trusted roots) sees all of it."""
    if (
        cert_pem.count(b"-----BEGIN") != 1
        or cert_pem.count(b"-----END") != 1
        or cert_pem.count(b"-----BEGIN CERTIFICATE-----") != 1
        or cert_pem.count(b"-----END CERTIFICATE-----") != 1
    ):
        raise KeysError("not a PEM X.509 certificate (exactly one CERTIFICATE block)")
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise KeysError("not a PEM X.509 certificate") from None


def tls_fingerprint(cert_pem: bytes) -> str:
    """Hex SHA-256 of the DER encoding of a PEM certificate; KeysError when not exactly one
    certificate (a second certificate or any other PEM block beside it is refused)."""
    cert = _one_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# ----------------------------------------------------------------------------- file helpers


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    _write_new(tmp, data)
    tmp.replace(path)


def _read_private(path: Path) -> bytes:
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file is missing") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the key file ({error.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        # a link can point at another node's key, or at a file its owner can swap
        raise KeyFileError(f"{path}: is a symbolic link; a key file must be the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} are too open; "
            f"key files must be 0600 (chmod 600 {path})"
        )
    _check_owner(path, st)
    try:
        return path.read_bytes()
    except OSError as error:
        # 0000 or 0400 by another owner pass the mode check above but cannot be opened
        raise KeyFileError(f"{path}: cannot read the key file ({error.strerror})") from None


def _check_owner(path: Path, st: os.stat_result) -> None:
    """Key files and their directory must belong to the user running credex: another user
    could replace or read them whatever the mode bits say."""
    if st.st_uid != os.geteuid():
        raise KeyFileError(
            f"{path}: owned by uid {st.st_uid}, not by the user running credex "
            f"(uid {os.geteuid()}); chown it to that user"
        )


class _Kdf:
    """Derives (and caches per salt) the SecretBox key of a passphrase-protected directory."""

    def __init__(self, passphrase: bytes | None, params: KdfParams) -> None:
        self.passphrase = passphrase
        self.params = params
        self.salt = nacl.utils.random(SALT_SIZE)
        self._cache: dict[tuple[bytes, int, int], bytes] = {}

    def key(self, path: Path, salt: bytes, opslimit: int, memlimit: int) -> bytes:
        """The box key for these parameters; KeyFileError naming `path` when refused."""
        assert self.passphrase is not None
        cache_key = (salt, opslimit, memlimit)
        if cache_key not in self._cache:
            self._cache[cache_key] = derive_key(
                self.passphrase, salt, opslimit, memlimit, what=str(path), error=KeyFileError
            )
        return self._cache[cache_key]


def _boxed_content(kind: str, node_id: str, secret: bytes, version: int) -> bytes:
    """What the SecretBox of a protected key file authenticates (see the module docstring).
    Neither the type nor a node id (a DNS name) holds a NUL, so the split is unambiguous."""
    if version == 1:
        return kind.encode("ascii") + b"\x00" + secret
    return b"\x00".join((_V2_CONTEXT, kind.encode("ascii"), node_id.encode("ascii"), secret))


def _encode_key_file(
    path: Path, kind: str, secret: bytes, node_id: str, kdf: _Kdf, *, version: int = _VERSION
) -> bytes:
    check_node_id(node_id)
    doc: dict[str, Any] = {"node_id": node_id, "type": kind, "v": version}
    if kdf.passphrase is None:
        doc["key"] = b64e(secret)
    else:
        ops, mem = kdf.params.opslimit, kdf.params.memlimit
        box = nacl.secret.SecretBox(kdf.key(path, kdf.salt, ops, mem))
        doc["kdf"] = {"alg": "argon2id13", "memlimit": mem, "opslimit": ops, "salt": b64e(kdf.salt)}
        doc["box"] = b64e(box.encrypt(_boxed_content(kind, node_id, secret, version)))
    return json.dumps(doc, sort_keys=True, indent=1).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class _KeyFile:
    """A decoded JSON key file: its secret, the node it belongs to, its format version."""

    secret: bytes
    node_id: str
    version: int


def _decode_key_file(path: Path, raw: bytes, kind: str, kdf: _Kdf) -> _KeyFile:
    """The content of a JSON key file of type `kind`; the length is the caller's check.

    With a passphrase only a protected file (`box`) is accepted; without one, only a clear
    file (`key`). In a protected version-2 file the type and node id are checked against the
    authenticated content, not only against the clear JSON.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(f"{path}: not a credex key file (expected JSON)") from None
    if not isinstance(doc, dict) or doc.get("type") != kind:
        raise KeyFileError(f"{path}: wrong key type marker (expected {kind!r})")
    version = doc.get("v")
    if type(version) is not int or version not in (1, 2):
        raise KeyFileError(f"{path}: unknown key file format version")
    node_id = doc.get("node_id")
    if not isinstance(node_id, str):
        raise KeyFileError(f"{path}: node_id is missing")
    if "box" in doc and "key" in doc:
        raise KeyFileError(f"{path}: holds both a clear and a protected key")
    if "box" in doc:
        if kdf.passphrase is None:
            raise PassphraseRequired(
                f"{path}: the key file is passphrase-protected; give the passphrase"
            )
        try:
            params = doc["kdf"]
            if params["alg"] != "argon2id13":
                raise ValueError
            salt = base64.b64decode(params["salt"], validate=True)
            ops, mem = params["opslimit"], params["memlimit"]
            if not (isinstance(ops, int) and isinstance(mem, int)):
                raise TypeError
            sealed = base64.b64decode(doc["box"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise KeyFileError(f"{path}: malformed passphrase parameters") from None
        key = kdf.key(path, salt, ops, mem)
        try:
            plain = nacl.secret.SecretBox(key).decrypt(sealed)
        except (nacl.exceptions.CryptoError, ValueError):
            raise KeyFileError(
                f"{path}: cannot decrypt: wrong passphrase or damaged file"
            ) from None
        if version == 1:
            prefix = kind.encode("ascii") + b"\x00"
            if not plain.startswith(prefix):
                raise KeyFileError(f"{path}: wrong key type marker inside the encrypted key")
            return _KeyFile(plain[len(prefix) :], node_id, 1)
        parts = plain.split(b"\x00", 3)
        if len(parts) != 4 or parts[0] != _V2_CONTEXT or parts[1] != kind.encode("ascii"):
            raise KeyFileError(f"{path}: wrong key type marker inside the encrypted key")
        if parts[2] != node_id.encode("utf-8"):
            # The clear node_id was edited, or the file comes from another node's directory.
            raise KeyFileError(
                f"{path}: the encrypted key belongs to another node than the file says"
            )
        return _KeyFile(parts[3], node_id, 2)
    if kdf.passphrase is not None:
        # Someone who can write here but lacks the passphrase could plant a key they know.
        raise PassphraseNotExpected(
            f"{path}: the key file is not passphrase-protected, but a passphrase was given; "
            "refusing it (restore the protected file from a backup)"
        )
    try:
        return _KeyFile(base64.b64decode(doc.get("key", ""), validate=True), node_id, version)
    except (TypeError, ValueError):
        raise KeyFileError(f"{path}: key is not valid base64") from None


def _load_secret(path: Path, kdf: _Kdf) -> _KeyFile:
    loaded = _decode_key_file(path, _read_private(path), _TYPES[path.name], kdf)
    if len(loaded.secret) != _KEY_SIZE:
        raise KeyFileError(f"{path}: bad key length (expected {_KEY_SIZE} bytes)")
    return loaded


# ----------------------------------------------------------------------------- TLS


def _make_tls(node_id: str, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName(node_id),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(san, critical=False)
        # Self-signed and pinned: it is its own trust anchor in every peer's root set.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def _tls_key_bytes(path: Path, key: ec.EllipticCurvePrivateKey, node_id: str, kdf: _Kdf) -> bytes:
    """Clear PKCS#8 PEM without a passphrase; a protected JSON key file with one."""
    if kdf.passphrase is None:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _encode_key_file(path, _TLS_TYPE, der, node_id, kdf)


def _load_tls_key(
    key_path: Path, kdf: _Kdf, node_id: str
) -> tuple[ec.EllipticCurvePrivateKey, int | None]:
    """The TLS key and the key-file version it counts as (None: clear PEM, of every version;
    1: the encrypted PEM of older versions)."""
    raw = _read_private(key_path)
    passphrase = kdf.passphrase
    version: int | None = None
    if raw.lstrip().startswith(_PEM_BEGIN):
        version = None if passphrase is None else 1
        # Clear PEM, or the encrypted PKCS#8 PEM (PBKDF2) of older versions: still read.
        try:
            key = serialization.load_pem_private_key(raw, password=passphrase)
        except TypeError:
            if passphrase is None:
                raise PassphraseRequired(
                    f"{key_path}: the TLS key is passphrase-protected; give the passphrase"
                ) from None
            raise PassphraseNotExpected(
                f"{key_path}: the TLS key is not passphrase-protected, but a passphrase was "
                "given; refusing it (restore the protected file from a backup)"
            ) from None
        except ValueError:
            raise KeyFileError(f"{key_path}: not a PEM private key, or wrong passphrase") from None
    else:
        loaded = _decode_key_file(key_path, raw, _TLS_TYPE, kdf)
        if passphrase is None:
            # Without a passphrase the TLS key is PEM; a clear JSON tls.key is never written.
            raise KeyFileError(f"{key_path}: not a PEM private key")
        if loaded.node_id != node_id:
            raise KeyFileError(f"{key_path}: belongs to another node than {SIGNING_FILE}")
        version = loaded.version
        try:
            key = serialization.load_der_private_key(loaded.secret, password=None)
        except (TypeError, ValueError):
            raise KeyFileError(f"{key_path}: the protected TLS key is not PKCS#8") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{key_path}: wrong key type marker (expected a P-256 key)")
    return key, version


def _load_tls(path: Path, kdf: _Kdf, node_id: str) -> tuple[bytes, bytes, str, int | None]:
    key_path, cert_path = path / TLS_KEY_FILE, path / TLS_CERT_FILE
    key, version = _load_tls_key(key_path, kdf, node_id)
    cert_pem = _read_private(cert_path)
    try:
        cert = _one_certificate(cert_pem)
    except KeysError as error:
        raise KeyFileError(f"{cert_path}: {error}") from None
    if cert.public_key() != key.public_key():
        raise KeyFileError(f"{cert_path}: certificate does not match {TLS_KEY_FILE}")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != node_id:
        raise KeyFileError(f"{cert_path}: certificate names another node than {SIGNING_FILE}")
    # gRPC takes the key as PEM bytes: it stays in clear in memory only.
    clear_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return clear_pem, cert_pem, fingerprint, version


# ----------------------------------------------------------------------------- public API


def create_key_dir(
    path: Path,
    *,
    node_id: str,
    passphrase: bytes | None = None,
    now: datetime.datetime | None = None,
    kdf: KdfParams | None = None,
) -> NodeKeys:
    """Create a fresh key directory at `path` (0700, files 0600) and return its keys.

    Refuses (KeyFileError) when any key file already exists there: keys are never overwritten.
    `now` pins the certificate validity; `kdf` the Argon2id cost of a passphrase.
    """
    check_node_id(node_id)
    if passphrase is not None and not passphrase:
        raise KeysError("an empty passphrase is not a passphrase; pass None for none")
    now = now or datetime.datetime.now(datetime.UTC)
    path = Path(path)
    existing = [n for n in (*_TYPES, TLS_KEY_FILE, TLS_CERT_FILE) if (path / n).exists()]
    if existing:
        raise KeyFileError(
            f"{path}: already holds key files ({', '.join(existing)}); refusing to overwrite"
        )
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    secrets = {name: nacl.utils.random(_KEY_SIZE) for name in _TYPES}
    kdf_state = _Kdf(passphrase, kdf or KdfParams())
    for name, secret in secrets.items():
        file = path / name
        _write_new(file, _encode_key_file(file, _TYPES[name], secret, node_id, kdf_state))
    tls_key, cert_pem = _make_tls(node_id, now)
    tls_file = path / TLS_KEY_FILE
    _write_new(tls_file, _tls_key_bytes(tls_file, tls_key, node_id, kdf_state))
    _write_new(path / TLS_CERT_FILE, cert_pem)
    return load_key_dir(path, passphrase=passphrase)


def load_key_dir(path: Path, *, passphrase: bytes | None = None) -> NodeKeys:
    """Load and check a key directory; raises KeyFileError naming the offending file.

    With a passphrase every private file must be passphrase-protected (a clear one is refused,
    as a possible plant); without one, a protected file is refused with a request for it.
    An empty passphrase is refused (KeysError), as at creation.
    """
    if passphrase is not None and not passphrase:
        raise KeysError("an empty passphrase is not a passphrase; pass None for none")
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key directory is missing (run `credex init`)") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the key directory ({error.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(f"{path}: not a directory")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} are too open; "
            f"the key directory must be 0700 (chmod 700 {path})"
        )
    _check_owner(path, st)
    kdf_state = _Kdf(passphrase, KdfParams())
    loaded = {name: _load_secret(path / name, kdf_state) for name in _TYPES}
    # The node most files name (signing.key's on a tie): the odd one out is the one named.
    counts = collections.Counter(file.node_id for file in loaded.values())
    node_id = max(counts, key=lambda n: (counts[n], n == loaded[SIGNING_FILE].node_id))
    for name, file in loaded.items():
        if file.node_id != node_id:
            raise KeyFileError(f"{path / name}: belongs to another node than the other key files")
    enc_secret = loaded[ENCRYPTION_FILE].secret
    tls_key_pem, cert_pem, fingerprint, tls_version = _load_tls(path, kdf_state, node_id)
    previous, previous_version = _load_previous(path / PREVIOUS_FILE, kdf_state, node_id)
    versions: dict[str, int | None] = {name: file.version for name, file in loaded.items()}
    versions[TLS_KEY_FILE] = tls_version
    versions[PREVIOUS_FILE] = previous_version
    return NodeKeys(
        node_id=node_id,
        signing=Signer(loaded[SIGNING_FILE].secret),
        encryption_private=enc_secret,
        encryption_public=bytes(nacl.public.PrivateKey(enc_secret).public_key),
        storage_key=loaded[STORAGE_FILE].secret,
        blind_index_key=loaded[BLIND_INDEX_FILE].secret,
        tls_key_pem=tls_key_pem,
        tls_cert_pem=cert_pem,
        tls_fingerprint=fingerprint,
        previous_signing=previous,
        key_file_version=_one_version(path, versions),
    )


def _one_version(path: Path, versions: dict[str, int | None]) -> int:
    """The key-file format version of the directory; KeyFileError naming the older files when
    they differ. A version-1 file beside version-2 ones is refused, not read: its node id is
    not authenticated, so it may be another node's file (under the same passphrase) with its
    clear `node_id` edited, put there to get around the binding."""
    known = {v for v in versions.values() if v is not None}
    if len(known) > 1:
        older = sorted(
            path / name for name, v in versions.items() if v is not None and v < max(known)
        )
        raise KeyFileError(
            f"{', '.join(map(str, older))}: older key file format than the rest of the "
            "directory (possibly planted from another node's key directory); restore the "
            "directory from a backup, or finish an interrupted `credex keys upgrade`"
        )
    return known.pop() if known else _VERSION


def _load_previous(
    path: Path, kdf: _Kdf, node_id: str
) -> tuple[tuple[tuple[bytes, datetime.datetime], ...], int | None]:
    """The retired signing keys, and the key-file version of the list when it is boxed.

    In a protected directory the list is boxed like a key file: it is public, but a planted
    entry would be published as this node's key (`keys show`, the roster), so only someone
    with the passphrase may write it."""
    if not path.exists():
        return (), None
    raw = _read_private(path)
    version: int | None = None
    if kdf.passphrase is not None:
        boxed = _decode_key_file(path, raw, _PREVIOUS_TYPE, kdf)
        if boxed.node_id != node_id:
            raise KeyFileError(f"{path}: belongs to another node")
        raw, version = boxed.secret, boxed.version
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("previous"), list):
            raise ValueError
        out = []
        for item in doc["previous"]:
            key = base64.b64decode(item["key"], validate=True)
            until = datetime.datetime.fromisoformat(item["accepted_until"].replace("Z", "+00:00"))
            if len(key) != _KEY_SIZE or until.tzinfo is None:
                raise ValueError
            out.append((key, until.astimezone(datetime.UTC)))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(f"{path}: malformed list of previous signing keys") from None
    return tuple(out), version


def _previous_listing(previous: list[tuple[bytes, datetime.datetime]]) -> bytes:
    doc = {"previous": [{"accepted_until": format_time(t), "key": b64e(k)} for k, t in previous]}
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


def rotate_signing_key(
    path: Path,
    *,
    now: datetime.datetime,
    overlap: datetime.timedelta = datetime.timedelta(days=7),
    passphrase: bytes | None = None,
    kdf: KdfParams | None = None,
) -> NodeKeys:
    """Replace the signing key; the old public key stays accepted until `now + overlap`.

    The retired key goes to signing-previous.json (public key only; the old secret is
    destroyed). Entries whose window has passed are kept, not dropped: peers accept a key only
    until its `accepted_until`, but the node still needs every key it ever signed with to
    verify its own history (access-log checkpoints, its stored records). Publish the new
    identity (`public_identity`) in the next trust bundle before the window ends.
    """
    if now.tzinfo is None:
        raise KeysError("rotation time must be timezone-aware")
    if overlap < datetime.timedelta(0):
        raise KeysError("rotation overlap must not be negative")
    try:
        until = now + overlap
    except OverflowError:
        raise KeysError(
            f"rotation overlap of {overlap.days} days ends after the year 9999"
        ) from None
    path = Path(path)
    current = load_key_dir(path, passphrase=passphrase)
    # The directory keeps its one format version (`upgrade_key_dir` changes it, whole).
    version = current.key_file_version
    keep = list(current.previous_signing)
    keep.append((current.signing.public_key, until))
    listing = _previous_listing(keep)
    kdf_state = _Kdf(passphrase, kdf or KdfParams())
    previous_file = path / PREVIOUS_FILE
    if passphrase is not None:
        listing = _encode_key_file(
            previous_file, _PREVIOUS_TYPE, listing, current.node_id, kdf_state, version=version
        )
    new_seed = nacl.utils.random(_KEY_SIZE)
    signing_file = path / SIGNING_FILE
    signing = _encode_key_file(
        signing_file, _TYPES[SIGNING_FILE], new_seed, current.node_id, kdf_state, version=version
    )
    # Previous list first: a crash between the two writes leaves an extra, harmless entry.
    for target, data in ((previous_file, listing), (signing_file, signing)):
        try:
            _replace(target, data)
        except OSError as error:
            raise KeyFileError(f"{target}: cannot write the key file ({error.strerror})") from None
    return load_key_dir(path, passphrase=passphrase)


def upgrade_key_dir(
    path: Path, *, passphrase: bytes | None = None, kdf: KdfParams | None = None
) -> NodeKeys:
    """Rewrite a key directory of an older key-file format in the current one; same keys.

    Returns the loaded directory; one already in the current format is left as it is. Every
    new file is first written and synced beside its target (`.NAME.upgrade`), then each is
    renamed over it, signing.key first both times. A run cut short leaves a directory that
    `load_key_dir` refuses (two formats) or pending files; running this again finishes it:
    cut short before signing.key was renamed, it starts over; after, it renames the rest once
    it has checked that every pending file is a current-format file of the node the
    directory's files name, under this passphrase. Refuses (KeyFileError) what
    `load_key_dir` refuses, and a run while another one holds the directory's lock.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return load_key_dir(path, passphrase=passphrase)  # refuses it, saying why
    try:
        try:
            # Held until this run ends, released by the system if it dies: two runs at once
            # would drop or rename each other's pending files half way.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise KeyFileError(
                f"{path}: another `credex keys upgrade` of this key directory is running"
            ) from None
        return _upgrade_locked(path, passphrase, kdf)
    finally:
        os.close(fd)


def _upgrade_locked(path: Path, passphrase: bytes | None, kdf: KdfParams | None) -> NodeKeys:
    """`upgrade_key_dir` under its lock."""
    names = (*_TYPES, TLS_KEY_FILE, PREVIOUS_FILE)
    pending = {name: path / f".{name}{_UPGRADE_SUFFIX}" for name in names}
    if pending[SIGNING_FILE].exists():
        # signing.key is written first and renamed first: while its pending file is there, no
        # file was renamed, and the run may have been cut short before writing them all (or
        # in the middle of one). Nothing is in place yet: start over.
        for file in pending.values():
            file.unlink(missing_ok=True)
    if any(file.exists() for file in pending.values()):
        _check_pending(path, pending, passphrase)
    else:
        current = load_key_dir(path, passphrase=passphrase)
        if current.key_file_version == _VERSION:
            return current
        kdf_state = _Kdf(passphrase, kdf or KdfParams())
        contents = {
            name: _encode_key_file(
                path / name, kind, _secret_of(current, name), current.node_id, kdf_state
            )
            for name, kind in _TYPES.items()
        }
        if passphrase is not None:
            # Clear directories keep their clear PEM tls.key and clear previous-key list: those
            # have no version. Protected ones get both boxed in the current format, which also
            # replaces an encrypted-PEM (PBKDF2) tls.key of older versions.
            tls_key = serialization.load_pem_private_key(current.tls_key_pem, password=None)
            assert isinstance(tls_key, ec.EllipticCurvePrivateKey)
            tls_file = path / TLS_KEY_FILE
            contents[TLS_KEY_FILE] = _tls_key_bytes(tls_file, tls_key, current.node_id, kdf_state)
            if current.previous_signing:
                listing = _previous_listing(list(current.previous_signing))
                contents[PREVIOUS_FILE] = _encode_key_file(
                    path / PREVIOUS_FILE, _PREVIOUS_TYPE, listing, current.node_id, kdf_state
                )
        for name, data in contents.items():
            pending[name].unlink(missing_ok=True)
            try:
                _write_new(pending[name], data)
            except OSError as error:
                raise KeyFileError(
                    f"{pending[name]}: cannot write the key file ({error.strerror})"
                ) from None
        _sync_dir(path)
    for name, file in pending.items():
        if file.exists():
            try:
                file.replace(path / name)
            except OSError as error:
                raise KeyFileError(
                    f"{path / name}: cannot write the key file ({error.strerror}); run the "
                    "upgrade again to finish it"
                ) from None
    _sync_dir(path)
    return load_key_dir(path, passphrase=passphrase)


def _secret_of(current: NodeKeys, name: str) -> bytes:
    secrets = {
        SIGNING_FILE: current.signing._seed(),  # keydir is the seed's one writer
        ENCRYPTION_FILE: current.encryption_private,
        STORAGE_FILE: current.storage_key,
        BLIND_INDEX_FILE: current.blind_index_key,
    }
    return secrets[name]


def _check_pending(path: Path, pending: dict[str, Path], passphrase: bytes | None) -> None:
    """Before finishing an interrupted upgrade: every pending file must be a current-format
    file, and all files, pending or in place, must name one node."""
    kdf_state = _Kdf(passphrase, KdfParams())
    kinds = {**_TYPES, TLS_KEY_FILE: _TLS_TYPE, PREVIOUS_FILE: _PREVIOUS_TYPE}
    nodes = set()
    for name, file in pending.items():
        if file.exists():
            loaded = _decode_key_file(file, _read_private(file), kinds[name], kdf_state)
            if loaded.version != _VERSION:
                raise KeyFileError(f"{file}: not a key file of the current format")
            nodes.add(loaded.node_id)
        elif name in _TYPES:
            nodes.add(_load_secret(path / name, kdf_state).node_id)
    if len(nodes) != 1:
        raise KeyFileError(f"{path}: key files belong to different nodes")


def _sync_dir(path: Path) -> None:
    """A rename is durable only once its directory is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def public_identity(keys: NodeKeys) -> dict[str, Any]:
    """The node's public identity for `credex keys show --json` and the bundle's roster.

    Keys are base64 raw public keys; `tls_cert` is the PEM certificate peers pin.
    """
    return {
        "encryption_key": b64e(keys.encryption_public),
        "keyid": keys.signing.keyid,
        "node_id": keys.node_id,
        "previous_signing_keys": [
            {"accepted_until": format_time(until), "key": b64e(key)}
            for key, until in keys.previous_signing
        ],
        "signing_key": b64e(keys.signing.public_key),
        "tls_cert": keys.tls_cert_pem.decode("ascii"),
        "tls_fingerprint": keys.tls_fingerprint,
    }
