"""Sealing planned record versions: sign, blind-index and encrypt, in-process or in workers.

Ingest decides everything that depends on order or on the store (version, row id, which rows
are unchanged) in its own process, one batch after another; what is left per record is pure
computation on the node's keys: the selective-disclosure signature, the blind-index tokens, the
disclosure period and the at-rest encryption. That part is the larger half of a record's cost,
so it may run in a pool of worker processes while the ingest process reads, validates and
commits the neighbouring batches.

Promises:
- `seal(...)` gives the NewRecords of its jobs in the jobs' order, whichever way it runs; the
  result of a batch does not depend on the number of workers (salts and nonces are random in
  both ways, everything else is identical);
- key material never leaves memory: the workers are forked from the ingest process and inherit
  the keys there; nothing key-related is pickled, written, logged or sent down a pipe (only the
  jobs go to the workers and only the sealed records come back);
- a worker never outlives the ingest process: each one watches a pipe whose only write end the
  parent holds, and exits when the parent is gone (a kill -9 included), so no orphan keeps key
  material in memory or a database file open;
- where 'fork' is unavailable, or in a daemonic process (which multiprocessing forbids to have
  children), the pool is not used: one process, same output.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import catalog as cat
import keys
from node.forksafe import fork_window, set_inherited_aside
from node.store import NewRecord

__all__ = ["SealJob", "Sealer", "auto_workers"]

# Above this many workers the ingest process's own serial share (reading, validating, committing)
# is the bound, so more processes only add forks and pickling.
_MAX_AUTO_WORKERS = 8
# Jobs per task: large enough that pickling and queueing stay a small share of a task, small
# enough that a 1000-row batch is spread over two workers or more.
_CHUNK = 250


@dataclass(frozen=True)
class SealJob:
    """One record version to seal; everything order-dependent is already decided."""

    row_id: str
    record_key: str
    version: int
    content_hash: str
    item_id: str
    catalog_version: str
    fields: dict[str, str]
    subject_id: str
    linked_subject_ids: tuple[str, ...]
    severity: str | None
    decided_on: dt.date | None
    # the stated end of the dishonest conduct (Shandong Art. 38 counts the 5-year cap from it)
    conduct_ended_on: dt.date | None = None
    # the end of an entry's validity (red list 有效期至; NormalisedRecord.disclosure_end)
    disclosure_end: dt.date | None = None


@dataclass(frozen=True)
class _Crypto:
    """The node's keys in the form sealing uses. Never pickled (workers are forked)."""

    signer: keys.Signer
    cipher: keys.StorageCipher
    blind: keys.BlindIndex

    def __repr__(self) -> str:
        return "_Crypto(<keys hidden>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        # A guard, not a feature: if a change ever made the pool pickle its initializer
        # arguments (a spawn or forkserver context), it fails here instead of sending keys.
        raise TypeError("the node's keys are never pickled")


