"""The tamper-evident access log (DESIGN.md section 6, "Access log").

Every access, allowed or denied, is one `LogEntry`. Its leaf is canonical JSON (sorted keys,
compact, UTF-8) of the entry plus `chain`, the hex leaf hash of the previous leaf (64 zeros for
the first), and the leaf is hashed into an RFC 9162 Merkle tree (`keys.leaf_hash`). The signed
checkpoints prove the whole log; the chain lets `verify_log` name the exact first entry that was
edited, deleted, reordered or inserted even when the attacker also rewrote the stored hash.
Because `chain` sorts first, every leaf starts with `{"chain":"<64 hex>"`, which verification
checks without parsing the JSON.

Invariants:
- An entry never holds a full identifier or name: the subject appears only as a blind-index
  token and a masked identifier (`370303********0001`), and `LogEntry` refuses an unmasked one.
- `AccessLog.append` resolves only after the backend has durably stored the entry; if the
  backend fails, every waiter of that group gets `node.errors.LogUnavailable` (fail closed).
- An entry appended with a `NonceClaim` is logged only when the claim's request nonce was not
  seen before; a replay gets the claim's denial logged in its place (`ReplayedRequest`). The
  nonces of a group are recorded in the same backend transaction as its entries
  (`ClaimingLogBackend`), so a request never waits for a nonce commit of its own (decision 0011).
- An operation that changes the store and is logged with `AccessLog.append_with` (the record
  lifecycle: objections, corrections, revocations, repairs, purges) commits its store writes in
  the transaction of its entry (`JoiningLogBackend`): never one without the other.
- Indexes are gap-free and never reused; the log is never pruned (retention is at least
  `RETENTION_MIN_DAYS`; the Merkle log keeps everything).

The storage seam is `LogBackend`; `MemoryLogBackend` is the in-memory implementation for tests and
benchmarks, the SQL one lives in node/store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import chinese_calendar

import catalog
import keys
from node.errors import (
    AuthError,
    ConfigError,
    InputError,
    LogUnavailable,
    NodeError,
    TamperDetected,
    WriteConflict,
)
from node.groupcommit import GroupCommit
from node.officers import NOT_AN_OFFICER_ID, is_officer_id

RETENTION_MIN_DAYS = 180  # 网络安全法 Art. 21 asks for >= 6 months of network logs
KNOWN_KINDS: frozenset[str] = frozenset(
    {
        "query",
        "feed_delivery",
        "push",
        "export",
        "admin_read",
        "lifecycle",
        "purge",
        "alarm",
    }
)
ZERO_HASH = b"\0" * 32
_CHAIN_PREFIX = b'{"chain":"'
_CHAIN_FIELD = re.compile(rb'\{"chain":"([0-9a-f]{64})"')
_SNAKE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{16,64}$")
_CHINA = dt.timezone(dt.timedelta(hours=8), "China")
_VERIFY_CHUNK = 65536


class ForkDetected(NodeError):
    """Two checkpoints of one log cannot both be true (same size, different root, no
    consistency, or a current tree smaller than one witnessed before: a rollback): somebody
    showed different histories to different parties, or took entries back."""

    exit_code = TamperDetected.exit_code
    status = TamperDetected.status


# --- entries -------------------------------------------------------------------------------


def utc_iso(moment: dt.datetime) -> str:
    """Return `moment` as a UTC ISO 8601 string with microseconds and a `Z` (refuses naive)."""
    if moment.tzinfo is None:
        raise InputError("log entry time: a timezone-aware time is required")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> dt.datetime:
    """Parse an entry time written by `utc_iso` (or any ISO time with an offset)."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise InputError("log entry time: not an ISO 8601 time") from error
    if moment.tzinfo is None:
        raise InputError("log entry time: the time has no timezone")
    return moment.astimezone(dt.UTC)


_FREE_TEXT_FIELDS = ("requester", "officer", "purpose", "legal_basis", "request_id", "grant_id")
# Ids a reader looks entries up by, kept as given unless they hold a checked identifier.
_LOOKUP_IDS = frozenset({"request_id", "grant_id"})
# What the log keeps of one free-text field at most, and the mark of a cut.
_MAX_FREE_TEXT = 1024
_CUT = "…(cut)"


def mask_subject(normalised_identifier: str) -> str:
    """Return the log-safe masked form of an identifier (catalog.mask_identifier)."""
    return catalog.mask_identifier(normalised_identifier)


@dataclass(frozen=True)
class LogEntry:
    """One access: who asked, for what, under which authority, and what was decided.

    Refuses (InputError naming the field) a bad kind, decision or time, a negative count, and any
    subject identifier that is not masked.
    """

    time: str
    kind: str
    requester: str
    officer: str
    purpose: str
    legal_basis: str
    decision: str
    reason: str
    request_id: str
    grant_id: str | None = None
    subject_index: str | None = None
    subject_masked: str | None = None
    items_asked: tuple[str, ...] = ()
    items_released: tuple[str, ...] = ()
    result_count: int = 0
    trace_id: str | None = None

    def __post_init__(self) -> None:
        parse_utc(self.time)
        if not _SNAKE.match(self.kind):
            raise InputError("log entry kind: must be a snake_case word such as 'query'")
        if self.decision not in ("allow", "deny"):
            raise InputError("log entry decision: must be 'allow' or 'deny'")
        if self.reason and not _SNAKE.match(self.reason):
            raise InputError("log entry reason: must be a snake_case reason code")
        if self.subject_index is not None and not _HEX.match(self.subject_index):
            raise InputError("log entry subject_index: must be a hex blind-index token")
        if self.subject_masked is not None and "*" not in self.subject_masked:
            raise InputError("log entry subject_masked: refusing an identifier that is not masked")
        if isinstance(self.result_count, bool) or self.result_count < 0:
            raise InputError("log entry result_count: must be a non-negative integer")

    @property
    def moment(self) -> dt.datetime:
        """The entry time as an aware UTC datetime."""
        return parse_utc(self.time)

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as a JSON-able dict (lists for the item tuples)."""
        # Spelled out rather than dataclasses.asdict: this runs for every append (hot path).
        return {
            "time": self.time,
            "kind": self.kind,
            "requester": self.requester,
            "officer": self.officer,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "decision": self.decision,
            "reason": self.reason,
            "request_id": self.request_id,
            "grant_id": self.grant_id,
            "subject_index": self.subject_index,
            "subject_masked": self.subject_masked,
            "items_asked": list(self.items_asked),
            "items_released": list(self.items_released),
            "result_count": self.result_count,
            "trace_id": self.trace_id,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LogEntry:
        """Build an entry from `to_dict` output; InputError on unknown or missing keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(doc) - names
        if extra:
            raise InputError(f"log entry: unknown keys {sorted(extra)}")
        values = dict(doc)
        for key in ("items_asked", "items_released"):
            raw = values.get(key, [])
            if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
                raise InputError(f"log entry {key}: must be a list of item ids")
            values[key] = tuple(raw)
        try:
            return cls(**values)
        except TypeError as error:
            raise InputError("log entry: missing or mistyped keys") from error


def kept_form(entry: LogEntry) -> LogEntry:
    """`entry` as the log keeps it (what `encode_leaf` encodes): every citizen ID number or
    credit code in the text the requesting node supplies (and in the item ids it asked for)
    masked (`catalog.redact_identifiers`), each such text field cut to `_MAX_FREE_TEXT`
    characters, and an officer that is not a staff id (it may be a person's name) replaced by
    `NOT_AN_OFFICER_ID`. The entry itself when nothing changes. Applied when an entry is
    written, never when one is read back: a stored leaf is decoded exactly as it was kept."""
    changes: dict[str, Any] = {}
    for name in _FREE_TEXT_FIELDS:
        value = getattr(entry, name)
        if isinstance(value, str):
            # A refused peer's legal basis may be megabytes: the log keeps what a reader
            # needs, never what would let a caller grow it at will (decision 0008), and masks
            # only that (plus the margin an identifier across the cut needs): this runs in the
            # log's write transaction, and the scan costs microseconds per character.
            kept, cut = catalog.redacted_prefix(
                value, _MAX_FREE_TEXT, digit_runs=name not in _LOOKUP_IDS
            )
            if cut:
                kept += _CUT
            if kept != value:
                changes[name] = kept
    asked = entry.items_asked
    kept_items = tuple(
        catalog.redact_identifiers(item) if isinstance(item, str) else item for item in asked
    )
    if kept_items != asked:
        changes["items_asked"] = kept_items
    officer = changes.get("officer", entry.officer)
    if isinstance(officer, str) and officer and not is_officer_id(officer):
        changes["officer"] = NOT_AN_OFFICER_ID
    return dataclasses.replace(entry, **changes) if changes else entry


