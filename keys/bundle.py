"""The trust bundle: roster, catalogue version and agreements, signed by the platform's root.

Like python-tuf's metadata, the bundle is verified at the boundary (`accept_bundle`) and only
the resulting `TrustBundle` travels inward. The signed form is a DSSE envelope (JSON) of type
BUNDLE_PAYLOAD_TYPE whose payload is the canonical JSON of the bundle.

Invariants enforced by `accept_bundle`:
- signed by the pinned root, or by the root reached from it through a chain of root rotations,
  each signed by the old root AND the new one (authorisation and proof of possession);
- never older than the current bundle (rollback), and at the same version only byte-identical;
- not expired (a frozen platform cannot keep nodes on stale trust), not issued in the future;
- well-formed: unique nodes, 32-byte keys, certificates matching their pinned fingerprint,
  agreements between roster members only;
- every member has one or more roles, each in ROLES, none listed twice;
- no signing key (current or previous, compared by key id) belongs to two members, so a
  signature names exactly one node.
Times have one-second precision (RFC 3339, UTC).
"""

from __future__ import annotations

import copy
import datetime
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keys._codec import b64d, b64e, canonical_json, format_time, parse_json_object, parse_time
from keys.envelope import Envelope, add_signature, sign_envelope, verify_envelope
from keys.errors import BundleError, KeysError, VerificationError
from keys.keydir import tls_fingerprint
from keys.signing import PUBLIC_KEY_SIZE, Signer, keyid

BUNDLE_PAYLOAD_TYPE = "application/vnd.credex.bundle.v1+json"
ROTATION_PAYLOAD_TYPE = "application/vnd.credex.root-rotation.v1+json"
AGREEMENT_KINDS = frozenset({"feed", "query", "push"})
ROLES = frozenset({"department", "platform"})
CLOCK_SKEW = datetime.timedelta(minutes=5)


