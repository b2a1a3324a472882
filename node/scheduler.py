"""The lifecycle scan: expiry, the Shandong cap, purge after retention, revocation reports.

`scan(runtime)` is one pass, judged on the day of `runtime.clock()` in China Standard Time:
0. once per rules fingerprint, the stored disclosure windows of active versions are recomputed
   with the running release's rules (node/window_refresh.py, decision 0014); what that ends
   is expired by step 1;
1. active records past their maximum disclosure period -> `expired` (`expire` events), and
   minor records decided under 令第36号 but stored with no end date (withheld, decision 0013);
2. active dishonesty records past the Shandong 5-year cap (whatever their stored period)
   -> `expired` too;
3. expired, withdrawn or superseded versions whose disclosure ended more than the retention
   before today (and whose record has no active version) -> `purged`: the body is erased and the
   purge is logged in the access log (kind `purge`). A version stored with no end date ended
   the day it left `active` (store.lifecycle.records_due_for_purge says how that day is found).
   Push tombstones (node/store/pushed.py) recorded more than the retention ago are deleted;
4. open revocation tasks whose withdraw event the platform has acknowledged -> closed
   (Shandong Art. 40: reported to the platform).

A row that fails its integrity tag (decision 0018: edited outside credex) is left as it is and
named (`ScanReport.tampered`, an error in the node's log); the pass goes on with every other
record, so one edited row cannot keep the rest disclosed past their period.

A pass is idempotent (each step only picks what is still due), so `credex serve` runs one at
start (a node that was down catches up) and then every `[lifecycle] scan_interval_s`; the CLI
`credex lifecycle scan` runs one by hand.

Joint-punishment withdrawals do not wait for a scan: `run_withdrawal_pushes` sends the pending
withdraw/expire notices every `[lifecycle] withdrawal_push_interval_s` (default 10 s), so a
repair or revocation committed by another process (the CLI, another replica) reaches the
departments the entry was pushed to within seconds, and one that was down gets it soon after
it is back (node/push.py says why nothing is lost or applied twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from catalog.periods import ORDER_36_EFFECTIVE
from node import lifecycle as rules
from node.accesslog import LogEntry, utc_iso
from node.lifecycle_ops import LEGAL_BASIS, overdue_tasks
from node.push import failed_receivers, push_pending, push_pending_withdrawals
from node.runtime import NodeRuntime
from node.store import StateChanged, Store, StoredRecord
from node.store import lifecycle as ls
from node.store.errors import RecordTampered
from node.store.pushed import purge_push_tombstones
from node.telemetry import active_telemetry
from node.window_refresh import refresh_windows

__all__ = ["ScanReport", "run_scans", "run_withdrawal_pushes", "scan"]

_log = logging.getLogger("node.scheduler")
_BATCH = 500
# The longest rest of a receiver that keeps failing withdrawal passes (`_Backoff`).
BACKOFF_CAP_S = 3600.0


@dataclass(frozen=True)
class ScanReport:
    """What one pass did: counts, and the row ids of rows it left alone because they fail
    their integrity tag (store-assigned ids, never personal data)."""

    today: dt.date
    expired: int
    capped: int
    purged: int
    revocations_reported: int
    overdue: int
    tampered: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready counts."""
        return {
            "today": self.today.isoformat(),
            "expired": self.expired,
            "capped": self.capped,
            "purged": self.purged,
            "revocations_reported": self.revocations_reported,
            "overdue": self.overdue,
            "tampered": list(self.tampered),
        }


def _platforms(runtime: NodeRuntime) -> set[str]:
    try:
        bundle = runtime.bundle()
    except Exception:
        return set()
    return {e.node_id for e in bundle.roster if "platform" in e.roles}


