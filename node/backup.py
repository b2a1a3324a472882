"""Encrypted backups of a node and their restore on another machine.

A backup is one file: a tar archive (manifest.json, credex.toml, trust/, data/credex.db, the
platform's witness state data/witness.json and data/witness-alarms.jsonl and, only when asked,
keys/ and the platform's trust/root/) sealed with a key derived from a passphrase
(`keys.seal_with_passphrase`, Argon2id + XSalsa20-Poly1305). Invariants:

- the database inside is one consistent snapshot, taken with SQLite's online backup API while
  the node may keep serving (`node.store.backup`); PostgreSQL stores are refused with a pointer
  to pg_dump unless the operator asks for the files only (`skip_database`);
- the witness state is read after the database snapshot: the witness appends a fork's evidence
  to the alarms file before its `alarm` entry reaches the access log, so every alarm in the
  snapshot has its evidence in the archive; a line still being appended is left out, and
  witness.json is replaced atomically, so either copy is a whole one;
- key material is in the archive only when `include_keys` is set: the default backup can be kept
  with ordinary operators, since without the keys its record bodies stay encrypted at rest;
- reject reports (rejects/) are never included: they hold raw department rows, which are
  re-creatable from the source and must not travel;
- the manifest lists every file with its SHA-256; restore refuses an archive with any file that
  is missing, extra, changed, absolute, or reaching outside the target (`..`, links), and it
  builds the node in a temporary sibling directory renamed into place at the end, so a failed
  restore never leaves a half-made node.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import keys
from node.config import CONFIG_FILE, default_store_url, load_config
from node.durable import replace_file
from node.errors import InputError, NodeError, TamperDetected
from node.runtime import open_node_store
from node.store import SqlLogBackend, open_store
from node.store.backup import backup_sqlite_to
from node.witness import ALARMS_FILE, STATE_FILE

__all__ = [
    "BACKUP_FORMAT",
    "BackupManifest",
    "RestoreResult",
    "create_backup",
    "read_backup",
    "restore_backup",
]

BACKUP_FORMAT = "credex-backup/1"
MANIFEST = "manifest.json"
DB_NAME = "data/credex.db"
# trust/root.next and trust/root.retired-*: the platform's root keys during a rotation
_KEY_DIRS = ("keys", "trust/root", "trust/root.next", "trust/root.next.tmp")
_RETIRED_ROOT = "trust/root.retired-"
_SKIPPED_SUFFIXES = (".tmp",)


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds: who, when, which files (path -> SHA-256 hex), log and record counts."""

    node_id: str
    role: str
    created_at: str
    database: str  # "sqlite" | "none"
    includes_keys: bool
    files: Mapping[str, str]
    log_size: int
    records: int
    format: str = BACKUP_FORMAT

    def to_json(self) -> bytes:
        """The manifest as canonical UTF-8 JSON."""
        doc = {
            "created_at": self.created_at,
            "database": self.database,
            "files": dict(sorted(self.files.items())),
            "format": self.format,
            "includes_keys": self.includes_keys,
            "log_size": self.log_size,
            "node_id": self.node_id,
            "records": self.records,
            "role": self.role,
        }
        return json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> BackupManifest:
        """Parse a manifest; InputError naming the field when it is malformed."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InputError("backup: manifest.json is not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
            raise InputError(f"backup: not a {BACKUP_FORMAT} archive (manifest format)")
        try:
            files = doc["files"]
            if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()
            ):
                raise TypeError("files")
            return cls(
                node_id=_typed(doc, "node_id", str),
                role=_typed(doc, "role", str),
                created_at=_typed(doc, "created_at", str),
                database=_typed(doc, "database", str),
                includes_keys=_typed(doc, "includes_keys", bool),
                files=files,
                log_size=_typed(doc, "log_size", int),
                records=_typed(doc, "records", int),
            )
        except (KeyError, TypeError) as error:
            raise InputError(
                f"backup: manifest.json field {error.args[0]!r} is missing or has the wrong type"
            ) from None


def _typed(doc: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = doc[key]
    if not isinstance(value, kind):
        raise TypeError(key)
    return value


@dataclass(frozen=True)
class RestoreResult:
    """A restored node: its directory, the manifest, and what the operator must still do."""

    home: Path
    manifest: BackupManifest
    warnings: tuple[str, ...] = field(default=())


# A path the operator named cannot be used: bad input (exit 2). Anything else (a full disk,
# an I/O error) is the machine failing (exit 1).
_INPUT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT})


def _os_error(what: str, error: OSError) -> NodeError:
    """`error` as the node's error: `what` names the step and the path, the reason follows."""
    reason = error.strerror or type(error).__name__
    if error.errno in _INPUT_ERRNOS:
        return InputError(f"{what} ({reason})")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return NodeError(f"{what} ({reason}); nothing was written: free space and retry")
    return NodeError(f"{what} ({reason}); nothing was written")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_key_path(rel: str) -> bool:
    return rel.startswith(_RETIRED_ROOT) or any(
        rel == d or rel.startswith(d + "/") for d in _KEY_DIRS
    )


