"""Record lifecycle rules: deadlines, visibility, expiry, purge and repair admissibility.

Pure: no IO and no clock. Every function takes the day it judges (`today`) and, for working-day
deadlines, an optional `catalog.WorkCalendar`; node/lifecycle_ops.py applies the outcomes to the
store. Rules and sources (docs/lifecycle.md):

- Objection review (异议, 山东省社会信用条例 Art. 39): decided within 3 working days, or 7 when
  another unit must help verify, counted from the day after the objection was received.
- Revocation of the underlying decision (Art. 40): the provider withdraws the 失信 record and
  reports to the platform within 3 working days of learning of the revocation.
- Disclosure (令第36号, catalog.disclosure_period): a record is disclosed and shared until its
  `max_end` inclusive; from the next day it is expired. A withheld record (轻微 under 令第36号:
  原则上不予公示) has the explicit empty window `max_end <= decided_on` and is never disclosed
  or shared, not even on its decision day; a missing end never means "withheld".
- Shandong Art. 38 caps any 失信 record at 5 years from its decision, whatever its stored period
  says. Every dishonesty record carries a severity (`ungraded`, catalog.periods.UNGRADED, when
  one decided before 2026-04-01 states no 失信程度), so the cap reaches all of them. The stored
  period applies the cap from the stated end of the conduct when there is one.
- Retention after expiry: kept encrypted (never disclosed, queried or delivered) for
  `retention_months` after `max_end`, then purged (the body erased). The default of 60 months
  is a design choice that covers the limitation periods of administrative review and
  litigation about the record; 征信业管理条例 Art. 16 (5 years from the end of the conduct)
  binds 征信, not public credit, and is only the nearest comparison; docs/lifecycle.md explains.
- Credit repair (令第36号 Arts. 2-3): admissible when the minimum period has passed (from the
  day after `min_end`), the obligations are fulfilled and a credit commitment is given; a minor
  (轻微) record may be repaired as soon as the obligations are fulfilled. Every failed condition
  is reported, not just the first.
- Stored windows follow the rules of the running release (docs/decisions/0014): a version's
  window is computed when it is stored, so after an upgrade `refreshed_window` says which
  stored windows the current rules would store differently, and `window_rules_fingerprint`
  names the rules a node last recomputed them with.

Times of day never matter here: deadlines and periods are whole days in China Standard Time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import catalog
from node.errors import InputError

__all__ = [
    "CST",
    "DEFAULT_RETENTION_MONTHS",
    "OBJECTION_DAYS_OTHER_UNIT",
    "OBJECTION_DAYS_OWN",
    "REVOCATION_REPORT_DAYS",
    "SHANDONG_CAP_MONTHS",
    "TASK_KINDS",
    "WINDOW_RULES_REVISION",
    "WITHDRAW_REASONS",
    "Admissibility",
    "Deadline",
    "PropagationStatus",
    "RepairApplication",
    "RepairFacts",
    "RepairFailure",
    "StoredWindow",
    "TaskView",
    "apply_changes",
    "china_day",
    "disclosure_ended",
    "is_past_cap",
    "is_red_list",
    "objection_deadline",
    "overdue",
    "parse_assignments",
    "propagation",
    "purge_cutoff",
    "refreshed_window",
    "repair_admissibility",
    "revocation_deadline",
    "visible",
    "window_rules_fingerprint",
]

OBJECTION_DAYS_OWN = 3  # Shandong Art. 39: the unit's own matter
OBJECTION_DAYS_OTHER_UNIT = 7  # Shandong Art. 39: another unit must help verify
REVOCATION_REPORT_DAYS = 3  # Shandong Art. 40
SHANDONG_CAP_MONTHS = 60  # Shandong Art. 38: at most five years
DEFAULT_RETENTION_MONTHS = 60
WITHDRAW_REASONS = frozenset({"repair", "revocation"})
TASK_KINDS = frozenset({"objection", "revocation", "repair", "correction"})
# Bump when a release changes how `catalog.record_period` turns a record into its window in a
# way the catalogue's own attributes do not show (`window_rules_fingerprint` sees those): every
# node then recomputes its stored windows once (docs/decisions/0014).
# 1: minor withheld, ungraded penalties, conduct end, red-list and honour validity (2026-11).
# 2: a record's own end bounds a dishonesty period (移出 from a list).
# 3: the item's 有效期限 (max_disclosure_months) bounds every window.
# 4: a decision before 2023-05-01 gets 发改办财金〔2019〕527号's window, not 令第58号's.
WINDOW_RULES_REVISION = 4

CST = dt.timezone(dt.timedelta(hours=8), "CST")
_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")


def china_day(moment: dt.datetime) -> dt.date:
    """The calendar day of an aware moment in China Standard Time (UTC+8); refuses naive ones."""
    if moment.tzinfo is None:
        raise InputError("lifecycle: a moment without a time zone cannot be placed on a day")
    return moment.astimezone(CST).date()


@dataclass(frozen=True)
class Deadline:
    """A working-day deadline. `approximate` is True when a year on the way had no official
    holiday schedule (weekends only were skipped); `unknown_years` names those years."""

    due_on: dt.date
    approximate: bool
    unknown_years: tuple[int, ...]
    rule: str

    def warning(self) -> str | None:
        """The operator-facing warning for an approximate deadline, else None."""
        if not self.approximate:
            return None
        years = ", ".join(str(y) for y in self.unknown_years)
        return (
            f"deadline {self.due_on} is approximate: no official holiday schedule for {years} "
            "(weekends only skipped); set [lifecycle] holiday_file"
        )


def _deadline(
    start: dt.date, days: int, rule: str, calendar: catalog.WorkCalendar | None
) -> Deadline:
    result = catalog.working_days_after_checked(start, days, calendar=calendar)
    return Deadline(result.date, result.approximate, result.unknown_years, rule)


def objection_deadline(
    opened_on: dt.date,
    *,
    needs_other_unit: bool,
    calendar: catalog.WorkCalendar | None = None,
) -> Deadline:
    """The review deadline of an objection received on `opened_on` (Shandong Art. 39).

    3 working days, or 7 when another unit must help verify; never raises for a year the
    calendar does not know (the result is then flagged approximate).
    """
    days = OBJECTION_DAYS_OTHER_UNIT if needs_other_unit else OBJECTION_DAYS_OWN
    rule = f"山东省社会信用条例第39条: {days} working days"
    return _deadline(opened_on, days, rule, calendar)


def revocation_deadline(
    known_on: dt.date, *, calendar: catalog.WorkCalendar | None = None
) -> Deadline:
    """The day by which a revoked decision's record must be withdrawn and reported to the
    platform (Shandong Art. 40: 3 working days from the day the revocation became known)."""
    rule = f"山东省社会信用条例第40条: {REVOCATION_REPORT_DAYS} working days"
    return _deadline(known_on, REVOCATION_REPORT_DAYS, rule, calendar)


def is_past_cap(severity: str | None, decided_on: dt.date | None, today: dt.date) -> bool:
    """True when a 失信 record is beyond the Shandong 5-year cap (Art. 38) on `today`.

    A dishonesty record is one with a severity: its grade, or `ungraded`
    (catalog.periods.UNGRADED) for one decided before 2026-04-01 without 失信程度
    (`validate_record` gives every dishonesty record one).
    The cap counts from the decision day per 民法典 Arts. 201-202; the last capped day itself is
    still inside. Records without a severity or decision day are not dishonesty records.
    """
    if severity is None or decided_on is None:
        return False
    return today > catalog.add_months(decided_on, SHANDONG_CAP_MONTHS)


def is_red_list(item_category: str) -> bool:
    """True for red-list (守信激励) items: receivers may apply 绿色通道/容缺受理, so records of
    these items travel with `RecordFlags.red_list` set (`wire.record_to_pb(..., red_list=...)`)."""
    return item_category == "红名单"


def disclosure_ended(
    *,
    severity: str | None,
    decided_on: dt.date | None,
    disclosure_max_end: dt.date | None,
    today: dt.date,
) -> bool:
    """Is a record's disclosure over on `today` by its dates alone, whatever its stored state?

    True from the day after `disclosure_max_end`; always for a withheld record (the explicit
    empty window, `catalog.never_disclosed`: 轻微 under 令第36号 is 原则上不予公示); and for a
    dishonesty record past the Shandong cap. A minor record decided from 2026-04-01 that was
    stored with no end (before withheld windows were explicit) counts as withheld too. The
    lifecycle scan turns such an `active` record `expired`; readers (queries, feed delivery,
    ingest) judge the dates themselves instead of waiting for it.
    """
    if catalog.never_disclosed(decided_on, disclosure_max_end):
        return True
    if disclosure_max_end is not None and today > disclosure_max_end:
        return True
    if disclosure_max_end is None and severity == "minor" and decided_on is not None:
        # a row stored without its window: judge it by the catalogue rule, never "no end"
        return catalog.disclosure_period("minor", decided_on).withheld
    return is_past_cap(severity, decided_on, today)


def visible(
    *,
    state: str,
    severity: str | None,
    decided_on: dt.date | None,
    disclosure_max_end: dt.date | None,
    today: dt.date,
) -> bool:
    """May a record be disclosed, answered or delivered on `today`?

    Only an `active` version, not withheld, not past its maximum disclosure period and not past
    the Shandong cap (`disclosure_ended`). Withdrawn (repair, revocation), expired, superseded
    and purged versions never are.
    """
    return state == "active" and not disclosure_ended(
        severity=severity,
        decided_on=decided_on,
        disclosure_max_end=disclosure_max_end,
        today=today,
    )


def purge_cutoff(today: dt.date, retention_months: int = DEFAULT_RETENTION_MONTHS) -> dt.date:
    """Records whose disclosure ended before the returned day are due for purge on `today`.

    A record whose `max_end` is M is kept until add_months(M, retention) inclusive and purged
    from the day after; equivalently, purge when max_end < today - retention (calendar months).
    Refuses a negative retention (InputError).
    """
    if retention_months < 0:
        raise InputError("lifecycle: retention_months must not be negative")
    # The largest M with add_months(M, r) < today: step back r months from today, then check
    # the month-end clamp (Jan 31 + 1 month = Feb 28, so several M map to one day).
    total = today.year * 12 + (today.month - 1) - retention_months
    year, month0 = divmod(total, 12)
    candidate = dt.date(year, month0 + 1, 1)
    cutoff = candidate
    while catalog.add_months(candidate, retention_months) < today:
        cutoff = candidate + dt.timedelta(days=1)
        candidate += dt.timedelta(days=1)
    return cutoff


# ---------------------------------------------------------------- stored windows


@dataclass(frozen=True)
class StoredWindow:
    """The disclosure-window columns of a stored record version: the severity the rules read
    (None: not dishonesty information), both ends, and the rule text that explains them."""

    severity: str | None
    min_end: dt.date | None
    max_end: dt.date | None
    rule: str


def refreshed_window(
    stored: StoredWindow,
    *,
    severity: str | None,
    period: catalog.DisclosurePeriod,
    decided_on: dt.date | None,
    today: dt.date,
) -> StoredWindow | None:
    """The window to store instead of `stored` for an active version decided on `decided_on`,
    given what the current rules make of it (`severity` and `period` as ingest computes them:
    `catalog.validate_record` / `catalog.period_facts`, `catalog.record_period`); None when
    `stored` stays.

    Promises:
    - agreement is the severity and both ends: a rule text that differs only in wording
      (older releases named the same instruments differently) changes nothing, so a version
      stored correctly is never rewritten;
    - a refresh never extends disclosure: a window the current rules would end later than
      `stored` (or never) is not written (re-ingesting the record stores it);
    - an end is never put before the day disclosure really stopped: when `stored` still let
      the version be disclosed yesterday and the rules end it earlier, it ends yesterday (the
      rule text says so), so retention, which counts from the end, never starts before the
      version stopped being shown, and nothing disclosed until yesterday is purged at once.
    """
    end = period.max_end
    if stored.max_end is not None and (end is None or end > stored.max_end):
        return None
    current = StoredWindow(severity, period.min_end, end, period.rule)
    yesterday = today - dt.timedelta(days=1)
    if (
        end is not None
        and end < yesterday
        and not disclosure_ended(
            severity=stored.severity,
            decided_on=decided_on,
            disclosure_max_end=stored.max_end,
            today=yesterday,
        )
    ):
        low = period.min_end
        current = StoredWindow(
            severity,
            None if low is None else min(low, yesterday),
            yesterday,
            f"{period.rule}; shown until {yesterday.isoformat()} by an earlier release",
        )
    same = (stored.severity, stored.min_end, stored.max_end) == (
        current.severity,
        current.min_end,
        current.max_end,
    )
    return None if same else current


def window_rules_fingerprint(catalogue: catalog.Catalog) -> str:
    """A short digest of everything that decides a stored window besides the record itself:
    `WINDOW_RULES_REVISION` and, per catalogue item, its severity rule (with the labels and
    keys of a graded field's code table), its decision, conduct-end and valid-until fields,
    its revoked and ended conditions with the ended-on field, and its 有效期限
    (`max_disclosure_months`).

    A catalogue that gains a validity field (as honours did) changes it without any code
    change; a change to the period arithmetic itself changes it only through the revision, so
    such a change must bump `WINDOW_RULES_REVISION`.
    """
    items: dict[str, list[object]] = {}
    for item_id in sorted(catalogue.items):
        item = catalogue.items[item_id]
        grades: list[tuple[str, str | None]] = []
        if item.severity_rule.startswith("field:"):
            table_id = item.field(item.severity_rule[6:]).code_table
            table = catalogue.code_tables.get(table_id) if table_id else None
            grades = [] if table is None else [(e.label, e.key) for e in table.entries]
        items[item_id] = [
            item.severity_rule,
            grades,
            item.decided_on_field,
            item.conduct_end_field,
            item.valid_until_field,
            item.revoked_when,
            item.ended_when,
            item.ended_on_field,
            item.max_disclosure_months,
        ]
    text = json.dumps(
        {"revision": WINDOW_RULES_REVISION, "items": items},
        ensure_ascii=False,
        sort_keys=True,
    )
    return f"{WINDOW_RULES_REVISION}:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# ----------------------------------------------------------------- credit repair


@dataclass(frozen=True)
class RepairFacts:
    """What the rules need to know about the record to be repaired."""

    state: str
    severity: str | None
    disclosure_min_end: dt.date | None


@dataclass(frozen=True)
class RepairApplication:
    """The subject's application: obligations fulfilled (e.g. the fine paid), a credit
    commitment (its SHA-256, the document itself stays with the clerk), other legal
    requirements met (the clerk's confirmation)."""

    obligations_fulfilled: bool
    commitment_sha256: str | None
    other_requirements_met: bool = True


@dataclass(frozen=True)
class RepairFailure:
    """One unmet condition: a stable code and a sentence for the clerk."""

    code: str
    message: str


@dataclass(frozen=True)
class Admissibility:
    """The outcome of the admissibility check: `failures` lists EVERY unmet condition."""

    failures: tuple[RepairFailure, ...]

    @property
    def admissible(self) -> bool:
        """True when no condition failed."""
        return not self.failures

    def codes(self) -> tuple[str, ...]:
        """The failure codes, in check order."""
        return tuple(f.code for f in self.failures)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def repair_admissibility(
    facts: RepairFacts, application: RepairApplication, *, today: dt.date
) -> Admissibility:
    """Check a credit-repair application against 令第36号 Art. 3; return every failure.

    Codes: `not_active` (already withdrawn, expired, superseded or purged), `not_dishonesty`
    (no severity: nothing to repair), `minimum_period` (today is not after `min_end`; not
    checked for a minor record), `obligations_unfulfilled`, `no_commitment` (missing or not a
    SHA-256 hex), `other_requirements`.
    """
    failures: list[RepairFailure] = []
    if facts.state != "active":
        failures.append(
            RepairFailure("not_active", f"the record is {facts.state}, not active; nothing to stop")
        )
    if facts.severity is None:
        failures.append(RepairFailure("not_dishonesty", "the record is not dishonesty information"))
    elif facts.severity != "minor" and (
        facts.disclosure_min_end is None or today <= facts.disclosure_min_end
    ):
        since = (
            "unknown"
            if facts.disclosure_min_end is None
            else str(facts.disclosure_min_end + dt.timedelta(days=1))
        )
        failures.append(
            RepairFailure(
                "minimum_period",
                f"the minimum disclosure period has not passed (repair possible from {since})",
            )
        )
    if not application.obligations_fulfilled:
        failures.append(
            RepairFailure(
                "obligations_unfulfilled",
                "the obligations are not confirmed as fulfilled (e.g. the fine is unpaid)",
            )
        )
    commitment = application.commitment_sha256
    if commitment is None or not _SHA256.match(commitment):
        failures.append(RepairFailure("no_commitment", "no credit commitment (信用承诺书) given"))
    if not application.other_requirements_met:
        failures.append(RepairFailure("other_requirements", "another legal requirement is not met"))
    return Admissibility(tuple(failures))


# ------------------------------------------------------------------ corrections


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """Parse `field=value` pairs (the CLI's `--set`); an empty value clears an optional field.

    Refuses (InputError naming the pair's position, never its value) a pair without `=`, a
    field id that is not snake_case, a field given twice, and an empty list.
    """
    changes: dict[str, str] = {}
    for position, text in enumerate(assignments, start=1):
        field, sep, value = text.partition("=")
        field = field.strip()
        if not sep or not _FIELD.match(field):
            raise InputError(
                f"--set #{position}: expected field=value with a catalogue field id "
                "(lower-case, e.g. fine_wan_yuan=0.5)"
            )
        if field in changes:
            raise InputError(f"--set #{position}: field {field!r} given twice")
        changes[field] = value
    if not changes:
        raise InputError("a correction needs at least one --set field=value")
    return changes


def apply_changes(
    current: Mapping[str, str],
    changes: Mapping[str, str],
    *,
    natural_key: Sequence[str],
) -> dict[str, str | None]:
    """The field values of a corrected version: `current` with `changes` applied.

    Refuses (InputError) a change to a natural-key field (that would be another record: revoke
    it and ingest the right one) and a change that alters nothing. An empty value removes the
    field (validation then decides whether it was optional).
    """
    touched = sorted(set(changes) & set(natural_key))
    if touched:
        raise InputError(
            f"field {touched[0]!r} identifies the record; a different value is a different "
            "record (revoke this one and ingest the right one)"
        )
    merged: dict[str, str | None] = dict(current)
    for field, value in changes.items():
        merged[field] = value if value != "" else None
    if all(merged.get(f) == current.get(f) for f in changes):
        raise InputError("the correction changes nothing: every --set value is already stored")
    return merged


# ------------------------------------------------------------ tasks, propagation


@dataclass(frozen=True)
class TaskView:
    """A lifecycle task as the rules see it (objection review, revocation report ...)."""

    task_id: str
    kind: str
    record_key: str
    opened_at: dt.datetime
    due_on: dt.date
    approximate_due: bool
    closed_at: dt.datetime | None
    outcome: str | None


def overdue(tasks: Iterable[TaskView], today: dt.date) -> list[TaskView]:
    """Open tasks whose due day is before `today` (the due day itself is still in time),
    oldest due first."""
    late = [t for t in tasks if t.closed_at is None and t.due_on < today]
    return sorted(late, key=lambda t: (t.due_on, t.task_id))


@dataclass(frozen=True)
class PropagationStatus:
    """Whether one subscriber has acknowledged the withdraw event it was sent."""

    subscriber: str
    event_seq: int
    sent_at: dt.datetime
    acked_seq: int
    acked_at: dt.datetime | None

    @property
    def acknowledged(self) -> bool:
        """True when the subscriber's acknowledged cursor is at or past the event."""
        return self.acked_seq >= self.event_seq

    def to_dict(self, now: dt.datetime) -> dict[str, object]:
        """JSON-ready status; `pending_seconds` says how long an unacknowledged event waits."""
        return {
            "subscriber": self.subscriber,
            "event_seq": self.event_seq,
            "sent_at": self.sent_at.isoformat(),
            "acknowledged": self.acknowledged,
            "acked_seq": self.acked_seq,
            "acked_at": None if self.acked_at is None else self.acked_at.isoformat(),
            "pending_seconds": None
            if self.acknowledged
            else max(0, int((now - self.sent_at).total_seconds())),
        }


def propagation(
    events: Iterable[tuple[str, int, dt.datetime]],
    cursors: Mapping[str, tuple[int, dt.datetime | None]],
) -> list[PropagationStatus]:
    """Join the withdraw events sent (subscriber, seq, sent at) with each subscriber's
    acknowledged cursor (subscriber -> (acked seq, acked at)); one status per subscriber (its
    newest event), sorted by subscriber. A subscriber with no cursor counts as acked 0."""
    newest: dict[str, tuple[int, dt.datetime]] = {}
    for subscriber, seq, at in events:
        if subscriber not in newest or newest[subscriber][0] < seq:
            newest[subscriber] = (seq, at)
    out = []
    for subscriber in sorted(newest):
        seq, at = newest[subscriber]
        acked, acked_at = cursors.get(subscriber, (0, None))
        out.append(PropagationStatus(subscriber, seq, at, acked, acked_at))
    return out