def scan(runtime: NodeRuntime, *, retention_months: int | None = None) -> ScanReport:
    """Run one lifecycle pass (see the module docstring) and return its counts.

    `retention_months` defaults to the node's `[lifecycle] retention_months`; a caller passes
    it only to override the configuration for this pass (`credex lifecycle scan
    --retention-months`).

    The pass is recorded as the pipeline stage "lifecycle.scan" (one span, counts only) in the
    process's active telemetry.
    """
    if retention_months is None:
        retention_months = runtime.config.lifecycle.retention_months
    with active_telemetry().stage("lifecycle.scan", root=True) as stage:
        report = _scan(runtime, retention_months=retention_months)
        stage.items = report.expired + report.capped + report.purged
        stage.set_attributes({"credex.result_count": stage.items})
    return report


def _scan(runtime: NodeRuntime, *, retention_months: int) -> ScanReport:
    store = runtime.store
    now = runtime.clock()
    today = rules.china_day(now)
    expired = capped = purged = 0
    tampered: set[str] = set()
    # stored windows follow the running release's rules (decision 0014): once per rules
    # fingerprint, then one row read; what it ends is expired just below, the usual way. A
    # failing pass (a lock timeout beside a big ingest, say) must not hold up expiry, the cap
    # and purge: it resumes at the next scan.
    try:
        refresh_windows(runtime)
    except Exception as error:
        _log.error("disclosure window pass failed: %s", type(error).__name__)
    for batch in _due(
        lambda skip: store.records_due_for_expiry(today, limit=_BATCH, exclude=skip), tampered
    ):
        for record in batch:
            expired += _expire(store, record, now, tampered)
    # minor records under 令第36号 stored with no end (before decision 0013): withheld, never
    # disclosed; expiring them sends the expire event and lets retention run to a purge
    for batch in _due(
        lambda skip: ls.records_withheld_without_window(
            store, ORDER_36_EFFECTIVE, limit=_BATCH, exclude=skip
        ),
        tampered,
    ):
        for record in batch:
            expired += _expire(store, record, now, tampered)
    # decided_on + 60 months < today  <=>  decided_on < the cutoff computed for 60 months
    cap_cutoff = rules.purge_cutoff(today, rules.SHANDONG_CAP_MONTHS)
    for batch in _due(
        lambda skip: ls.records_past_cap(store, cap_cutoff, limit=_BATCH, exclude=skip), tampered
    ):
        for record in batch:
            capped += _expire(store, record, now, tampered)
    purge_before = rules.purge_cutoff(today, retention_months)
    for batch in _due(
        lambda skip: ls.records_due_for_purge(store, purge_before, limit=_BATCH, exclude=skip),
        tampered,
    ):
        for record in batch:
            # a purge is an access to the record that must be accounted: its entry and the
            # state change commit in one transaction
            try:
                _purge(runtime, record, now)
            except StateChanged:
                continue  # another replica's scan purged it first (and logged that)
            except RecordTampered as error:
                _skip(error, tampered)  # edited since it was read
                continue
            purged += 1
    # tombstones of push withdrawals that overtook their entry (receiving side) are kept for the
    # same retention, counted from when they were recorded: no entry is on its way that long
    purge_push_tombstones(store, dt.datetime.combine(purge_before, dt.time(), tzinfo=rules.CST))
    reported = _close_reported_revocations(runtime, now, tampered)
    overdue = len(_overdue(runtime, today))
    return ScanReport(
        today, expired, capped, purged, reported, overdue, tampered=tuple(sorted(tampered))
    )


def _due(
    fetch: Callable[[frozenset[str]], list[StoredRecord]], tampered: set[str]
) -> Iterator[list[StoredRecord]]:
    """The batches `fetch` finds (each step acts on its batch before the next is asked for),
    skipping rows that fail their integrity tag: each is added to `tampered` and the batch is
    asked for again without it, so the step goes on with every other row."""
    while True:
        try:
            batch = fetch(frozenset(tampered))
        except RecordTampered as error:
            if error.row_id in tampered:
                raise  # not excluded by the fetch: never loop on it
            _skip(error, tampered)
            continue
        if not batch:
            return
        yield batch


