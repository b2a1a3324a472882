"""Checking received records: the producer's signature and every disclosure, then the disclosed
fields against our catalogue, in this process or in a pool of spawned worker processes.

A subscriber spends most of a feed record's cost here (Ed25519 verification, the disclosure
digests, catalogue re-validation), and none of it needs a secret: the inputs are the received
bytes, the producer's public keys, the catalogue and the day. What does need the node's keys
(blind-indexing the subject, encrypting the row at rest) stays with the caller. So a large batch
can be checked by several processes while the node's own process stores the previous one.

Promises:
- `check_records` is pure: the same bytes, keys, day and catalogue give the same outcomes, in
  the order of the bytes, whether they were checked here or in workers;
- a record that fails is an outcome (`Refused`), not an exception, so the caller reports the
  first failure in feed order and stores nothing of the batch;
- only public data reaches a worker (public keys, the catalogue, the day, the received
  records); the workers are spawned, fresh interpreters that inherit nothing from the node
  process (no gRPC state, no keys), and each leaves when the process that started it is gone;
- a pool that breaks (a worker killed, or one that cannot start) costs nothing but speed: the
  batch is checked here, and so are the later ones (logged once).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields
from typing import Any, Literal

import catalog as cat
import keys
from adapters.identity import content_hash

__all__ = ["CheckedRecord", "RecordChecker", "Refused", "check_records", "checked_from_verified"]

log = logging.getLogger(__name__)

# Below this many records a batch is checked in-process: handing it to workers (pickling, the
# round trip, and the spawn of the first batch) would cost more than it saves.
MIN_POOL_BATCH = 200
# Records per worker task: large enough that pickling and queueing stay a small share of a
# task, small enough that a 1000-record batch is spread over every worker.
_CHUNK = 125
_PARENT_POLL_S = 1.0


@dataclass(frozen=True)
class CheckedRecord:
    """A received record whose signature and disclosures verified, with what re-validation
    found: `subject_id` and the rest are None/empty when the disclosed fields did not validate
    here (catalogue drift) or some were withheld (a minimised record)."""

    header: Mapping[str, Any]
    signer_keyid: str
    content_hash: str
    subject_id: str | None
    linked_subject_ids: tuple[str, ...]
    severity: str | None
    decided_on: dt.date | None
    disclosure_end: dt.date | None = None  # NormalisedRecord.disclosure_end (red list)
    conduct_ended_on: dt.date | None = None  # NormalisedRecord.conduct_ended_on (Shandong cap)


@dataclass(frozen=True)
class Refused:
    """Why a received record was refused: `input` (not a compact signed record) or
    `verification` (signature, key or disclosure), with the message the caller raises."""

    kind: Literal["input", "verification"]
    message: str


Outcome = CheckedRecord | Refused

NOT_COMPACT = "credex.v1.Record: signed_record is not a compact record"


def checked_from_verified(
    verified: keys.VerifiedRecord, *, today: dt.date, catalogue: cat.Catalog
) -> CheckedRecord:
    """Re-validate a verified record's disclosed fields against `catalogue` (see CheckedRecord)."""
    fields = dict(verified.fields)
    record = None
    if not verified.hidden:
        with contextlib.suppress(cat.CatalogError):
            record = cat.validate_record(
                str(verified.header["item"]), fields, today=today, catalog=catalogue
            ).record
    return CheckedRecord(
        header=verified.header,
        signer_keyid=verified.signer_keyid,
        content_hash=content_hash(fields),
        subject_id=record.subject_id if record is not None else None,
        linked_subject_ids=record.linked_subject_ids if record is not None else (),
        severity=record.severity if record is not None else None,
        decided_on=record.decided_on if record is not None else None,
        disclosure_end=record.disclosure_end if record is not None else None,
        conduct_ended_on=record.conduct_ended_on if record is not None else None,
    )


def check_records(
    bodies: Sequence[bytes],
    *,
    trusted: Mapping[str, bytes],
    today: dt.date,
    catalogue: cat.Catalog,
) -> list[Outcome]:
    """Parse, verify (against `trusted`: key id -> Ed25519 public key) and re-validate each
    compact signed record; one outcome per body, in order."""
    out: list[Outcome] = []
    for body in bodies:
        try:
            signed = keys.SignedRecord.from_bytes(body)
        except keys.KeysError:
            out.append(Refused("input", NOT_COMPACT))
            continue
        try:
            verified = keys.verify_record(signed, trusted=trusted)
        except keys.VerificationError as error:
            out.append(Refused("verification", str(error)))
            continue
        out.append(checked_from_verified(verified, today=today, catalogue=catalogue))
    return out


