"""Applying lifecycle operations to a node: objections, corrections, revocation, credit repair,
expiry and purge (the IO side of node/lifecycle.py).

Every operation:
- acts only on this node's own records (producer = this node; "谁认定、谁修复");
- changes the record state, its feed events and the task that explains it in ONE store
  transaction (node/store/lifecycle.py), so subscribers learn of it exactly as it is stored;
- writes one access-log entry (kind `lifecycle_<op>`, or `purge`) naming who asked and why,
  with the subject only as its blind index, in that same transaction (AccessLog.append_with):
  the change and its entry are stored together or not at all, whatever crashes in between.

Corrections re-validate the changed fields with `catalog.validate_record`, re-sign the record
with this node's key and store it as the next version (the store supersedes the old one and
sends `correct` events). Withdrawals (repair, revocation) move the version to `withdrawn`,
which every reader (queries, feeds, `lifecycle.visible`) treats as gone; the access log keeps
who saw it before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import adapters
import catalog
import keys
from node import lifecycle as rules
from node import push
from node.accesslog import LogEntry, utc_iso
from node.errors import InputError, PolicyDenied
from node.runtime import NodeRuntime
from node.store import NewRecord, Store, StoredRecord
from node.store import lifecycle as ls

__all__ = [
    "LEGAL_BASIS",
    "CorrectionResult",
    "LifecycleResult",
    "RepairRefused",
    "Requester",
    "commitment_digest",
    "correct_record",
    "decrypt_record",
    "lifecycle_status",
    "object_record",
    "overdue_summary",
    "overdue_tasks",
    "pending_withdrawals",
    "propagation_report",
    "repair_record",
    "resolve_objection",
    "revoke_record",
    "work_calendar",
]

LOCAL = "local"
_T = TypeVar("_T")


class RepairRefused(PolicyDenied):
    """A credit-repair application is not admissible; `failures` lists every unmet condition.
    repair_record logs the refusal itself, with the record it concerns."""

    access_logged = True

    def __init__(self, failures: tuple[rules.RepairFailure, ...]) -> None:
        listed = "; ".join(f"{f.code}: {f.message}" for f in failures)
        super().__init__("repair_not_admissible", listed)
        self.failures = failures


@dataclass(frozen=True)
class Requester:
    """Who asks for the operation: this node's operator (`node` = own id) or the platform
    acting for a subject. `officer` is a staff id, never a person's name or ID number."""

    node: str
    officer: str = LOCAL