def _node_files(home: Path, *, include_keys: bool) -> Iterator[tuple[str, Path]]:
    """(archive name, file) for the config, trust/ and, when asked, the key directories."""
    yield CONFIG_FILE, home / CONFIG_FILE
    roots = [home / "trust"] + ([home / "keys"] if include_keys else [])
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(home).as_posix()
            if path.is_symlink() or not path.is_file() or path.name.endswith(_SKIPPED_SUFFIXES):
                continue
            if _is_key_path(rel) and not include_keys:
                continue
            yield rel, path


def _witness_files(data_dir: Path) -> dict[str, bytes]:
    """The platform witness's state and fork evidence (absent on departments), as archived."""
    found: dict[str, bytes] = {}
    for name in (STATE_FILE, ALARMS_FILE):
        try:
            data = (data_dir / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise InputError(f"backup: cannot read {data_dir / name} ({error.strerror})") from None
        if name == ALARMS_FILE:
            # An alarm being appended right now is not whole yet; it is in the next backup.
            data = data[: data.rfind(b"\n") + 1]
        found[f"data/{name}"] = data
    return found


def create_backup(
    home: Path,
    out: Path,
    *,
    passphrase: bytes,
    now: dt.datetime,
    include_keys: bool = False,
    skip_database: bool = False,
    kdf: keys.KdfParams | None = None,
) -> BackupManifest:
    """Write an encrypted, consistent backup of the node in `home` to the new file `out`.

    Safe while the node runs. Refuses (InputError) an existing `out` and an empty passphrase;
    refuses (StoreError) a PostgreSQL store unless `skip_database` (then pg_dump is the
    operator's job). The file is written to a temporary name, fsynced, made 0600 and renamed.
    """
    if not passphrase:
        raise InputError("backup: the passphrase is empty")
    if out.exists():
        raise InputError(f"backup: {out} already exists; choose a new file name")
    if not out.parent.is_dir():
        if out.parent.exists():
            raise InputError(f"backup: {out.parent} is not a directory")
        raise InputError(f"backup: the directory {out.parent} does not exist")
    config = load_config(home)
    contents: dict[str, bytes] = {}
    for rel, path in _node_files(home, include_keys=include_keys):
        try:
            contents[rel] = path.read_bytes()
        except OSError as error:
            raise _os_error(f"backup: cannot read {path}", error) from None
    database = "none"
    log_size = records = 0
    if not skip_database:
        store = open_node_store(config, migrate_schema=False)
        try:
            with _scratch_dir(out.parent) as tmp:
                copy = Path(tmp) / "credex.db"
                backup_sqlite_to(store, copy)
                snapshot = open_store(f"sqlite:///{copy}", migrate_schema=False)
                try:
                    log_size = SqlLogBackend(snapshot).size()
                    records = snapshot.count_records()
                finally:
                    snapshot.close()
                contents[DB_NAME] = copy.read_bytes()
            database = "sqlite"
        finally:
            store.close()
    contents.update(_witness_files(config.data_dir))
    manifest = BackupManifest(
        node_id=config.node.id,
        role=config.node.role,
        created_at=now.astimezone(dt.UTC).isoformat(),
        database=database,
        includes_keys=include_keys,
        files={rel: _sha256(data) for rel, data in contents.items()},
        log_size=log_size,
        records=records,
    )
    sealed = keys.seal_with_passphrase(_tar(manifest, contents), passphrase, kdf=kdf)
    try:
        replace_file(out, sealed)
    except OSError as error:
        raise _os_error(f"backup: cannot write {out}", error) from None
    return manifest


@contextlib.contextmanager
def _scratch_dir(directory: Path) -> Iterator[str]:
    """A private temporary directory in `directory` (where the backup goes, so the snapshot
    never lands on another, perhaps shared, file system), removed afterwards."""
    try:
        scratch = tempfile.TemporaryDirectory(dir=directory, prefix=".credex-backup-")
    except OSError as error:
        raise _os_error(f"backup: cannot write in {directory}", error) from None
    with scratch as name:
        yield name


def _tar(manifest: BackupManifest, contents: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in [(MANIFEST, manifest.to_json()), *sorted(contents.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _safe_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name != path.as_posix():
        raise TamperDetected(f"backup: archive member {name!r} would escape the node directory")
    return name


def read_backup(path: Path, *, passphrase: bytes) -> tuple[BackupManifest, dict[str, bytes]]:
    """Decrypt and check a backup; return its manifest and files (archive name -> bytes).

    Raises InputError for an unreadable file, keys.VerificationError (exit 3) for a wrong
    passphrase or a damaged file, and TamperDetected when the archive does not match its
    manifest (missing, extra or changed files, unsafe names, links or devices).
    """
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise InputError(f"backup: cannot read {path} ({error.strerror})") from None
    try:
        plain = keys.open_with_passphrase(blob, passphrase)
    except keys.VerificationError as error:
        raise keys.VerificationError(f"backup: {path}: {error}") from None
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as archive:
            for member in archive:
                name = _safe_name(member.name)
                if not member.isfile():
                    raise TamperDetected(f"backup: archive member {name!r} is not a regular file")
                if name in files:
                    raise TamperDetected(f"backup: archive member {name!r} appears twice")
                handle = archive.extractfile(member)
                if handle is None:  # pragma: no cover - isfile() checked above
                    raise TamperDetected(f"backup: archive member {name!r} is unreadable")
                files[name] = handle.read()
    except tarfile.TarError:
        raise TamperDetected("backup: the decrypted archive is not a valid tar file") from None
    if MANIFEST not in files:
        raise TamperDetected("backup: manifest.json is missing")
    manifest = BackupManifest.from_json(files.pop(MANIFEST))
    if set(files) != set(manifest.files):
        odd = sorted(set(files) ^ set(manifest.files))
        raise TamperDetected(f"backup: files differ from the manifest: {', '.join(odd[:5])}")
    for name, data in files.items():
        if _sha256(data) != manifest.files[name]:
            raise TamperDetected(f"backup: {name} does not match its manifest digest")
    if manifest.includes_keys != any(n.startswith("keys/") for n in files):
        raise TamperDetected("backup: the manifest's includes_keys does not match the archive")
    return manifest, files


def restore_backup(backup: Path, target: Path, *, passphrase: bytes) -> RestoreResult:
    """Restore `backup` into the new node directory `target` (absent or empty).

    Refuses (InputError) a target that holds anything. Verifies the archive first
    (`read_backup`), writes everything into a temporary sibling and renames it into place,
    with directories 0700 and files 0600. Warnings say what the operator must still do: supply
    keys/ when the backup had none, fix a `[store] url` that points elsewhere.
    """
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"restore: {target} exists and is not empty; choose a new directory")
    manifest, files = read_backup(backup, passphrase=passphrase)
    parent = target.resolve().parent
    if not parent.is_dir():
        if parent.exists():
            raise InputError(f"restore: {parent} is not a directory")
        raise InputError(f"restore: the directory {parent} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.restore-"))
    except OSError as error:
        raise _os_error(f"restore: cannot create {target} in {parent}", error) from None
    try:
        _write_node(staging, files)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise _os_error(f"restore: cannot write {target}", error) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RestoreResult(home=target, manifest=manifest, warnings=_warnings(target, manifest))


def _write_node(staging: Path, files: Mapping[str, bytes]) -> None:
    """Write the archive's files under `staging`, each synced; raises OSError."""
    staging.chmod(0o700)
    for rel, data in sorted(files.items()):
        # Everything in a node directory is private state: directories 0700, files 0600.
        dest = staging / rel
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    for name in ("data", "rejects", "trust"):
        (staging / name).mkdir(mode=0o700, exist_ok=True)


def _warnings(home: Path, manifest: BackupManifest) -> tuple[str, ...]:
    found: list[str] = []
    if (home / "trust" / "bundle.json").is_file():
        # The node trusts what the bundle of the backup day trusted: a key or a grant revoked
        # since is trusted again until a newer bundle is in force.
        found.append(
            f"the trust bundle restored is the one installed when the backup was made "
            f"({manifest.created_at}): install the platform's current bundle (credex bundle "
            "install FILE) before `credex serve`, so that revocations made since apply"
        )
    if manifest.role == "platform" and (home / "data" / "witness.json").is_file():
        found.append(
            f"the witness state restored is the one of {manifest.created_at}: a fork of what "
            "this platform cosigned since then goes unnoticed until each department's log "
            "has moved on from it (docs/security-model.md, access log)"
        )
    if not manifest.includes_keys:
        found.append(
            "the backup holds no keys: copy the node's keys/ directory (0700, files 0600) from "
            f"your key escrow into {home / 'keys'} before starting the node"
        )
    if manifest.database == "none":
        found.append(
            "the backup holds no database: restore the PostgreSQL dump (pg_restore) that was "
            "taken with it"
        )
    else:
        url = load_config(home).store.url
        if url != default_store_url(home):
            found.append(
                f"credex.toml [store] url is not this directory's data/credex.db; point it at "
                f"{home / DB_NAME} (or copy the database where it points)"
            )
    return tuple(found)