# -- the worker side ---------------------------------------------------------------------------

_WORKER_CATALOGUE: cat.Catalog | None = None

# What crosses the pipe back per record: plain tuples, which pickle several times faster than
# the dataclasses: ("ok", <every CheckedRecord field, in declaration order>) or
# ("refused", kind, message). The field list is read from the dataclass, so a field added to
# CheckedRecord travels too instead of silently falling back to its default.
_Wire = tuple[Any, ...]
_CHECKED_FIELDS = tuple(f.name for f in fields(CheckedRecord))


def _worker_start(catalogue: cat.Catalog, parent: int) -> None:
    """Runs first in each spawned worker: keep the catalogue, ignore Ctrl-C (the node handles
    it and stops the pool), and leave as soon as the node process is gone."""
    global _WORKER_CATALOGUE  # noqa: PLW0603 - the per-process state a pool initializer sets up
    _WORKER_CATALOGUE = catalogue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # A spawned worker holds both ends of its task queue, so the parent's death does not close
    # it: watch the parent id instead (a killed parent's children are re-parented).
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _check_in_worker(
    bodies: Sequence[bytes], trusted: Mapping[str, bytes], today: dt.date
) -> list[_Wire]:
    assert _WORKER_CATALOGUE is not None, "feed-check worker started without its initializer"
    return [
        _to_wire(o)
        for o in check_records(bodies, trusted=trusted, today=today, catalogue=_WORKER_CATALOGUE)
    ]


def _to_wire(outcome: Outcome) -> _Wire:
    if isinstance(outcome, Refused):
        return ("refused", outcome.kind, outcome.message)
    values = [getattr(outcome, name) for name in _CHECKED_FIELDS]
    # the verified header may be a read-only mapping view, which does not pickle
    values[_CHECKED_FIELDS.index("header")] = dict(outcome.header)
    return ("ok", *values)


def _from_wire(item: _Wire) -> Outcome:
    if item[0] == "refused":
        return Refused(item[1], item[2])
    values = dict(zip(_CHECKED_FIELDS, item[1:], strict=True))
    values["linked_subject_ids"] = tuple(values["linked_subject_ids"])
    return CheckedRecord(**values)


# -- the node side -----------------------------------------------------------------------------


class RecordChecker:
    """Checks batches of received records (check_records), in-process or, for batches of
    `min_pool_batch` records or more, in `workers` spawned processes started on first need.

    Thread-safe: several feeds may check batches at once. `close` stops the workers.
    """

    def __init__(
        self, catalogue: cat.Catalog, *, workers: int, min_pool_batch: int = MIN_POOL_BATCH
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be 1 or more")
        self._catalogue = catalogue
        self._workers = workers
        self._min_pool_batch = max(1, min_pool_batch)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._broken = False

    @property
    def workers(self) -> int:
        """The number of worker processes a large batch is spread over (1: in-process)."""
        return self._workers

    def check(
        self, bodies: Sequence[bytes], *, trusted: Mapping[str, bytes], today: dt.date
    ) -> list[Outcome]:
        """Outcomes of `check_records` for `bodies`, in order, wherever they were computed."""
        pool = self._pool_for(len(bodies))
        if pool is None:
            return check_records(bodies, trusted=trusted, today=today, catalogue=self._catalogue)
        size = max(1, min(_CHUNK, -(-len(bodies) // self._workers)))
        try:
            futures: list[Future[list[_Wire]]] = [
                pool.submit(_check_in_worker, bodies[i : i + size], dict(trusted), today)
                for i in range(0, len(bodies), size)
            ]
            return [_from_wire(item) for future in futures for item in future.result()]
        except BrokenProcessPool:
            # A worker died (killed, out of memory, or it could not start): nothing of the batch
            # is lost, it is checked here; so is every later one, rather than spawning again
            # and again into the same failure.
            log.warning(
                "feed-check workers stopped unexpectedly; records are checked in the node "
                "process from now on (restart the node to use workers again)"
            )
            self._discard(pool)
        except (CancelledError, RuntimeError):
            # The node closed the pool under this batch (its tasks were cancelled, or new ones
            # refused): finish the batch here. Any other RuntimeError is a fault to report.
            if not self._closed:
                raise
        return check_records(bodies, trusted=trusted, today=today, catalogue=self._catalogue)

    def close(self) -> None:
        """Stop the workers (a later check runs in-process)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _pool_for(self, count: int) -> ProcessPoolExecutor | None:
        if self._workers == 1 or count < self._min_pool_batch:
            return None
        with self._lock:
            if self._closed or self._broken:
                return None
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_start,
                    initargs=(self._catalogue, os.getpid()),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            self._broken = True
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)