@dataclass(frozen=True)
class LifecycleResult:
    """What an operation did: the record's key, version and state after it, the events sent,
    and (objections, revocations) the deadline that now runs."""

    op: str
    record_key: str
    version: int
    state: str
    events: int
    task_id: str
    deadline: rules.Deadline | None = None
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (no personal data: keys, states, dates)."""
        out: dict[str, Any] = {
            "op": self.op,
            "record_key": self.record_key,
            "version": self.version,
            "state": self.state,
            "events": self.events,
            "task_id": self.task_id,
            "warnings": list(self.warnings),
        }
        if self.deadline is not None:
            out["due_on"] = self.deadline.due_on.isoformat()
            out["due_approximate"] = self.deadline.approximate
            out["due_rule"] = self.deadline.rule
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class CorrectionResult(LifecycleResult):
    """A correction: `superseded_version` is the version the new one replaced."""

    superseded_version: int = 0


_CALENDARS: dict[str, catalog.WorkCalendar] = {}


def work_calendar(runtime: NodeRuntime) -> catalog.WorkCalendar:
    """The working-day calendar of this node: chinese-calendar plus the configured holiday
    file ([lifecycle] holiday_file) for the years the package does not know."""
    path = runtime.config.lifecycle.holiday_file
    key = str(path)
    found = _CALENDARS.get(key)
    if found is None:
        found = catalog.WorkCalendar()
        if path is not None:
            catalog.load_holiday_file(path, found)
        _CALENDARS[key] = found
    return found


def commitment_digest(data: bytes) -> str:
    """SHA-256 hex of a credit commitment document (the document stays with the clerk).
    Refuses an empty document (InputError)."""
    if not data.strip():
        raise InputError("the credit commitment (信用承诺书) file is empty")
    return hashlib.sha256(data).hexdigest()


def decrypt_record(runtime: NodeRuntime, record: StoredRecord) -> keys.VerifiedRecord:
    """Open and verify a stored version with this node's keys (a tampered body fails with
    keys.VerificationError)."""
    signed = keys.SignedRecord.from_bytes(runtime.cipher.decrypt(record.row_id, record.body))
    trusted = {runtime.node_keys.signing.keyid: runtime.node_keys.signing.public_key}
    for public, _until in runtime.node_keys.previous_signing:
        trusted[keys.keyid(public)] = public
    return keys.verify_record(signed, trusted=trusted)


def _entry(
    runtime: NodeRuntime,
    *,
    op: str,
    requester: Requester,
    record: StoredRecord,
    reason: str,
    request_id: str,
    decision: str = "allow",
) -> LogEntry:
    """The access-log entry of lifecycle operation `op` on `record`."""
    return LogEntry(
        time=utc_iso(runtime.clock()),
        kind=f"lifecycle_{op}",
        requester=requester.node,
        officer=requester.officer,
        purpose=f"lifecycle_{op}",
        legal_basis=LEGAL_BASIS[op],
        decision=decision,
        reason=reason,
        request_id=request_id,
        subject_index=record.subject_index,
        items_asked=(record.item_id,),
        result_count=1,
    )


def _logged(runtime: NodeRuntime, entry: LogEntry, work: Callable[[], _T], *, what: str) -> _T:
    """Run `work` (store calls only) and append `entry` in one store transaction: the
    operation and its access-log entry commit together or not at all, whatever crashes in
    between. Returns what `work` returned."""
    return runtime.log.append_with(entry, work, what=what)[1]


# The legal basis each lifecycle operation's access-log entry names (the scan's purge too).
LEGAL_BASIS = {
    "object": "山东省社会信用条例第39条",
    "resolve": "山东省社会信用条例第39条",
    "correct": "山东省社会信用条例第39条; 个人信息保护法第46条",
    "revoke": "山东省社会信用条例第40条; 行政处罚法第48条",
    "repair": "国家发展改革委令第36号第3条",
    "expire": "国家发展改革委令第36号; 山东省社会信用条例第38条",
    "purge": "山东省社会信用条例第38条; 个人信息保护法第19条",
}


def _own(runtime: NodeRuntime, record_key: str) -> StoredRecord:
    return ls.current_record(runtime.store, runtime.node_id, record_key)


def _held(
    runtime: NodeRuntime, record_key: str, verb: str = "objected to or corrected"
) -> StoredRecord:
    """The current version when this node still holds it: active, or expired (withheld, or past
    its disclosure window, kept encrypted until its purge). PIPL Art. 46 and Shandong Art. 39
    let a subject dispute and have corrected what a unit holds, not only what it shows, and
    Shandong Art. 40 has it revoke what it holds when the decision is revoked. Withdrawn
    (repaired or revoked), superseded and purged versions are refused (InputError naming
    what can be `verb`)."""
    record = _own(runtime, record_key)
    if record.state not in _HELD_STATES:
        raise InputError(
            f"record {record_key[:12]}... version {record.version} is {record.state}; only an "
            f"active or expired record can be {verb}"
        )
    return record


_HELD_STATES = frozenset({"active", "expired"})


def _reason_code(reason: str) -> str:
    text = reason.strip()
    if not text or len(text) > 200:
        raise InputError("--reason: give a short reason (1-200 characters, no personal data)")
    return text


# ------------------------------------------------------------------- objections


def object_record(
    runtime: NodeRuntime,
    record_key: str,
    *,
    reason: str,
    needs_other_unit: bool = False,
    requester: Requester | None = None,
    objection_id: str | None = None,
) -> LifecycleResult:
    """File an objection (异议) against the current version of one of this node's records.

    Flags the record (`objection_set` to subscribers; answers and feeds carry the flag) and
    starts the Shandong Art. 39 review clock: 3 working days, 7 with `needs_other_unit`. An
    expired record (withheld, or past its window) may be objected to as well: it is still held.
    Refuses a withdrawn, superseded or purged record and a second open objection (InputError).
    """
    requester = requester or Requester(runtime.node_id)
    reason = _reason_code(reason)
    record = _held(runtime, record_key)
    now = runtime.clock()
    deadline = rules.objection_deadline(
        rules.china_day(now), needs_other_unit=needs_other_unit, calendar=work_calendar(runtime)
    )
    oid = objection_id or f"obj-{uuid.uuid4().hex[:16]}"
    events = _logged(
        runtime,
        _entry(runtime, op="object", requester=requester, record=record, reason="", request_id=oid),
        lambda: ls.open_objection(
            runtime.store,
            objection_id=oid,
            record=record,
            reason=reason,
            opened_at=now,
            due_on=deadline.due_on,
            approximate=deadline.approximate,
        ),
        what="open an objection",
    )
    warning = deadline.warning()
    return LifecycleResult(
        op="object",
        record_key=record_key,
        version=record.version,
        state="under_review",
        events=events,
        task_id=oid,
        deadline=deadline,
        warnings=(warning,) if warning else (),
    )


def resolve_objection(
    runtime: NodeRuntime,
    objection_id: str,
    *,
    outcome: str,
    changes: Mapping[str, str] | None = None,
    requester: Requester | None = None,
) -> LifecycleResult:
    """Close an objection: `confirm` (the record stands; the flag is cleared) or `correct`
    (a corrected version supersedes the objected one; `changes` are required).

    Refuses an unknown or closed objection and an unknown outcome (InputError / NotFound).
    """
    requester = requester or Requester(runtime.node_id)
    if outcome not in ("confirm", "correct"):
        raise InputError(f"--outcome {outcome!r}: must be 'confirm' or 'correct'")
    info = ls.get_objection(runtime.store, objection_id)
    if info.closed_at is not None:
        raise InputError(f"objection {objection_id!r} is already closed ({info.outcome})")
    record = _own(runtime, info.record_key)
    if outcome == "correct":
        if not changes:
            raise InputError("--outcome correct needs at least one --set field=value")
        plan = _plan_correction(
            runtime,
            info.record_key,
            changes,
            reason=f"objection {objection_id}",
            requester=requester,
            resolving=objection_id,
        )

        def correct_and_close() -> CorrectionResult:
            corrected = plan.apply()
            ls.close_objection(
                runtime.store,
                objection_id,
                outcome=f"corrected: version {corrected.version}",
                now=plan.now,
                clear_flag=False,
            )
            return corrected

        corrected = _logged(runtime, plan.entry, correct_and_close, what="correct a record")
        return LifecycleResult(
            op="resolve",
            record_key=info.record_key,
            version=corrected.version,
            state=corrected.state,
            events=corrected.events,
            task_id=objection_id,
            extra={"outcome": "correct", "superseded_version": corrected.superseded_version},
        )
    now = runtime.clock()
    events = _logged(
        runtime,
        _entry(
            runtime,
            op="resolve",
            requester=requester,
            record=record,
            reason="",
            request_id=objection_id,
        ),
        lambda: ls.close_objection(
            runtime.store, objection_id, outcome="confirmed", now=now, clear_flag=True
        ),
        what="close an objection",
    )
    return LifecycleResult(
        op="resolve",
        record_key=info.record_key,
        version=record.version,
        state=record.state,
        events=events,
        task_id=objection_id,
        extra={"outcome": "confirm"},
    )


# ------------------------------------------------------------------ corrections


def correct_record(
    runtime: NodeRuntime,
    record_key: str,
    changes: Mapping[str, str],
    *,
    reason: str,
    requester: Requester | None = None,
) -> CorrectionResult:
    """Store a corrected version (更正) of one of this node's active or expired records.

    The stored version is opened and verified, `changes` applied, the result re-validated
    against the catalogue (every field error reported, nothing stored), re-signed with this
    node's key and stored as version n+1 with the window the corrected facts give: the store
    supersedes an active version n and sends `correct` events. A version whose window is over
    (a correction of an expired or withheld record, usually) is stored `expired`, never shown;
    one the corrected facts put back inside its window is active again. Refuses changes to
    natural-key fields, changes that alter nothing, and a withdrawn, superseded or purged
    record (InputError). Every open objection on the record is closed as corrected. The new
    version, its task, the closed objections and the access-log entry commit as one.
    """
    plan = _plan_correction(runtime, record_key, changes, reason=reason, requester=requester)
    return _logged(runtime, plan.entry, plan.apply, what="correct a record")


@dataclass(frozen=True)
class _CorrectionPlan:
    """A checked, signed correction ready to store: `apply` does the store calls (inside the
    transaction of `entry`, see _logged)."""

    entry: LogEntry
    now: dt.datetime
    apply: Callable[[], CorrectionResult]


def _plan_correction(
    runtime: NodeRuntime,
    record_key: str,
    changes: Mapping[str, str],
    *,
    reason: str,
    requester: Requester | None = None,
    resolving: str | None = None,
) -> _CorrectionPlan:
    """Everything of correct_record but the store calls: check, re-validate and sign the
    corrected version. Open objections but `resolving` (the one whose resolution this
    correction is; its caller closes it) are closed by `apply`."""
    requester = requester or Requester(runtime.node_id)
    reason = _reason_code(reason)
    record = _held(runtime, record_key)
    verified = decrypt_record(runtime, record)
    item = runtime.catalogue.item(record.item_id)
    merged = rules.apply_changes(verified.fields, changes, natural_key=item.natural_key)
    now = runtime.clock()
    result = catalog.validate_record(
        record.item_id, merged, today=rules.china_day(now), catalog=runtime.catalogue
    )
    if result.record is None:
        problems = "; ".join(f"{e.field_id}: {e.code} ({e.message})" for e in result.errors)
        raise InputError(f"the corrected record does not validate: {problems}")
    normalised = result.record
    if adapters.record_key(normalised.item_id, normalised.natural_key) != record_key:
        raise InputError("the correction changes the record's identity; revoke and re-ingest")
    content = adapters.content_hash(normalised.fields)
    if content == record.content_hash:
        raise InputError("the correction changes nothing once normalised")
    version = record.version + 1
    header = {
        "item": normalised.item_id,
        "catalog_version": normalised.catalog_version,
        "record_key": record_key,
        "version": version,
        "producer": runtime.node_id,
        "issued_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": record.subject_index,
    }
    signed = keys.sign_record(header, dict(normalised.fields), runtime.node_keys.signing)
    row_id = str(uuid.uuid4())
    period = catalog.record_period(
        normalised.severity,
        normalised.decided_on,
        conduct_ended_on=normalised.conduct_ended_on,
        disclosure_end=normalised.disclosure_end,
    )
    blind = runtime.blind
    new = NewRecord(
        row_id=row_id,
        producer=runtime.node_id,
        record_key=record_key,
        version=version,
        item_id=normalised.item_id,
        catalog_version=normalised.catalog_version,
        subject_index=blind.token(normalised.subject_id),
        body=runtime.cipher.encrypt(row_id, signed.to_bytes()),
        content_hash=content,
        severity=normalised.severity,
        decided_on=normalised.decided_on,
        disclosure_min_end=period.min_end,
        disclosure_max_end=period.max_end,
        disclosure_rule=period.rule,
        created_at=now,
        linked_subject_indexes=tuple(blind.token(s) for s in normalised.linked_subject_ids),
    )
    task_id = f"cor-{uuid.uuid4().hex[:16]}"

    def apply() -> CorrectionResult:
        events = runtime.store.store_batch([new], now=now, expire_ended=True)
        state = ls.current_record(runtime.store, runtime.node_id, record_key).state
        ls.open_task(
            runtime.store,
            task_id=task_id,
            kind="correction",
            record_key=record_key,
            opened_at=now,
            due_on=rules.china_day(now),
            approximate=False,
        )
        ls.close_task(runtime.store, task_id, outcome=f"version {version}: {reason}"[:200], now=now)
        for objection in ls.list_objections(runtime.store, open_only=True):
            if objection.record_key == record_key and objection.objection_id != resolving:
                ls.close_objection(
                    runtime.store,
                    objection.objection_id,
                    outcome=f"corrected: version {version}",
                    now=now,
                    clear_flag=False,
                )
        return CorrectionResult(
            op="correct",
            record_key=record_key,
            version=version,
            state=state,
            events=events,
            task_id=task_id,
            superseded_version=record.version,
            extra={"superseded_version": record.version, "fields_changed": sorted(changes)},
        )

    entry = _entry(
        runtime, op="correct", requester=requester, record=record, reason="", request_id=task_id
    )
    return _CorrectionPlan(entry, now, apply)


# ------------------------------------------------------------ revocation, repair


def revoke_record(
    runtime: NodeRuntime,
    record_key: str,
    *,
    reason: str,
    known_on: dt.date | None = None,
    requester: Requester | None = None,
) -> LifecycleResult:
    """Withdraw a record whose underlying decision was revoked or changed (行政复议/诉讼).

    The version becomes `withdrawn` (`withdraw` events to every subscriber, the platform
    included) and a `revocation` task tracks the Shandong Art. 40 deadline: 3 working days
    from `known_on` (default: today). The task closes when the platform has acknowledged the
    withdraw event (node.scheduler checks). An expired record (its window over, or withheld
    from the start) is withdrawn too: it is still held until its purge, and its subscribers and
    push receivers may hold it. Refuses a withdrawn, superseded or purged record and a
    `known_on` in the future (InputError). The result lists under `push_receivers` the
    departments the entry was pushed to (joint punishment), each due a withdraw notice from
    this commit on (node/push.py; this function sends nothing).
    """
    requester = requester or Requester(runtime.node_id)
    reason = _reason_code(reason)
    record = _held(runtime, record_key, "revoked")
    now = runtime.clock()
    today = rules.china_day(now)
    known = known_on or today
    if known > today:
        raise InputError(f"--known-on {known}: the revocation cannot become known in the future")
    deadline = rules.revocation_deadline(known, calendar=work_calendar(runtime))
    task_id = f"rev-{uuid.uuid4().hex[:16]}"
    events = _withdraw(
        runtime,
        _entry(
            runtime, op="revoke", requester=requester, record=record, reason="", request_id=task_id
        ),
        record,
        kind="revocation",
        now=now,
        deadline=deadline,
        outcome="",
        close=False,
        states=_HELD_STATES,
    )
    warnings = [w for w in (deadline.warning(),) if w]
    if today > deadline.due_on:
        warnings.append(f"withdrawn after the Art. 40 deadline {deadline.due_on}")
    return LifecycleResult(
        op="revoke",
        record_key=record_key,
        version=record.version,
        state="withdrawn",
        events=events,
        task_id=task_id,
        deadline=deadline,
        warnings=tuple(warnings),
        extra={
            "reason": "revocation",
            "push_receivers": push.withdrawal_report(runtime, record_key),
        },
    )


def repair_record(
    runtime: NodeRuntime,
    record_key: str,
    application: rules.RepairApplication,
    *,
    decision_no: str = "",
    requester: Requester | None = None,
) -> LifecycleResult:
    """Repair a record's credit (信用修复, 令第36号 Art. 3): stop disclosure AND sharing.

    Checks admissibility first (`lifecycle.repair_admissibility`); when refused, raises
    RepairRefused listing every failed condition and logs the refusal. When admitted, the
    version becomes `withdrawn` with a `withdraw` event to every subscriber covering the item
    (every node that could have received it) and the result carries the propagation report:
    the subscribers, and under `push_receivers` the departments the entry was pushed to (joint
    punishment), each due a withdraw notice from this commit on (node/push.py; this function
    sends nothing).
    """
    requester = requester or Requester(runtime.node_id)
    record = _own(runtime, record_key)
    now = runtime.clock()
    verdict = rules.repair_admissibility(
        rules.RepairFacts(record.state, record.severity, record.disclosure_min_end),
        application,
        today=rules.china_day(now),
    )
    task_id = f"rep-{uuid.uuid4().hex[:16]}"
    if not verdict.admissible:
        runtime.log.append_sync(
            _entry(
                runtime,
                op="repair",
                requester=requester,
                record=record,
                reason="repair_not_admissible",
                request_id=task_id,
                decision="deny",
            )
        )
        raise RepairRefused(verdict.failures)
    outcome = (
        f"withdrawn (repair {decision_no[:60]}); commitment sha256:{application.commitment_sha256}"
    )
    events = _withdraw(
        runtime,
        _entry(
            runtime, op="repair", requester=requester, record=record, reason="", request_id=task_id
        ),
        record,
        kind="repair",
        now=now,
        deadline=None,
        outcome=outcome[:200],
        close=True,
    )
    report = propagation_report(runtime, record_key)
    return LifecycleResult(
        op="repair",
        record_key=record_key,
        version=record.version,
        state="withdrawn",
        events=events,
        task_id=task_id,
        extra={
            "reason": "repair",
            "propagation": report["subscribers"],
            "push_receivers": report["push_receivers"],
        },
    )


def _withdraw(
    runtime: NodeRuntime,
    entry: LogEntry,
    record: StoredRecord,
    *,
    kind: str,
    now: dt.datetime,
    deadline: rules.Deadline | None,
    outcome: str,
    close: bool,
    states: frozenset[str] = frozenset({"active"}),
) -> int:
    """Withdraw `record` (still in one of `states` when the transaction runs) with a `kind`
    task named by the entry's request id, due on `deadline` (None: today, exactly), in the
    transaction of `entry`; returns the events."""
    return _logged(
        runtime,
        entry,
        lambda: ls.withdraw_record(
            runtime.store,
            record,
            task_id=entry.request_id,
            kind=kind,
            now=now,
            due_on=rules.china_day(now) if deadline is None else deadline.due_on,
            approximate=False if deadline is None else deadline.approximate,
            outcome=outcome,
            close=close,
            states=states,
        ),
        what="withdraw a record",
    )


def propagation_report(runtime: NodeRuntime, record_key: str) -> dict[str, Any]:
    """Who has acknowledged the withdraw event of a record and who has not, since when.

    One entry per subscriber that was sent the event (every subscriber covering the item when
    it was withdrawn), and under `push_receivers` one per department the record was pushed to
    (joint punishment) with whether it acknowledged the withdraw/expire notice, which the
    serving node sends (`node.push`: at once after a repair or revocation through its
    Lifecycle service, otherwise with its next withdrawal pass); `complete` is True when all
    acknowledged. A record never withdrawn has empty lists.
    """
    record = _own(runtime, record_key)
    events, cursors = ls.withdraw_events(runtime.store, record.row_id)
    statuses = rules.propagation(events, cursors)
    receivers = push.withdrawal_report(runtime, record_key)
    now = runtime.clock()
    return {
        "record_key": record_key,
        "version": record.version,
        "state": record.state,
        "complete": all(s.acknowledged for s in statuses)
        and all(r["acknowledged"] for r in receivers),
        "subscribers": [s.to_dict(now) for s in statuses],
        "push_receivers": receivers,
    }


def overdue_tasks(store: Store, today: dt.date) -> list[rules.TaskView]:
    """Open lifecycle tasks (objection reviews, revocation reports) past their due day.

    For `credex status` and `credex log report`: takes a node.store.Store and the day to judge.
    """
    return rules.overdue(ls.list_tasks(store, open_only=True), today)


def overdue_summary(store: Store, today: dt.date) -> list[dict[str, Any]]:
    """Overdue objection reviews and revocation reports as JSON-ready rows (no personal data:
    task id, kind, record key, due day and whether the day was counted without a holiday
    schedule); for `credex status` and `credex log report`."""
    return [
        {
            "task_id": t.task_id,
            "kind": t.kind,
            "record_key": t.record_key,
            "due_on": t.due_on.isoformat(),
            "approximate_due": t.approximate_due,
        }
        for t in overdue_tasks(store, today)
    ]


def pending_withdrawals(runtime: NodeRuntime, *, limit: int = 50) -> list[dict[str, Any]]:
    """Propagation reports of this node's repaired or revoked records that some subscriber has
    not acknowledged yet (most recent first, at most `limit`), for `credex status`."""
    keys_seen: list[str] = []
    tasks = sorted(
        (t for t in ls.list_tasks(runtime.store) if t.kind in ("repair", "revocation")),
        key=lambda t: t.opened_at,
        reverse=True,
    )
    for task in tasks:
        if task.record_key not in keys_seen:
            keys_seen.append(task.record_key)
    reports = []
    for record_key in keys_seen:
        report = propagation_report(runtime, record_key)
        if (report["subscribers"] or report["push_receivers"]) and not report["complete"]:
            reports.append(report)
        if len(reports) >= limit:
            break
    return reports


def lifecycle_status(runtime: NodeRuntime, record_key: str | None = None) -> dict[str, Any]:
    """The lifecycle status as JSON-ready data: open and overdue tasks, open objections, and
    for one record its versions, tasks, propagation report and pushes."""
    today = rules.china_day(runtime.clock())
    overdue = overdue_tasks(runtime.store, today)
    data: dict[str, Any] = {
        "today": today.isoformat(),
        "open_tasks": [_task_dict(t) for t in ls.list_tasks(runtime.store, open_only=True)],
        "overdue": [t.task_id for t in overdue],
    }
    if record_key is not None:
        versions = runtime.store.record_versions(runtime.node_id, record_key)
        data["record"] = {
            "versions": [
                {"version": v.version, "state": v.state, "objection": v.objection} for v in versions
            ],
            "tasks": [_task_dict(t) for t in ls.list_tasks(runtime.store, record_key=record_key)],
            "propagation": propagation_report(runtime, record_key),
            "pushes": [
                {
                    "push_id": p.push_id,
                    "to_node": p.to_node,
                    "sent_at": p.sent_at.isoformat(),
                    "receipt_at": None if p.receipt_at is None else p.receipt_at.isoformat(),
                }
                for p in ls.list_pushes(runtime.store, record_key=record_key)
            ],
        }
    return data


def _task_dict(t: ls.TaskInfo) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "kind": t.kind,
        "record_key": t.record_key,
        "opened_at": t.opened_at.isoformat(),
        "due_on": t.due_on.isoformat(),
        "approximate_due": t.approximate_due,
        "closed_at": None if t.closed_at is None else t.closed_at.isoformat(),
        "outcome": t.outcome,
    }
