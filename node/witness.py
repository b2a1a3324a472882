"""The platform's witness of every department's access log (C2SP tlog-witness, pull style).

Every `WITNESS_INTERVAL` seconds the platform node, for each department in the roster:
fetches its latest signed checkpoint (Transparency.GetCheckpoint), asks for a consistency proof
from the size it last cosigned (GetConsistencyProof), verifies both the log's signature and the
proof, countersigns the note and sends it back (Transparency.Cosign), where the department
stores it beside its own checkpoints.

Invariants:
- the witness only moves forward: it remembers, per log, the last note it cosigned
  (`data/witness.json`, written atomically and fsynced, directory included) and cosigns a new
  note only when it provably extends that one; the note is on disk before its cosignature is
  sent, so no crash makes the witness forget a note it vouched for;
- two notes that cannot both be true (same size and different roots, a failing consistency
  proof, or a smaller size: the log's current tree went back) are a fork (`fork_reason`, the
  rule `node.accesslog.witness_checkpoint` follows too): both notes and the consistency proof
  the log answered are kept as evidence (`data/witness-alarms.jsonl`, `alarm_record`; anybody
  with the log's key checks it again with `check_alarm`), an `alarm` entry (reason
  `fork_detected`) is appended to the platform's own access log, and the witness keeps the
  old note (it never cosigns the fork).

The log is named by its node id in the signed note (AccessLog key_name), while its origin line
is `zhangdian.credex/<node id>` (`node.config.log_origin`), so verification always passes
`log_name` explicitly. The origin is pinned, from the first contact on: a note of any other
origin is refused like a note the log did not sign (no cosignature, no state, an `error`
outcome), never trusted because it came first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

import keys
from node._pb.credex.v1 import transparency_pb2, transparency_pb2_grpc
from node.accesslog import ForkDetected, LogEntry, fork_reason, utc_iso
from node.config import log_origin
from node.durable import fsync_dir
from node.errors import InputError, NodeError

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = [
    "ALARMS_FILE",
    "STATE_FILE",
    "WITNESS_INTERVAL",
    "WitnessOutcome",
    "WitnessState",
    "alarm_record",
    "background",
    "check_alarm",
    "cosign_extension",
    "cosign_once",
    "fork_reason",
    "verify_log_note",
    "witness_peer",
    "witness_round",
]

WITNESS_INTERVAL = 3.0
STATE_FILE = "witness.json"
ALARMS_FILE = "witness-alarms.jsonl"
PLATFORM_ROLE = "platform"


def verify_log_note(note: str, *, log_name: str, log_keys: Sequence[bytes]) -> keys.Checkpoint:
    """Verify a checkpoint signed by log `log_name` with any of `log_keys` (current key and
    keys inside their rotation overlap). Raises keys.VerificationError when none verifies."""
    # A signed-note verifier holds several keys per name; each signature line names its key.
    return keys.verify_checkpoint(note, verifiers={log_name: tuple(log_keys)}, log_name=log_name)


def cosign_extension(
    previous_note: str | None,
    new_note: str,
    proof: Sequence[bytes],
    *,
    log_name: str,
    log_keys: Sequence[bytes],
    name: str,
    signer: keys.Signer,
) -> str:
    """Return `new_note` cosigned by witness `name` when it extends `previous_note`.

    Refuses: keys.VerificationError for a note the log did not sign, or one with a line in the
    witness's name that is not the witness's signature (`cosign_once`); InputError for a note
    whose origin is not `log_origin(log_name)`, the first one included, and for notes of
    different origins; ForkDetected for the same size with another root, a smaller size, or a
    consistency proof that fails.
    """
    new = verify_log_note(new_note, log_name=log_name, log_keys=log_keys)
    if new.origin != log_origin(log_name):
        # Not quoted: the origin line is the log's text, and the expected one says enough.
        raise InputError(
            f"witness: log {log_name} shows a checkpoint whose origin is not "
            f"{log_origin(log_name)}; refusing it"
        )
    if previous_note is not None:
        # Verified when this witness cosigned it; its log key may have been retired since.
        old = keys.read_checkpoint(previous_note)
        if old.origin != new.origin:
            raise InputError(f"witness: log {log_name} changed its origin line")
        why = fork_reason(old, new, proof)
        if why is not None:
            raise ForkDetected(f"log {log_name}: {why}")
    return cosign_once(new_note, name=name, signer=signer)


def cosign_once(note: str, *, name: str, signer: keys.Signer) -> str:
    """`note` with the cosignature of witness `name` (key `signer`): added, or, when the note
    already carries a line of `name` with this key (the log showed a note cosigned before),
    returned as it is once that line verifies.

    Raises keys.VerificationError when the line in our name is not our signature: its key id
    is public, so anybody can write one, and passing it on as "already cosigned" would vouch
    for a signature this witness never made (and `credex log witnessed` could not give it)."""
    try:
        return keys.cosign_note(note, name=name, signer=signer)
    except keys.KeysError:
        pass
    keys.verify_note(note, verifiers={name: signer.public_key})
    return note


@dataclass
class WitnessState:
    """The last note cosigned per log (node id), persisted in the platform's data directory.

    `alarmed` (in memory only) remembers, per log, the witnessed note a fork was last recorded
    against, so that a fork that persists is recorded once, not on every visit (the forked log
    signs a new checkpoint about every second, but the note it forked from stays); a new alarm
    comes only when that note changes, or after a restart.

    `delivered` (in memory only) holds, per log, the note whose cosignature the log is known to
    have received: the state is written before the cosignature is sent, so a note that is in
    `latest` but not `delivered` (the sending failed, or the witness restarted) is sent again
    (storing a cosignature twice is harmless)."""

    path: Path
    latest: dict[str, str] = field(default_factory=dict)
    alarmed: dict[str, str] = field(default_factory=dict, compare=False)
    delivered: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def load(cls, data_dir: Path) -> WitnessState:
        """Read `data/witness.json` (a missing file is an empty state; a corrupt one refuses)."""
        path = data_dir / STATE_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: the witness state does not parse ({error})") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise InputError(f"{path}: the witness state must map node ids to notes")
        return cls(path, dict(doc))

    def save(self, latest: Mapping[str, str] | None = None) -> None:
        """Write `latest` (default: the state's own) durably and atomically: a temporary file,
        fsynced, renamed over the old one, and the directory fsynced so that the rename itself
        survives a power loss (a witness that comes back remembering an older note could
        cosign a fork of the newer one)."""
        doc = dict(self.latest if latest is None else latest)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(doc, sort_keys=True, indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        fsync_dir(self.path.parent)

    def remember(self, peer: str, note: str) -> None:
        """Make `note` the last note witnessed of `peer`: on disk first, then in memory, so
        that the memory never holds what the disk may not (OSError propagates)."""
        self.save({**self.latest, peer: note})
        self.latest[peer] = note


@dataclass(frozen=True)
class WitnessOutcome:
    """What one witness visit to a log did: `cosigned`, `unchanged`, `fork` or `error`."""

    peer: str
    status: str
    size: int | None = None
    message: str = ""


def _peer_keys(rt: NodeRuntime, peer: str) -> list[bytes]:
    return list(rt.bundle().node_signing_keys(peer, rt.clock()).values())


def alarm_record(
    *, time: str, log: str, witnessed: str, shown: str, why: str, proof: Sequence[bytes]
) -> dict[str, Any]:
    """The evidence of a fork, one line of the alarms file: the note this witness cosigned,
    the note the log showed (both signed by the log), why they cannot both be true, and the
    consistency proof the log answered between them (base64 hashes; empty when none was asked
    for: same size, or a smaller one). Anybody holding the log's public key can check it again
    (`check_alarm`), without trusting the witness."""
    return {
        "time": time,
        "log": log,
        "witnessed": witnessed,
        "shown": shown,
        "why": why,
        "consistency_proof": [base64.b64encode(h).decode("ascii") for h in proof],
    }


def check_alarm(record: Mapping[str, Any], *, log_keys: Sequence[bytes]) -> str:
    """Check a fork's evidence (`alarm_record`) again: both notes must be signed by the log
    (`log_keys`: its keys, retired ones included) and must not both be true. Returns why they
    cannot; raises keys.VerificationError when a note is not the log's, or InputError when the
    evidence does not show a fork (the shown note provably extends the witnessed one)."""
    log_name = str(record["log"])
    old = verify_log_note(str(record["witnessed"]), log_name=log_name, log_keys=log_keys)
    new = verify_log_note(str(record["shown"]), log_name=log_name, log_keys=log_keys)
    if old.origin != new.origin:
        raise InputError(f"alarm of log {log_name}: the two notes name different origins")
    proof = [base64.b64decode(h, validate=True) for h in record.get("consistency_proof", [])]
    why = fork_reason(old, new, proof)
    if why is not None:
        return why
    if new.size == old.size:
        raise InputError(f"alarm of log {log_name}: the two notes are the same checkpoint")
    raise InputError(
        f"alarm of log {log_name}: the proof shows checkpoint {new.size} extends {old.size}"
    )


def _record_alarm(rt: NodeRuntime, record: Mapping[str, Any]) -> None:
    """Append `record` (alarm_record) to the alarms file, fsynced, then log the alarm."""
    path = rt.config.data_dir / ALARMS_FILE
    new = str(record["shown"])
    line = json.dumps(record, ensure_ascii=False, sort_keys=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    rt.log.append_sync(
        LogEntry(
            time=utc_iso(rt.clock()),
            kind="alarm",
            requester=str(record["log"]),
            officer="",
            purpose="witness",
            legal_basis="",
            decision="deny",
            reason="fork_detected",
            request_id=hashlib.sha256(new.encode()).hexdigest()[:32],
        )
    )


async def witness_peer(
    rt: NodeRuntime,
    peer: str,
    state: WitnessState,
    *,
    channel: grpc.aio.Channel | None = None,
    timeout: float = 10.0,
) -> WitnessOutcome:
    """Witness one department's log once (see the module docstring).

    Returns the outcome; a fork is recorded (alarm file + access-log entry) and returned with
    status `fork`, never raised. Network and verification errors propagate.
    """
    own = channel is None
    chan = rt.channel(peer) if channel is None else channel
    try:
        stub = transparency_pb2_grpc.TransparencyStub(chan)
        shown = await stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest(), timeout=timeout)
        note = shown.note
        log_keys = _peer_keys(rt, peer)
        new = verify_log_note(note, log_name=peer, log_keys=log_keys)
        previous = state.latest.get(peer)
        old_size = 0
        proof: list[bytes] = []
        if previous is not None:
            # our own state, verified when we cosigned it (its log key may be retired since)
            old = keys.read_checkpoint(previous)
            old_size = old.size
            if 0 < old.size < new.size:
                answer = await stub.GetConsistencyProof(
                    transparency_pb2.GetConsistencyProofRequest(size1=old.size, size2=new.size),
                    timeout=timeout,
                )
                proof = list(answer.hashes)
        try:
            cosigned = cosign_extension(
                previous,
                note,
                proof,
                log_name=peer,
                log_keys=log_keys,
                name=rt.node_id,
                signer=rt.node_keys.signing,
            )
        except ForkDetected as fork:
            # not the shown note: a forked log that keeps serving shows a new one every visit
            seen = hashlib.sha256((previous or "").encode()).hexdigest()
            if state.alarmed.get(peer) != seen:
                record = alarm_record(
                    time=utc_iso(rt.clock()),
                    log=peer,
                    witnessed=previous or "",
                    shown=note,
                    why=str(fork),
                    proof=proof,
                )
                await asyncio.to_thread(_record_alarm, rt, record)
                state.alarmed[peer] = seen
            return WitnessOutcome(peer, "fork", new.size, str(fork))
        if note == previous and state.delivered.get(peer) == note:
            return WitnessOutcome(peer, "unchanged", new.size)
        if note != previous:
            # Durable before the cosignature leaves (c2sp.org/tlog-witness): a witness that
            # crashed after sending it would otherwise come back knowing only the older note
            # and cosign a fork of this one.
            await asyncio.to_thread(state.remember, peer, note)
        await stub.Cosign(
            transparency_pb2.CosignRequest(
                note=cosigned, old_size=old_size, consistency_proof=proof
            ),
            timeout=timeout,
        )
        state.delivered[peer] = note
        return WitnessOutcome(peer, "cosigned", new.size)
    finally:
        if own:
            await chan.close()


def _witnessed_logs(rt: NodeRuntime) -> list[str]:
    return sorted(
        e.node_id
        for e in rt.bundle().roster
        if e.node_id != rt.node_id and PLATFORM_ROLE not in e.roles and e.valid_at(rt.clock())
    )


async def witness_round(
    rt: NodeRuntime,
    state: WitnessState,
    *,
    channels: Mapping[str, grpc.aio.Channel] | None = None,
) -> list[WitnessOutcome]:
    """Witness every department of the roster once; a peer that cannot be reached or fails
    verification is reported as `error` and the others are still witnessed."""
    outcomes: list[WitnessOutcome] = []
    for peer in _witnessed_logs(rt):
        try:
            outcome = await witness_peer(rt, peer, state, channel=(channels or {}).get(peer))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            outcome = WitnessOutcome(peer, "error", None, code.name if code else "error")
        except (NodeError, keys.KeysError) as error:
            outcome = WitnessOutcome(peer, "error", None, str(error))
        outcomes.append(outcome)
    return outcomes


def background(
    runtime: NodeRuntime,
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """The witness loop, on platform nodes only."""
    if runtime.config.node.role != PLATFORM_ROLE:
        return []

    async def loop(stop: asyncio.Event) -> None:
        state = await asyncio.to_thread(WitnessState.load, runtime.config.data_dir)
        while not stop.is_set():
            await witness_round(runtime, state)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WITNESS_INTERVAL)

    return [loop]
