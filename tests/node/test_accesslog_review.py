"""Officer tools on the access log: search, export with proofs, risk report; witnessing and
fork detection."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import pytest

import catalog
import keys
import node.witness
from node.accesslog import (
    AccessLog,
    ForkDetected,
    LogEntry,
    MemoryLogBackend,
    RiskReport,
    Witness,
    export,
    export_lines,
    fork_reason,
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
from tests.catalog.catalog_testdata import (
    AUTHORITY_USCC,
    COMPANY_USCC,
    PERSON_ID,
    SHOP_USCC,
    TODAY,
    make_ric,
)

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


# --- risk report: grantless queries and the subject's kind ---------------------------------------

CATALOGUE = catalog.default_catalog()
PERSON = catalog.mask_identifier(PERSON_ID)  # 370303********0017
COMPANY = catalog.mask_identifier(COMPANY_USCC)  # 913501********0Y43
SHOP = catalog.mask_identifier(SHOP_USCC)  # 923703********0014, an individual business
AUTHORITY = catalog.mask_identifier(AUTHORITY_USCC)  # 113703********0013: digits, like an ID

# What the cases below assume of the shipped catalogue (the node's): items held only for
# organisations, only for persons, for every kind, and an organisation item linking its legal
# representative (so a natural person may ask for it, Shandong Art. 31).
ORG_ONLY, PERSON_ONLY, EVERY_KIND, LINKED = (
    "admin_penalty",
    "admin_penalty_person",
    "qualification",
    "severe_dishonesty_list",
)


def test_the_catalogue_items_the_review_cases_rely_on() -> None:
    organisations = {"organisation", "individual_business"}
    assert CATALOGUE.item(ORG_ONLY).subject_kinds == organisations
    assert not CATALOGUE.item(ORG_ONLY).linked_id_fields
    assert CATALOGUE.item(PERSON_ONLY).subject_kinds == {"natural_person"}
    assert CATALOGUE.item(EVERY_KIND).subject_kinds == organisations | {"natural_person"}
    assert CATALOGUE.item(LINKED).subject_kinds == organisations
    assert CATALOGUE.item(LINKED).linked_id_fields
    assert "retired_item" not in CATALOGUE.items


def grantless(items: tuple[str, ...], masked: str | None, **changes: Any) -> dict[str, Any]:
    """The fields of an allowed query without a grant (no time or requester yet)."""
    values: dict[str, Any] = {
        "reason": "allowed",
        "items_asked": items,
        "items_released": items,
        "subject_masked": masked,
    }
    values.update(changes)
    return values


def review(
    cases: list[tuple[str, dict[str, Any]]], catalogue: catalog.Catalog | None = CATALOGUE
) -> RiskReport:
    """Log `(requester, fields)` cases a second apart today and run the report on them."""
    log, backend = new_log()
    for second, (requester, changes) in enumerate(cases):
        log.append_sync(entry(WORK + dt.timedelta(seconds=second), requester, **changes))
    return risk_report(backend, WORK + dt.timedelta(hours=2), catalogue=catalogue)


def without_grant(report: RiskReport) -> dict[str, int]:
    return {s.requester: s.without_grant for s in report.requesters}


def grantless_findings(report: RiskReport) -> set[tuple[str, float]]:
    return {(f.subject, f.value) for f in report.findings if f.code == "queries_without_grant"}


@pytest.mark.parametrize(
    "case",
    [
        grantless((ORG_ONLY,), COMPANY),
        grantless((ORG_ONLY,), SHOP),
        # the items alone leave the kind open; the mask cannot be an ID number
        grantless((EVERY_KIND,), COMPANY),
        grantless((EVERY_KIND,), SHOP),
        grantless((LINKED,), COMPANY),
        # an organisation-only item bounds the kind even when the mask looks like an ID number
        grantless((ORG_ONLY, EVERY_KIND), AUTHORITY),
        # a statutory-duty query about an organisation needs no grant either
        grantless((ORG_ONLY,), COMPANY, reason="statutory_duty"),
    ],
    ids=[
        "org-item-company",
        "org-item-individual-business",
        "every-kind-company",
        "every-kind-individual-business",
        "linked-item-company",
        "org-and-every-kind-items",
        "org-statutory-duty",
    ],
)
def test_an_organisation_query_without_grant_is_not_flagged(case: dict[str, Any]) -> None:
    report = review([("zd-tax", case)])
    assert without_grant(report) == {"zd-tax": 0}
    assert grantless_findings(report) == set()
    # without the catalogue the kind is unknown, and the same query is counted
    unjudged = review([("zd-tax", case)], catalogue=None)
    assert without_grant(unjudged) == {"zd-tax": 1}
    assert grantless_findings(unjudged) == {("zd-tax", 1.0)}


@pytest.mark.parametrize(
    "case",
    [
        grantless((PERSON_ONLY,), PERSON),
        grantless((PERSON_ONLY,), PERSON, reason="statutory_duty"),
        grantless((EVERY_KIND,), PERSON),
        # a legal representative asked about through the organisation item that names them
        grantless((LINKED,), PERSON),
        # a digits-only credit code (a government body) cannot be told from an ID number
        grantless((EVERY_KIND,), AUTHORITY),
        grantless((EVERY_KIND,), None),
        # the items say person only: a credit-code mask contradicts them, and is not trusted
        grantless((PERSON_ONLY,), COMPANY),
        # items that no one subject holds together: the catalogue contradicts the entry
        grantless((ORG_ONLY, PERSON_ONLY), COMPANY),
        # unknown item ids, alone or beside known organisation items, and no items at all
        grantless(("retired_item",), COMPANY),
        grantless((ORG_ONLY, "retired_item"), COMPANY),
        grantless((), COMPANY),
        # asked for an organisation item but released an unknown one
        grantless((ORG_ONLY,), COMPANY, items_released=("retired_item",)),
    ],
    ids=[
        "person-item",
        "person-item-statutory-duty",
        "every-kind-person",
        "linked-item-person",
        "every-kind-digits-only-code",
        "every-kind-no-mask",
        "person-item-credit-code-mask",
        "contradictory-items",
        "unknown-item",
        "unknown-beside-org-item",
        "no-items",
        "unknown-released-item",
    ],
)
def test_a_natural_person_or_unknown_kind_query_without_grant_is_flagged(
    case: dict[str, Any],
) -> None:
    report = review([("zd-tax", case)])
    assert without_grant(report) == {"zd-tax": 1}
    assert grantless_findings(report) == {("zd-tax", 1.0)}


def test_no_id_number_passes_for_an_organisation_by_its_mask() -> None:
    people = set()
    for province in range(10, 100):  # every province code the ID number check accepts
        for seq in range(20):
            with contextlib.suppress(catalog.InvalidIdentifier):
                ric = make_ric(area=f"{province}0101", seq=f"{seq:03d}")
                people.add(catalog.normalize_ric(ric, today=TODAY))
    assert {ric[:2] for ric in people} >= {"11", "37", "65", "82", "83"}
    assert {ric[-1] for ric in people} == set("0123456789X")
    cases = [("zd-tax", grantless((EVERY_KIND,), catalog.mask_identifier(p))) for p in people]
    assert without_grant(review(cases)) == {"zd-tax": len(people)}


def test_the_review_counts_only_grantless_allowed_person_queries_in_a_mixed_log() -> None:
    person = grantless((PERSON_ONLY,), PERSON)
    company = grantless((ORG_ONLY,), COMPANY)
    cases = [
        # zd-court: 2 person queries and 1 unknown-item query counted among 7 accesses
        ("zd-court", person),
        ("zd-court", grantless((EVERY_KIND,), PERSON)),
        ("zd-court", grantless(("retired_item",), SHOP)),
        ("zd-court", company),
        ("zd-court", grantless((EVERY_KIND,), SHOP)),
        ("zd-court", {**person, "grant_id": "g-1"}),  # a grant was named
        ("zd-court", {**person, "decision": "deny", "reason": "grant_required"}),
        # zd-tax: organisations only, and other kinds of access to person items
        ("zd-tax", company),
        ("zd-tax", grantless((LINKED,), COMPANY)),
        ("zd-tax", {**person, "kind": "feed_delivery"}),
        ("zd-tax", {**person, "kind": "export"}),
    ]
    report = review(cases)
    assert without_grant(report) == {"zd-court": 3, "zd-tax": 0}
    assert grantless_findings(report) == {("zd-court", 3.0)}
    court = next(s for s in report.requesters if s.requester == "zd-court")
    assert (court.window_count, court.denied) == (7, 1)  # the other signals are unchanged
    message = next(f.message for f in report.findings if f.code == "queries_without_grant")
    assert PERSON not in message
    assert COMPANY not in message


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


def test_a_smaller_checkpoint_after_a_larger_one_is_a_rollback_and_recorded() -> None:
    # Both notes are the log's; shown as its current view after size 9 was witnessed, size 5
    # is a rollback: the same rule as the platform's witness (node.witness.fork_reason).
    log, first, second = _two_checkpoints()
    with pytest.raises(ForkDetected, match="size 5 shown after the witnessed 9") as caught:
        witness_checkpoint(
            second, first, [], log_verifiers=VERIFIERS, name="zd-platform", signer=WITNESS_KEY
        )
    assert caught.value.exit_code == ExitCode.VERIFICATION
    witness = Witness("zd-platform", WITNESS_KEY, {ORIGIN: VERIFIERS})
    witness.witness(first, [])
    witness.witness(second, log.consistency_proof(5, 9))
    with pytest.raises(ForkDetected):
        witness.witness(first, [])
    assert witness.alarms == [(ORIGIN, second, first)]
    assert witness.latest[ORIGIN] == second


def test_the_in_memory_witness_and_the_platforms_follow_one_fork_rule() -> None:
    assert node.witness.fork_reason is fork_reason
