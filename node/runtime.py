"""A node's loaded state: config, keys, catalogue, store, access log and the trust bundle.

`open_runtime(home)` is the one place that turns a node directory into live objects; the CLI
commands and `credex serve` both start from it, so they agree on where everything lives
(docs/decisions/0003-node-home-layout.md).

Trust bundle invariants (DESIGN.md section 5):
- the only bundle in use is one that `keys.accept_bundle` accepted against the pinned root
  (`trust/root.pub`, following the rotations in `trust/rotations/`);
- `trust/bundle.json` is replaced only through `install_bundle`, which refuses an older version
  than the highest ever accepted (kept in `trust/bundle.version`), so swapping an old signed
  bundle back into place is caught at the next start;
- the root rotations followed are likewise never undone: `trust/root.followed` records how
  many the node has followed and the root they led to, and a `trust/rotations/` that holds
  fewer (a file deleted) or leads elsewhere makes the node trust no bundle, instead of
  falling back to a retired root;
- an expired bundle stops the node from trusting anyone (freeze), never silently;
- `NodeRuntime.bundle()` hands out a bundle only once its `revoked_grants` are recorded in the
  grant ledger (`node.grants.apply_bundle_revocations`), whether it was loaded at start or by
  `reload_bundle`: revocation is final, so a later bundle that drops an id revokes nothing back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import catalog
import keys
from node.accesslog import AccessLog
from node.config import NodeConfig, load_config
from node.durable import replace_file
from node.errors import ConfigError, NotFound, StaleBundle
from node.feedcheck import RecordChecker
from node.grants import apply_bundle_revocations
from node.record_tags import ensure_adopted, row_tagger
from node.sealer import auto_workers
from node.store import (
    GrantSealing,
    SqlGrantLedger,
    SqlLogBackend,
    Store,
    StoreUnavailableError,
    open_store,
)

# grpc, the transport and the signed requests are imported by the methods that serve or call a
# peer: most commands open a runtime (`status`, `log verify` ...) and do neither.
if TYPE_CHECKING:
    import grpc

    from node.requests import RequestAuthenticator
    from node.transport import ServerTls, TlsRoster

ROOT_PUB = "root.pub"
BUNDLE_FILE = "bundle.json"
BUNDLE_VERSION_FILE = "bundle.version"
PEERS_DIR = "peers"
ROTATIONS_DIR = "rotations"
ROOT_FOLLOWED_FILE = "root.followed"
INSTALL_LOCK_FILE = "install.lock"


def utc_now() -> dt.datetime:
    """The wall clock in UTC (the default clock; tests inject their own)."""
    return dt.datetime.now(dt.UTC)


def _atomic_write(path: Path, data: bytes) -> None:
    # A temporary name of its own (node.durable): `root.followed` is written by any process
    # that reads the trust directory, so two of them may write it at once.
    replace_file(path, data)


def read_pinned_root(trust_dir: Path) -> bytes:
    """Return the pinned platform root key (`trust/root.pub`), resolved through rotations.

    Raises StaleBundle when the file is missing or malformed (the node cannot trust anyone),
    and keys.BundleError when the rotations in `trust/rotations/` do not chain or fall short
    of the ones this node has followed before (`trust/root.followed`).
    """
    return _trust_chain(trust_dir)[0][-1]


def _pinned_root_key(trust_dir: Path) -> bytes:
    path = trust_dir / ROOT_PUB
    try:
        text = path.read_text(encoding="ascii").strip()
        return base64.b64decode(text, validate=True)
    except FileNotFoundError:
        raise StaleBundle(
            f"{path}: no pinned platform root; pin it first with `credex bundle pin root.pub` "
            "(the platform's trust/root.pub)"
        ) from None
    except (OSError, UnicodeDecodeError, binascii.Error):
        raise StaleBundle(f"{path}: not a base64 Ed25519 public key") from None


def _rotation_files(trust_dir: Path) -> list[Path]:
    rotations_dir = trust_dir / ROTATIONS_DIR
    return sorted(rotations_dir.glob("*.json")) if rotations_dir.is_dir() else []


def _trust_chain(trust_dir: Path) -> tuple[tuple[bytes, ...], list[Path]]:
    """The root keys from the pin through every rotation file (file-name order), and those
    files; checked against, and then raising, the followed-rotations mark."""
    files = _rotation_files(trust_dir)
    raws = []
    for path in files:
        try:
            raws.append(path.read_bytes())
        except OSError as error:
            raise keys.BundleError(
                f"{path}: cannot read this root rotation ({error.strerror or type(error).__name__})"
            ) from None
    chain = keys.root_chain(_pinned_root_key(trust_dir), raws)
    followed = len(chain) - 1
    mark = _followed_mark(trust_dir)
    if mark is not None:
        count, root = mark
        if count > followed or chain[count] != root:
            raise keys.BundleError(
                f"{trust_dir / ROTATIONS_DIR}: this node has followed {count} root "
                f"rotation(s), up to root {keys.keyid(root)}, but the {followed} there now fall "
                "short or lead elsewhere: a rotation file was removed or replaced. "
                "Restore trust/rotations/ from a backup; until then the node trusts no bundle"
            )
    if followed and (mark is None or mark[0] < followed):
        # Rotation files placed by hand. A read-only trust directory (a CLI run as another
        # user) keeps the last mark: the check above still holds against it, and the next
        # writer records the new one.
        with contextlib.suppress(OSError):
            _write_followed_mark(trust_dir, followed, chain[-1])
    return chain, files


def _write_followed_mark(trust_dir: Path, followed: int, root: bytes) -> None:
    # the whole key, not its 64-bit key id: a retired root must not pass with a colliding id
    _atomic_write(trust_dir / ROOT_FOLLOWED_FILE, f"{followed} {root.hex()}\n".encode("ascii"))


def _followed_mark(trust_dir: Path) -> tuple[int, bytes] | None:
    """(rotations followed, the root key they led to) from `trust/root.followed`, or None
    when the node never followed one; a damaged mark fails closed."""
    path = trust_dir / ROOT_FOLLOWED_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        text = ""
    parts = text.split()
    try:
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 64:
            raise ValueError
        return int(parts[0]), bytes.fromhex(parts[1])
    except ValueError:
        raise keys.BundleError(
            f"{path}: damaged (expected '<rotations followed> <root key in hex>'); restore it "
            "from a backup; until then the node trusts no bundle"
        ) from None


def _new_rotations(
    trust_dir: Path, chain: tuple[bytes, ...], files: list[Path], rotations: Sequence[bytes]
) -> list[tuple[Path, bytes]]:
    """The files to write for `rotations` (given in chain order), skipping those this node
    follows already; raises keys.BundleError when one does not continue the chain."""
    added: list[tuple[Path, bytes]] = []
    last = files[-1] if files else None
    for raw in rotations:
        old_keyid, new_root = keys.rotation_new_root(raw)
        if new_root in chain:
            continue  # followed already (re-sent with the bundle that needs it)
        head = keys.keyid(chain[-1])
        if old_keyid != head:
            raise keys.BundleError(
                f"the root rotation to {keys.keyid(new_root)} continues root {old_keyid}, "
                f"but this node follows root {head}"
            )
        try:
            chain = chain + keys.root_chain(chain[-1], [raw])[1:]
        except keys.BundleError:
            raise keys.BundleError(
                f"the root rotation to {keys.keyid(new_root)} is not signed by both root "
                f"{head} and the new root: refused"
            ) from None
        number = len(files) + len(added) + 1
        name = f"{number:04d}-{keys.keyid(new_root)}.json"
        if last is not None and name <= last.name:
            # keep file-name order equal to chain order after hand-named files
            name = f"{last.stem}~{name}"
        last = trust_dir / ROTATIONS_DIR / name
        added.append((last, raw))
    return added


def _version_mark(trust_dir: Path) -> int | None:
    """The version in `trust/bundle.version`, or None when it is missing or damaged."""
    try:
        text = (trust_dir / BUNDLE_VERSION_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _highest_version(trust_dir: Path) -> int:
    """The highest bundle version this node ever accepted (`trust/bundle.version`); 0 before
    the first install. Fails closed (keys.BundleError) when the mark is damaged, or missing
    while a bundle is installed: otherwise an older signed bundle put back in place, with the
    mark deleted, would be accepted again."""
    mark = _version_mark(trust_dir)
    if mark is not None:
        return mark
    path = trust_dir / BUNDLE_VERSION_FILE
    if path.exists() or path.is_symlink():
        problem = "damaged (expected the highest accepted bundle version)"
    elif (trust_dir / BUNDLE_FILE).exists():
        problem = "missing while a bundle is installed"
    else:
        return 0
    raise keys.BundleError(
        f"{path}: {problem}; install the platform's current bundle (credex bundle install "
        "FILE) or restore the file from a backup (until then the node trusts no bundle)"
    )


def _install_floor(trust_dir: Path, current_raw: bytes | None) -> int:
    """The version a bundle being installed must reach: the high-water mark, or, when that is
    missing or damaged, the version of the installed bundle (0 when there is none).

    Unlike `_highest_version`, a lost mark does not block an install: the installed bundle
    stays the floor, so an install cannot go back past it, and rewrites the mark. Raises
    keys.BundleError when the installed bundle does not even say its version.
    """
    mark = _version_mark(trust_dir)
    if mark is not None:
        return mark
    if current_raw is None:
        return 0
    # Read, not verified: the value only bounds what may replace it, and a bundle swapped in
    # by hand with a lower version gains nothing it could not get by writing the mark.
    try:
        doc = json.loads(keys.Envelope.from_json(current_raw).payload)
        version = doc["version"] if isinstance(doc, dict) else None
    except (keys.VerificationError, ValueError):
        version = None
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        path = trust_dir / BUNDLE_FILE
        raise keys.BundleError(
            f"{path}: damaged, and {trust_dir / BUNDLE_VERSION_FILE} is missing or damaged "
            "too, so the version this node accepted is unknown; restore both files from a "
            "backup (until then the node trusts no bundle)"
        )
    return version


def load_bundle(trust_dir: Path, *, now: dt.datetime) -> keys.TrustBundle:
    """Verify and return the installed bundle (`trust/bundle.json`).

    Raises StaleBundle when there is none, and keys.BundleError when it fails verification,
    is expired, or is older than the highest version this node ever accepted (rollback).
    """
    path = trust_dir / BUNDLE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StaleBundle(
            f"{path}: no trust bundle installed; run `credex bundle install FILE`"
        ) from None
    chain = _trust_chain(trust_dir)[0]
    root = chain[-1]
    highest = _highest_version(trust_dir)
    with _root_mismatch_explained(raw, chain, "install the new root's bundle"):
        try:
            bundle = keys.accept_bundle(
                raw, pinned_root=root, current_version=highest, now=now, current_raw=raw
            )
        except keys.BundleError:
            _raise_if_expired(path, raw, root, highest, now)
            raise
    if bundle.version > highest:
        # An install stopped between writing the bundle and its mark: raise the mark now, so
        # the older bundle cannot be put back. A read-only trust directory (a CLI run as
        # another user) keeps the old mark; the next writer raises it.
        with contextlib.suppress(OSError), _install_lock(trust_dir):
            if (_version_mark(trust_dir) or 0) < bundle.version:  # not lowered by a racer
                _atomic_write(trust_dir / BUNDLE_VERSION_FILE, f"{bundle.version}\n".encode())
    return bundle


def _raise_if_expired(path: Path, raw: bytes, root: bytes, highest: int, now: dt.datetime) -> None:
    """Raise StaleBundle when the installed bundle `raw` was refused only for having expired.

    That is the freeze of DESIGN.md section 5: the trust is out of date, not forged, so the
    operator gets what to do (exit 1, FAILED_PRECONDITION) instead of a verification failure
    (exit 3). The bundle is checked again as of its last valid moment: a signature, root or
    version problem fails there too and keeps its own error.
    """
    try:
        doc = keys.loads_unique_keys(keys.Envelope.from_json(raw).payload)
        expires = dt.datetime.fromisoformat(doc["expires_at"])
    except (keys.VerificationError, ValueError, TypeError, KeyError):
        return
    if expires.tzinfo is None or now < expires:
        return
    try:
        bundle = keys.accept_bundle(
            raw,
            pinned_root=root,
            current_version=highest,
            now=expires - dt.timedelta(seconds=1),
            current_raw=raw,
        )
    except keys.BundleError:
        return
    raise StaleBundle(
        f"{path}: trust bundle v{bundle.version} expired at "
        f"{bundle.expires_at.isoformat().replace('+00:00', 'Z')}; this node acts on no "
        "trust until you install the platform's current bundle (credex bundle install FILE)"
    )


def install_bundle(
    trust_dir: Path, raw: bytes, *, now: dt.datetime, rotations: Sequence[bytes] = ()
) -> keys.TrustBundle:
    """Accept `raw` as this node's trust bundle and store it; refuses rollback and expiry.

    `rotations` are root rotation statements (in chain order) to follow first, for a bundle
    signed by a new platform root; those followed already are skipped, and the bundle must
    verify under the root they lead to before anything is written. The rotation files are
    written first, then the bundle, then the version high-water mark: a crash at any point
    leaves a state that the same install completes (had the mark gone first, the bundle it
    names would be missing, and the same version can only be re-installed byte for byte
    against the installed file, so nothing could be installed until the platform signed a
    newer one). A bundle found ahead of its mark raises the mark at load (`load_bundle`). A
    missing or damaged mark does not block the install: the installed bundle's version is
    the floor instead (see `_install_floor`), and the mark is written again. Installs into
    one trust directory run one at a time (`_install_lock`).
    """
    with _install_lock(trust_dir):
        return _install_locked(trust_dir, raw, now=now, rotations=rotations)


@contextlib.contextmanager
def _install_lock(trust_dir: Path) -> Iterator[None]:
    """Hold `trust/install.lock` (an exclusive flock) for a whole install.

    The floor is read, the bundle checked against it and the files written as one step:
    otherwise an older bundle checked before a newer one was installed would be written
    after it, and the node would have rolled back with the mark agreeing.
    """
    try:
        fd = os.open(trust_dir / INSTALL_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        # no trust directory, so no pinned root: the install fails on that, naming it
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _install_locked(
    trust_dir: Path, raw: bytes, *, now: dt.datetime, rotations: Sequence[bytes]
) -> keys.TrustBundle:
    current_raw: bytes | None = None
    try:
        current_raw = (trust_dir / BUNDLE_FILE).read_bytes()
    except FileNotFoundError:
        current_raw = None
    chain, files = _trust_chain(trust_dir)
    added = _new_rotations(trust_dir, chain, files, rotations)
    root = keys.root_chain(chain[-1], [r for _, r in added])[-1]
    floor = _install_floor(trust_dir, current_raw)
    with _root_mismatch_explained(raw, (*chain, root), "install it with its rotation"):
        bundle = keys.accept_bundle(
            raw, pinned_root=root, current_version=floor, now=now, current_raw=current_raw
        )
    trust_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if added:
        (trust_dir / ROTATIONS_DIR).mkdir(mode=0o700, exist_ok=True)
        for path, data in added:
            _atomic_write(path, data)
        _write_followed_mark(trust_dir, len(files) + len(added), root)
    _atomic_write(trust_dir / BUNDLE_FILE, raw)
    _atomic_write(trust_dir / BUNDLE_VERSION_FILE, f"{max(bundle.version, floor)}\n".encode())
    return bundle


@contextlib.contextmanager
def _root_mismatch_explained(raw: bytes, chain: Sequence[bytes], advice: str) -> Iterator[None]:
    """Re-raise a refusal of bundle `raw` saying which root it names and which one this node
    follows (the last of `chain`), when they differ: a root this node has rotated past, or
    one it has not followed yet."""
    try:
        yield
    except keys.BundleError as error:
        try:
            doc = json.loads(keys.Envelope.from_json(raw).payload)
        except (keys.VerificationError, ValueError):
            raise error from None
        named = doc.get("root_keyid") if isinstance(doc, dict) else None
        current = keys.keyid(chain[-1])
        if not isinstance(named, str) or named == current:
            raise
        if named in {keys.keyid(k) for k in chain[:-1]}:
            raise keys.BundleError(
                f"{error}: it names platform root {named}, which this node has rotated past "
                f"(it follows root {current}); ask the platform for a bundle of the current root"
            ) from None
        raise keys.BundleError(
            f"{error}: it names platform root {named}, this node follows root {current}; "
            f"for a new root, {advice} (credex bundle install BUNDLE --root-rotation ROTATION)"
        ) from None


@dataclass(frozen=True)
class RosterIdentity:
    """How this node's keys compare with its own roster entry.

    `status` is `ok` (the roster lists these keys), `rotated` (the roster still lists the
    signing key this node retired with `credex keys rotate`: the documented wait for the
    platform's next bundle, a warning) or `mismatch` (the roster lists keys this node does
    not hold, or the bundle revokes this node's signing key: peers would refuse everything
    it signs or its TLS handshakes). `detail` says
    which key ids differ and what to do; it holds key ids and fingerprints only.
    """

    status: str
    detail: str


def roster_identity(node_keys: keys.NodeKeys, bundle: keys.TrustBundle) -> RosterIdentity | None:
    """Compare `node_keys` with this node's roster entry in `bundle` (None: not in the roster).

    Pure: callers decide what each status means (doctor fails a mismatch, serve refuses it).
    """
    entry = bundle.member(node_keys.node_id)
    if entry is None:
        return None
    here, listed = node_keys.signing.keyid, entry.keyid
    where = f"bundle v{bundle.version} for {entry.node_id}"
    if here in bundle.revoked_keyids:
        # Every peer refuses what this key signs (requests, records, checkpoints): the node
        # is as unusable as with keys the roster does not list, and must not look healthy.
        return RosterIdentity(
            "mismatch",
            f"signing keyid {here} here is revoked by {where} (it leaked): peers refuse all "
            "it signs. Run `credex keys rotate --overlap-days 0`, send `credex keys show "
            "--json` to the platform and install the bundle it signs with the new key",
        )
    problems = []
    if here != listed and listed not in {keys.keyid(k) for k, _ in node_keys.previous_signing}:
        problems.append(f"signing keyid {here} here, {listed} in {where}")
    fingerprint = node_keys.tls_fingerprint.lower()
    if fingerprint != entry.tls_fingerprint.lower():
        problems.append(
            f"TLS certificate {fingerprint[:16]} here, {entry.tls_fingerprint.lower()[:16]} "
            f"in {where}"
        )
    if problems:
        return RosterIdentity(
            "mismatch",
            f"this node's keys are not the ones its roster entry lists ({'; '.join(problems)}): "
            "peers would refuse what it signs and its TLS handshakes. Restore this node's "
            "keys/ from escrow, or send `credex keys show --json` to the platform and install "
            "the bundle it signs with these keys",
        )
    if here != listed:
        return RosterIdentity(
            "rotated",
            f"signing keyid {here} is not in the roster yet: {where} still lists {listed}, "
            "which `credex keys rotate` retired here; peers refuse what this node signs until "
            "you send `credex keys show --json` to the platform and install its next bundle",
        )
    return RosterIdentity("ok", f"signing keyid {here} and TLS certificate match {where}")


@dataclass
class NodeRuntime:
    """Everything a running node (or a CLI command) needs, loaded once from its home."""

    config: NodeConfig
    node_keys: keys.NodeKeys
    catalogue: catalog.Catalog
    store: Store
    clock: Callable[[], dt.datetime] = utc_now
    _bundle: keys.TrustBundle | None = None
    # the bundle whose revoked_grants are recorded in the grant ledger (None: none yet)
    _revocations_of: keys.TrustBundle | None = None
    _log: AccessLog | None = None
    _server_tls: ServerTls | None = None
    _grants: SqlGrantLedger | None = None
    _checker: RecordChecker | None = None
    _checker_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Set when a serving node begins its graceful shutdown: long-lived streams end on it.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def node_id(self) -> str:
        """This node's id (its roster name and TLS SAN)."""
        return self.config.node.id

    @property
    def trust_dir(self) -> Path:
        """The node's trust/ directory."""
        return self.config.home / "trust"

    @property
    def cipher(self) -> keys.StorageCipher:
        """The at-rest cipher of stored record bodies."""
        return keys.StorageCipher(self.node_keys.storage_key)

    @property
    def blind(self) -> keys.BlindIndex:
        """The blind index of subject identifiers."""
        return keys.BlindIndex(self.node_keys.blind_index_key)

    # trust bundle -----------------------------------------------------------------------
    def bundle(self) -> keys.TrustBundle:
        """The verified trust bundle in force; StaleBundle when none or expired.

        Its `revoked_grants` are recorded in the grant ledger before it is returned the first
        time; while that fails (StoreError) no bundle is returned, so no grant the bundle
        revokes is honoured meanwhile.
        """
        if self._bundle is None:
            self._bundle = load_bundle(self.trust_dir, now=self.clock())
        bundle = self._bundle
        if self._revocations_of is not bundle:
            # Idempotent (recorded ones are skipped), so two threads racing here do no harm.
            apply_bundle_revocations(self.grants, bundle.revoked_grants, self.clock())
            self._revocations_of = bundle
        if bundle.expires_at <= self.clock():
            raise StaleBundle(
                f"trust bundle v{bundle.version} expired at "
                f"{bundle.expires_at.isoformat()}; install a newer one"
            )
        return bundle

    def has_bundle(self) -> bool:
        """True when a bundle file is installed (it may still fail verification)."""
        return (self.trust_dir / BUNDLE_FILE).exists()

    def reload_bundle(self) -> keys.TrustBundle:
        """Re-read trust/bundle.json, record its grant revocations and refresh the TLS roster
        without a restart. All or nothing: the TLS roster is built from the new bundle before
        either is put in force, so a roster that cannot be built (a bad certificate under
        trust/peers/) leaves the node on the old bundle and the old roster, and raises."""
        from node.transport import load_peer_certs, roster_from_bundle  # noqa: PLC0415

        loaded = load_bundle(self.trust_dir, now=self.clock())
        roster = None
        if self._server_tls is not None:
            certs = load_peer_certs(self.trust_dir / PEERS_DIR)
            roster = roster_from_bundle(loaded, certs, now=self.clock())
        self._bundle = loaded
        bundle = self.bundle()  # records its revoked_grants (see `bundle`)
        if self._server_tls is not None and roster is not None:
            self._server_tls.update(roster)
        return bundle

    def trusted_signing_keys(self) -> dict[str, bytes]:
        """keyid -> Ed25519 key of every roster member valid now, revoked keys excluded."""
        trusted: dict[str, bytes] = self.bundle().trusted_signing_keys(self.clock())
        return trusted

    def tls_roster(self) -> TlsRoster:
        """The roster's pinned certificates, for mutual TLS."""
        from node.transport import load_peer_certs, roster_from_bundle  # noqa: PLC0415

        certs = load_peer_certs(self.trust_dir / PEERS_DIR)
        return roster_from_bundle(self.bundle(), certs, now=self.clock())

    def server_tls(self) -> ServerTls:
        """Server credentials (client certificates required, pinned to the roster) that judge
        every call by the bundle in use and the clock at that moment (an expired bundle trusts
        no one, a lapsed membership is refused), and log refusals made before a handler."""
        from node.refusals import InterceptedRefusals  # noqa: PLC0415
        from node.transport import ServerTls  # noqa: PLC0415

        if self._server_tls is None:
            self._server_tls = ServerTls(
                key_pem=self.node_keys.tls_key_pem,
                cert_pem=self.node_keys.tls_cert_pem,
                roster=self.tls_roster(),
                bundle=self.bundle,
                clock=self._now,
                refusals=InterceptedRefusals(self),
            )
        return self._server_tls

    def _now(self) -> dt.datetime:
        # `clock` is looked up at each call: a test (or a harness) may replace it meanwhile.
        return self.clock()

    def authenticator(self) -> RequestAuthenticator:
        """Checks signed requests: signature, roster, TLS identity, timestamp, nonce."""
        from node.requests import RequestAuthenticator, StoreNonces  # noqa: PLC0415

        return RequestAuthenticator(
            tls=self.server_tls(),
            bundle=self.bundle,
            nonce_store=StoreNonces(self.store),
            clock=self.clock,
        )

    # peers ------------------------------------------------------------------------------
    def peer_endpoint(self, peer_id: str) -> str:
        """Where to dial `peer_id`: the config override, else the roster's endpoint."""
        override = self.config.peer_endpoint(peer_id)
        if override:
            return override
        entry = self.bundle().member(peer_id)
        if entry is None:
            raise NotFound(f"peer {peer_id!r} is not in the trust bundle's roster")
        endpoint: str = entry.endpoint
        return endpoint

    def channel(self, peer_id: str) -> grpc.aio.Channel:
        """A mutual-TLS channel to `peer_id`, pinned to its roster certificate."""
        from node.transport import ChannelIdentity, client_channel  # noqa: PLC0415

        peer = self.tls_roster().peer(peer_id)
        identity = ChannelIdentity(
            key_pem=self.node_keys.tls_key_pem, cert_pem=self.node_keys.tls_cert_pem
        )
        return client_channel(self.peer_endpoint(peer_id), peer=peer, identity=identity)

    def sign_request(self, method: str, body: bytes) -> Any:
        """A signed request (`credex.v1.SignedRequest`) for `method` carrying `body`."""
        from node.requests import sign_request  # noqa: PLC0415

        return sign_request(method, body, self.node_keys.signing, self.node_id, self.clock())

    # access log -------------------------------------------------------------------------
    @property
    def log(self) -> AccessLog:
        """The node's access log (group-committed, signed checkpoints)."""
        if self._log is None:
            self._log = AccessLog(
                SqlLogBackend(self.store, clock=self.clock),
                origin=self.config.log.origin,
                signer=self.node_keys.signing,
                key_name=self.node_id,
                clock=self.clock,
                checkpoint_interval=dt.timedelta(seconds=self.config.log.checkpoint_interval_s),
            )
        return self._log

    def log_verifiers(self) -> dict[str, tuple[bytes, ...]]:
        """Signed-note verifiers of this node's checkpoints: its name -> the current signing key
        and every key it retired (checkpoints signed before a rotation still verify)."""
        retired = tuple(public for public, _until in self.node_keys.previous_signing)
        return {self.node_id: (self.node_keys.signing.public_key, *retired)}

    @property
    def grants(self) -> SqlGrantLedger:
        """The node's register of subject grants."""
        if self._grants is None:
            ledger = SqlGrantLedger(self.store, sealing=GrantSealing(self.cipher, self.blind))
            ledger.seal_legacy_rows()  # rows a release before sealing kept in the clear
            self._grants = ledger
        return self._grants

    @property
    def record_checker(self) -> RecordChecker:
        """Checks received feed records, in worker processes for large batches ([feeds] workers)."""
        with self._checker_lock:
            if self._checker is None:
                workers = self.config.feeds.workers or auto_workers()
                self._checker = RecordChecker(self.catalogue, workers=workers)
            return self._checker

    def close(self) -> None:
        """Stop the feed-check workers, if any, and release the store's connections."""
        with self._checker_lock:
            checker, self._checker = self._checker, None
        if checker is not None:
            checker.close()
        self.store.close()


