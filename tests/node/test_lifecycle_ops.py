"""Lifecycle operations on a real node store with a pinned clock: objections, corrections,
revocation, repair with propagation, expiry, the five-year cap and purge."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import VerificationError
from node import accesslog
from node import lifecycle as rules
from node import lifecycle_ops as ops
from node.cli.init_cmds import init_node
from node.config import load_config
from node.demo_data import numbered_uscc
from node.errors import InputError, LogUnavailable, TamperDetected
from node.ingest import run_ingest
from node.runtime import NodeRuntime, open_runtime
from node.scheduler import scan
from node.store import NewRecord, Store, logbackend
from node.store import lifecycle as ls
from node.store.errors import RecordTampered, StoreUnavailableError

HEADER = ["名称", "类别", "代码", "法定代表人", "文号", "类型", "事实", "依据", "处罚类别",
          "内容", "罚款", "日期", "机关", "机关代码", "失信程度"]  # fmt: skip
COMMITMENT = "cd" * 32


MAPPING = f'''
item = "admin_penalty"
[source]
kind = "csv"
path = "penalties.csv"
[fields]
subject_name = "名称"
legal_rep_name = "法定代表人"
violation_type = "类型"
violation_facts = "事实"
legal_basis = "依据"
penalty_content = "内容"
authority_name = "机关"
uscc = "代码"
decision_no = "文号"
authority_uscc = "机关代码"
severity = "失信程度"
[fields.subject_category]
column = "类别"
transforms = [{{ map = {{ "企业" = "法人及非法人组织" }} }}]
[fields.penalty_types]
column = "处罚类别"
transforms = [{{ split = ["、"] }}]
[fields.fine_wan_yuan]
column = "罚款"
transforms = [{{ unit = {{ from = "元", to = "万元" }} }}]
[fields.decision_date]
column = "日期"
transforms = ["date"]
[fields.penalty_valid_until]
const = "2099-12-31"
[fields.source_unit]
const = "淄博市张店区市场监督管理局"
[fields.source_unit_uscc]
const = "{numbered_uscc("11370303", 2)}"
'''


def row(i: int, severity: str = "一般") -> dict[str, str]:
    return dict(zip(HEADER, [
        f"淄博张店某某商贸有限公司{i}", "企业", numbered_uscc("91370303", 1000 + i), "王某某",
        f"张市监罚〔2026〕{i}号", "销售不合格产品", "经查，当事人销售的产品经抽检不合格。",
        "《中华人民共和国产品质量法》第四十九条", "警告、罚款", "警告，并处罚款", "5000",
        "2026-05-11", "淄博市张店区市场监督管理局", numbered_uscc("11370303", 1), severity,
    ], strict=True))  # fmt: skip


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, moment: dt.datetime) -> None:
        self.now = moment

    def __call__(self) -> dt.datetime:
        return self.now

    def day(self, day: dt.date, hour_utc: int = 2) -> None:
        self.now = dt.datetime(day.year, day.month, day.day, hour_utc, tzinfo=dt.UTC)


INGESTED = dt.datetime(2026, 5, 20, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(INGESTED)


@pytest.fixture
def runtime(tmp_path: Path, clock: Clock) -> Iterator[NodeRuntime]:
    home = tmp_path / "market"
    init_node(home, name="market", role="department", now=INGESTED)
    with (tmp_path / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows([row(1), row(2), row(3, "严重"), row(4, "轻微")])
    (tmp_path / "penalties.toml").write_text(MAPPING, encoding="utf-8")
    rt = open_runtime(home, clock=clock)
    rt.store.ensure_subscription("platform", ["admin_penalty"], now=INGESTED)
    rt.store.ensure_subscription("health", ["admin_penalty", "honour"], now=INGESTED)
    summary = run_ingest(
        load_config(home),
        tmp_path / "penalties.toml",
        today=INGESTED.date(),
        clock=clock,
        store=rt.store,
    )
    assert summary.accepted == 4
    try:
        yield rt
    finally:
        rt.close()


def keys_of(rt: NodeRuntime) -> list[str]:
    subject = rt.blind.token(numbered_uscc("91370303", 1001))
    (first,) = rt.store.records_by_subject(subject)
    others = [
        rt.store.records_by_subject(rt.blind.token(numbered_uscc("91370303", 1000 + i)))[0]
        for i in (2, 3)
    ]
    return [first.record_key] + [r.record_key for r in others]


def kinds(rt: NodeRuntime, subscriber: str, after: int = 0) -> list[str]:
    return [e.kind for e in rt.store.events_after(subscriber, after)]


# --- objections ------------------------------------------------------------------------------


def test_objection_flags_starts_clock_and_confirm_clears(
    runtime: NodeRuntime, clock: Clock
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 9, 30))
    result = ops.object_record(runtime, key, reason="subject disputes the fine")
    assert result.deadline is not None
    assert result.deadline.due_on == dt.date(2026, 10, 10)  # across National Day (调休 Sat)
    assert result.state == "under_review"
    assert ls.current_record(runtime.store, "market", key).objection
    assert kinds(runtime, "platform")[-1] == "objection_set"
    with pytest.raises(InputError, match="still open"):
        ops.object_record(runtime, key, reason="again")

    assert ops.overdue_tasks(runtime.store, dt.date(2026, 10, 10)) == []
    (late,) = ops.overdue_tasks(runtime.store, dt.date(2026, 10, 11))
    assert (late.task_id, late.kind) == (result.task_id, "objection")
    # what `credex status` and `credex log report` show
    (row,) = ops.overdue_summary(runtime.store, dt.date(2026, 10, 11))
    assert row == {
        "task_id": result.task_id,
        "kind": "objection",
        "record_key": key,
        "due_on": "2026-10-10",
        "approximate_due": False,
    }

    clock.day(dt.date(2026, 10, 9))
    resolved = ops.resolve_objection(runtime, result.task_id, outcome="confirm")
    assert resolved.events == 2  # one per subscriber
    assert not ls.current_record(runtime.store, "market", key).objection
    assert kinds(runtime, "health")[-1] == "objection_cleared"
    assert ops.overdue_tasks(runtime.store, dt.date(2026, 12, 1)) == []
    with pytest.raises(InputError, match="already closed"):
        ops.resolve_objection(runtime, result.task_id, outcome="confirm")


def test_objection_needing_another_unit_gets_seven_days(runtime: NodeRuntime, clock: Clock) -> None:
    clock.day(dt.date(2026, 11, 27))
    result = ops.object_record(runtime, keys_of(runtime)[1], reason="x", needs_other_unit=True)
    assert result.deadline is not None
    assert result.deadline.due_on == dt.date(2026, 12, 8)


# --- corrections -----------------------------------------------------------------------------


def test_correction_is_a_new_signed_version_and_supersedes(
    runtime: NodeRuntime, clock: Clock
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    objection = ops.object_record(runtime, key, reason="wrong amount")
    result = ops.resolve_objection(
        runtime, objection.task_id, outcome="correct", changes={"fine_wan_yuan": "0.8"}
    )
    assert result.version == 2
    versions = runtime.store.record_versions("market", key)
    assert [(v.version, v.state) for v in versions] == [(1, "superseded"), (2, "active")]
    assert not versions[1].objection
    verified = ops.decrypt_record(runtime, versions[1])
    assert verified.fields["fine_wan_yuan"] == "0.8"
    assert verified.header["version"] == 2
    assert verified.signer_keyid == runtime.node_keys.signing.keyid
    old = ops.decrypt_record(runtime, versions[0])  # history kept, still verifiable
    assert old.fields["fine_wan_yuan"] == "0.5"
    assert kinds(runtime, "platform")[-1] == "correct"
    assert ls.get_objection(runtime.store, objection.task_id).outcome == "corrected: version 2"
    # queries by subject see only the current version
    current = runtime.store.records_by_subject(versions[1].subject_index)
    assert [r.version for r in current] == [2]


def test_a_direct_correction_closes_the_open_objection_whatever_its_reason_says(
    runtime: NodeRuntime, clock: Clock
) -> None:
    # the clerk's free text once decided it: a reason starting "objection " left the
    # objection open on a superseded version, overdue for ever
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    objection = ops.object_record(runtime, key, reason="wrong amount")
    done = ops.correct_record(
        runtime, key, {"fine_wan_yuan": "0.8"}, reason="objection upheld by the review"
    )
    closed = ls.get_objection(runtime.store, objection.task_id)
    assert closed.outcome == f"corrected: version {done.version}"
    assert ls.list_objections(runtime.store, open_only=True) == []
    assert ops.overdue_tasks(runtime.store, dt.date(2027, 1, 1)) == []


def test_correction_refusals(runtime: NodeRuntime, clock: Clock) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    with pytest.raises(InputError, match="identifies the record"):
        ops.correct_record(runtime, key, {"decision_no": "张市监罚〔2026〕99号"}, reason="r")
    with pytest.raises(InputError, match="does not validate") as info:
        ops.correct_record(runtime, key, {"decision_date": "2026-13-45"}, reason="r")
    assert "decision_date" in str(info.value)
    with pytest.raises(InputError, match="changes nothing"):
        ops.correct_record(runtime, key, {"fine_wan_yuan": "0.5"}, reason="r")
    with pytest.raises(InputError, match="reason"):
        ops.correct_record(runtime, key, {"fine_wan_yuan": "0.8"}, reason="  ")
    assert [v.version for v in runtime.store.record_versions("market", key)] == [1]


# --- revocation and repair -------------------------------------------------------------------


def test_revocation_withdraws_and_tracks_the_art40_deadline(
    runtime: NodeRuntime, clock: Clock
) -> None:
    first, key, _ = keys_of(runtime)
    clock.day(dt.date(2026, 10, 9))
    result = ops.revoke_record(
        runtime, key, reason="行政复议决定书〔2026〕1号", known_on=dt.date(2026, 9, 30)
    )
    assert result.deadline is not None
    assert result.deadline.due_on == dt.date(2026, 10, 10)
    assert ls.current_record(runtime.store, "market", key).state == "withdrawn"
    assert kinds(runtime, "platform")[-1] == "withdraw"
    (task,) = ls.list_tasks(runtime.store, open_only=True)
    assert task.kind == "revocation"
    with pytest.raises(InputError, match="withdrawn"):
        ops.revoke_record(runtime, key, reason="again")
    with pytest.raises(InputError, match="future"):
        ops.revoke_record(runtime, first, reason="r", known_on=dt.date(2026, 10, 10))


def test_a_revoked_decision_withdraws_a_record_whose_window_ended(
    runtime: NodeRuntime, clock: Clock
) -> None:
    """Shandong Art. 40: when the decision is revoked, the provider revokes its 失信信息 and
    tells the platform within 3 working days, also when its disclosure window has ended: an
    expired record is still held (and was shared) until its purge."""
    general, other, _severe = keys_of(runtime)
    clock.day(dt.date(2027, 5, 12))
    assert scan(runtime).expired == 2
    clock.day(dt.date(2027, 6, 1))
    result = ops.revoke_record(
        runtime, general, reason="行政复议决定书〔2027〕3号", known_on=dt.date(2027, 5, 31)
    )
    assert (result.state, result.events) == ("withdrawn", 2)
    assert ls.current_record(runtime.store, "market", general).state == "withdrawn"
    assert kinds(runtime, "platform")[-1] == "withdraw"
    assert kinds(runtime, "health")[-1] == "withdraw"
    (task,) = ls.list_tasks(runtime.store, open_only=True)
    assert (task.kind, task.record_key) == ("revocation", general)
    (logged,) = accesslog.search(runtime.log.backend, kind="lifecycle_revoke")
    assert (logged[1].decision, logged[1].request_id) == ("allow", result.task_id)
    # the withheld minor record (expired since its ingest) is revocable too
    minor = runtime.blind.token(numbered_uscc("91370303", 1004))
    (withheld,) = runtime.store.records_by_subject(minor, states=None)
    assert ops.revoke_record(runtime, withheld.record_key, reason="r").state == "withdrawn"
    # what stays refused: a second revocation, and the repair of an expired record (its
    # disclosure is over: there is nothing left for a repair to stop)
    with pytest.raises(InputError, match="is withdrawn"):
        ops.revoke_record(runtime, general, reason="again")
    good = rules.RepairApplication(obligations_fulfilled=True, commitment_sha256=COMMITMENT)
    with pytest.raises(ops.RepairRefused):
        ops.repair_record(runtime, other, good)
    assert ls.current_record(runtime.store, "market", other).state == "expired"
    # retention runs from the end of the window, as for the expired record it was
    clock.day(dt.date(2032, 5, 12))
    scan(runtime)
    assert ls.current_record(runtime.store, "market", general).state == "purged"
    with pytest.raises(InputError, match="is purged"):
        ops.revoke_record(runtime, general, reason="too late")


def test_repair_refused_lists_every_failure_and_is_logged(
    runtime: NodeRuntime, clock: Clock
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 8, 11))  # last day of the minimum period
    bad = rules.RepairApplication(obligations_fulfilled=False, commitment_sha256=None)
    with pytest.raises(ops.RepairRefused) as info:
        ops.repair_record(runtime, key, bad)
    assert [f.code for f in info.value.failures] == [
        "minimum_period",
        "obligations_unfulfilled",
        "no_commitment",
    ]
    assert str(info.value).startswith("repair_not_admissible:")
    assert ls.current_record(runtime.store, "market", key).state == "active"
    entries = accesslog.search(runtime.log.backend, kind="lifecycle_repair")
    assert [e.decision for _, e in entries] == ["deny"]


def test_repair_withdraws_everywhere_with_propagation_report(
    runtime: NodeRuntime, clock: Clock
) -> None:
    key = keys_of(runtime)[0]
    record = ls.current_record(runtime.store, "market", key)
    clock.day(dt.date(2026, 8, 12))
    good = rules.RepairApplication(obligations_fulfilled=True, commitment_sha256=COMMITMENT)
    result = ops.repair_record(runtime, key, good, decision_no="张信修〔2026〕1号")
    assert (result.state, result.events) == ("withdrawn", 2)
    assert runtime.store.records_by_subject(record.subject_index) == []
    report = result.extra["propagation"]
    assert [(r["subscriber"], r["acknowledged"]) for r in report] == [
        ("health", False),
        ("platform", False),
    ]
    # the platform acknowledges past the withdraw event; health does not
    platform_seq = next(r["event_seq"] for r in report if r["subscriber"] == "platform")
    clock.day(dt.date(2026, 8, 13))
    runtime.store.mark_delivered("platform", platform_seq)  # as its feed batch leaves
    runtime.store.ack("platform", platform_seq, now=clock())
    after = ops.propagation_report(runtime, key)
    assert not after["complete"]
    status = {r["subscriber"]: r for r in after["subscribers"]}
    assert status["platform"]["acknowledged"]
    assert status["health"]["pending_seconds"] == 24 * 3600
    # `credex status` lists the withdrawal until every subscriber has acknowledged it
    assert [p["record_key"] for p in ops.pending_withdrawals(runtime)] == [key]
    runtime.store.mark_delivered("health", status["health"]["event_seq"])
    runtime.store.ack("health", status["health"]["event_seq"], now=clock())
    assert ops.pending_withdrawals(runtime) == []
    # a repaired record cannot be repaired, objected or corrected again
    with pytest.raises(ops.RepairRefused, match="not_active"):
        ops.repair_record(runtime, key, good)
    with pytest.raises(InputError):
        ops.object_record(runtime, key, reason="x")
    # the access log still shows the subject's history, including the repair
    entries = accesslog.search(runtime.log.backend, subject_index=record.subject_index)
    assert "lifecycle_repair" in [e.kind for _, e in entries]


def test_a_minor_record_is_withheld_so_there_is_nothing_to_repair(
    runtime: NodeRuntime, clock: Clock
) -> None:
    # 令第36号: 轻微 原则上不予公示. It is stored with the explicit empty window and never
    # active, so no query or feed shows it and repair (which stops disclosure) has no object.
    subject = runtime.blind.token(numbered_uscc("91370303", 1004))
    assert runtime.store.records_by_subject(subject) == []
    (record,) = runtime.store.records_by_subject(subject, states=None)
    decided = dt.date(2026, 5, 11)
    assert (record.state, record.severity) == ("expired", "minor")
    assert (record.disclosure_min_end, record.disclosure_max_end) == (decided, decided)
    clock.day(dt.date(2026, 5, 21))
    good = rules.RepairApplication(obligations_fulfilled=True, commitment_sha256=COMMITMENT)
    with pytest.raises(ops.RepairRefused, match="not_active"):
        ops.repair_record(runtime, record.record_key, good)


def test_a_withheld_record_is_still_held_so_it_can_be_disputed_and_corrected(
    runtime: NodeRuntime, clock: Clock
) -> None:
    """PIPL Art. 46 and Shandong Art. 39: a subject may dispute and have corrected what a unit
    holds, not only what it shows. A withheld minor record is kept (encrypted, never shown)
    until its purge, so its objection gets the review clock, and its correction is a new
    signed version that stays withheld."""
    subject = runtime.blind.token(numbered_uscc("91370303", 1004))
    (record,) = runtime.store.records_by_subject(subject, states=None)
    assert record.state == "expired"
    clock.day(dt.date(2026, 6, 1))
    objection = ops.object_record(runtime, record.record_key, reason="wrong amount")
    assert objection.deadline is not None
    assert objection.deadline.due_on == dt.date(2026, 6, 4)
    assert ls.current_record(runtime.store, "market", record.record_key).objection
    resolved = ops.resolve_objection(
        runtime, objection.task_id, outcome="correct", changes={"fine_wan_yuan": "0.8"}
    )
    assert (resolved.version, resolved.state) == (2, "expired")
    versions = runtime.store.record_versions("market", record.record_key)
    assert [(v.version, v.state) for v in versions] == [(1, "expired"), (2, "expired")]
    corrected = versions[1]
    assert ops.decrypt_record(runtime, corrected).fields["fine_wan_yuan"] == "0.8"
    assert not rules.visible(
        state=corrected.state,
        severity=corrected.severity,
        decided_on=corrected.decided_on,
        disclosure_max_end=corrected.disclosure_max_end,
        today=dt.date(2026, 6, 1),
    )
    assert kinds(runtime, "platform")[-1] == "correct"  # its body never travels (docs/feeds.md)
    assert ls.get_objection(runtime.store, objection.task_id).outcome == "corrected: version 2"


def test_a_withdrawn_record_cannot_be_disputed_or_corrected(
    runtime: NodeRuntime, clock: Clock
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    ops.revoke_record(runtime, key, reason="decision revoked on review")
    with pytest.raises(InputError, match="is withdrawn; only an active or expired record"):
        ops.object_record(runtime, key, reason="x")
    with pytest.raises(InputError, match="is withdrawn; only an active or expired record"):
        ops.correct_record(runtime, key, {"fine_wan_yuan": "0.8"}, reason="r")
    assert [v.version for v in runtime.store.record_versions("market", key)] == [1]


# --- the scan: expiry, cap, purge ------------------------------------------------------------


def test_scan_expires_then_purges_after_retention(runtime: NodeRuntime, clock: Clock) -> None:
    general, _, severe = keys_of(runtime)
    clock.day(dt.date(2027, 5, 11))
    assert scan(runtime).expired == 0  # max_end 2027-05-11 is still disclosed
    clock.day(dt.date(2027, 5, 12))
    report = scan(runtime)
    assert (report.expired, report.purged) == (2, 0)
    assert ls.current_record(runtime.store, "market", general).state == "expired"
    assert ls.current_record(runtime.store, "market", severe).state == "active"  # 3 years
    assert kinds(runtime, "platform")[-2:] == ["expire", "expire"]
    assert scan(runtime).expired == 0  # idempotent
    # kept encrypted for five years after max_end, purged the day after
    clock.day(dt.date(2032, 5, 11))
    # only the withheld minor record (its window ended on its decision day, 2026-05-11)
    assert scan(runtime).purged == 1
    clock.day(dt.date(2032, 5, 12))
    report = scan(runtime)
    assert report.purged == 2
    purged = ls.current_record(runtime.store, "market", general)
    assert (purged.state, purged.body) == ("purged", b"")
    entries = accesslog.search(runtime.log.backend, kind="purge")
    assert len(entries) == 3
    assert {e.subject_index for _, e in entries} >= {purged.subject_index}
    assert accesslog.verify_log(runtime.log.backend, runtime.log_verifiers()).ok


def test_scan_applies_the_five_year_cap_to_records_without_a_period(
    runtime: NodeRuntime, clock: Clock
) -> None:
    row_id = str(uuid.uuid4())
    runtime.store.store_batch(
        [
            NewRecord(
                row_id=row_id,
                producer="market",
                record_key="f" * 64,
                version=1,
                item_id="admin_penalty",
                catalog_version="2026.1",
                subject_index="ab" * 16,
                body=runtime.cipher.encrypt(row_id, b"x"),
                content_hash="0" * 64,
                severity="severe",
                decided_on=dt.date(2021, 11, 25),
                disclosure_min_end=None,
                disclosure_max_end=None,
                disclosure_rule="legacy import without a period",
                created_at=INGESTED,
            )
        ],
        now=INGESTED,
    )
    clock.day(dt.date(2026, 11, 25))
    assert scan(runtime).capped == 0  # the last day of five years
    clock.day(dt.date(2026, 11, 26))
    assert scan(runtime).capped == 1
    assert runtime.store.get_record(row_id).state == "expired"


def test_china_day_decides_the_scan_day(runtime: NodeRuntime, clock: Clock) -> None:
    # 2027-05-11 16:30 UTC is already 2027-05-12 in Zibo
    clock.now = dt.datetime(2027, 5, 11, 16, 30, tzinfo=dt.UTC)
    assert scan(runtime).expired == 2


def test_commitment_digest_refuses_empty() -> None:
    assert ops.commitment_digest(b"I promise") == keys_digest(b"I promise")
    with pytest.raises(InputError):
        ops.commitment_digest(b"  \n")


def keys_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- each operation and its access-log entry commit as one -----------------------------------


def log_requests(rt: NodeRuntime) -> list[str]:
    return [e.request_id for _, _, e in accesslog.iter_entries(rt.log.backend)]


def break_log_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> int:
        raise StoreUnavailableError("store: append to the access log failed: disk I/O error")

    monkeypatch.setattr(logbackend, "_append_in", broken)


def test_a_revocation_whose_entry_cannot_be_logged_is_not_applied(
    runtime: NodeRuntime, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the withdrawal committed first: a failing append (or a crash before it) left a
    withdrawn record, its task and its withdraw events with no entry saying who did it."""
    key = keys_of(runtime)[1]
    clock.day(dt.date(2026, 10, 9))
    events_before = kinds(runtime, "platform")
    logged_before = log_requests(runtime)
    break_log_appends(monkeypatch)
    with pytest.raises(LogUnavailable, match="withdraw a record"):
        ops.revoke_record(runtime, key, reason="行政复议决定书〔2026〕1号")
    monkeypatch.undo()
    assert ls.current_record(runtime.store, "market", key).state == "active"
    assert ls.list_tasks(runtime.store) == []
    assert kinds(runtime, "platform") == events_before
    assert log_requests(runtime) == logged_before
    done = ops.revoke_record(runtime, key, reason="行政复议决定书〔2026〕1号")  # a retry works
    assert log_requests(runtime)[-1] == done.task_id
    assert ls.current_record(runtime.store, "market", key).state == "withdrawn"
    assert accesslog.verify_log(runtime.log.backend, runtime.log_verifiers()).ok


