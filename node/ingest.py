"""Ingest: department rows in, signed, encrypted, versioned records out (DESIGN.md section 3).

    adapters (read, map) -> catalog (validate) -> keys.sign_record -> StorageCipher -> store

Promises:
- each batch is committed in ONE transaction together with the adapter's resume state, so a
  crash or kill -9 at any moment neither loses nor duplicates a record: a re-run resumes after
  the last committed batch, and rows of an uncommitted batch are read again;
- idempotent by record key: a row whose (record key, content hash) is already stored is counted
  `skipped_unchanged`; a changed row becomes the next version (a correction) and the store marks
  the older version superseded; nothing is overwritten;
- the lifecycle wins over the source (docs/lifecycle.md, "Re-ingest and the lifecycle"): a
  changed row of a record whose newest version is withdrawn (repair, revocation), expired or
  purged is never stored and is counted `skipped_lifecycle` ("kept withdrawn by lifecycle",
  not a reject; an unchanged one stays `skipped_unchanged`); a row is also compared with the
  newest version that came from the source, so an unchanged export never undoes a lifecycle
  correction (a changed row still becomes a new version: the department changed its data);
  an open objection carries over to a new version;
- `read == accepted + rejected + skipped_unchanged + skipped_lifecycle` for every run
  (`corrected` is the part of `accepted` that were new versions of existing records);
- subjects are stored only as blind-index tokens and bodies only encrypted (row id as AAD);
- rejected rows go to `rejects/<run-id>.csv` and `.jsonl` before their batch commits, so a
  report is never missing a reject (a killed run's replayed rows appear again in the next run's
  report, which is a report, not data).

Feed events: the store appends them per subscriber in the batch's transaction. Subscriptions
come from the trust bundle's "feed" agreements naming this node as provider; they are created
(and backfilled with the records already stored) before the first batch, so a subscriber never
misses a record whichever of bundle and ingest comes first.
A row whose disclosure is already over on the China day of the batch (an old decision past its
maximum period or the Shandong 5-year cap) is stored `expired`, never `active`: it is kept as
history and counted `accepted`, but never published (its feed event travels without a body).

File sources keep their resume state only while a run is unfinished (a finished run clears it,
so the next export of the same file is read in full and unchanged rows are skipped); SQL sources
keep it, because their watermark is what makes the next run incremental.

Telemetry (node/telemetry.py): a run is the stage span "ingest" (item id, rows read) with one
child per batch and step: "ingest.read" (read, map and validate), "ingest.sign" (sign and
encrypt, from hand-over to the sealer until the committer has the sealed records) and
"ingest.commit" (the batch's transaction). Spans are per batch, never per row, and carry
counts and the item id only.
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adapters
import catalog as cat
import keys
from node.accesslog import AccessLog
from node.config import NodeConfig
from node.errors import ConfigError
from node.record_tags import ensure_adopted, row_tagger
from node.sealer import Sealer, SealJob, auto_workers
from node.store import CLOSED_STATES, NewRecord, RecordHead, SqlLogBackend, Store, open_store
from node.telemetry import Stage, Telemetry, telemetry_for, use_telemetry

__all__ = ["IngestSummary", "run_ingest", "source_key", "sync_feed_subscriptions"]

ProgressCallback = Callable[[adapters.Batch], None]
_INCREMENTAL_KINDS = frozenset({"sql"})


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest run did.

    `read == accepted + rejected + skipped_unchanged + skipped_lifecycle`; `skipped_lifecycle`
    counts changed rows of records the lifecycle keeps withdrawn (repaired, revoked, expired,
    purged), which are not stored.
    """

    run_id: str
    read: int
    accepted: int
    rejected: int
    skipped_unchanged: int
    corrected: int
    batches: int
    seconds: float
    events: int
    skipped_lifecycle: int = 0
    reject_files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    top_reasons: tuple[tuple[str, str, int], ...] = field(default=())

    @property
    def balanced(self) -> bool:
        """True when every row read is accounted for exactly once."""
        return (
            self.read
            == self.accepted + self.rejected + self.skipped_unchanged + self.skipped_lifecycle
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready totals (no row content)."""
        return {
            "run_id": self.run_id,
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "skipped_unchanged": self.skipped_unchanged,
            "skipped_lifecycle": self.skipped_lifecycle,
            "corrected": self.corrected,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.read / self.seconds, 1) if self.seconds else None,
            "events": self.events,
            "reject_files": [str(p) for p in self.reject_files],
            "warnings": list(self.warnings),
            "top_reasons": [{"field": f, "code": c, "count": n} for f, c, n in self.top_reasons],
        }


def source_key(mapping: adapters.MappingSpec) -> str:
    """The key the resume state of a mapping's source is saved under."""
    return f"{mapping.item}|{mapping.source.kind}|{mapping.source.name}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_ingest(
    config: NodeConfig,
    mapping_path: Path,
    *,
    today: dt.date,
    progress: ProgressCallback | None = None,
    clock: Callable[[], dt.datetime] = _utcnow,
    node_keys: keys.NodeKeys | None = None,
    passphrase: bytes | None = None,
    batch_size: int = 1000,
    restart: bool = False,
    store: Store | None = None,
    catalog: cat.Catalog | None = None,
    workers: int | None = None,
    telemetry: Telemetry | None = None,
) -> IngestSummary:
    """Ingest the source a mapping names into the node's store; return the run's summary.

    `today` drives validation (future dates, ID birth dates); `clock` stamps records. `restart`
    forgets a saved resume state first. `workers` (default: `[ingest] workers` of the config)
    is how many forked processes sign and encrypt; 1 does it all in this process, and the
    result is the same either way. `telemetry` records the run's stages (default: what
    `[telemetry]` of the config asks for, set up and flushed by this call, as `credex serve`
    does). Refuses (ConfigError) keys of another node; mapping, source, catalogue, key and
    store problems surface as their own errors (nothing half-written: batches already
    committed stay, with the resume state that matches them).
    """
    owned = telemetry is None
    if telemetry is None:
        telemetry = telemetry_for(config)
    try:
        with use_telemetry(telemetry):
            return _ingest(
                config, mapping_path,
                today=today, progress=progress, clock=clock, node_keys=node_keys,
                passphrase=passphrase, batch_size=batch_size, restart=restart, store=store,
                catalog=catalog, workers=workers, telemetry=telemetry,
            )  # fmt: skip
    finally:
        if owned:
            telemetry.shutdown()