def encode_leaf(entry: LogEntry, previous_hash: bytes) -> bytes:
    """Return the canonical leaf bytes of `entry` in its kept form (`kept_form`) chained to the
    previous leaf hash: its `to_dict()` plus `chain` (hex), as JSON with sorted keys, no
    whitespace, UTF-8."""
    entry = kept_form(entry)
    try:
        return _fast_leaf(entry, previous_hash)
    except TypeError:
        # A value of an unexpected type (a float count, a None where text belongs): the generic
        # encoder spells it, or refuses it, exactly as before.
        doc = entry.to_dict()
        doc["chain"] = previous_hash.hex()
        return _CANONICAL.encode(doc).encode()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_text = json.encoder.encode_basestring
# The keys of a leaf in sorted order, spelled out: the hot path of every append. It must give the
# bytes `_CANONICAL` gives (tests/node/test_accesslog_leaf.py checks this property).
_LEAF_FORMAT = (
    '{"chain":"%s","decision":%s,"grant_id":%s,"items_asked":[%s],"items_released":[%s],'
    '"kind":%s,"legal_basis":%s,"officer":%s,"purpose":%s,"reason":%s,"request_id":%s,'
    '"requester":%s,"result_count":%d,"subject_index":%s,"subject_masked":%s,"time":%s,'
    '"trace_id":%s}'
)


def _optional_text(value: str | None) -> str:
    return "null" if value is None else _text(value)


def _fast_leaf(e: LogEntry, previous_hash: bytes) -> bytes:
    """encode_leaf for entries of the declared types; TypeError for anything else."""
    if type(e.result_count) is not int:
        raise TypeError("result_count")
    text = _text
    return (
        _LEAF_FORMAT
        % (
            previous_hash.hex(),
            text(e.decision),
            _optional_text(e.grant_id),
            ",".join(map(text, e.items_asked)),
            ",".join(map(text, e.items_released)),
            text(e.kind),
            text(e.legal_basis),
            text(e.officer),
            text(e.purpose),
            text(e.reason),
            text(e.request_id),
            text(e.requester),
            e.result_count,
            _optional_text(e.subject_index),
            _optional_text(e.subject_masked),
            text(e.time),
            _optional_text(e.trace_id),
        )
    ).encode()


def decode_leaf(leaf: bytes) -> tuple[LogEntry, bytes]:
    """Parse a leaf into `(entry, previous leaf hash)`; InputError when it is not a leaf."""
    try:
        doc = json.loads(leaf)
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError("log leaf: not JSON") from error
    if not isinstance(doc, dict) or not isinstance(doc.get("chain"), str):
        raise InputError("log leaf: not an access-log leaf")
    chain = doc.pop("chain")
    try:
        previous = bytes.fromhex(chain)
    except ValueError as error:
        raise InputError("log leaf: chain is not hex") from error
    return LogEntry.from_dict(doc), previous


# --- storage ---------------------------------------------------------------------------------


Head = tuple[bytes | None, int, bytes | None]
"""A log's `(tree state, size, hash of the last leaf)` at one moment (`LogBackend.head`)."""

Rebuild = Callable[[Head], tuple[Sequence[tuple[bytes, bytes]], bytes]]
"""Given the head another writer left, the `(entries, state)` to append after it instead."""