def test_a_correction_that_fails_midway_stores_nothing_and_logs_nothing(
    runtime: NodeRuntime, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new version, its task, the objection it closes and its entry are one transaction:
    a failure after the version was written takes the version back too."""
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    objection = ops.object_record(runtime, key, reason="wrong amount")
    logged_before = log_requests(runtime)

    def failing_close(*args: object, **kwargs: object) -> bool:
        raise StoreUnavailableError("store: close a lifecycle task failed: disk I/O error")

    monkeypatch.setattr(ls, "close_task", failing_close)
    with pytest.raises(StoreUnavailableError):
        ops.resolve_objection(
            runtime, objection.task_id, outcome="correct", changes={"fine_wan_yuan": "0.8"}
        )
    monkeypatch.undo()
    versions = runtime.store.record_versions("market", key)
    assert [(v.version, v.state, v.objection) for v in versions] == [(1, "active", True)]
    assert ls.get_objection(runtime.store, objection.task_id).closed_at is None
    assert log_requests(runtime) == logged_before
    result = ops.resolve_objection(
        runtime, objection.task_id, outcome="correct", changes={"fine_wan_yuan": "0.8"}
    )
    assert result.version == 2
    assert ls.get_objection(runtime.store, objection.task_id).outcome == "corrected: version 2"


def test_a_purge_whose_entry_cannot_be_logged_keeps_the_record(
    runtime: NodeRuntime, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    general = keys_of(runtime)[0]
    clock.day(dt.date(2027, 5, 12))
    scan(runtime)
    clock.day(dt.date(2032, 5, 12))
    break_log_appends(monkeypatch)
    with pytest.raises(LogUnavailable, match="purge a record"):
        scan(runtime)
    monkeypatch.undo()
    assert ls.current_record(runtime.store, "market", general).state == "expired"
    assert scan(runtime).purged == 3
    assert ls.current_record(runtime.store, "market", general).state == "purged"


def test_a_body_rewritten_as_text_by_sql_fails_verification_not_the_read(
    runtime: NodeRuntime,
) -> None:
    """SQLite stores what `replace()` returns as text. Bytes that are valid UTF-8 come back as
    text (they reached `bytes()` and raised TypeError, an 'unexpected' crash); others the
    driver cannot decode (reported as 'database unavailable'). Both are tampering."""
    first, second = keys_of(runtime)[:2]
    rows = [ls.current_record(runtime.store, "market", k).row_id for k in (first, second)]
    with runtime.store.write("tamper") as conn:
        # the first body becomes text that is UTF-8 (its hex form), the second raw bytes as text
        conn.exec_driver_sql("UPDATE records SET body = hex(body) WHERE row_id = ?", (rows[0],))
        conn.exec_driver_sql(
            "UPDATE records SET body = replace(body, 'x', 'y') WHERE row_id = ?", (rows[1],)
        )
    # the row's tag covers the body (decision 0018): the read refuses it, naming the row
    with pytest.raises(RecordTampered, match=rows[0]):
        ls.current_record(runtime.store, "market", first)
    # behind the tag, the body itself still fails (read without a tagger)
    edited = ls.current_record(Store(runtime.store.engine), "market", first)
    assert isinstance(edited.body, bytes)
    with pytest.raises(VerificationError):
        ops.decrypt_record(runtime, edited)
    with pytest.raises(TamperDetected, match="rewritten outside credex"):
        ls.current_record(runtime.store, "market", second)