def _ingest(
    config: NodeConfig,
    mapping_path: Path,
    *,
    today: dt.date,
    progress: ProgressCallback | None,
    clock: Callable[[], dt.datetime],
    node_keys: keys.NodeKeys | None,
    passphrase: bytes | None,
    batch_size: int,
    restart: bool,
    store: Store | None,
    catalog: cat.Catalog | None,
    workers: int | None,
    telemetry: Telemetry,
) -> IngestSummary:
    started = time.perf_counter()
    mapping = adapters.load_mapping(mapping_path)
    node_keys = node_keys or keys.load_key_dir(config.keys_dir, passphrase=passphrase)
    producer = config.node.id
    if node_keys.node_id != producer:
        raise ConfigError(
            f"{config.keys_dir}: keys belong to node {node_keys.node_id!r}, "
            f"but credex.toml [node] id is {producer!r}"
        )
    catalog = catalog or cat.default_catalog()
    own_store = store is None
    opened = store or open_store(config.store.url)
    # Ingest writes with the keys it signs with, whoever opened the store (`credex ingest`
    # opens it before the keys are unlocked); an older release's rows are adopted first.
    db = opened if opened.tagger is not None else opened.with_tagger(row_tagger(node_keys))
    try:
        ensure_adopted(
            db, lambda: _adoption_log(config, db, node_keys, clock), node_id=producer, now=clock()
        )
        with telemetry.stage("ingest", attributes={"credex.item": mapping.item}) as run:
            summary = _run(
                config, mapping, db, node_keys, catalog,
                today=today, progress=progress, clock=clock, batch_size=batch_size,
                restart=restart, started=started,
                workers=workers if workers is not None else config.ingest.workers or auto_workers(),
                telemetry=telemetry, run=run,
            )  # fmt: skip
            run.items = summary.read
            run.set_attributes({"credex.result_count": summary.accepted})
        return summary
    finally:
        if own_store:
            db.close()


