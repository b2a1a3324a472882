"""Pure lifecycle rules with fixed dates: catalogue-facts sections 5 and 7."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

import catalog
from catalog.periods import UNGRADED
from node import lifecycle as rules
from node.errors import InputError

D = dt.date
COMMITMENT = "ab" * 32


# --- disclosure periods (facts 5.1, 5.2) and visibility --------------------------------------


@pytest.mark.parametrize(
    ("severity", "decided", "min_end", "max_end"),
    [
        # facts 5.2 example: 一般 decided 2026-05-11 -> min 2026-08-11, max 2027-05-11
        ("general", D(2026, 5, 11), D(2026, 8, 11), D(2027, 5, 11)),
        # month end (民法典 Art. 202): the 30th + 3 months is the last day of February
        ("general", D(2026, 11, 30), D(2027, 2, 28), D(2027, 11, 30)),
        ("severe", D(2026, 5, 31), D(2027, 5, 31), D(2029, 5, 31)),
        # rule-set change: the day before 2026-04-01 falls under 令第58号 (3 months - 3 years)
        ("general", D(2026, 3, 31), D(2026, 6, 30), D(2029, 3, 31)),
        ("general", D(2026, 4, 1), D(2026, 7, 1), D(2027, 4, 1)),
        ("severe", D(2026, 4, 1), D(2027, 4, 1), D(2029, 4, 1)),
        # 轻微 under 令第36号: withheld, an explicit empty window (never "no end")
        ("minor", D(2026, 4, 1), D(2026, 4, 1), D(2026, 4, 1)),
    ],
)
def test_disclosure_period_examples(
    severity: str, decided: dt.date, min_end: dt.date | None, max_end: dt.date | None
) -> None:
    period = catalog.disclosure_period(severity, decided)
    assert (period.min_end, period.max_end) == (min_end, max_end)


def test_visibility_ends_the_day_after_max_end() -> None:
    def shown(today: dt.date) -> bool:
        return rules.visible(
            state="active",
            severity="general",
            decided_on=D(2026, 5, 11),
            disclosure_max_end=D(2027, 5, 11),
            today=today,
        )

    assert shown(D(2027, 5, 11))
    assert not shown(D(2027, 5, 12))


def test_disclosure_ends_by_the_dates_alone() -> None:
    # what the feed provider and the store judge a version by, whether the scan ran or not
    def ended(today: dt.date, max_end: dt.date | None) -> bool:
        return rules.disclosure_ended(
            severity="general", decided_on=D(2026, 5, 11), disclosure_max_end=max_end, today=today
        )

    assert not ended(D(2027, 5, 11), D(2027, 5, 11))
    assert ended(D(2027, 5, 12), D(2027, 5, 11))
    assert not ended(D(2031, 5, 11), None)
    assert ended(D(2031, 5, 12), None)  # the Shandong cap, with no stored period
    assert not rules.disclosure_ended(
        severity=None, decided_on=D(2000, 1, 1), disclosure_max_end=None, today=D(2026, 1, 1)
    )


def test_a_minor_record_is_never_visible_not_even_on_its_decision_day() -> None:
    # 令第36号 (facts §5.1): 轻微 原则上不予公示. The sealer stores the explicit empty window;
    # queries (node/query.py), feeds (exchange_service) and ingest all judge by these rules.
    decided = D(2026, 5, 11)
    period = catalog.disclosure_period("minor", decided)
    for today in (decided, decided + dt.timedelta(days=1), D(2030, 1, 1)):
        assert rules.disclosure_ended(
            severity="minor", decided_on=decided, disclosure_max_end=period.max_end, today=today
        )
        assert not rules.visible(
            state="active",
            severity="minor",
            decided_on=decided,
            disclosure_max_end=period.max_end,
            today=today,
        )


def test_a_minor_row_stored_without_an_end_is_withheld_too() -> None:
    # rows sealed before withheld windows were explicit carry no end: not "never ends"
    for today in (D(2026, 5, 11), D(2027, 1, 1)):
        assert not rules.visible(
            state="active",
            severity="minor",
            decided_on=D(2026, 5, 11),
            disclosure_max_end=None,
            today=today,
        )
    # before 2026-04-01 令第58号 disclosed minor records too (3 months - 3 years)
    assert rules.visible(
        state="active",
        severity="minor",
        decided_on=D(2026, 3, 1),
        disclosure_max_end=None,
        today=D(2026, 5, 1),
    )


def test_the_cap_applies_to_a_dishonesty_record_without_a_grade() -> None:
    # a penalty decided before 2026-04-01 without 失信程度 is still 失信信息 (severity
    # `ungraded`): the Shandong cap reaches it even with no stored period
    assert rules.is_past_cap(UNGRADED, D(2021, 3, 1), D(2026, 3, 2))
    assert not rules.is_past_cap(UNGRADED, D(2021, 3, 1), D(2026, 3, 1))
    assert rules.disclosure_ended(
        severity=UNGRADED,
        decided_on=D(2025, 6, 1),
        disclosure_max_end=catalog.disclosure_period(UNGRADED, D(2025, 6, 1)).max_end,
        today=D(2028, 6, 2),
    )


@pytest.mark.parametrize("state", ["withdrawn", "expired", "superseded", "purged"])
def test_only_active_versions_are_visible(state: str) -> None:
    assert not rules.visible(
        state=state, severity=None, decided_on=None, disclosure_max_end=None, today=D(2026, 1, 1)
    )


def test_shandong_cap_applies_whatever_the_stored_period() -> None:
    # decided 2026-05-11: five years end 2031-05-11; from 2031-05-12 never returned
    assert not rules.is_past_cap("severe", D(2026, 5, 11), D(2031, 5, 11))
    assert rules.is_past_cap("severe", D(2026, 5, 11), D(2031, 5, 12))
    assert not rules.visible(
        state="active",
        severity="severe",
        decided_on=D(2026, 5, 11),
        disclosure_max_end=None,
        today=D(2031, 5, 12),
    )
    # not a dishonesty record: no cap
    assert not rules.is_past_cap(None, D(2000, 1, 1), D(2026, 1, 1))


@given(
    st.dates(min_value=D(2000, 1, 1), max_value=D(2090, 12, 31)),
    st.dates(min_value=D(2000, 1, 1), max_value=D(2090, 12, 31)),
    st.integers(min_value=0, max_value=120),
)
def test_purge_cutoff_is_exactly_add_months(today: dt.date, max_end: dt.date, months: int) -> None:
    cutoff = rules.purge_cutoff(today, months)
    assert (max_end < cutoff) == (catalog.add_months(max_end, months) < today)


def test_purge_cutoff_month_end_and_refusal() -> None:
    # kept until 2027-05-11 + 60 months = 2032-05-11 inclusive, purged from 2032-05-12
    assert rules.purge_cutoff(D(2032, 5, 12)) == D(2027, 5, 12)
    assert rules.purge_cutoff(D(2032, 5, 11)) == D(2027, 5, 11)
    # 2027-01-29..31 + 1 month all land on 2027-02-28: all purged from 2027-03-01
    assert rules.purge_cutoff(D(2027, 3, 1), 1) == D(2027, 2, 1)
    assert rules.purge_cutoff(D(2027, 2, 28), 1) == D(2027, 1, 28)
    with pytest.raises(InputError):
        rules.purge_cutoff(D(2027, 1, 1), -1)


# --- working-day deadlines (facts 7.2, Shandong Arts. 39-40) -----------------------------------


@pytest.mark.parametrize(
    ("opened", "other_unit", "due"),
    [
        (D(2026, 11, 25), False, D(2026, 11, 30)),  # Wed -> across the weekend -> Mon
        (D(2026, 11, 27), False, D(2026, 12, 2)),  # Fri -> Wed
        (D(2026, 11, 27), True, D(2026, 12, 8)),  # Fri + 7 -> Tue
        # National Day 2026: Oct 1-7 off, Sat Oct 10 worked (调休)
        (D(2026, 9, 30), False, D(2026, 10, 10)),
        (D(2026, 9, 30), True, D(2026, 10, 15)),
    ],
)
def test_objection_deadline_counts_official_working_days(
    opened: dt.date, other_unit: bool, due: dt.date
) -> None:
    deadline = rules.objection_deadline(opened, needs_other_unit=other_unit)
    assert deadline.due_on == due
    assert not deadline.approximate
    assert deadline.warning() is None
    assert ("7" if other_unit else "3") in deadline.rule


def test_deadline_in_an_unknown_year_is_flagged_not_crashed() -> None:
    deadline = rules.objection_deadline(D(2026, 12, 29), needs_other_unit=False)
    assert deadline.approximate
    assert deadline.unknown_years == (2027,)
    assert deadline.due_on == D(2027, 1, 1)  # weekdays only: wrong in reality, hence the flag
    warning = deadline.warning()
    assert warning is not None
    assert "2027" in warning
    assert "holiday_file" in warning


def test_deadline_uses_a_registered_holiday_schedule() -> None:
    calendar = catalog.WorkCalendar()
    calendar.register(2027, [D(2027, 1, 1)])
    deadline = rules.objection_deadline(D(2026, 12, 29), needs_other_unit=False, calendar=calendar)
    assert (deadline.due_on, deadline.approximate) == (D(2027, 1, 4), False)


def test_revocation_deadline_is_three_working_days_from_known() -> None:
    deadline = rules.revocation_deadline(D(2026, 9, 30))
    assert deadline.due_on == D(2026, 10, 10)
    assert "40" in deadline.rule


def test_china_day_uses_utc_plus_8() -> None:
    assert rules.china_day(dt.datetime(2026, 11, 25, 17, 0, tzinfo=dt.UTC)) == D(2026, 11, 26)
    assert rules.china_day(dt.datetime(2026, 11, 25, 15, 59, tzinfo=dt.UTC)) == D(2026, 11, 25)
    with pytest.raises(InputError):
        rules.china_day(dt.datetime(2026, 11, 25))


# --- credit repair admissibility (facts 7.1) --------------------------------------------------


def _facts(severity: str | None = "general", state: str = "active") -> rules.RepairFacts:
    return rules.RepairFacts(state=state, severity=severity, disclosure_min_end=D(2026, 8, 11))


GOOD = rules.RepairApplication(obligations_fulfilled=True, commitment_sha256=COMMITMENT)


def test_repair_admissible_from_the_day_after_the_minimum_period() -> None:
    assert not rules.repair_admissibility(_facts(), GOOD, today=D(2026, 8, 11)).admissible
    verdict = rules.repair_admissibility(_facts(), GOOD, today=D(2026, 8, 12))
    assert verdict.admissible
    assert verdict.codes() == ()


@pytest.mark.parametrize(
    ("facts", "application", "today", "codes"),
    [
        (_facts(), GOOD, D(2026, 8, 1), ("minimum_period",)),
        (
            _facts(),
            rules.RepairApplication(False, COMMITMENT),
            D(2026, 9, 1),
            ("obligations_unfulfilled",),
        ),
        (_facts(), rules.RepairApplication(True, None), D(2026, 9, 1), ("no_commitment",)),
        (
            _facts(),
            rules.RepairApplication(True, "not-a-digest"),
            D(2026, 9, 1),
            ("no_commitment",),
        ),
        (
            _facts(),
            rules.RepairApplication(True, COMMITMENT, other_requirements_met=False),
            D(2026, 9, 1),
            ("other_requirements",),
        ),
        (_facts(state="withdrawn"), GOOD, D(2026, 9, 1), ("not_active",)),
        (_facts(severity=None), GOOD, D(2026, 9, 1), ("not_dishonesty",)),
        # every failure at once, in check order
        (
            _facts(state="expired"),
            rules.RepairApplication(False, None, other_requirements_met=False),
            D(2026, 5, 12),
            (
                "not_active",
                "minimum_period",
                "obligations_unfulfilled",
                "no_commitment",
                "other_requirements",
            ),
        ),
    ],
)
def test_every_admissibility_failure_is_listed(
    facts: rules.RepairFacts,
    application: rules.RepairApplication,
    today: dt.date,
    codes: tuple[str, ...],
) -> None:
    verdict = rules.repair_admissibility(facts, application, today=today)
    assert not verdict.admissible
    assert verdict.codes() == codes
    assert all(f.message for f in verdict.failures)


def test_minor_record_repairs_as_soon_as_obligations_are_fulfilled() -> None:
    minor = rules.RepairFacts(state="active", severity="minor", disclosure_min_end=None)
    assert rules.repair_admissibility(minor, GOOD, today=D(2026, 4, 2)).admissible
    unpaid = rules.RepairApplication(False, COMMITMENT)
    assert rules.repair_admissibility(minor, unpaid, today=D(2026, 4, 2)).codes() == (
        "obligations_unfulfilled",
    )


def test_minimum_period_message_names_the_first_possible_day() -> None:
    verdict = rules.repair_admissibility(_facts(), GOOD, today=D(2026, 6, 1))
    assert "2026-08-12" in verdict.failures[0].message


# --- corrections ------------------------------------------------------------------------------


def test_parse_assignments_table() -> None:
    assert rules.parse_assignments(["fine_wan_yuan=0.5", "remarks="]) == {
        "fine_wan_yuan": "0.5",
        "remarks": "",
    }
    assert rules.parse_assignments(["a=x=y"]) == {"a": "x=y"}
    for bad in (["novalue"], ["=x"], ["Bad=x"], ["a=1", "a=2"], []):
        with pytest.raises(InputError) as info:
            rules.parse_assignments(bad)
        assert "x=y" not in str(info.value)


def test_apply_changes_refuses_identity_and_no_op() -> None:
    current = {"decision_no": "X1", "fine_wan_yuan": "0.5"}
    merged = rules.apply_changes(current, {"fine_wan_yuan": "0.3"}, natural_key=("decision_no",))
    assert merged == {"decision_no": "X1", "fine_wan_yuan": "0.3"}
    assert (
        rules.apply_changes(current, {"fine_wan_yuan": ""}, natural_key=())["fine_wan_yuan"] is None
    )
    with pytest.raises(InputError, match="identifies the record"):
        rules.apply_changes(current, {"decision_no": "X2"}, natural_key=("decision_no",))
    with pytest.raises(InputError, match="changes nothing"):
        rules.apply_changes(current, {"fine_wan_yuan": "0.5"}, natural_key=())


# --- tasks and propagation --------------------------------------------------------------------

T0 = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)


def _task(task_id: str, due: dt.date, closed: bool = False) -> rules.TaskView:
    return rules.TaskView(
        task_id, "objection", "k" * 64, T0, due, False, T0 if closed else None, None
    )


def test_overdue_is_strictly_after_the_due_day_and_open_only() -> None:
    tasks = [
        _task("b", D(2026, 11, 20)),
        _task("a", D(2026, 11, 24)),
        _task("c", D(2026, 11, 25)),
        _task("d", D(2026, 11, 1), closed=True),
    ]
    assert [t.task_id for t in rules.overdue(tasks, D(2026, 11, 25))] == ["b", "a"]


def test_propagation_reports_who_acknowledged() -> None:
    later = T0 + dt.timedelta(hours=1)
    statuses = rules.propagation(
        [("platform", 7, T0), ("health", 3, T0), ("health", 2, T0)],
        {"platform": (7, later), "health": (2, later)},
    )
    assert [(s.subscriber, s.event_seq, s.acknowledged) for s in statuses] == [
        ("health", 3, False),
        ("platform", 7, True),
    ]
    pending = statuses[0].to_dict(T0 + dt.timedelta(minutes=5))
    assert pending["pending_seconds"] == 300
    assert statuses[1].to_dict(later)["pending_seconds"] is None


def test_red_list_items_are_flagged_and_severe_lists_are_not() -> None:
    cat = catalog.default_catalog()
    assert rules.is_red_list(cat.item("red_list").category)
    assert not rules.is_red_list(cat.item("severe_dishonesty_list").category)
    assert not rules.is_red_list(cat.item("honour").category)