def with_passphrase_hint(error: keys.KeyFileError, from_env: str | None) -> keys.KeyFileError:
    """The key error, with where a passphrase comes from (or came from) when that is the
    problem: protected keys and none given, or one from the environment (`from_env`, the
    file CREDEX_PASSPHRASE_FILE named) for keys that have none. An error that names
    CREDEX_PASSPHRASE_FILE already is returned as it is."""
    if "CREDEX_PASSPHRASE_FILE" in str(error):
        return error
    if isinstance(error, keys.PassphraseRequired):
        return keys.PassphraseRequired(
            f"{error} (set CREDEX_PASSPHRASE_FILE to a file holding it, or use the command's "
            "--passphrase-file where it has one)"
        )
    if isinstance(error, keys.PassphraseNotExpected) and from_env:
        return keys.PassphraseNotExpected(
            f"{error} (the passphrase came from CREDEX_PASSPHRASE_FILE={from_env}, which may "
            "belong to another node: unset it for this one)"
        )
    return error


def open_node_store(
    config: NodeConfig, *, migrate_schema: bool = True, tagger: keys.RowTagger | None = None
) -> Store:
    """Open the existing store of the node `config` describes (migrated unless told not to),
    with the row `tagger` its records are tagged and checked with (None: read-only tools).

    Refuses (StoreUnavailableError, exit 1) a SQLite database file that does not exist or is
    not a SQLite file, naming it: only `credex init` and `credex restore` create one. Opening
    a missing one anyway would make an empty store that reads as a node with no records and
    an empty, valid access log.
    A server database (PostgreSQL) is opened as it is; its server reports what is missing.
    """
    database = config.store.sqlite_file
    if database is not None:
        if not database.is_file():
            raise StoreUnavailableError(
                f"store: the database {database} does not exist; restore it from a backup "
                "(`credex restore`, docs/operator-guide.md) instead of starting this node empty"
            )
        _check_sqlite_header(database)
        _check_sqlite_writable(database)
    return open_store(config.store.url, migrate_schema=migrate_schema, tagger=tagger)