def _adoption_log(
    config: NodeConfig, store: Store, node_keys: keys.NodeKeys, clock: Callable[[], dt.datetime]
) -> AccessLog:
    """The node's access log, as the runtime builds it, for the one entry of an adoption."""
    return AccessLog(
        SqlLogBackend(store, clock=clock),
        origin=config.log.origin,
        signer=node_keys.signing,
        key_name=config.node.id,
        clock=clock,
        checkpoint_interval=dt.timedelta(seconds=config.log.checkpoint_interval_s),
    )


def _run(
    config: NodeConfig,
    mapping: adapters.MappingSpec,
    db: Store,
    node_keys: keys.NodeKeys,
    catalog: cat.Catalog,
    *,
    today: dt.date,
    progress: ProgressCallback | None,
    clock: Callable[[], dt.datetime],
    batch_size: int,
    restart: bool,
    started: float,
    workers: int,
    telemetry: Telemetry,
    run: Stage,
) -> IngestSummary:
    warnings = list(sync_feed_subscriptions(config, db, now=clock()))
    # The committer thread does not inherit the current span: its stages name the run's.
    parent = run.context()
    stage_attributes = {"credex.item": mapping.item}
    key = source_key(mapping)
    if restart:
        db.clear_ingest_state(key)
    saved = db.load_ingest_state(key)
    resume = None if saved is None else adapters.ResumeState.from_json(json.dumps(saved))
    run_id = clock().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    rejects = _Rejects(config.rejects_dir, run_id, adapters.mapped_columns(mapping.fields))
    totals = adapters.Summary()
    corrected = batches = events = kept = 0
    # Versions given to records of batches sealed but not committed yet: the store cannot
    # know them, and a later batch with the same record key must see them (see _plan).
    in_flight: dict[str, RecordHead] = {}
    pending: collections.deque[_Planned] = collections.deque()
    committing: tuple[_Planned, Future[int]] | None = None

    def write(planned: _Planned) -> int:
        """The committer thread's part: the batch's rejects, then its one transaction."""
        batch = planned.batch
        try:
            records = planned.sealed()
        except BaseException as error:
            planned.signing.end(error)
            raise
        planned.signing.end()
        with telemetry.stage(
            "ingest.commit", items=len(records), attributes=stage_attributes, parent=parent
        ):
            rejects.write(batch.rejected)
            state = json.loads(batch.resume.to_json())
            # a row whose disclosure is already over is stored expired: never published
            return db.store_batch(
                records,
                now=planned.now,
                ingest_state=(key, state),
                expire_ended=True,
                from_source=True,
            )

    def committed(planned: _Planned, done: Future[int]) -> None:
        """Wait for a batch's commit, then account for it (in this thread, in order)."""
        nonlocal corrected, batches, events, kept
        events += done.result()
        for record_key, version in planned.assigned.items():
            if in_flight.get(record_key) == version:
                del in_flight[record_key]  # committed: the store answers for it from now on
        batch = planned.batch
        # the batch's own accounting: adapters counted accepted rows; we moved the
        # unchanged ones (same key and content already stored) and those the lifecycle keeps
        # withdrawn to the adapters' skipped_unchanged (rows only counted, never stored); the
        # summary tells the second kind apart as skipped_lifecycle
        batch.accepted = [
            a
            for i, a in enumerate(batch.accepted)
            if i not in planned.skipped and i not in planned.kept
        ]
        batch.skipped_unchanged += len(planned.skipped) + len(planned.kept)
        totals.add(batch)
        kept += len(planned.kept)
        corrected += planned.corrections
        batches += 1
        if progress is not None:
            progress(batch)

    def hand_over(planned: _Planned, committer: ThreadPoolExecutor) -> None:
        """Queue a batch's commit behind the previous one (one at a time, in source order)."""
        nonlocal committing
        if committing is not None:
            try:
                committed(*committing)
            except BaseException:
                planned.signing.end(cancelled=True)  # this batch will not be committed
                raise
            committing = None
        committing = (planned, committer.submit(write, planned))

    source = iter(
        adapters.run_mapping(
            mapping, today=today, catalog=catalog, resume=resume, batch_size=batch_size
        )
    )
    try:
        # Exit order matters: the committer finishes its transaction before the workers stop
        # and long before the caller may close the store.
        with (
            Sealer(node_keys, config.node.id, workers=workers) as sealer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="credex-commit") as committer,
        ):
            while True:
                reading = telemetry.start_stage("ingest.read", attributes=stage_attributes)
                try:
                    batch = next(source)
                except StopIteration:
                    reading.end()
                    break
                except Exception as error:
                    reading.end(error)
                    # A source error mid-run: the batches read before it are good, so they
                    # commit as they would have without the pipeline; then the error surfaces.
                    while pending:
                        hand_over(pending.popleft(), committer)
                    if committing is not None:
                        committed(*committing)
                    raise
                reading.items = batch.read
                reading.set_attributes({"credex.batch_size": batch.read})
                reading.end()
                now = clock()
                # The first batch is sealed in-process: a run that fits in one batch forks
                # nothing. Later ones go to the workers. While they seal batch N+1, the
                # committer thread commits batch N (its fsync releases the GIL) and this
                # thread reads and validates batch N+2.
                pooled = batches + len(pending) + (committing is not None) > 0
                signing = _signing(telemetry, stage_attributes)
                pending.append(
                    _plan(batch, db, in_flight, sealer, pooled=pooled, now=now, signing=signing)
                )
                if len(pending) > 1:
                    hand_over(pending.popleft(), committer)
            while pending:
                hand_over(pending.popleft(), committer)
            if committing is not None:
                committed(*committing)
    finally:
        rejects.close()
        for planned in pending:  # never handed over (an error): their signing spans end here
            planned.signing.end(cancelled=True)
    if mapping.source.kind not in _INCREMENTAL_KINDS:
        db.clear_ingest_state(key)
    if kept:
        warnings.append(
            f"{kept} row(s) kept withdrawn by lifecycle: their records were repaired, revoked, "
            "expired or purged, so the source cannot bring them back (docs/lifecycle.md)"
        )
    return IngestSummary(
        run_id=run_id,
        read=totals.read,
        accepted=totals.accepted,
        rejected=totals.rejected,
        skipped_unchanged=totals.skipped_unchanged - kept,
        skipped_lifecycle=kept,
        corrected=corrected,
        batches=batches,
        seconds=time.perf_counter() - started,
        events=events,
        reject_files=tuple(rejects.paths),
        warnings=tuple(warnings),
        top_reasons=tuple((f, c, n) for (f, c), n in totals.reasons.most_common(10)),
    )