@runtime_checkable
class LogBackend(Protocol):
    """Where the access log's leaves, tree state, checkpoints and witness cosignatures live.

    Indexes are 0-based and gap-free. `append` is atomic: either every entry of the batch is
    stored with consecutive indexes together with the new tree state, or nothing is (and it
    raises). `expected_size` is the size the caller computed `state` from: a backend shared by
    several writers must refuse (raise node.errors.WriteConflict, writing nothing) when the
    stored size differs inside its transaction; the AccessLog then reloads the state (`head`)
    and tries again. `leaves` and `leaf_hashes` may raise node.errors.TamperDetected when rows
    are missing in the range.
    """

    def size(self) -> int:
        """Return the number of leaves stored."""
        ...

    def head(self) -> Head:
        """Return `(state, size, hash of the last leaf)` read at one moment (one transaction),
        so that they agree even while another writer appends; `(None, 0, None)` when empty."""
        ...

    def append(
        self,
        entries: Sequence[tuple[bytes, bytes]],
        state: bytes,
        *,
        expected_size: int | None = None,
        rebuild: Rebuild | None = None,
    ) -> int:
        """Store `(leaf, leaf_hash)` pairs after the last leaf, with `state` (the serialised
        CompactRange after them), atomically; return the index of the first one. When the
        stored size is not `expected_size` and `rebuild` is given, the backend reads the head
        (`head`) while it holds the write lock and stores what `rebuild(head)` returns instead
        of refusing: a writer that lost the race to another process chains its entries onto
        the leaves that process wrote, without a round trip."""
        ...

    def leaves(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """Return `(index, leaf, leaf_hash)` for `start <= index < end`, in index order."""
        ...

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Return the stored leaf hashes for `start <= index < end`, in index order."""
        ...

    def first_index_from(self, start: int) -> int | None:
        """Return the smallest index of a stored leaf at or after `start`, None when there is
        none, whatever `size` says (verify_log looks for rows beyond the committed size)."""
        ...

    def state(self) -> bytes | None:
        """Return the serialised CompactRange saved by the last append (None when empty)."""
        ...

    def save_checkpoint(self, size: int, note: str) -> None:
        """Store a signed checkpoint note for tree size `size`."""
        ...

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """Return `(size, note)` of the checkpoint with the largest size, or None."""
        ...

    def checkpoints(self) -> list[tuple[int, str]]:
        """Return every stored `(size, note)`, by increasing size."""
        ...

    def save_witness(self, size: int, witness: str, note: str) -> None:
        """Store the cosigned note `note` that witness `witness` returned for size `size`."""
        ...

    def witnesses(self) -> list[tuple[int, str, str]]:
        """Return every stored `(size, witness, note)`, by increasing size."""
        ...


_R = TypeVar("_R")

LeafBuilder = Callable[[list[bool]], tuple[Sequence[tuple[bytes, bytes]], bytes, int]]
"""Given the freshness of a group's nonces, the `(entries, state, expected_size)` to append."""


@runtime_checkable
class ClaimingLogBackend(LogBackend, Protocol):
    """A LogBackend that also remembers request nonces, in the same transaction as leaves."""

    def append_claiming(
        self,
        nonces: Sequence[tuple[str, str, dt.datetime]],
        *,
        now: dt.datetime,
        build: LeafBuilder,
        rebuild: Rebuild | None = None,
    ) -> int:
        """Record `(keyid, nonce, expires_at)` triples judged at `now` and append the leaves
        `build(fresh)` returns for their freshness (True = first seen and not expired), all or
        nothing; return the index of the first leaf. A nonce is fresh when it was never seen, or
        its stored expiry is before `now`; of two equal nonces in one call the first wins.
        `rebuild` as for `append` (called after `build`, for the same entries)."""
        ...


@runtime_checkable
class JoiningLogBackend(LogBackend, Protocol):
    """A LogBackend kept in the node's store, whose appends can carry the store writes of the
    operation they log in the same transaction."""

    def append_with(
        self,
        work: Callable[[], _R],
        *,
        build: Callable[[], tuple[Sequence[tuple[bytes, bytes]], bytes, int]],
        rebuild: Rebuild | None = None,
        what: str = "append to the access log",
    ) -> tuple[int, _R]:
        """Run `work` (store calls) and append the leaves `build()` returns (`(entries, state,
        expected_size)` as for `append`, built after `work`) all or nothing; return the index of
        the first leaf and what `work` returned."""
        ...


class MemoryLogBackend:
    """An in-memory LogBackend (thread-safe). `rows` holds `[index, leaf, leaf_hash]` lists and
    is public on purpose: tests edit, delete and reorder it to play the attacker."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self._state: bytes | None = None
        self._checkpoints: dict[int, str] = {}
        self._witnesses: list[tuple[int, str, str]] = []
        self._nonces: dict[tuple[str, str], dt.datetime] = {}
        self._lock = threading.Lock()

    def size(self) -> int:
        """See LogBackend.size."""
        return len(self.rows)

    def head(self) -> Head:
        """See LogBackend.head."""
        with self._lock:
            return self._head_locked()

    def append_claiming(
        self,
        nonces: Sequence[tuple[str, str, dt.datetime]],
        *,
        now: dt.datetime,
        build: LeafBuilder,
        rebuild: Rebuild | None = None,
    ) -> int:
        """See ClaimingLogBackend.append_claiming."""
        with self._lock:
            seen = dict(self._nonces)
            fresh: list[bool] = []
            for keyid, nonce, expires_at in nonces:
                known = seen.get((keyid, nonce))
                fresh.append(known is None or known < now)
                if fresh[-1]:
                    seen[(keyid, nonce)] = expires_at
            entries, state, expected_size = build(fresh)
            first = self._append_locked(entries, state, expected_size, rebuild)
            self._nonces = seen  # only once the leaves are in: all or nothing
            return first

    def append(
        self,
        entries: Sequence[tuple[bytes, bytes]],
        state: bytes,
        *,
        expected_size: int | None = None,
        rebuild: Rebuild | None = None,
    ) -> int:
        """See LogBackend.append."""
        with self._lock:
            return self._append_locked(entries, state, expected_size, rebuild)

    def _head_locked(self) -> Head:
        return self._state, len(self.rows), self.rows[-1][2] if self.rows else None

    def _append_locked(
        self,
        entries: Sequence[tuple[bytes, bytes]],
        state: bytes,
        expected_size: int | None,
        rebuild: Rebuild | None,
    ) -> int:
        first = len(self.rows)
        if expected_size is not None and expected_size != first:
            if rebuild is None:
                raise WriteConflict(f"access log grew from {expected_size} to {first} meanwhile")
            entries, state = rebuild(self._head_locked())
        self.rows.extend([first + i, leaf, h] for i, (leaf, h) in enumerate(entries))
        self._state = state
        return first

    def leaves(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """See LogBackend.leaves."""
        return [(r[0], r[1], r[2]) for r in self.rows[max(start, 0) : end]]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """See LogBackend.leaf_hashes."""
        return [r[2] for r in self.rows[max(start, 0) : end]]

    def first_index_from(self, start: int) -> int | None:
        """See LogBackend.first_index_from."""
        return min((int(r[0]) for r in self.rows if r[0] >= start), default=None)

    def state(self) -> bytes | None:
        """See LogBackend.state."""
        return self._state

    def save_checkpoint(self, size: int, note: str) -> None:
        """See LogBackend.save_checkpoint."""
        with self._lock:
            self._checkpoints[size] = note

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """See LogBackend.latest_checkpoint."""
        if not self._checkpoints:
            return None
        size = max(self._checkpoints)
        return size, self._checkpoints[size]

    def checkpoints(self) -> list[tuple[int, str]]:
        """See LogBackend.checkpoints."""
        return sorted(self._checkpoints.items())

    def save_witness(self, size: int, witness: str, note: str) -> None:
        """See LogBackend.save_witness."""
        with self._lock:
            self._witnesses.append((size, witness, note))

    def witnesses(self) -> list[tuple[int, str, str]]:
        """See LogBackend.witnesses."""
        return sorted(self._witnesses, key=lambda w: w[0])


# --- the writer --------------------------------------------------------------------------------


def check_retention(days: int) -> int:
    """Return `days` when it is an acceptable access-log retention; ConfigError below 180."""
    if days < RETENTION_MIN_DAYS:
        raise ConfigError(
            f"accesslog.retention_days: {days} is below the minimum of {RETENTION_MIN_DAYS} days "
            "(网络安全法 Art. 21: keep network logs at least six months)"
        )
    return days


def _unavailable(error: Exception) -> LogUnavailable:
    failure = LogUnavailable("the access log could not be written")
    failure.__cause__ = error
    return failure


@dataclass(frozen=True)
class NonceClaim:
    """A signed request's nonce, to be recorded with the request's access-log entry.

    The entry is logged when the nonce is fresh; when `(keyid, nonce)` (the signer node's nonce
    scope, `VerifiedRequest.nonce_scope`, and the nonce) was seen before (and has
    not expired) `replayed`, a denial, is logged in its place and the append raises
    ReplayedRequest. `now` is the clock the request was checked at.
    """

    keyid: str
    nonce: str
    expires_at: dt.datetime
    now: dt.datetime
    replayed: LogEntry


class ReplayedRequest(AuthError):
    """The request's nonce was used before; its denial is already logged at `index`."""

    access_logged = True

    def __init__(self, index: int) -> None:
        super().__init__("replayed request (this nonce was already used)")
        self.index = index


# Appends that lose the race to another process on the same store (replicas, a CLI command
# beside `credex serve`) reload and try again: enough tries that a busy second writer does not
# turn into UNAVAILABLE for a client, with pauses of up to 50 ms between them.
_CONFLICT_ATTEMPTS = 12
_CONFLICT_PAUSE_MAX = 0.05


class _WorkFailed(Exception):
    """What the work of `AccessLog.append_with` raised, carried past the append's retries."""

    def __init__(self, error: Exception) -> None:
        super().__init__("the logged operation failed")
        self.error = error


def _resolve_entry(entry: LogEntry | Callable[[_R], LogEntry], result: _R) -> LogEntry:
    """`entry`, or the entry it builds from `result` (AccessLog.append_with)."""
    return entry if isinstance(entry, LogEntry) else entry(result)


class _Chain:
    """Chains entries onto `tree` (mutating it) after the leaf hash `previous`."""

    def __init__(self, tree: keys.CompactRange, previous: bytes) -> None:
        self.tree = tree
        self.previous = previous

    @classmethod
    def at(cls, head: Head) -> _Chain:
        """A chain after the head another writer left; LogUnavailable when that head's state
        and size disagree (a damaged log: `credex log verify` tells more)."""
        state, size, last = head
        tree = keys.CompactRange.from_bytes(state) if state else keys.CompactRange()
        if tree.size != size or (size > 0) != (last is not None):
            raise LogUnavailable(
                "access log state does not match its size; run `credex log verify`"
            )
        return cls(tree, last if last is not None else ZERO_HASH)

    def __call__(self, entries: Sequence[LogEntry]) -> tuple[list[tuple[bytes, bytes]], bytes, int]:
        """`(leaf, leaf hash)` rows of `entries`, the tree state after them, the size before."""
        tree = self.tree
        before = tree.size
        previous = self.previous
        rows: list[tuple[bytes, bytes]] = []
        for entry in entries:
            leaf = encode_leaf(entry, previous)
            previous = keys.leaf_hash(leaf)
            rows.append((leaf, previous))
            tree.append(previous)
        self.previous = previous
        return rows, tree.to_bytes(), before

    def rebuilder(self, entries: Sequence[LogEntry]) -> Rebuild:
        """A `Rebuild` that chains `entries` afresh onto the head the backend found, and
        makes this chain that one (the caller keeps `tree` and `previous` after the append)."""

        def rebuild(head: Head) -> tuple[Sequence[tuple[bytes, bytes]], bytes]:
            fresh = _Chain.at(head)
            rows, state, _before = fresh(entries)
            self.tree, self.previous = fresh.tree, fresh.previous
            return rows, state

        return rebuild


class AccessLog:
    """The node's access log writer: group commit, signed checkpoints, proofs.

    `append` may be awaited by many tasks at once; the entries waiting while a backend append is
    in flight are committed together in the next one (group commit), in the order `append` was
    called. `append_sync` serves the CLI and admin reads. One AccessLog per backend per process;
    several processes need a backend that serialises appends (see LogBackend).
    """

    def __init__(
        self,
        backend: LogBackend,
        *,
        origin: str,
        signer: keys.Signer,
        key_name: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        checkpoint_interval: dt.timedelta = dt.timedelta(seconds=1),
        max_batch: int = 8192,
    ) -> None:
        """Write to `backend`; `append` takes NonceClaims when it is a ClaimingLogBackend."""
        if not origin or "\n" in origin:
            raise ConfigError("accesslog.origin: must be one non-empty line")
        self.backend = backend
        self.origin = origin
        self.key_name = key_name or origin
        self._signer = signer
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._interval = checkpoint_interval
        self._lock = threading.Lock()
        self._range: keys.CompactRange | None = None
        self._previous: bytes = ZERO_HASH
        self._claiming = backend if isinstance(backend, ClaimingLogBackend) else None
        self._group: GroupCommit[tuple[LogEntry, NonceClaim | None], tuple[int, bool]] = (
            GroupCommit(
                self._commit_group,
                max_batch=max_batch,
                on_error=_unavailable,
                stage="accesslog.commit",
            )
        )
        self._last_checkpoint_at: dt.datetime | None = None
        # Roots of perfect aligned subtrees (256+ leaves), which never change as the log grows:
        # proofs then hash only the young right edge, not the whole log on every request (the
        # witness asks for one every visit). At most size/128 entries of ~100 bytes.
        self._subtrees: keys.SubtreeCache = {}

    # writing

    def _load(self) -> keys.CompactRange:
        chain = _Chain.at(self.backend.head())
        self._previous = chain.previous
        return chain.tree

    def _commit(self, entries: Sequence[LogEntry]) -> int:
        """Chain, hash and store `entries` in one backend append; return the first index."""

        def store(chain: _Chain) -> int:
            rows, state, before = chain(entries)
            return self.backend.append(
                rows, state, expected_size=before, rebuild=chain.rebuilder(entries)
            )

        return self._on_tree(store)

    def _on_tree(self, store: Callable[[_Chain], _R]) -> _R:
        """Run `store(chain)` against the current tree under the writer lock; `chain` turns
        entries into `(rows, new state, size before)` for one backend append. A failing
        `store` leaves the tree to be reloaded from the backend, and is tried once more; one
        that lost the race to another writer on the same store (WriteConflict: nothing was
        written) is tried again on the fresh tree up to `_CONFLICT_ATTEMPTS` times, after a
        short random pause so that the writers do not collide again in step."""
        failures = conflicts = 0
        with self._lock:
            while True:
                try:
                    if self._range is None:
                        self._range = self._load()
                    chain = _Chain(self._range, self._previous)
                    result = store(chain)
                except _WorkFailed:
                    self._range = None  # the transaction was rolled back: reload next time
                    raise
                except WriteConflict:
                    self._range = None  # another writer appended: reload, then try again
                    conflicts += 1
                    if conflicts >= _CONFLICT_ATTEMPTS:
                        raise
                    pause = min(_CONFLICT_PAUSE_MAX, 0.001 * 2**conflicts)
                    time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
                    continue
                except Exception:
                    self._range = None  # our view may be stale: reload before trying again
                    failures += 1
                    if failures >= 2:
                        raise
                    continue
                self._range, self._previous = chain.tree, chain.previous
                return result

    def append_sync(self, entry: LogEntry) -> int:
        """Durably append one entry and return its index; LogUnavailable if the backend fails."""
        try:
            return self._commit([entry])
        except LogUnavailable:
            raise
        except Exception as error:
            raise LogUnavailable("the access log could not be written") from error

    def append_with(
        self,
        entry: LogEntry | Callable[[_R], LogEntry],
        work: Callable[[], _R],
        *,
        what: str,
    ) -> tuple[int, _R]:
        """Run `work` and durably append `entry` as one; return the entry's index and what
        `work` returned.

        `entry` is the entry itself, or a function building it from what `work` returned, for
        an entry that states the outcome (a pushed copy stored or not kept): it is called after
        `work`, in the same transaction, and must not touch the store.

        On a JoiningLogBackend (the node's store) `work`'s store calls run in the transaction
        of the append: the entry is stored if and only if what `work` wrote is, whatever
        crashes in between. Whatever `work` raises propagates unchanged and nothing is written;
        LogUnavailable when the append fails, and then what `work` wrote is rolled back with it.
        `work` may run again when the first append fails for a passing reason, so it must do
        nothing but store calls. On another backend (tests' memory log) `work` runs first and
        the entry is appended after it. `what` names the operation in store errors.
        """
        backend = self.backend
        if not isinstance(backend, JoiningLogBackend):
            result = work()
            return self.append_sync(_resolve_entry(entry, result)), result
        results: list[_R] = []

        def guarded() -> _R:
            try:
                result = work()
            except Exception as error:
                raise _WorkFailed(error) from error
            results[:] = [result]
            return result

        def store(chain: _Chain) -> int:
            # built only after `work` ran (this attempt's outcome), also when rebuilt
            def entries() -> list[LogEntry]:
                return [_resolve_entry(entry, results[0])]

            def rebuild(head: Head) -> tuple[Sequence[tuple[bytes, bytes]], bytes]:
                return chain.rebuilder(entries())(head)

            first, _result = backend.append_with(
                guarded, build=lambda: chain(entries()), rebuild=rebuild, what=what
            )
            return first

        try:
            index = self._on_tree(store)
        except _WorkFailed as failed:
            raise failed.error from None
        except LogUnavailable:
            raise
        except Exception as error:
            raise LogUnavailable(
                f"the access log could not be written, so nothing of it was applied: {what}"
            ) from error
        return index, results[0]

    async def append(self, entry: LogEntry, *, claim: NonceClaim | None = None) -> int:
        """Durably append `entry` (group commit) and return its index.

        Resolves only after the backend append that holds the entry returned; LogUnavailable for
        every entry of a group whose nonces or backend append failed. With `claim`, the claim's
        nonce is recorded in the same backend transaction: a fresh one lets `entry` be logged; a
        replayed one has `claim.replayed` logged instead, and ReplayedRequest is raised. A
        claim needs a ClaimingLogBackend (ValueError otherwise: a programming error).
        """
        if claim is not None and self._claiming is None:
            raise ValueError("this access log's backend does not record nonces")
        index, replayed = await self._group.submit((entry, claim))
        if replayed:
            raise ReplayedRequest(index)
        return index

    def _commit_group(
        self, items: list[tuple[LogEntry, NonceClaim | None]]
    ) -> list[tuple[int, bool]]:
        claims = [claim for _, claim in items if claim is not None]
        if not claims:
            first = self._commit([entry for entry, _ in items])
            return [(first + i, False) for i in range(len(items))]
        backend = self._claiming
        assert backend is not None  # append refuses claims otherwise
        nonces = [(c.keyid, c.nonce, c.expires_at) for c in claims]
        # The earliest clock of the group judges expiry, so grouping never lets a nonce be
        # taken over sooner than it would be alone.
        now = min(c.now for c in claims)
        replays: list[bool] = []

        def store(chain: _Chain) -> int:
            entries: list[LogEntry] = []

            def build(fresh: list[bool]) -> tuple[list[tuple[bytes, bytes]], bytes, int]:
                verdicts = iter(fresh)
                entries.clear()
                replays.clear()
                for entry, claim in items:
                    if claim is not None and not next(verdicts):
                        entries.append(claim.replayed)
                        replays.append(True)
                    else:
                        entries.append(entry)
                        replays.append(False)
                return chain(entries)

            return backend.append_claiming(
                nonces, now=now, build=build, rebuild=chain.rebuilder(entries)
            )

        first = self._on_tree(store)
        return [(first + i, replay) for i, replay in enumerate(replays)]

    # checkpoints

    def size(self) -> int:
        """Return the number of committed entries."""
        with self._lock:
            return self._range.size if self._range is not None else self.backend.size()

    def checkpoint(self) -> str:
        """Sign and store a checkpoint of the current tree; return the note."""
        with self._lock:
            if self._range is None:
                self._range = self._load()
            size, root = self._range.size, self._range.root()
        note = keys.sign_checkpoint(
            keys.Checkpoint(origin=self.origin, size=size, root=root),
            name=self.key_name,
            signer=self._signer,
        )
        self.backend.save_checkpoint(size, note)
        return note

    def _uncheckpointed(self) -> bool:
        size = self.size()
        latest = self.backend.latest_checkpoint()
        return size > (latest[0] if latest is not None else 0)

    def maybe_checkpoint(self, now: dt.datetime) -> str | None:
        """Sign a checkpoint when entries were added since the last one and at least the
        checkpoint interval has passed since the last one this writer signed (or the clock went
        back since: a step back of NTP must not hold checkpoints back for as long); return the
        new note, or None when nothing was due."""
        if not self._uncheckpointed():
            return None
        last = self._last_checkpoint_at
        if last is not None and dt.timedelta(0) <= now - last < self._interval:
            return None
        self._last_checkpoint_at = now
        return self.checkpoint()

    async def run_checkpoints(self, stop: asyncio.Event) -> None:
        """Checkpoint every interval while the server runs, and once more when `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval.total_seconds())
            await asyncio.to_thread(self.maybe_checkpoint, self._clock())
        if self._uncheckpointed():
            await asyncio.to_thread(self.checkpoint)

    # proofs

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Return the RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves."""
        _check_range(index, size, self.backend.size())
        leaves = keys.FetchedLeaves(size, self.backend.leaf_hashes)
        return keys.inclusion_proof(index, leaves, cache=self._subtrees)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Return the RFC 9162 consistency proof from tree size `size1` to `size2`; InputError
        unless `0 < size1 <= size2 <= size` (RFC 9162 has no proof from the empty tree)."""
        if not 0 < size1 <= size2 <= self.backend.size():
            raise InputError(f"consistency proof: sizes {size1}..{size2} are not in the log")
        leaves = keys.FetchedLeaves(size2, self.backend.leaf_hashes)
        return keys.consistency_proof(size1, leaves, cache=self._subtrees)

    def check_foreign_checkpoint(self, note: str, verifiers: keys.NoteVerifiers) -> None:
        """Compare a checkpoint of THIS log that somebody showed us with our own tree.

        Raises ForkDetected (after recording an `alarm` entry in the log) when it has our origin
        and a size we hold but a different root, or a size beyond ours; a note that does not
        verify raises keys.VerificationError and is not an alarm.
        """
        cp = keys.verify_checkpoint(note, verifiers=verifiers, log_name=self.key_name)
        if cp.origin != self.origin:
            raise InputError("checkpoint: it is not a checkpoint of this log")
        size = self.backend.size()
        if (
            cp.size <= size
            and keys.root_from_leaves(self.backend.leaf_hashes(0, cp.size)) == cp.root
        ):
            return
        self.append_sync(
            LogEntry(
                time=utc_iso(self._clock()),
                kind="alarm",
                requester=self.origin,
                officer="",
                purpose="",
                legal_basis="",
                decision="deny",
                reason="fork_detected",
                request_id=hashlib.sha256(note.encode()).hexdigest()[:32],
            )
        )
        raise ForkDetected(
            f"a signed checkpoint of size {cp.size} does not match this log (size {size})"
        )


def _check_range(index: int, size: int, stored: int) -> None:
    if not 0 <= index < size <= stored:
        raise InputError(f"inclusion proof: index {index} in size {size} is not in the log")


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding of `verify_log`: a stable code, the entry index when one is to blame, and a
    sentence for the officer."""

    code: str
    index: int | None
    message: str
    index_end: int | None = None  # exclusive; set when only a range of entries can be blamed


@dataclass(frozen=True)
class VerifyReport:
    """The result of `verify_log`. `first_bad_index` is the lowest index any problem names."""

    size: int
    root: bytes
    checkpoints_checked: int
    witnesses_checked: int
    problems: tuple[Problem, ...]
    signed_size: int = 0  # the largest size a verified checkpoint, cosignature or anchor covers

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        """The first entry index a problem blames, or None."""
        indexes = [p.index for p in self.problems if p.index is not None]
        return min(indexes) if indexes else None

    def raise_for_problems(self) -> None:
        """Raise TamperDetected (exit code 3) naming the first bad entry when not ok."""
        if self.problems:
            first = self.first_bad_index
            blamed = [p for p in self.problems if p.index is not None and p.index == first]
            end = min((p.index_end for p in blamed if p.index_end is not None), default=None)
            if first is None:
                where = "no single entry"
            elif end is not None and all(p.index_end is not None for p in blamed):
                where = f"first bad entry between {first} and {end - 1}"
            else:
                where = f"first bad entry {first}"
            raise TamperDetected(
                f"access log failed verification ({where}): {self.problems[0].message}"
            )


def verify_log(
    backend: LogBackend,
    verifiers: keys.NoteVerifiers,
    *,
    origin: str | None = None,
    log_name: str | None = None,
    witness_verifiers: keys.NoteVerifiers | None = None,
    anchors: Sequence[str] = (),
) -> VerifyReport:
    """Recompute every leaf hash, the chain and the tree, and check every stored checkpoint (its
    signature with `verifiers`, name -> Ed25519 key, by the log key `log_name` (default: the
    checkpoint's origin), its origin, and its root at its size) and every witness cosignature
    (with `witness_verifiers` only, never a key or name of the log: `verify_cosignature`).

    `anchors` are signed notes of this log kept outside it (the platform witness's latest
    cosigned checkpoint): each must be signed by the log key AND cosigned by a key of
    `witness_verifiers`, and the log must hold it, so deleting the newest rows together with
    every local checkpoint and witness row still shows; a local checkpoint of the same size
    with another root (signed again after a rewrite) is a fork, never a replacement.

    Promises: an edited, deleted, inserted or reordered row is named by its index (the first such
    entry), or by the range of entries between two checkpoints when only a root tells; an entry
    edited with its stored hash recomputed is named when a signed root covers it, else blamed
    together with the next entry (whose chain link breaks); a log shorter than a signed
    checkpoint or anchor is reported as truncated at its first missing index, and a row stored
    beyond the committed size as `extra_rows` at the first such index. Never raises for
    tampering: the report lists problems; `raise_for_problems` turns it into TamperDetected.
    """
    log_name = log_name or origin
    problems: list[Problem] = []
    expected_roots: dict[int, bytes] = {}
    anchored: dict[int, bytes] = {}
    sizes: set[int] = set()
    for number, note in enumerate(anchors, start=1):
        try:
            cp = _verify_anchor(note, verifiers, log_name, witness_verifiers or {})
        except keys.KeysError as error:
            problems.append(Problem("anchor_signature", None, f"anchor {number}: {error}"))
            continue
        if origin is not None and cp.origin != origin:
            problems.append(
                Problem("anchor_mismatch", None, f"anchor {number}: a checkpoint of another log")
            )
            continue
        if expected_roots.get(cp.size, cp.root) != cp.root:
            problems.append(
                Problem("fork_detected", None, f"two anchors with different roots at {cp.size}")
            )
            continue
        expected_roots[cp.size] = anchored[cp.size] = cp.root
        sizes.add(cp.size)
    for size, note in backend.checkpoints():
        try:
            cp = keys.verify_checkpoint(note, verifiers=verifiers, log_name=log_name)
        except keys.KeysError:
            problems.append(
                Problem("checkpoint_signature", None, f"checkpoint {size}: bad signature")
            )
            continue
        if cp.size != size or (origin is not None and cp.origin != origin):
            problems.append(
                Problem("checkpoint_mismatch", None, f"checkpoint {size}: wrong size or origin")
            )
            continue
        if anchored.get(size, cp.root) != cp.root:
            # Signed again by the log key after a rewrite: the witnessed anchor decides.
            problems.append(
                Problem(
                    "fork_detected",
                    None,
                    f"the log's own checkpoint at {size} disagrees with the witnessed anchor",
                )
            )
            continue
        expected_roots[size] = cp.root
        sizes.add(size)
    witness_rows = backend.witnesses()
    witnesses_checked = 0
    for size, name, note in witness_rows:
        try:
            cp = verify_cosignature(
                note, verifiers, witness_verifiers or {}, witness=name, log_name=log_name
            )
        except keys.KeysError as error:
            problems.append(
                Problem("witness_signature", None, f"witness {name} at size {size}: {error}")
            )
            continue
        witnesses_checked += 1
        if cp.size != size:
            problems.append(Problem("witness_mismatch", None, f"witness {name}: wrong size"))
            continue
        if size in expected_roots and expected_roots[size] != cp.root:
            problems.append(
                Problem("fork_detected", None, f"witness {name} cosigned another root at {size}")
            )
            continue
        expected_roots.setdefault(size, cp.root)
        sizes.add(size)

    stored = backend.size()
    tree = keys.CompactRange()
    previous = ZERO_HASH
    first_bad: int | None = None
    # Locals, whole chunks folded with one `extend`, and a sorted list of the sizes to compare
    # roots at: this loop runs once per entry of the whole log (`credex log verify`).
    sha256, to_hex = hashlib.sha256, binascii.b2a_hex
    previous_hex = to_hex(previous)
    check_at = sorted((size for size in expected_roots if size > 0), reverse=True)
    next_check = check_at.pop() if check_at else -1
    position = 0
    for rows in _readable_chunks(backend, stored, problems):
        computed_hashes: list[bytes] = []
        for index, leaf, stored_hash in rows:
            computed = sha256(b"\x00" + leaf).digest()  # keys.leaf_hash, inlined
            if first_bad is None and (
                index != position
                or computed != stored_hash
                or leaf[10:74] != previous_hex
                or not leaf.startswith(_CHAIN_PREFIX)
            ):
                problem = _row_problem(index, position, leaf, stored_hash, previous)
                if problem is not None:
                    if problem.code == "chain_broken" and position > 0:
                        problem = _blame_chain_break(
                            backend,
                            position,
                            leaf,
                            previous=previous,
                            expected_roots=expected_roots,
                            stored=stored,
                        )
                    problems.append(problem)
                    first_bad = problem.index
            computed_hashes.append(computed)
            position += 1
            previous = computed
            previous_hex = to_hex(computed)
        chunk_start, done = position - len(computed_hashes), 0
        while 0 < next_check <= position:
            cut = next_check - chunk_start
            tree.extend(computed_hashes[done:cut])
            done = cut
            if tree.root() != expected_roots[next_check]:
                # only an entry before the checkpoint can be blamed for its root
                early = first_bad if first_bad is not None and first_bad < next_check else None
                if early is not None:
                    blame, blame_end = early, None
                    where = f"entries from {early} on were rewritten"
                else:
                    # Every row chains to the one before it, so the whole prefix was rewritten
                    # consistently: only the checkpoints bound where. Blame the range.
                    blame, blame_end = _last_good(next_check, sizes), next_check
                    where = f"an entry in {blame}..{next_check - 1} was rewritten"
                problems.append(
                    Problem(
                        "checkpoint_root_mismatch",
                        blame,
                        f"the log at size {next_check} does not match its signed checkpoint "
                        f"({where})",
                        index_end=blame_end,
                    )
                )
            next_check = check_at.pop() if check_at else -1
        tree.extend(computed_hashes[done:])
    state = backend.state()
    state_size = keys.CompactRange.from_bytes(state).size if state is not None else 0
    covered = max([*sizes, state_size])
    if covered > tree.size:
        problems.append(
            Problem(
                "truncated",
                tree.size,
                f"the log holds {tree.size} entries but {covered} were committed",
            )
        )
    elif state is not None and keys.CompactRange.from_bytes(state).root() != tree.root():
        problems.append(Problem("state_mismatch", None, "the stored tree state does not match"))
    # Rows past the committed size are never read above, yet the next append collides with
    # the first of them: the node could no longer log, and so no longer answer.
    committed = max(stored, state_size)
    extra = backend.first_index_from(committed)
    if extra is not None:
        problems.append(
            Problem(
                "extra_rows",
                extra,
                f"entry {extra} is stored beyond the {committed} committed entries (inserted; "
                "appends fail once they reach its index)",
            )
        )
    return VerifyReport(
        size=tree.size,
        root=tree.root(),
        checkpoints_checked=len(expected_roots),
        witnesses_checked=witnesses_checked,
        problems=tuple(sorted(problems, key=_problem_order)),
        signed_size=max(sizes, default=0),
    )


def _verify_anchor(
    note: str,
    verifiers: keys.NoteVerifiers,
    log_name: str | None,
    witness_verifiers: keys.NoteVerifiers,
) -> keys.Checkpoint:
    """An anchor is a checkpoint signed by the log AND cosigned by a witness with any of the
    keys `witness_verifiers` lists for it (a witness's key from before its rotation too): a
    note the log signed alone proves nothing against the log's own administrators, who hold
    its key."""
    cp = keys.verify_checkpoint(note, verifiers=verifiers, log_name=log_name)
    witnesses = _witness_keys(verifiers, witness_verifiers)
    if not witnesses:
        raise keys.VerificationError("no witness key to check its cosignature with")
    try:
        keys.verify_note(note, verifiers=witnesses)
    except keys.KeysError:
        raise keys.VerificationError("not cosigned by a witness of the roster") from None
    return cp


def verify_cosignature(
    note: str,
    verifiers: keys.NoteVerifiers,
    witness_verifiers: keys.NoteVerifiers,
    *,
    witness: str,
    log_name: str | None = None,
) -> keys.Checkpoint:
    """Check a stored witness row: `note` is a checkpoint signed by the log key `log_name` (in
    `verifiers`; default: the checkpoint's origin) and cosigned by `witness` with one of its
    keys in `witness_verifiers` (one key, or several: a witness's current and previous keys).
    Returns the checkpoint.

    Raises keys.VerificationError when `witness` has no witness key there, or is one of the
    log's own names, or cosigned with one of the log's own keys (a log cannot witness itself),
    or a signature does not verify.
    """
    witness_keys = _witness_keys(verifiers, witness_verifiers).get(witness)
    if witness_keys is None:
        own = witness in verifiers or witness in witness_verifiers  # left out as the log's
        raise keys.VerificationError(
            "the log's own key is no witness" if own else "not a witness key of the roster"
        )
    try:
        cp = keys.verify_checkpoint(note, verifiers={witness: witness_keys}, log_name=witness)
    except keys.KeysError:
        raise keys.VerificationError("bad cosignature") from None
    try:
        keys.verify_checkpoint(note, verifiers=verifiers, log_name=log_name)
    except keys.KeysError:
        raise keys.VerificationError("the cosigned note is not signed by the log") from None
    return cp


def _witness_keys(
    verifiers: keys.NoteVerifiers, witness_verifiers: keys.NoteVerifiers
) -> dict[str, tuple[bytes, ...]]:
    """Each witness's keys (one or several) less any key of the log; a witness named like the
    log, or left with no key, is left out. Its administrators hold the log key, so a note
    signed with it under a witness's name or the log's own proves nothing against them."""

    def listed(value: bytes | tuple[bytes, ...]) -> tuple[bytes, ...]:
        return (value,) if isinstance(value, bytes) else value

    log_keys = {k for v in verifiers.values() for k in listed(v)}
    witnesses = {
        name: tuple(k for k in listed(value) if k not in log_keys)
        for name, value in witness_verifiers.items()
        if name not in verifiers
    }
    return {name: found for name, found in witnesses.items() if found}


def _readable_chunks(
    backend: LogBackend, stored: int, problems: list[Problem]
) -> Iterator[list[tuple[int, bytes, bytes]]]:
    """Yield the stored rows in chunks (lists); when the backend itself refuses a range because
    rows are missing (TamperDetected), bisect to the first missing index, report it and stop
    there."""
    for start in range(0, stored, _VERIFY_CHUNK):
        end = min(start + _VERIFY_CHUNK, stored)
        try:
            rows = backend.leaves(start, end)
        except TamperDetected:
            good, bad = start, end  # leaves(start, good) reads; leaves(start, bad) does not
            while bad - good > 1:
                mid = (good + bad) // 2
                try:
                    backend.leaves(start, mid)
                except TamperDetected:
                    bad = mid
                else:
                    good = mid
            yield backend.leaves(start, good)
            problems.append(
                Problem("index_gap", good, f"entry {good} is missing from the stored log")
            )
            return
        yield rows


def _blame_chain_break(
    backend: LogBackend,
    position: int,
    leaf: bytes,
    *,
    previous: bytes,
    expected_roots: Mapping[int, bytes],
    stored: int,
) -> Problem:
    """The problem of entry `position` (> 0, its own hash right) not chaining to the entry
    before it. The break alone cannot tell which of the two was changed: the entry before,
    edited with its stored hash recomputed, or this one, edited, deleted, inserted or moved.
    The first signed root covering both decides; without one, both are blamed (a range)."""
    before = position - 1
    this_one = Problem(
        "chain_broken",
        position,
        f"entry {position} does not follow entry {before} (edited, deleted, inserted or reordered)",
    )
    claimed = _chained_hash(leaf)
    if claimed is None or claimed == previous:
        return this_one  # its own chain field was rewritten
    signed = min((s for s in expected_roots if position <= s <= stored), default=None)
    root = None if signed is None else _root_with_hash(backend, signed, before, claimed)
    if signed is None or root is None:
        return Problem(
            "chain_broken",
            before,
            f"entry {position} does not follow entry {before}: entry {before} was edited with "
            f"its stored hash recomputed, or entry {position} was edited, deleted, inserted or "
            "reordered (no signed checkpoint covering both tells which)",
            index_end=position + 1,
        )
    if root == expected_roots[signed]:
        return Problem(
            "chain_broken",
            before,
            f"entry {before} was edited and its stored hash recomputed (entry {position} and "
            f"the signed checkpoint at size {signed} hold its original hash)",
        )
    return this_one


def _chained_hash(leaf: bytes) -> bytes | None:
    """The previous leaf hash `leaf` names in its `chain`, or None when it names none."""
    match = _CHAIN_FIELD.match(leaf)
    return bytes.fromhex(match[1].decode("ascii")) if match else None


def _root_with_hash(backend: LogBackend, size: int, index: int, leaf_hash: bytes) -> bytes | None:
    """The root of the first `size` stored leaf hashes with the one at `index` replaced by
    `leaf_hash`, or None when the backend does not hold them all."""
    tree = keys.CompactRange()
    try:
        for start in range(0, size, _VERIFY_CHUNK):
            hashes = backend.leaf_hashes(start, min(start + _VERIFY_CHUNK, size))
            if start <= index < start + len(hashes):
                hashes[index - start] = leaf_hash
            tree.extend(hashes)
    except (TamperDetected, ValueError):  # rows missing, or a stored hash of another length
        return None
    return tree.root() if tree.size == size else None


def _problem_order(p: Problem) -> tuple[int, int]:
    return (0 if p.index is not None else 1, p.index if p.index is not None else 0)


def _last_good(size: int, sizes: set[int]) -> int:
    earlier = [s for s in sizes if s < size]
    return max(earlier) if earlier else 0


def _row_problem(
    index: int, expected: int, leaf: bytes, stored_hash: bytes, previous: bytes
) -> Problem | None:
    if index != expected:
        return Problem(
            "index_gap", expected, f"entry {expected} is missing or rows were renumbered"
        )
    if keys.leaf_hash(leaf) != stored_hash:
        return Problem("leaf_hash_mismatch", expected, f"entry {expected} was edited")
    if not leaf.startswith(_CHAIN_PREFIX + previous.hex().encode()):
        return Problem(
            "chain_broken",
            expected,
            f"entry {expected} does not follow entry {expected - 1} (edited, deleted, inserted "
            "or reordered)",
        )
    return None


# --- reading: search, export, risk ---------------------------------------------------------


def iter_entries(
    backend: LogBackend, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes, LogEntry]]:
    """Yield `(index, leaf, entry)` in index order; a leaf that does not parse raises InputError
    naming its index (run verify_log for the full diagnosis)."""
    stop = backend.size() if end is None else min(end, backend.size())
    for chunk in range(start, stop, _VERIFY_CHUNK):
        for index, leaf, _h in backend.leaves(chunk, min(chunk + _VERIFY_CHUNK, stop)):
            try:
                entry, _prev = decode_leaf(leaf)
            except InputError as error:
                raise InputError(f"access log entry {index} does not parse: {error}") from error
            yield index, leaf, entry


