"""Stored disclosure windows recomputed with the running release's rules (docs/decisions/0014).

A version's window (severity, `disclosure_min_end`, `disclosure_max_end`, rule) is computed
once, when the version is stored, and every reader (queries, feeds, the lifecycle scan) judges
the stored columns. A release that changes the rules therefore leaves the rows stored before
it with their old window: red-list and honour entries with no end, though their validity ran
out; revoked entries still shown. This module stores the window each active version of this
node would get if it were ingested today.

Why here and not in a migration: most of these windows depend on the signed record's fields
(有效期至, 状态, 失信行为终止日期), which are encrypted at rest with the node's storage key, and
on the catalogue; a migration has neither. Migration 0006 fixes, at upgrade, the cases the
columns alone decide (ungraded and minor penalties); this pass covers everything.

Promises:
- only active versions of this node's own records are looked at; each is decrypted, its
  signature checked with this node's keys, re-validated against the catalogue and given
  `catalog.record_period` exactly as ingest does (`node.sealer`);
- only a window that differs (severity or an end: `node.lifecycle.refreshed_window`) is
  written; a version stored correctly is left as it is; a window is never lengthened, and
  never ended before the day the version stopped being shown (yesterday, when the stored
  window still showed it: retention then starts from that day, not from a back-dated end);
- no state changes and no feed event: from the moment its window is stored, readers hold a
  version back whose window is over (`node.lifecycle.visible`), and the lifecycle scan then
  expires it through its usual path (an `expire` event to every subscriber);
- one pass per rules fingerprint (`node.lifecycle.window_rules_fingerprint`), tracked in the
  `maintenance` table: once finished, later calls cost one row read; a pass killed half-way
  resumes after the last batch it committed (windows and progress commit together); a
  release whose `WINDOW_RULES_REVISION` is older than the stored one does nothing (a rolling
  upgrade: the newer rules own the windows);
- a version that cannot be decrypted or verified is counted and left unchanged; one that no
  longer validates (a check added since it was stored) is counted too, and its window is
  still bounded from the fields that decide it (`catalog.period_facts`); neither fails the
  pass; log lines carry counts only (record keys go to the caller's report, never to the
  log).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import catalog
import keys
from node import lifecycle as rules
from node.lifecycle_ops import decrypt_record
from node.runtime import NodeRuntime
from node.store import StoredRecord
from node.store import lifecycle as ls

__all__ = ["WindowRefreshReport", "refresh_windows"]

_log = logging.getLogger("node.window_refresh")
_BATCH = 500
# record keys named in a report for the operator to look at; the counts stay exact
_UNRESOLVED_SHOWN = 100


@dataclass(frozen=True)
class WindowRefreshReport:
    """What one call did (counts; `unresolved` names record keys, which carry no personal data).

    `ran` is False when the pass for these rules had already finished (nothing was read).
    `updated` versions got a new window; `ended` of them are already over today (withheld, or
    past their new end), so the lifecycle scan expires them. `unreadable` versions did not
    decrypt or verify and keep their window; `invalid` ones no longer validate against the
    catalogue, and got at most a shorter window from the fields that decide it. Both are
    listed (at most 100) in `unresolved` for a clerk.
    """

    fingerprint: str
    ran: bool
    checked: int = 0
    updated: int = 0
    ended: int = 0
    unreadable: int = 0
    invalid: int = 0
    unresolved: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "fingerprint": self.fingerprint,
            "ran": self.ran,
            "checked": self.checked,
            "updated": self.updated,
            "ended": self.ended,
            "unreadable": self.unreadable,
            "invalid": self.invalid,
            "unresolved": list(self.unresolved),
        }


@dataclass
class _Tally:
    checked: int = 0
    updated: int = 0
    ended: int = 0
    unreadable: int = 0
    invalid: int = 0
    unresolved: list[str] = field(default_factory=list)

    def unresolved_key(self, record_key: str) -> None:
        if len(self.unresolved) < _UNRESOLVED_SHOWN:
            self.unresolved.append(record_key)


def refresh_windows(
    runtime: NodeRuntime, *, force: bool = False, batch: int = _BATCH
) -> WindowRefreshReport:
    """Recompute the stored windows of this node's active versions with the current rules,
    once per rules fingerprint (see the module docstring); returns what it did.

    Without `force`, a pass already finished for the current fingerprint is not repeated, an
    interrupted one resumes where it stopped, and a store with no pass scheduled (created by
    this release or a later one: migration 0006) only records the current rules; `force`
    starts a full pass again (it changes nothing where every window already agrees). Raises
    only store errors (StoreError).
    """
    store = runtime.store
    fingerprint = rules.window_rules_fingerprint(runtime.catalogue)
    state = ls.maintenance_state(store, ls.WINDOWS_TASK)
    after: str | None = None
    if state is None and not force:
        # Migration 0006 schedules a pass only in a store that held records of an older
        # release: without its row, every window here was stored by this release's rules.
        ls.finish_maintenance(store, ls.WINDOWS_TASK, fingerprint=fingerprint, now=runtime.clock())
        return WindowRefreshReport(fingerprint, ran=False)
    if state is not None and _revision(state.fingerprint) > rules.WINDOW_RULES_REVISION:
        # a newer release shares this store (a rolling upgrade): its rules own the windows,
        # and this one would only redo a full pass at every scan
        return WindowRefreshReport(state.fingerprint, ran=False)
    if state is not None and state.fingerprint == fingerprint and not force:
        if state.finished_at is not None:
            return WindowRefreshReport(fingerprint, ran=False)
        after = state.resume_after
    today = rules.china_day(runtime.clock())
    tally = _Tally()
    while versions := ls.active_local_versions(store, runtime.node_id, after=after, limit=batch):
        changes: list[tuple[str, rules.StoredWindow]] = []
        for version in versions:
            tally.checked += 1
            window = _recomputed(runtime, version, today, tally)
            if window is not None:
                changes.append((version.row_id, window))
                if rules.disclosure_ended(
                    severity=window.severity,
                    decided_on=version.decided_on,
                    disclosure_max_end=window.max_end,
                    today=today,
                ):
                    tally.ended += 1
        after = versions[-1].row_id
        tally.updated += ls.store_windows(
            store, changes, fingerprint=fingerprint, resume_after=after, now=runtime.clock()
        )
    ls.finish_maintenance(store, ls.WINDOWS_TASK, fingerprint=fingerprint, now=runtime.clock())
    report = WindowRefreshReport(
        fingerprint,
        ran=True,
        checked=tally.checked,
        updated=tally.updated,
        ended=tally.ended,
        unreadable=tally.unreadable,
        invalid=tally.invalid,
        unresolved=tuple(tally.unresolved),
    )
    _log.info(
        "disclosure windows recomputed (rules %s): %d checked, %d updated, %d already over",
        fingerprint,
        report.checked,
        report.updated,
        report.ended,
    )
    if report.unreadable or report.invalid:
        _log.warning(
            "disclosure windows: %d version(s) did not decrypt or verify and %d no longer "
            "validate (credex lifecycle windows --force --json lists them)",
            report.unreadable,
            report.invalid,
        )
    return report


def _revision(fingerprint: str) -> int:
    """The `WINDOW_RULES_REVISION` a stored fingerprint names (0: none, or unreadable)."""
    head = fingerprint.partition(":")[0]
    return int(head) if head.isdigit() else 0


def _recomputed(
    runtime: NodeRuntime, version: StoredRecord, today: dt.date, tally: _Tally
) -> rules.StoredWindow | None:
    """The window the current rules give `version` when it differs from the stored one."""
    try:
        verified = decrypt_record(runtime, version)
    except keys.KeysError:
        tally.unreadable += 1
        tally.unresolved_key(version.record_key)
        return None
    stored = rules.StoredWindow(
        version.severity,
        version.disclosure_min_end,
        version.disclosure_max_end,
        version.disclosure_rule,
    )
    facts: catalog.PeriodFacts | None = None
    valid = False
    # CatalogError: an item the catalogue no longer has, or a grade it cannot place. Anything
    # else raised by pure validation of a body an older release wrote counts the same way: this
    # pass runs before the scan's expiry, which one odd record must never hold up.
    try:
        record = catalog.validate_record(
            version.item_id, dict(verified.fields), today=today, catalog=runtime.catalogue
        ).record
        if record is not None and not verified.hidden:
            valid = True
            facts = catalog.PeriodFacts(
                record.severity, record.decided_on, record.conduct_ended_on, record.disclosure_end
            )
        elif record is None and not verified.hidden:
            # stored by a release with fewer checks: the fields that decide the window still
            # bound it (never longer than stored: node.lifecycle.refreshed_window)
            facts = catalog.period_facts(
                version.item_id, dict(verified.fields), catalog=runtime.catalogue
            )
    except Exception as error:
        _log.debug("a stored version did not validate (%s)", type(error).__name__)
    if not valid:
        tally.invalid += 1
        tally.unresolved_key(version.record_key)
    # the stored decision day is what readers judge the window against: a version that now
    # reads another one is left to a clerk rather than given a window it does not show
    if facts is None or facts.decided_on != version.decided_on:
        return None
    try:
        period = catalog.record_period(
            facts.severity,
            facts.decided_on,
            conduct_ended_on=facts.conduct_ended_on,
            disclosure_end=facts.disclosure_end,
        )
    except catalog.CatalogError:
        return None  # no lawful window (an ungraded decision under 令第36号): a clerk's case
    return rules.refreshed_window(
        stored, severity=facts.severity, period=period, decided_on=version.decided_on, today=today
    )