@dataclass
class _Planned:
    """A batch whose versions are decided and whose sealing has started."""

    batch: adapters.Batch
    now: dt.datetime
    sealed: Callable[[], list[NewRecord]]
    skipped: set[int]
    kept: set[int]
    corrections: int
    assigned: dict[str, RecordHead]
    signing: Stage


def _signing(telemetry: Telemetry, attributes: dict[str, str]) -> Callable[[int], Stage]:
    """Starts the "ingest.sign" stage of one batch (a child of the current, run, span)."""
    return lambda jobs: telemetry.start_stage("ingest.sign", items=jobs, attributes=attributes)


def _plan(
    batch: adapters.Batch,
    db: Store,
    in_flight: dict[str, RecordHead],
    sealer: Sealer,
    *,
    pooled: bool,
    now: dt.datetime,
    signing: Callable[[int], Stage],
) -> _Planned:
    """Decide, in source order, each accepted row's version (or that it is unchanged), and
    start sealing the new versions.

    The newest version of a key is the one of an uncommitted earlier batch of this run if there
    is one (`in_flight`, updated here), else the store's. Unchanged rows are not sealed
    (positions in `skipped`): same content hash as the newest version, or as the newest version
    that came from the source (when a lifecycle correction is newest, the pre-correction row is
    unchanged; the correction stands). Changed rows of a record the lifecycle closed (newest
    version withdrawn, expired or purged) are not sealed either (positions in `kept`). Any
    other row is the next version.
    """
    producer = sealer.producer
    accepted = batch.accepted
    wanted = [a.record_key for a in accepted]
    current = db.record_heads(producer, [k for k in wanted if k not in in_flight])
    current.update((k, in_flight[k]) for k in wanted if k in in_flight)
    jobs: list[SealJob] = []
    skipped: set[int] = set()
    kept: set[int] = set()
    assigned: dict[str, RecordHead] = {}
    corrections = 0
    for position, acc in enumerate(accepted):
        known = current.get(acc.record_key)
        if known is not None and acc.content_hash in (known.content_hash, known.source_hash):
            skipped.add(position)
            continue
        if known is not None and known.state in CLOSED_STATES:
            kept.add(position)
            continue
        version = 1 if known is None else known.version + 1
        # a second row with the same key later in this batch sees this version (stored active
        # or, already past its disclosure, expired: either way a row of this run, not closed
        # by the lifecycle, so the later row is its next version)
        head = RecordHead(version, acc.content_hash, "active", acc.content_hash)
        current[acc.record_key] = assigned[acc.record_key] = head
        rec = acc.record
        jobs.append(
            SealJob(
                row_id=str(uuid.uuid4()),
                record_key=acc.record_key,
                version=version,
                content_hash=acc.content_hash,
                item_id=rec.item_id,
                catalog_version=rec.catalog_version,
                fields=dict(rec.fields),
                subject_id=rec.subject_id,
                linked_subject_ids=rec.linked_subject_ids,
                severity=rec.severity,
                decided_on=rec.decided_on,
                conduct_ended_on=rec.conduct_ended_on,
                disclosure_end=rec.disclosure_end,
            )
        )
        if version > 1:
            corrections += 1
    in_flight.update(assigned)
    stage = signing(len(jobs))
    try:
        sealed = sealer.submit(now, jobs, pooled=pooled)
    except BaseException as error:
        stage.end(error)
        raise
    return _Planned(batch, now, sealed, skipped, kept, corrections, assigned, stage)