def auto_workers() -> int:
    """The default worker count: the CPUs this process may use, at most 8."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        usable = os.cpu_count() or 1
    return max(1, min(usable, _MAX_AUTO_WORKERS))


# What a worker sends back per job: subject index, encrypted body, disclosure period (min end,
# max end, rule) and linked subject indexes. A plain tuple, not a NewRecord: pickling a
# dataclass costs several times as much, and the rest of a NewRecord is already in the job.
_Sealed = tuple[str, bytes, dt.date | None, dt.date | None, str, tuple[str, ...]]


def _seal(
    crypto: _Crypto, producer: str, now: dt.datetime, jobs: Sequence[SealJob]
) -> list[_Sealed]:
    issued_at = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    token = crypto.blind.token
    out: list[_Sealed] = []
    for job in jobs:
        subject = token(job.subject_id)
        header = {
            "item": job.item_id,
            "catalog_version": job.catalog_version,
            "record_key": job.record_key,
            "version": job.version,
            "producer": producer,
            "issued_at": issued_at,
            "subject": subject,
        }
        signed = keys.sign_record(header, job.fields, crypto.signer)
        period = _period(job)
        out.append(
            (
                subject,
                crypto.cipher.encrypt(job.row_id, signed.to_bytes()),
                period.min_end,
                period.max_end,
                period.rule,
                tuple(token(s) for s in job.linked_subject_ids),
            )
        )
    return out


def _records(
    producer: str, now: dt.datetime, jobs: Sequence[SealJob], sealed: Sequence[_Sealed]
) -> list[NewRecord]:
    return [
        NewRecord(
            row_id=job.row_id,
            producer=producer,
            record_key=job.record_key,
            version=job.version,
            item_id=job.item_id,
            catalog_version=job.catalog_version,
            subject_index=subject,
            body=body,
            content_hash=job.content_hash,
            severity=job.severity,
            decided_on=job.decided_on,
            disclosure_min_end=min_end,
            disclosure_max_end=max_end,
            disclosure_rule=rule,
            created_at=now,
            linked_subject_indexes=linked,
        )
        for job, (subject, body, min_end, max_end, rule, linked) in zip(jobs, sealed, strict=True)
    ]


def _period(job: SealJob) -> cat.DisclosurePeriod:
    """The window stored with a version (catalog.record_period).

    `validate_record` gives every dishonesty record a severity (`ungraded` when one decided
    before 2026-04-01 states none), so a None severity means "not 失信信息": no period, unless
    the entry's validity ends (red list 有效期至, `disclosure_end`). Every dishonesty record gets
    one, and a withheld one (轻微 under 令第36号) gets the explicit empty window, never "no end":
    readers treat a missing end as "never ends".
    """
    return cat.record_period(
        job.severity,
        job.decided_on,
        conduct_ended_on=job.conduct_ended_on,
        disclosure_end=job.disclosure_end,
    )


# ------------------------------------------------------------------ the worker side

_WORKER_CRYPTO: _Crypto | None = None


def _worker_start(crypto: _Crypto, parent_gone: int, parent_alive: int) -> None:
    """Runs first in each forked worker: set inherited objects aside for good (never collected
    here, see Sealer._start), keep the inherited keys, watch the parent."""
    set_inherited_aside()
    global _WORKER_CRYPTO  # noqa: PLW0603 - the per-process state a pool initializer sets up
    _WORKER_CRYPTO = crypto
    # Ctrl-C reaches the whole process group: the parent handles it and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.close(parent_alive)  # the parent's copy is now the only write end
    threading.Thread(target=_exit_with_parent, args=(parent_gone,), daemon=True).start()


def _exit_with_parent(fd: int) -> None:
    # read() returns b"" once no process holds the write end: the parent ended, even by
    # kill -9. Leave at once, without cleanup that could touch the parent's database handles.
    while os.read(fd, 1):
        pass
    os._exit(1)


def _seal_in_worker(producer: str, now: dt.datetime, jobs: Sequence[SealJob]) -> list[_Sealed]:
    assert _WORKER_CRYPTO is not None, "sealer worker started without its initializer"
    return _seal(_WORKER_CRYPTO, producer, now, jobs)


# ------------------------------------------------------------------ the parent side


class Sealer:
    """Seals batches of jobs for one ingest run, in-process or in `workers` forked processes.

    `submit` returns a callable that gives the batch's NewRecords in job order (waiting for the
    workers if needed, re-raising their errors). The pool is forked at the first `submit` with
    `pooled=True`, so a run that never asks for it (one batch, or `workers == 1`) forks nothing.
    `close` stops the workers; use the sealer as a context manager.
    """

    def __init__(self, node_keys: keys.NodeKeys, producer: str, *, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be 1 or more")
        self._crypto = _Crypto(
            node_keys.signing,
            keys.StorageCipher(node_keys.storage_key),
            keys.BlindIndex(node_keys.blind_index_key),
        )
        self._producer = producer
        # multiprocessing forbids children of a daemonic process (an ingest run inside one
        # seals in-process instead), and without fork the keys could only be pickled across.
        can_fork = "fork" in multiprocessing.get_all_start_methods()
        daemonic = multiprocessing.current_process().daemon
        self._workers = workers if can_fork and not daemonic else 1
        self._pool: ProcessPoolExecutor | None = None
        self._watch: tuple[int, int] | None = None

    @property
    def producer(self) -> str:
        """The node id the sealed records name as their producer."""
        return self._producer

    @property
    def workers(self) -> int:
        """The number of worker processes this sealer may use (1: it seals in-process)."""
        return self._workers

    def __enter__(self) -> Sealer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self, now: dt.datetime, jobs: Sequence[SealJob], *, pooled: bool = True
    ) -> Callable[[], list[NewRecord]]:
        """Start sealing `jobs` stamped `now`; return the callable that gives their records."""
        producer = self._producer
        if self._workers == 1 or not pooled:
            done = _records(producer, now, jobs, _seal(self._crypto, producer, now, jobs))
            return lambda: done
        # Fork at the first pooled batch whatever its size: the caller starts its own threads
        # only after that, and a fork should not copy a process in the middle of their work.
        pool = self._start()
        if len(jobs) < 2:
            done = _records(producer, now, jobs, _seal(self._crypto, producer, now, jobs))
            return lambda: done
        size = max(1, min(_CHUNK, -(-len(jobs) // self._workers)))
        futures: list[Future[list[_Sealed]]] = [
            pool.submit(_seal_in_worker, producer, now, jobs[i : i + size])
            for i in range(0, len(jobs), size)
        ]

        def gather() -> list[NewRecord]:
            sealed = [one for future in futures for one in future.result()]
            return _records(producer, now, jobs, sealed)

        return gather

    def close(self) -> None:
        """Stop the workers (pending work is cancelled) and release the watch pipe."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        watch, self._watch = self._watch, None
        if watch is not None:
            for fd in watch:
                os.close(fd)

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            gone, alive = os.pipe()
            self._watch = (gone, alive)
            pool = ProcessPoolExecutor(
                max_workers=self._workers,
                # fork, so the keys reach the workers by inheritance and are never pickled
                mp_context=multiprocessing.get_context("fork"),
                initializer=_worker_start,
                initargs=(self._crypto, gone, alive),
            )
            # The first task forks every worker (a fork pool starts them all at once); nothing
            # inherited from this process is ever freed in a worker (node/forksafe.py).
            with fork_window():
                pool.submit(os.getpid)
            self._pool = pool
        return self._pool