def search(
    backend: LogBackend,
    *,
    subject_index: str | None = None,
    requester: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    kind: str | None = None,
    limit: int | None = None,
) -> list[tuple[int, LogEntry]]:
    """Return `(index, entry)` of the entries matching every given filter, oldest first.

    `since` is inclusive and `until` exclusive; `subject_index` is the blind-index token (the CLI
    computes it from the identifier the officer types, which is never logged).
    """
    found: list[tuple[int, LogEntry]] = []
    for index, _leaf, entry in iter_entries(backend):
        if subject_index is not None and entry.subject_index != subject_index:
            continue
        if requester is not None and entry.requester != requester:
            continue
        if kind is not None and entry.kind != kind:
            continue
        if since is not None or until is not None:
            moment = entry.moment
            if since is not None and moment < since:
                continue
            if until is not None and moment >= until:
                continue
        found.append((index, entry))
        if limit is not None and len(found) >= limit:
            break
    return found


def export(
    backend: LogBackend,
    *,
    start: int = 0,
    end: int | None = None,
    indexes: Iterable[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one evidence record per entry: index, leaf (base64), the decoded entry, and its
    inclusion proof (base64 hashes) to the latest checkpoint, whose note is included.

    Entries newer than the latest checkpoint carry `"proof": null` (wait for the next checkpoint).
    Raises TamperDetected, before yielding anything, when the stored leaf hashes no longer make
    the checkpoint's root, and when an exported leaf is not the one its hash stands for: every
    line yielded verifies (`verify_export_record`), so an export never looks like evidence of a
    log that was changed after it was signed.
    """
    latest = backend.latest_checkpoint()
    cp_size, note = latest if latest is not None else (0, None)
    hashes = backend.leaf_hashes(0, cp_size) if cp_size else []
    if note is not None and (
        len(hashes) != cp_size or keys.root_from_leaves(hashes) != keys.read_checkpoint(note).root
    ):
        raise TamperDetected(
            f"the stored access log no longer makes the root of its latest checkpoint (size "
            f"{cp_size}): run `credex log verify` to find the changed entry"
        )
    wanted = None if indexes is None else set(indexes)
    for index, leaf, entry in iter_entries(backend, start, end):
        if wanted is not None and index not in wanted:
            continue
        proof = None
        if index < cp_size:
            if keys.leaf_hash(leaf) != hashes[index]:
                raise TamperDetected(
                    f"access log entry {index} is not the leaf its signed hash stands for: run "
                    "`credex log verify` for the full diagnosis"
                )
            proof = [base64.b64encode(h).decode() for h in keys.inclusion_proof(index, hashes)]
        yield {
            "index": index,
            "leaf": base64.b64encode(leaf).decode(),
            "entry": entry.to_dict(),
            "tree_size": cp_size if proof is not None else None,
            "proof": proof,
            "checkpoint": note if proof is not None else None,
        }


def export_lines(backend: LogBackend, **kwargs: Any) -> Iterator[str]:
    """`export` as JSON Lines (one compact JSON document per line, UTF-8 kept readable)."""
    for record in export(backend, **kwargs):
        yield json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def verify_export_record(
    record: Mapping[str, Any],
    verifiers: keys.NoteVerifiers,
    *,
    log_name: str | None = None,
    origin: str | None = None,
) -> LogEntry:
    """Check one exported line on its own: the checkpoint is signed by the log key `log_name`
    (a name in `verifiers`; default: the checkpoint's origin line, the C2SP convention; credex
    nodes sign as their node id), its origin is `origin` when given, the leaf's inclusion proof
    leads to its root, and the decoded `entry` is the leaf's. Returns the entry.

    Raises InputError for a line without a proof (newer than the checkpoint) or one that does
    not parse, keys.VerificationError when it does not verify.
    """
    note = record.get("checkpoint")
    proof = record.get("proof")
    if not isinstance(note, str) or not isinstance(proof, list):
        raise InputError("export record: it carries no checkpoint and proof")
    try:
        index = int(record["index"])
        leaf = base64.b64decode(record["leaf"], validate=True)
        path = [base64.b64decode(p, validate=True) for p in proof]
    except (KeyError, TypeError, ValueError):
        raise InputError("export record: index, leaf or proof is malformed") from None
    cp = keys.verify_checkpoint(note, verifiers=verifiers, log_name=log_name)
    if origin is not None and cp.origin != origin:
        raise keys.VerificationError(f"the checkpoint is of log {cp.origin!r}, not {origin!r}")
    keys.verify_inclusion(index, cp.size, keys.leaf_hash(leaf), path, cp.root)
    entry, _prev = decode_leaf(leaf)
    shown = record.get("entry")
    if shown is not None and shown != entry.to_dict():
        raise keys.VerificationError("the decoded entry of the line is not the signed leaf's")
    return entry


def is_off_hours(moment: dt.datetime) -> bool:
    """True outside 08:00-18:00 China time or on a non-working day (chinese-calendar; for years
    it does not know, weekends only)."""
    local = moment.astimezone(_CHINA)
    if not dt.time(8, 0) <= local.time() < dt.time(18, 0):
        return True
    return not _is_workday(local.date())


def _is_workday(day: dt.date) -> bool:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5


@dataclass(frozen=True)
class Finding:
    """One risk signal for a security officer: a stable code, who, a number, and a sentence."""

    code: str  # volume_spike | off_hours | denied_ratio | queries_without_grant | grant_near_limit
    subject: str  # requester node id, or grant id for grant_near_limit
    value: float
    message: str


@dataclass(frozen=True)
class RequesterStats:
    """A requester's activity in the report window and in its own history."""

    requester: str
    window_count: int
    baseline_daily: float
    off_hours: int
    denied: int
    without_grant: int  # allowed grantless queries not shown to be about an organisation


@dataclass(frozen=True)
class RiskReport:
    """`risk_report` output: per-requester statistics and the findings that crossed a threshold."""

    since: dt.datetime
    until: dt.datetime
    requesters: tuple[RequesterStats, ...]
    findings: tuple[Finding, ...]


class _GrantUse(Protocol):
    @property
    def uses(self) -> int: ...
    @property
    def revoked(self) -> bool: ...
    @property
    def grant(self) -> Any: ...


# How `catalog.mask_identifier` shows an 18-character identifier: the first 6 and last 4 kept.
_MASKED_18 = re.compile(r"[0-9A-Z]{6}\*{8}[0-9A-Z]{4}")
# A GB 11643 ID number behind that mask shows a province code (first digit 1-8) and digits, with
# an X allowed last; a GB 32100 credit code showing anything else cannot be one.
_MASKED_ID_NUMBER = re.compile(r"[1-8][0-9]{5}\*{8}[0-9]{3}[0-9X]")


def _query_subject_kinds(catalogue: catalog.Catalog) -> dict[str, frozenset[str]]:
    """Item id -> the subject kinds an allowed query asking for that item can be about."""
    # As node.policy admits: a natural person may also ask for an organisation item that links
    # person ids (Shandong Art. 31: the legal representative is named in the entry).
    linked = frozenset({"natural_person"})
    return {
        item.id: item.subject_kinds | (linked if item.linked_id_fields else frozenset())
        for item in catalogue.items.values()
    }


def _shows_credit_code(masked: str | None) -> bool:
    """True only when the masked subject cannot be an ID number, so it is a credit code."""
    return (
        masked is not None
        and _MASKED_18.fullmatch(masked) is not None
        and _MASKED_ID_NUMBER.fullmatch(masked) is None
    )


def _may_be_natural_person(entry: LogEntry, item_kinds: Mapping[str, frozenset[str]]) -> bool:
    """False only when `entry` is shown to be about an organisation or individual business."""
    # The entry does not record the subject kind (and its encoding is the hashed leaf), so the
    # kind is derived. The catalogue is the authority: the policy allows a query only when every
    # item asked holds the subject's kind, so those items' kinds bound it. Items held for every
    # kind (qualification, honour, red list ...) leave it open; then the masked subject settles
    # it, but only one way: a mask with a letter or a leading 9 (every market entity's code)
    # is no ID number, while a digits-only credit code (government bodies, institutions, social
    # organisations) can look like one, so a person-like mask proves nothing. Whatever cannot
    # be shown to be an organisation counts: unknown items, no items, items no one subject
    # holds together (an entry the current catalogue contradicts).
    items = set(entry.items_asked) | set(entry.items_released)
    if not items or not items <= item_kinds.keys():
        return True
    kinds = frozenset.intersection(*(item_kinds[item] for item in items))
    if "natural_person" not in kinds:
        return not kinds
    return kinds == {"natural_person"} or not _shows_credit_code(entry.subject_masked)


def risk_report(
    backend: LogBackend,
    now: dt.datetime,
    *,
    window: dt.timedelta = dt.timedelta(days=1),
    history: dt.timedelta = dt.timedelta(days=30),
    spike_factor: float = 3.0,
    spike_min: int = 20,
    denied_ratio: float = 0.2,
    denied_min: int = 10,
    grants: Iterable[_GrantUse] = (),
    grant_near: float = 0.8,
    catalogue: catalog.Catalog | None = None,
) -> RiskReport:
    """Review the accesses of `window` before `now` against each requester's own history.

    Signals: volume above `spike_factor` x its daily average over `history` (and at least
    `spike_min`); any access off hours; a denied share above `denied_ratio` (with at least
    `denied_min` requests); allowed queries without a grant about a natural person (statutory-duty
    queries included, so an officer can check the duty claimed); grants with at least
    `grant_near` of their uses spent.

    Only natural persons give subject grants, so a grantless query is counted unless
    `catalogue` shows it was about an organisation or individual business: every item it names
    is held only for those kinds, or the items also admit a natural person and the masked subject
    cannot be an ID number. Conservatively, a query whose kind cannot be told is counted: one
    naming an item `catalogue` does not know, or no item, and every grantless allowed query when
    no `catalogue` is given. Reads `backend` and writes nothing.
    """
    item_kinds = _query_subject_kinds(catalogue) if catalogue is not None else {}
    since = now - window
    start_history = since - history
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])  # win, hist, off, deny, ng
    for _index, _leaf, entry in iter_entries(backend):
        if entry.kind not in ("query", "feed_delivery", "push", "export", "admin_read"):
            continue
        moment = entry.moment
        if moment >= now or moment < start_history:
            continue
        c = counts[entry.requester]
        if moment < since:
            c[1] += 1
            continue
        c[0] += 1
        c[2] += is_off_hours(moment)
        c[3] += entry.decision == "deny"
        c[4] += (
            entry.kind == "query"
            and entry.decision == "allow"
            and entry.grant_id is None
            and _may_be_natural_person(entry, item_kinds)
        )
    days = max(history / dt.timedelta(days=1), 1.0)
    stats: list[RequesterStats] = []
    findings: list[Finding] = []
    for requester in sorted(counts):
        win, hist, off, deny, no_grant = counts[requester]
        baseline = hist / days * (window / dt.timedelta(days=1))
        stats.append(RequesterStats(requester, win, hist / days, off, deny, no_grant))
        if win >= spike_min and win > spike_factor * baseline:
            findings.append(
                Finding(
                    "volume_spike",
                    requester,
                    float(win),
                    f"{win} accesses against a usual {baseline:.1f} for this period",
                )
            )
        if off:
            findings.append(
                Finding(
                    "off_hours",
                    requester,
                    float(off),
                    f"{off} accesses outside working hours or on non-working days",
                )
            )
        if win >= denied_min and deny / win > denied_ratio:
            findings.append(
                Finding(
                    "denied_ratio", requester, deny / win, f"{deny} of {win} requests were denied"
                )
            )
        if no_grant:
            findings.append(
                Finding(
                    "queries_without_grant",
                    requester,
                    float(no_grant),
                    f"{no_grant} allowed queries about a natural person (or of an unknown "
                    "subject kind) without a subject grant (check the duty)",
                )
            )
    for state in grants:
        limit = int(state.grant.use_limit)
        if not state.revoked and limit and state.uses >= grant_near * limit:
            findings.append(
                Finding(
                    "grant_near_limit",
                    str(state.grant.grant_id),
                    state.uses / limit,
                    f"{state.uses} of {limit} uses spent",
                )
            )
    return RiskReport(since, now, tuple(stats), tuple(findings))


