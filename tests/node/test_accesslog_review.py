"""Officer tools on the access log: search, export with proofs, risk report; witnessing and
fork detection."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

import keys
from node.accesslog import (
    AccessLog,
    ForkDetected,
    LogEntry,
    MemoryLogBackend,
    Witness,
    export,
    export_lines,
    is_off_hours,
    risk_report,
    search,
    utc_iso,
    verify_export_record,
    verify_log,
    witness_checkpoint,
)
from node.errors import ExitCode, InputError
from node.grants import Grant, GrantState

LOG_KEY = keys.Signer(b"\x41" * 32)
ROGUE_KEY = keys.Signer(b"\x42" * 32)
WITNESS_KEY = keys.Signer(b"\x43" * 32)
ORIGIN = "credex.zd-market/accesslog"
VERIFIERS = {ORIGIN: LOG_KEY.public_key}
CHINA = dt.timezone(dt.timedelta(hours=8))
# Wednesday 2026-11-25, 10:00 China time: a working day, in hours
WORK = dt.datetime(2026, 11, 25, 10, 0, tzinfo=CHINA)


def entry(at: dt.datetime, requester: str = "zd-tax", **changes: Any) -> LogEntry:
    values: dict[str, Any] = {
        "time": utc_iso(at),
        "kind": "query",
        "requester": requester,
        "officer": "officer-1",
        "purpose": "administrative_licensing",
        "legal_basis": "《行政许可法》",
        "decision": "allow",
        "reason": "statutory_duty",
        "request_id": f"req-{at.timestamp()}",
        "subject_index": "a" * 32,
    }
    values.update(changes)
    return LogEntry(**values)


def new_log() -> tuple[AccessLog, MemoryLogBackend]:
    backend = MemoryLogBackend()
    return AccessLog(backend, origin=ORIGIN, signer=LOG_KEY, clock=lambda: WORK), backend


# --- search ---------------------------------------------------------------------------------------


def test_search_by_subject_requester_and_time() -> None:
    log, backend = new_log()
    log.append_sync(entry(WORK, subject_index="b" * 32))
    log.append_sync(entry(WORK + dt.timedelta(hours=1)))
    log.append_sync(entry(WORK + dt.timedelta(hours=2), requester="zd-court"))
    log.append_sync(entry(WORK + dt.timedelta(hours=3), kind="admin_read"))
    assert [i for i, _ in search(backend, subject_index="a" * 32)] == [1, 2, 3]
    assert [i for i, _ in search(backend, requester="zd-court")] == [2]
    assert [i for i, _ in search(backend, kind="admin_read")] == [3]
    window = search(backend, since=WORK + dt.timedelta(hours=1), until=WORK + dt.timedelta(hours=3))
    assert [i for i, _ in window] == [1, 2]  # since inclusive, until exclusive
    assert [i for i, _ in search(backend, limit=2)] == [0, 1]
    assert search(backend, subject_index="c" * 32) == []


# --- export ------------------------------------------------------------------------------------


def test_export_lines_carry_inclusion_proofs_that_verify_alone() -> None:
    log, backend = new_log()
    for h in range(7):
        log.append_sync(entry(WORK + dt.timedelta(minutes=h)))
    log.checkpoint()
    log.append_sync(entry(WORK + dt.timedelta(hours=5)))  # not yet checkpointed
    lines = list(export_lines(backend))
    assert len(lines) == 8
    records = [json.loads(line) for line in lines]
    for record in records[:7]:
        got = verify_export_record(record, VERIFIERS)
        assert got.to_dict() == record["entry"]
        assert record["tree_size"] == 7
    assert records[7]["proof"] is None
    with pytest.raises(InputError):
        verify_export_record(records[7], VERIFIERS)
    forged = dict(records[3])
    forged["leaf"] = records[4]["leaf"]
    with pytest.raises(keys.VerificationError):
        verify_export_record(forged, VERIFIERS)
    assert [r["index"] for r in export(backend, indexes=[2, 5])] == [2, 5]


# --- risk report ----------------------------------------------------------------------------------


def test_off_hours_uses_china_time_and_the_holiday_calendar() -> None:
    assert not is_off_hours(WORK)
    assert is_off_hours(WORK.replace(hour=7, minute=59))
    assert is_off_hours(WORK.replace(hour=18))
    assert is_off_hours(dt.datetime(2026, 11, 28, 10, tzinfo=CHINA))  # Saturday
    assert is_off_hours(dt.datetime(2026, 10, 1, 10, tzinfo=CHINA))  # National Day
    assert is_off_hours(dt.datetime(2027, 11, 27, 10, tzinfo=CHINA))  # beyond the calendar: weekend


def test_risk_report_flags_spikes_off_hours_denials_grantless_queries_and_grants() -> None:
    log, backend = new_log()
    now = WORK + dt.timedelta(hours=6)
    # zd-tax: a steady 1 per day for 30 days, then 30 today (spike), 2 at night
    for day in range(1, 31):
        log.append_sync(entry(WORK - dt.timedelta(days=day), grant_id="g"))
    for m in range(30):
        log.append_sync(entry(WORK + dt.timedelta(minutes=m), grant_id="g"))
    log.append_sync(entry(WORK.replace(hour=2), grant_id="g"))
    log.append_sync(entry(WORK.replace(hour=23) - dt.timedelta(days=1), grant_id="g"))
    # zd-court: 10 requests, 5 denied, all without grants
    for m in range(10):
        denied = m % 2 == 0
        log.append_sync(
            entry(
                WORK + dt.timedelta(minutes=m),
                requester="zd-court",
                decision="deny" if denied else "allow",
                reason="grant_required" if denied else "statutory_duty",
            )
        )
    grant = Grant(
        grant_id="g-near",
        issuer="zd-platform",
        subject_digest="a" * 64,
        grantee="zd-tax",
        purpose="staff_recruitment",
        items=frozenset({"x"}),
        valid_from=WORK,
        valid_until=WORK + dt.timedelta(days=1),
        use_limit=5,
        evidence_sha256="b" * 64,
        issued_at=WORK,
    )
    report = risk_report(
        backend, now, grants=[GrantState(grant, b"", uses=4), GrantState(grant, b"", uses=1)]
    )
    found = {(f.code, f.subject) for f in report.findings}
    assert ("volume_spike", "zd-tax") in found
    assert ("off_hours", "zd-tax") in found
    assert ("denied_ratio", "zd-court") in found
    assert ("queries_without_grant", "zd-court") in found
    assert ("queries_without_grant", "zd-tax") not in found
    assert ("volume_spike", "zd-court") not in found  # below the minimum volume
    assert [f.subject for f in report.findings if f.code == "grant_near_limit"] == ["g-near"]
    tax = next(s for s in report.requesters if s.requester == "zd-tax")
    assert tax.window_count == 32  # 30 today, 02:00 today, 23:00 yesterday
    assert tax.off_hours == 2
    assert tax.baseline_daily == pytest.approx(30 / 30, rel=0.1)
    for f in report.findings:
        assert "a" * 32 not in f.message


# --- witnessing and forks ---------------------------------------------------------------


def _two_checkpoints() -> tuple[AccessLog, str, str]:
    log, _backend = new_log()
    for h in range(5):
        log.append_sync(entry(WORK + dt.timedelta(minutes=h)))
    first = log.checkpoint()
    for h in range(4):
        log.append_sync(entry(WORK + dt.timedelta(hours=1, minutes=h)))
    return log, first, log.checkpoint()


def test_witness_cosigns_a_consistent_checkpoint() -> None:
    log, first, second = _two_checkpoints()
    cosigned = witness_checkpoint(
        first,
        second,
        log.consistency_proof(5, 9),
        log_verifiers=VERIFIERS,
        name="zd-platform",
        signer=WITNESS_KEY,
    )
    cp = keys.verify_checkpoint(
        cosigned, verifiers={"zd-platform": WITNESS_KEY.public_key}, log_name="zd-platform"
    )
    assert cp.size == 9
    assert witness_checkpoint(
        None, first, [], log_verifiers=VERIFIERS, name="zd-platform", signer=WITNESS_KEY
    )


def test_same_size_different_root_is_a_fork() -> None:
    _log, first, _second = _two_checkpoints()
    forged = keys.sign_checkpoint(
        keys.Checkpoint(ORIGIN, 5, b"\x09" * 32), name=ORIGIN, signer=LOG_KEY
    )
    with pytest.raises(ForkDetected) as caught:
        witness_checkpoint(
            first, forged, [], log_verifiers=VERIFIERS, name="zd-platform", signer=WITNESS_KEY
        )
    assert caught.value.exit_code == ExitCode.VERIFICATION


def test_an_inconsistent_extension_is_a_fork_and_the_witness_records_it() -> None:
    log, first, second = _two_checkpoints()
    other_log, _b = new_log()
    for h in range(9):
        other_log.append_sync(entry(WORK + dt.timedelta(days=1, minutes=h)))
    other = other_log.checkpoint()  # same origin and key, another history
    witness = Witness("zd-platform", WITNESS_KEY, {ORIGIN: VERIFIERS})
    witness.witness(first, [])
    with pytest.raises(ForkDetected):
        witness.witness(other, other_log.consistency_proof(5, 9))
    assert witness.alarms == [(ORIGIN, first, other)]
    assert witness.latest[ORIGIN] == first  # the fork was not accepted
    witness.witness(second, log.consistency_proof(5, 9))
    assert witness.latest[ORIGIN] == second


def test_witness_refuses_unknown_logs_and_bad_signatures() -> None:
    _log, first, _second = _two_checkpoints()
    witness = Witness("zd-platform", WITNESS_KEY, {"credex.other": VERIFIERS})
    with pytest.raises(InputError):
        witness.witness(first, [])
    forged = keys.sign_checkpoint(
        keys.Checkpoint(ORIGIN, 5, b"\x09" * 32), name=ORIGIN, signer=ROGUE_KEY
    )
    with pytest.raises(keys.VerificationError):
        witness_checkpoint(None, forged, [], log_verifiers=VERIFIERS, name="w", signer=WITNESS_KEY)


def test_a_node_shown_a_foreign_history_raises_and_records_an_alarm() -> None:
    log, first, _second = _two_checkpoints()
    log.check_foreign_checkpoint(first, VERIFIERS)  # our own: fine
    forged = keys.sign_checkpoint(
        keys.Checkpoint(ORIGIN, 5, b"\x09" * 32), name=ORIGIN, signer=LOG_KEY
    )
    before = log.backend.size()
    with pytest.raises(ForkDetected):
        log.check_foreign_checkpoint(forged, VERIFIERS)
    alarms = search(log.backend, kind="alarm")
    assert len(alarms) == 1
    assert alarms[0][0] == before
    assert alarms[0][1].reason == "fork_detected"
    assert verify_log(log.backend, VERIFIERS).ok