def sync_feed_subscriptions(config: NodeConfig, db: Store, *, now: dt.datetime) -> list[str]:
    """Create or widen one feed subscription per "feed" agreement of the trust bundle that
    names this node as provider (each backfilled atomically by the store).

    Returns warnings instead of raising when there is no usable bundle: ingest stores records
    either way, and a later sync backfills them. Never accepts an unverified bundle.
    """
    if not config.trust.bundle.exists():
        return []
    try:
        pinned = base64.b64decode(config.trust.root_key.read_bytes().strip(), validate=True)
    except (OSError, binascii.Error):
        return [f"{config.trust.root_key}: no readable root key; feed subscriptions not updated"]
    try:
        bundle = keys.accept_bundle(
            config.trust.bundle.read_bytes(), pinned_root=pinned, current_version=0, now=now
        )
    except (OSError, keys.KeysError) as error:
        return [f"{config.trust.bundle}: not accepted ({error}); feed subscriptions not updated"]
    for agreement in bundle.agreements:
        if agreement.kind == "feed" and agreement.provider == config.node.id:
            db.ensure_subscription(agreement.consumer, agreement.items, now=now)
    return []


class _Rejects:
    """rejects/<run-id>.csv and .jsonl, opened at the first reject of a run."""

    def __init__(self, directory: Path, run_id: str, columns: Sequence[str]) -> None:
        self._directory = directory
        self._run_id = run_id
        self._columns = list(columns)
        self._writers: list[adapters.RejectWriter] = []
        self.paths: list[Path] = []

    def write(self, rows: Sequence[adapters.RejectedRow]) -> None:
        if not rows:
            return
        if not self._writers:
            try:
                self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as error:
                # e.g. a regular file where [paths] rejects should be: say so, no traceback
                raise adapters.ReportError(
                    self._directory,
                    "cannot create the directory for reject reports "
                    f"({error.strerror or type(error).__name__})",
                ) from None
            csv_path = self._directory / f"{self._run_id}.csv"
            jsonl_path = self._directory / f"{self._run_id}.jsonl"
            self._writers = [
                adapters.CsvRejectWriter(csv_path, self._columns),
                adapters.JsonlRejectWriter(jsonl_path),
            ]
            self.paths = [csv_path, jsonl_path]
            for path in self.paths:
                path.chmod(0o600)  # reject reports quote source rows: personal data
        for writer in self._writers:
            for row in rows:
                writer.write(row)
            _flush(writer)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def _flush(writer: adapters.RejectWriter) -> None:
    # The batch commits right after this: its rejects must be in the OS's hands first, or a
    # kill -9 could drop report lines of rows the resume state already skips. The adapters'
    # writers have no public flush yet, so reach for the file handle they keep.
    flush = getattr(writer, "flush", None) or getattr(
        getattr(writer, "_handle", None), "flush", None
    )
    if callable(flush):
        flush()