# --- witnessing ----------------------------------------------------------------------------------


@dataclass
class Witness:
    """The platform's witness: remembers the latest checkpoint it cosigned per log origin and
    countersigns a new one only when it is consistent with it.

    `alarms` records every fork it was shown (both notes), so the evidence is kept.
    """

    name: str
    signer: keys.Signer
    log_verifiers: Mapping[str, Mapping[str, bytes]]  # origin -> {key name: public key}
    latest: dict[str, str] = field(default_factory=dict)
    alarms: list[tuple[str, str, str]] = field(default_factory=list)  # origin, old, new

    def witness(self, new_note: str, proof: Sequence[bytes]) -> str:
        """Verify `new_note` against the log's key and the last cosigned note of its origin with
        `proof`, remember it and return it cosigned. ForkDetected (recorded in `alarms`) when it
        contradicts what was cosigned before; keys.VerificationError for a bad signature."""
        origin = _note_origin(new_note)
        verifiers = self.log_verifiers.get(origin)
        if verifiers is None:
            raise InputError("witness: the checkpoint's origin is not a log this witness follows")
        previous = self.latest.get(origin)
        try:
            cosigned = witness_checkpoint(
                previous,
                new_note,
                proof,
                log_verifiers=verifiers,
                name=self.name,
                signer=self.signer,
            )
        except ForkDetected:
            self.alarms.append((origin, previous or "", new_note))
            raise
        self.latest[origin] = new_note  # it extends `previous` (or is the same checkpoint)
        return cosigned