def _skip(error: RecordTampered, tampered: set[str]) -> None:
    """Leave the row `error` names alone for the rest of the pass, and say so once."""
    if error.row_id not in tampered:
        tampered.add(error.row_id)
        _log.error(
            "lifecycle scan: record row %s fails its integrity tag and is left as it is; run "
            "`credex store verify` and restore it from a backup",
            error.row_id,
        )


def _expire(store: Store, record: StoredRecord, now: dt.datetime, tampered: set[str]) -> int:
    """Expire `record` if it is still in the state it was read in; 1 if this call did, 0 when
    another writer changed it first (or an edit since it was read fails its tag: it joins
    `tampered`). Replicas on one PostgreSQL scan at once: without the check, the second would
    expire it again and send every subscriber a second `expire`."""
    try:
        store.set_record_state(
            record.row_id, "expired", event_kind="expire", now=now, expected=record.state
        )
    except StateChanged:
        return 0
    except RecordTampered as error:
        _skip(error, tampered)
        return 0
    return 1


def _purge(runtime: NodeRuntime, record: StoredRecord, now: dt.datetime) -> None:
    """Purge `record` with its access-log entry, in one transaction; StateChanged (nothing
    written, nothing logged) when another writer changed it since it was read, so that a
    record purged by two replicas' scans at once has one `purge` entry, not two."""
    runtime.log.append_with(
        LogEntry(
            time=utc_iso(now),
            kind="purge",
            requester=runtime.node_id,
            officer="scheduler",
            purpose="retention_ended",
            legal_basis=LEGAL_BASIS["purge"],
            decision="allow",
            reason="",
            request_id=f"purge-{record.row_id}",
            subject_index=record.subject_index,
            items_asked=(record.item_id,),
            result_count=1,
        ),
        functools.partial(
            runtime.store.set_record_state,
            record.row_id,
            "purged",
            event_kind=None,
            now=now,
            expected=record.state,
        ),
        what="purge a record",
    )


def _overdue(runtime: NodeRuntime, today: dt.date) -> list[rules.TaskView]:
    return overdue_tasks(runtime.store, today)


def _close_reported_revocations(runtime: NodeRuntime, now: dt.datetime, tampered: set[str]) -> int:
    platforms = _platforms(runtime)
    if not platforms:
        return 0
    closed = 0
    for task in ls.list_tasks(runtime.store, open_only=True):
        if task.kind != "revocation":
            continue
        try:
            record = ls.current_record(runtime.store, runtime.node_id, task.record_key)
        except RecordTampered as error:
            _skip(error, tampered)  # the task stays open until the row is restored
            continue
        events, cursors = ls.withdraw_events(runtime.store, record.row_id)
        statuses = [s for s in rules.propagation(events, cursors) if s.subscriber in platforms]
        if statuses and all(s.acknowledged for s in statuses):
            acked_at = max((s.acked_at for s in statuses if s.acked_at), default=now)
            late = rules.china_day(acked_at) > task.due_on
            outcome = "reported to the platform" + (" (late)" if late else "")
            if ls.close_task(runtime.store, task.task_id, outcome=outcome, now=now):
                closed += 1
    return closed