def _check_sqlite_writable(database: Path) -> None:
    """Refuse, naming each file and its mode, a database SQLite could open only read-only.

    A node writes on every command (access log, migrations), and in WAL mode even a reader
    writes the -shm index; SQLite itself says only "the database is read-only", without
    saying which of the files (or their directory) is to blame.
    """
    blocked = []
    files = [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm")]
    for path in (database.parent, *files):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue  # -wal and -shm come and go with connections
        except OSError as error:
            blocked.append(f"{path} ({error.strerror})")
            continue
        if not os.access(path, os.W_OK):
            blocked.append(f"{path} (mode {mode:04o})")
    if blocked:
        raise StoreUnavailableError(
            f"store: this user (uid {os.geteuid()}) cannot write {', '.join(blocked)}; the node "
            "needs the database, its -wal and -shm files and their directory writable "
            "(chmod u+w, owned by the node's user)"
        )


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_header(database: Path) -> None:
    """Refuse a file that is not SQLite's: the driver's own "file is not a database" surfaces
    only as a failed migration, without the file's name."""
    try:
        with database.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except OSError as error:
        raise StoreUnavailableError(
            f"store: cannot read the database {database} ({error.strerror})"
        ) from None
    # An empty file is what SQLite makes of a new database; it is migrated like one.
    if head and head != _SQLITE_HEADER:
        raise StoreUnavailableError(
            f"store: {database} is not a SQLite database (damaged or replaced); restore it "
            "from a backup (`credex restore`)"
        )


def open_runtime(
    home: Path,
    *,
    passphrase: bytes | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> NodeRuntime:
    """Load the node in `home`: config (validated), keys, catalogue, store (migrated, its
    records tagged and checked with the node's row tagger, an older release's rows adopted:
    node.record_tags).

    Refuses (ConfigError) a home without `credex.toml` and (StoreUnavailableError) a node whose
    SQLite database is missing (`open_node_store`); the bundle is loaded lazily so that
    commands which do not need peers work before one is installed.
    """
    config = load_config(home)
    from_env = None
    if passphrase is None:
        from_env = os.environ.get("CREDEX_PASSPHRASE_FILE")
        if from_env:
            try:
                passphrase = Path(from_env).read_bytes().splitlines()[0]
            except (OSError, IndexError):
                raise ConfigError(
                    f"CREDEX_PASSPHRASE_FILE={from_env}: cannot read a passphrase from it"
                ) from None
    try:
        node_keys = keys.load_key_dir(config.keys_dir, passphrase=passphrase)
    except keys.KeyFileError as error:
        raise with_passphrase_hint(error, from_env) from None
    store = open_node_store(config, tagger=row_tagger(node_keys))
    runtime = NodeRuntime(
        config=config,
        node_keys=node_keys,
        catalogue=catalog.default_catalog(),
        store=store,
        clock=clock or utc_now,
    )
    try:
        # rows of a release before record tags, once (node.record_tags)
        ensure_adopted(store, lambda: runtime.log, node_id=runtime.node_id, now=runtime.clock())
    except BaseException:
        store.close()
        raise
    return runtime