def _note_origin(note: str) -> str:
    return note.split("\n", 1)[0]


def fork_reason(old: keys.Checkpoint, new: keys.Checkpoint, proof: Sequence[bytes]) -> str | None:
    """Why checkpoint `new` of a log cannot follow `old` of the same log, shown as the log's
    current view after `old` (a fork or a rollback: a smaller size, the same size with another
    root, or a consistency `proof` from `old` to `new` that fails), or None when it does (the
    same checkpoint, or a proven extension). The one fork rule of every witness in credex
    (`witness_checkpoint`, `node.witness`). Pure: both checkpoints' signatures are the
    caller's to check."""
    if new.size < old.size:
        # An append-only log's current tree never shrinks: entries it signed for are gone.
        return f"size {new.size} shown after the witnessed {old.size}"
    if new.size == old.size:
        return f"two checkpoints of size {new.size} disagree" if new.root != old.root else None
    if old.size == 0:
        return None  # every log extends the empty one
    try:
        keys.verify_consistency(old.size, new.size, old.root, new.root, list(proof))
    except keys.VerificationError:
        return f"checkpoint {new.size} is not proven to extend the witnessed {old.size}"
    return None


def witness_checkpoint(
    previous_note: str | None,
    new_note: str,
    consistency_proof: Sequence[bytes],
    *,
    log_verifiers: Mapping[str, bytes],
    name: str,
    signer: keys.Signer,
) -> str:
    """Verify `new_note` (and `previous_note`, when there is one) with the log's key, check that
    the new tree extends the old one, and return `new_note` with this witness's cosignature.

    Refuses: ForkDetected when `new_note` cannot follow `previous_note` (`fork_reason`: the
    same size with another root, a smaller size, or a consistency proof that fails); InputError
    for notes of different origins; keys.VerificationError for a note that does not verify.
    """
    new = keys.verify_checkpoint(new_note, verifiers=log_verifiers)
    if previous_note is not None:
        old = keys.verify_checkpoint(previous_note, verifiers=log_verifiers)
        if old.origin != new.origin:
            raise InputError("witness: the two checkpoints are of different logs")
        why = fork_reason(old, new, consistency_proof)
        if why is not None:
            raise ForkDetected(why)
    return keys.cosign_note(new_note, name=name, signer=signer)