_KEYID_HEX = re.compile(r"[0-9a-f]{16}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RosterEntry:
    """One node of the district: identity, keys, pinned TLS certificate and validity."""

    node_id: str
    name: str
    roles: frozenset[str]  # non-empty subset of ROLES
    endpoint: str
    signing_key: bytes
    encryption_key: bytes
    tls_fingerprint: str
    valid_from: datetime.datetime
    valid_until: datetime.datetime
    previous_signing_keys: tuple[tuple[bytes, datetime.datetime], ...] = ()
    tls_cert: str = ""  # PEM; peers use it as a trusted root for mutual TLS
    # The key ids its bundle revokes: set by TrustBundle on its own copy of the entry, so that
    # no method of an entry taken from a bundle hands out a revoked (compromised) key.
    _revoked: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    @property
    def keyid(self) -> str:
        """Key id of the current signing key."""
        return keyid(self.signing_key)

    def valid_at(self, now: datetime.datetime) -> bool:
        """True when the membership is valid at `now`."""
        return self.valid_from <= now < self.valid_until

    def every_signing_key(self) -> tuple[bytes, ...]:
        """The current signing key and every previous one the entry lists, whatever its
        `accepted_until`: for checking what was signed before a rotation (checkpoints,
        cosignatures), never for accepting anything new. Keys the bundle revokes are left
        out: a revoked key is a compromised one, and its holder could sign "old" notes."""
        every = dict.fromkeys((self.signing_key, *(k for k, _ in self.previous_signing_keys)))
        return tuple(k for k in every if keyid(k) not in self._revoked)

    def signing_keys(self, now: datetime.datetime) -> dict[str, bytes]:
        """Current and still-accepted previous signing keys at `now` (empty if not valid),
        without the keys the bundle revokes."""
        if not self.valid_at(now):
            return {}
        out = {keyid(k): k for k, until in self.previous_signing_keys if now < until}
        out[self.keyid] = self.signing_key
        return {kid: k for kid, k in out.items() if kid not in self._revoked}


def _with_revoked(entry: RosterEntry, revoked: frozenset[str]) -> RosterEntry:
    """A copy of `entry` that knows the key ids its bundle revokes (the caller's entry, which
    another bundle may hold too, is left as it is)."""
    if entry._revoked == revoked:
        return entry
    own = copy.copy(entry)
    object.__setattr__(own, "_revoked", frozenset(revoked))
    return own


@dataclass(frozen=True)
class Agreement:
    """A sharing agreement: `provider` shares `items` with `consumer` for `purposes`."""

    provider: str
    consumer: str
    items: frozenset[str]
    purposes: frozenset[str]
    kind: str  # "feed" | "query" | "push"


@dataclass(frozen=True)
class TrustBundle:
    """A verified trust bundle (build it with `bundle_from_config`, accept it with
    `accept_bundle`)."""

    version: int
    issued_at: datetime.datetime
    expires_at: datetime.datetime
    root_keyid: str
    roster: tuple[RosterEntry, ...]
    revoked_keyids: frozenset[str]
    revoked_grants: frozenset[str]
    catalog_version: str
    agreements: tuple[Agreement, ...]
    _by_id: Mapping[str, RosterEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        roster = tuple(_with_revoked(e, self.revoked_keyids) for e in self.roster)
        object.__setattr__(self, "roster", roster)
        object.__setattr__(self, "_by_id", {e.node_id: e for e in roster})

    def member(self, node_id: str) -> RosterEntry | None:
        """The roster entry of `node_id`, or None."""
        return self._by_id.get(node_id)

    def trusted_signing_keys(self, now: datetime.datetime) -> dict[str, bytes]:
        """keyid -> public key of every member valid at `now`, previous keys still in their
        overlap window included, revoked key ids excluded."""
        out: dict[str, bytes] = {}
        for entry in self.roster:
            out.update(entry.signing_keys(now))
        return {k: v for k, v in out.items() if k not in self.revoked_keyids}

    def node_signing_keys(self, node_id: str, now: datetime.datetime) -> dict[str, bytes]:
        """Like trusted_signing_keys, restricted to one node (empty when unknown)."""
        entry = self.member(node_id)
        if entry is None:
            return {}
        return {k: v for k, v in entry.signing_keys(now).items() if k not in self.revoked_keyids}

    def owner_of(self, key_id: str, now: datetime.datetime) -> RosterEntry | None:
        """The member whose trusted signing key has id `key_id` at `now`, or None."""
        if key_id in self.revoked_keyids:
            return None
        for entry in self.roster:
            if key_id in entry.signing_keys(now):
                return entry
        return None

    def to_payload(self) -> bytes:
        """The canonical JSON payload that `sign_bundle` signs."""
        return canonical_json(_bundle_doc(self))


def _bundle_doc(b: TrustBundle) -> dict[str, Any]:
    return {
        "agreements": [
            {
                "consumer": a.consumer,
                "items": sorted(a.items),
                "kind": a.kind,
                "provider": a.provider,
                "purposes": sorted(a.purposes),
            }
            for a in b.agreements
        ],
        "catalog_version": b.catalog_version,
        "expires_at": format_time(b.expires_at),
        "issued_at": format_time(b.issued_at),
        "revoked_grants": sorted(b.revoked_grants),
        "revoked_keyids": sorted(b.revoked_keyids),
        "root_keyid": b.root_keyid,
        "roster": [
            {
                "encryption_key": b64e(e.encryption_key),
                "endpoint": e.endpoint,
                "name": e.name,
                "node_id": e.node_id,
                "previous_signing_keys": [
                    {"accepted_until": format_time(t), "key": b64e(k)}
                    for k, t in e.previous_signing_keys
                ],
                "roles": sorted(e.roles),
                "signing_key": b64e(e.signing_key),
                "tls_cert": e.tls_cert,
                "tls_fingerprint": e.tls_fingerprint,
                "valid_from": format_time(e.valid_from),
                "valid_until": format_time(e.valid_until),
            }
            for e in b.roster
        ],
        "v": 1,
        "version": b.version,
    }


# ----------------------------------------------------------------------------- parsing


class _Fields:
    """Typed access to one JSON/TOML table; errors name the path of the offending key."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: must be a table")
        self.data, self.where = data, where

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise BundleError(f"{self.where}.{key}: missing")
        return self.data[key]

    def text(self, key: str, default: str | None = None) -> str:
        if default is not None and key not in self.data:
            return default
        value = self._get(key)
        if not isinstance(value, str) or (default is None and not value):
            raise BundleError(f"{self.where}.{key}: must be a non-empty string")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BundleError(f"{self.where}.{key}: must be an integer")
        return value

    def strings(self, key: str, default: Sequence[str] | None = None) -> frozenset[str]:
        if default is not None and key not in self.data:
            return frozenset(default)
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise BundleError(f"{self.where}.{key}: must be a list of strings")
        return frozenset(value)

    def keyids(self, key: str) -> frozenset[str]:
        """Key ids (`hex(sha256(key))[:16]`): a revocation entry that names no key id in that
        form would revoke nothing, so it is refused instead of ignored. The full 64-hex
        SHA-256 is taken as its id; case and surrounding spaces do not matter."""
        self.strings(key, ())  # a list of non-empty strings, or absent
        out = set()
        for i, raw in enumerate(self.data.get(key, ())):
            text = raw.strip().lower()
            if _SHA256_HEX.fullmatch(text):
                text = text[:16]
            if not _KEYID_HEX.fullmatch(text):
                raise BundleError(
                    f"{self.where}.{key}[{i}]: not a key id (16 hex characters, "
                    "`credex keys show` prints it as keyid)"
                )
            out.add(text)
        return frozenset(out)

    def time(self, key: str, default: datetime.datetime | None = None) -> datetime.datetime:
        if default is not None and key not in self.data:
            return default
        return parse_time(self._get(key), f"{self.where}.{key}", BundleError).replace(microsecond=0)

    def key32(self, key: str) -> bytes:
        raw = b64d(self._get(key), f"{self.where}.{key}", BundleError)
        if len(raw) != PUBLIC_KEY_SIZE:
            raise BundleError(f"{self.where}.{key}: must be a 32-byte key")
        return raw

    def tables(self, key: str) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise BundleError(f"{self.where}.{key}: must be a list of tables")
        return value


def _check_roles(roles: frozenset[str], where: str, node_id: str) -> None:
    if not roles:
        raise BundleError(f"{where}: node {node_id!r} has no role (one of {sorted(ROLES)})")
    unknown = roles - ROLES
    if unknown:
        raise BundleError(
            f"{where}: node {node_id!r} has unknown roles {sorted(unknown)}; "
            f"roles are {sorted(ROLES)}"
        )


def _roles(f: _Fields, node_id: str) -> frozenset[str]:
    where = f"{f.where}.roles"
    value = f.data.get("roles")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"{where}: node {node_id!r}: roles must be a list of strings")
    if len(set(value)) != len(value):
        raise BundleError(f"{where}: node {node_id!r} lists a role twice")
    roles = frozenset(value)
    _check_roles(roles, where, node_id)
    return roles


def _entry(
    f: _Fields, default_from: datetime.datetime, default_until: datetime.datetime
) -> RosterEntry:
    node_id = f.text("node_id")
    previous = []
    for i, item in enumerate(f.tables("previous_signing_keys")):
        pf = _Fields(item, f"{f.where}.previous_signing_keys[{i}]")
        previous.append((pf.key32("key"), pf.time("accepted_until")))
    fingerprint = f.text("tls_fingerprint").lower()
    if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise BundleError(f"{f.where}.tls_fingerprint: must be 64 hex characters (SHA-256)")
    cert = f.text("tls_cert", "")
    if cert:
        try:
            actual = tls_fingerprint(cert.encode("ascii"))
        except (KeysError, UnicodeEncodeError):
            raise BundleError(f"{f.where}.tls_cert: not a PEM certificate") from None
        if actual != fingerprint:
            raise BundleError(f"{f.where}.tls_cert: does not match tls_fingerprint")
    entry = RosterEntry(
        node_id=node_id,
        name=f.text("name"),
        roles=_roles(f, node_id),
        endpoint=f.text("endpoint"),
        signing_key=f.key32("signing_key"),
        encryption_key=f.key32("encryption_key"),
        tls_fingerprint=fingerprint,
        valid_from=f.time("valid_from", default_from),
        valid_until=f.time("valid_until", default_until),
        previous_signing_keys=tuple(previous),
        tls_cert=cert,
    )
    if entry.valid_until <= entry.valid_from:
        raise BundleError(f"{f.where}: valid_until must be after valid_from")
    return entry


def _agreement(f: _Fields) -> Agreement:
    kind = f.text("kind")
    if kind not in AGREEMENT_KINDS:
        raise BundleError(f"{f.where}.kind: must be one of {sorted(AGREEMENT_KINDS)}")
    return Agreement(
        provider=f.text("provider"),
        consumer=f.text("consumer"),
        items=f.strings("items"),
        purposes=f.strings("purposes"),
        kind=kind,
    )


def _check_bundle(b: TrustBundle, where: str) -> TrustBundle:
    if b.version < 1:
        raise BundleError(f"{where}.version: must be 1 or more")
    if b.expires_at <= b.issued_at:
        raise BundleError(f"{where}.expires_at: must be after issued_at")
    seen: set[str] = set()
    key_owner: dict[str, str] = {}
    for entry in b.roster:
        if entry.node_id in seen:
            raise BundleError(f"{where}.roster: node {entry.node_id!r} is listed twice")
        seen.add(entry.node_id)
        _check_roles(entry.roles, f"{where}.roster", entry.node_id)
        # One key, one member: otherwise `owner_of` would depend on the roster's order.
        for kid in {entry.keyid, *(keyid(k) for k, _ in entry.previous_signing_keys)}:
            owner = key_owner.setdefault(kid, entry.node_id)
            if owner != entry.node_id:
                raise BundleError(
                    f"{where}.roster: nodes {owner!r} and {entry.node_id!r} share the signing "
                    f"key {kid}"
                )
    for i, a in enumerate(b.agreements):
        for side in (a.provider, a.consumer):
            if side not in seen:
                raise BundleError(f"{where}.agreements[{i}]: {side!r} is not in the roster")
    return b


def _parse_bundle(doc: Mapping[str, Any], where: str) -> TrustBundle:
    f = _Fields(doc, where)
    if doc.get("v") != 1:
        raise BundleError(f"{where}.v: unsupported bundle format")
    issued, expires = f.time("issued_at"), f.time("expires_at")
    if expires <= issued:
        raise BundleError(f"{where}.expires_at: must be after issued_at")
    roster = tuple(
        _entry(_Fields(item, f"{where}.roster[{i}]"), issued, expires)
        for i, item in enumerate(f.tables("roster"))
    )
    agreements = tuple(
        _agreement(_Fields(item, f"{where}.agreements[{i}]"))
        for i, item in enumerate(f.tables("agreements"))
    )
    bundle = TrustBundle(
        version=f.integer("version"),
        issued_at=issued,
        expires_at=expires,
        root_keyid=f.text("root_keyid"),
        roster=roster,
        revoked_keyids=f.keyids("revoked_keyids"),
        revoked_grants=f.strings("revoked_grants", ()),
        catalog_version=f.text("catalog_version"),
        agreements=agreements,
    )
    return _check_bundle(bundle, where)


# ----------------------------------------------------------------------------- building


def bundle_from_config(
    cfg: Mapping[str, Any], *, root_keyid: str, now: datetime.datetime
) -> TrustBundle:
    """Build a TrustBundle from a parsed bundle.toml (pure; the CLI reads the file).

    Keys: `version`, `catalog_version`, `issued_at` (default `now`), `expires_at` or
    `valid_days`, `revoked_keyids`, `revoked_grants`, `[[node]]` tables (node_id, name, roles,
    endpoint, optional valid_from/valid_until, and the public keys either inline or in an
    `identity` table holding a node's `credex keys show --json` output), `[[agreement]]` tables
    (provider, consumer, items, purposes, kind). Raises BundleError naming the bad key.
    """
    f = _Fields(cfg, "bundle.toml")
    issued = f.time("issued_at", now.replace(microsecond=0))
    if f.has("expires_at"):
        expires = f.time("expires_at")
    else:
        days = f.integer("valid_days")
        if days < 1:
            raise BundleError("bundle.toml.valid_days: must be 1 or more")
        expires = issued + datetime.timedelta(days=days)
    if expires <= issued:
        raise BundleError("bundle.toml.expires_at: must be after issued_at")
    roster = []
    for i, node in enumerate(f.tables("node")):
        where = f"bundle.toml.node[{i}]"
        merged = dict(_Fields(node, where).data)
        identity = merged.pop("identity", None)
        if identity is not None:
            idf = _Fields(identity, f"{where}.identity")
            if idf.has("node_id") and idf.data["node_id"] != merged.get("node_id"):
                raise BundleError(f"{where}.identity.node_id: does not match node_id")
            for key in (
                "signing_key",
                "encryption_key",
                "tls_fingerprint",
                "tls_cert",
                "previous_signing_keys",
            ):
                if key in idf.data and key not in merged:
                    merged[key] = idf.data[key]
            entry = _entry(_Fields(merged, where), issued, expires)
            if idf.has("keyid") and idf.data["keyid"] != entry.keyid:
                raise BundleError(f"{where}.identity.keyid: does not match signing_key")
        else:
            entry = _entry(_Fields(merged, where), issued, expires)
        roster.append(entry)
    agreements = tuple(
        _agreement(_Fields(item, f"bundle.toml.agreement[{i}]"))
        for i, item in enumerate(f.tables("agreement"))
    )
    bundle = TrustBundle(
        version=f.integer("version"),
        issued_at=issued,
        expires_at=expires,
        root_keyid=root_keyid,
        roster=tuple(roster),
        revoked_keyids=f.keyids("revoked_keyids"),
        revoked_grants=f.strings("revoked_grants", ()),
        catalog_version=f.text("catalog_version"),
        agreements=agreements,
    )
    return _check_bundle(bundle, "bundle.toml")


# ----------------------------------------------------------------------------- signing


def sign_bundle(bundle: TrustBundle, root: Signer) -> bytes:
    """DSSE JSON bytes of `bundle` signed by `root`; refuses a bundle naming another root."""
    if bundle.root_keyid != root.keyid:
        raise BundleError("bundle.root_keyid does not name the signing root key")
    _check_bundle(bundle, "bundle")
    env = sign_envelope(BUNDLE_PAYLOAD_TYPE, bundle.to_payload(), root)
    return env.to_json().encode("utf-8")


@dataclass(frozen=True)
class RootRotation:
    """The old root's statement that `new_root_key` replaces it from `issued_at` on."""

    old_keyid: str
    new_root_key: bytes
    issued_at: datetime.datetime


def sign_root_rotation(old_root: Signer, new_root: Signer, *, now: datetime.datetime) -> bytes:
    """DSSE JSON signed by the old root and the new root, naming the new root key."""
    doc = {
        "issued_at": format_time(now),
        "new_root_key": b64e(new_root.public_key),
        "old_keyid": old_root.keyid,
        "v": 1,
    }
    env = sign_envelope(ROTATION_PAYLOAD_TYPE, canonical_json(doc), old_root)
    return add_signature(env, new_root).to_json().encode("utf-8")


def _rotation_of(payload: bytes, where: str) -> RootRotation:
    f = _Fields(parse_json_object(payload, where, BundleError), where)
    return RootRotation(f.text("old_keyid"), f.key32("new_root_key"), f.time("issued_at"))


def _parse_rotation(raw: bytes, current: bytes, index: int) -> RootRotation:
    where = f"root rotation #{index + 1}"
    try:
        env = Envelope.from_json(raw)
        payload = verify_envelope(
            env, payload_type=ROTATION_PAYLOAD_TYPE, trusted={keyid(current): current}
        )
    except VerificationError:
        raise BundleError(f"{where} is not signed by the current root") from None
    rotation = _rotation_of(payload, where)
    if rotation.old_keyid != keyid(current):
        raise BundleError(f"{where} does not rotate the current root")
    try:
        verify_envelope(
            env,
            payload_type=ROTATION_PAYLOAD_TYPE,
            trusted={keyid(rotation.new_root_key): rotation.new_root_key},
        )
    except VerificationError:
        raise BundleError(f"{where} is not signed by the new root") from None
    return rotation


def root_chain(pinned_root: bytes, rotations: Sequence[bytes] = ()) -> tuple[bytes, ...]:
    """Every root key from `pinned_root` through `rotations`, in order: the pinned root
    first, the current root last (one more key than there are rotations).

    Each rotation must be signed by the root before it and by the root it introduces.
    Raises BundleError at the first broken link, naming it by position.
    """
    if len(pinned_root) != PUBLIC_KEY_SIZE:
        raise BundleError("the pinned root key must be a 32-byte Ed25519 key")
    chain = [pinned_root]
    for i, raw in enumerate(rotations):
        chain.append(_parse_rotation(raw, chain[-1], i).new_root_key)
    return tuple(chain)


def resolve_root(pinned_root: bytes, rotations: Sequence[bytes] = ()) -> bytes:
    """Follow a chain of root rotations from `pinned_root`; returns the current root key.

    Each rotation must be signed by the root before it and by the root it introduces.
    Raises BundleError at the first broken link. Persist the result as the new pin.
    """
    return root_chain(pinned_root, rotations)[-1]


def rotation_new_root(raw: bytes) -> tuple[str, bytes]:
    """The old root's key id and the new root key that a rotation statement names, read
    WITHOUT verifying it (to tell the operator which root it continues); BundleError when it
    is not a rotation statement. Trust comes only from `root_chain`."""
    try:
        env = Envelope.from_json(raw)
    except VerificationError:
        raise BundleError("not a root rotation statement (not a DSSE envelope)") from None
    if env.payload_type != ROTATION_PAYLOAD_TYPE:
        raise BundleError("not a root rotation statement (wrong payload type)")
    rotation = _rotation_of(env.payload, "root rotation")
    return rotation.old_keyid, rotation.new_root_key


def accept_bundle(
    raw: bytes,
    *,
    pinned_root: bytes,
    current_version: int,
    now: datetime.datetime,
    rotations: Sequence[bytes] = (),
    current_raw: bytes | None = None,
) -> TrustBundle:
    """Verify a signed bundle and return it; the only way to obtain a trusted TrustBundle.

    Refuses (BundleError) a bundle not signed by the (rotated) pinned root, naming another
    root, older than `current_version`, at the same version but not identical to `current_raw`
    (the bundle accepted before, required to re-accept the same version), expired at `now`,
    issued more than 5 minutes in the future, or malformed.
    """
    if now.tzinfo is None:
        raise BundleError("the current time must be timezone-aware")
    root = resolve_root(pinned_root, rotations)
    try:
        env = Envelope.from_json(raw)
    except VerificationError:
        raise BundleError("trust bundle is malformed (not a DSSE envelope)") from None
    try:
        payload = verify_envelope(
            env, payload_type=BUNDLE_PAYLOAD_TYPE, trusted={keyid(root): root}
        )
    except VerificationError:
        raise BundleError("trust bundle is not signed by the pinned root") from None
    bundle = _parse_bundle(parse_json_object(payload, "trust bundle", BundleError), "bundle")
    if bundle.root_keyid != keyid(root):
        raise BundleError("trust bundle names another root key")
    if bundle.version < current_version:
        raise BundleError(
            f"trust bundle version {bundle.version} is older than the current {current_version}"
        )
    if bundle.version == current_version:
        same = False
        if current_raw is not None:
            try:
                same = hmac.compare_digest(Envelope.from_json(current_raw).payload, payload)
            except VerificationError:
                same = False
        if not same:
            raise BundleError(
                f"trust bundle version {bundle.version} differs from the accepted bundle "
                "of the same version"
            )
    if now >= bundle.expires_at:
        raise BundleError(f"trust bundle expired at {format_time(bundle.expires_at)}")
    if bundle.issued_at > now + CLOCK_SKEW:
        raise BundleError("trust bundle is issued in the future (check the clock)")
    return bundle