async def run_scans(
    runtime: NodeRuntime,
    stop: asyncio.Event,
    *,
    retention_months: int | None = None,
) -> None:
    """Run `scan` now and then every `[lifecycle] scan_interval_s` until `stop` is set.

    A failing pass is logged (error type only: messages may quote data) and retried at the
    next interval; it never stops the node.
    """
    interval = runtime.config.lifecycle.scan_interval_s
    if retention_months is None:
        retention_months = runtime.config.lifecycle.retention_months
    while not stop.is_set():
        try:
            report = await asyncio.to_thread(scan, runtime, retention_months=retention_months)
            for warning in _approximate_warnings(runtime, report.today):
                _log.warning("%s", warning)
            failed = [o for o in await push_pending(runtime) if not o.receipt]
            if failed:
                _log.warning("%d joint-punishment pushes await a receipt", len(failed))
        except Exception as error:
            _log.error("lifecycle scan failed: %s", type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


class _Backoff:
    """Receivers that failed withdrawal passes as a whole (`push.failed_receivers`: down,
    refusing this node ...), resting between attempts: after the first failing pass for one
    interval (the next pass tries again), then twice as long after each further one, up to
    BACKOFF_CAP_S; a pass where it is tried and does not fail ends its backoff. Kept in memory:
    a restarted node tries every receiver at once, which costs one attempt each."""

    def __init__(self, interval: float) -> None:
        self._first = interval
        self.cap = max(BACKOFF_CAP_S, interval)
        self._rest: dict[str, float] = {}  # receiver -> its current rest, in seconds
        self._until: dict[str, float] = {}  # receiver -> when that rest ends (monotonic)

    def resting(self, now: float) -> frozenset[str]:
        """The receivers not to try in a pass starting at `now`."""
        return frozenset(node for node, until in self._until.items() if now < until)

    def failed(self, node: str, started: float) -> bool:
        """Count a failing pass of `node` (started at `started`); True if it begins a backoff."""
        rest = self._rest.get(node)
        self._rest[node] = self._first if rest is None else min(rest * 2, self.cap)
        self._until[node] = started + self._rest[node]
        return rest is None

    def recovered(self, tried: frozenset[str], failing: set[str]) -> list[str]:
        """End the backoff of the receivers `tried` in a pass that are not `failing`; returns
        them, sorted."""
        back = sorted(node for node in self._rest if node in tried and node not in failing)
        for node in back:
            del self._rest[node], self._until[node]
        return back

    def backed_off(self) -> frozenset[str]:
        """Every receiver in a backoff (resting now or not)."""
        return frozenset(self._rest)


async def run_withdrawal_pushes(runtime: NodeRuntime, stop: asyncio.Event) -> None:
    """Every `[lifecycle] withdrawal_push_interval_s` until `stop` is set, send the joint-
    punishment withdraw/expire notices not yet acknowledged (`push.push_pending_withdrawals`).

    The first pass comes one interval after start (the start scan already sent them). A
    failing pass is logged (error type only) and the next one runs as usual; the count of
    notices awaiting a receipt is logged when it changes, not at every pass. A receiver that
    fails a pass as a whole is backed off (`_Backoff`: one interval, doubling per failing
    pass, at most BACKOFF_CAP_S): its notices wait, untried, until its rest is over; the start
    and the end of a backoff are logged (receiver and counts only).
    """
    interval = runtime.config.lifecycle.withdrawal_push_interval_s
    backoff = _Backoff(interval)
    waiting = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            break
        started = time.monotonic()
        resting = backoff.resting(started)
        try:
            outcomes = await push_pending_withdrawals(runtime, resting=resting)
        except Exception as error:
            _log.error("joint-punishment withdrawal pass failed: %s", type(error).__name__)
            continue
        failing = failed_receivers(outcomes)
        due = Counter(o.to_node for o in outcomes if not o.receipt)
        for node in sorted(failing):
            if backoff.failed(node, started):
                _log.warning(
                    "joint-punishment receiver %s failed a withdrawal pass: backed off, "
                    "%d notice(s) waiting (retried after %g s, then at most every %g s)",
                    node,
                    due[node],
                    interval,
                    backoff.cap,
                )
        for node in backoff.recovered(backoff.backed_off() - resting, failing):
            _log.info("joint-punishment receiver %s is no longer backed off", node)
        failed = sum(due.values())
        if failed != waiting:
            if failed:
                _log.warning("%d joint-punishment withdrawal notice(s) await a receipt", failed)
            else:
                _log.info("every joint-punishment withdrawal notice is acknowledged")
            waiting = failed


def _approximate_warnings(runtime: NodeRuntime, today: dt.date) -> list[str]:
    """Warnings for open deadlines counted without an official holiday schedule."""
    tasks = ls.list_tasks(runtime.store, open_only=True)
    years = sorted({t.due_on.year for t in tasks if t.approximate_due and t.due_on >= today})
    return [
        f"open lifecycle deadlines in {y} are approximate (no holiday schedule); "
        "set [lifecycle] holiday_file"
        for y in years
    ]
