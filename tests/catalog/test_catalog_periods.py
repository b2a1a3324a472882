"""Disclosure periods: the reference examples, month-end arithmetic, and properties."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import CatalogError, add_months, disclosure_period, never_disclosed
from catalog.periods import UNGRADED

D = datetime.date


def test_facts_example_general_penalty() -> None:
    # catalogue-facts §5.2: 一般 decided 2026-05-11 -> min 2026-08-11, max 2027-05-11
    period = disclosure_period("general", D(2026, 5, 11))
    assert (period.min_end, period.max_end) == (D(2026, 8, 11), D(2027, 5, 11))
    assert "令第36号" in period.rule


def test_severe_under_order_36() -> None:
    period = disclosure_period("severe", D(2026, 5, 11))
    assert (period.min_end, period.max_end) == (D(2027, 5, 11), D(2029, 5, 11))


def test_minor_is_withheld_with_an_explicit_empty_window() -> None:
    # 令第36号 (facts §5.1): 轻微 原则上不予公示. Not "no end" (readers take a missing end as
    # "never ends"), but a zero-month period: it starts the day after the decision (民法典
    # Art. 201) and ends on the decision day, so it never opens.
    period = disclosure_period("minor", D(2026, 4, 1))
    assert (period.min_end, period.max_end, period.withheld) == (D(2026, 4, 1), D(2026, 4, 1), True)
    assert never_disclosed(D(2026, 4, 1), period.max_end)
    assert "轻微" in period.rule


def test_only_withheld_windows_count_as_never_disclosed() -> None:
    assert not never_disclosed(D(2026, 5, 11), disclosure_period("general", D(2026, 5, 11)).max_end)
    assert not never_disclosed(D(2026, 5, 11), None)  # no period: not a dishonesty record
    assert not never_disclosed(None, D(2026, 5, 11))
    assert never_disclosed(D(2026, 5, 11), D(2026, 5, 10))


def test_an_ungraded_record_before_2026_04_01_gets_the_58_order_window() -> None:
    # no 失信程度 before 2026-04-01 (令第58号 had no grading): still 3 months - 3 years
    period = disclosure_period(UNGRADED, D(2025, 6, 1))
    assert (period.min_end, period.max_end) == (D(2025, 9, 1), D(2028, 6, 1))
    assert "58" in period.rule
    # from 2026-04-01 令第36号 needs the grade: validation refuses such a row, this is a guard
    with pytest.raises(CatalogError, match="失信程度"):
        disclosure_period(UNGRADED, D(2026, 4, 1))


def test_the_five_year_cap_counts_from_the_end_of_the_conduct() -> None:
    # Shandong Art. 38 (facts §5.3): 最长不得超过五年，自失信行为终止之日起计算.
    # 严重 decided 2026-05-11 would run to 2029-05-11; conduct ended 2023-01-10 -> 2028-01-10.
    period = disclosure_period("severe", D(2026, 5, 11), conduct_ended_on=D(2023, 1, 10))
    assert (period.min_end, period.max_end) == (D(2027, 5, 11), D(2028, 1, 10))
    # the cap falls inside the minimum period: the window shrinks to the cap
    period = disclosure_period("severe", D(2026, 5, 11), conduct_ended_on=D(2021, 8, 1))
    assert (period.min_end, period.max_end) == (D(2026, 8, 1), D(2026, 8, 1))
    # five years had passed by the decision: never disclosed
    period = disclosure_period("general", D(2025, 6, 1), conduct_ended_on=D(2020, 1, 1))
    assert period.withheld
    assert (period.min_end, period.max_end) == (D(2025, 6, 1), D(2025, 6, 1))
    # without the field the cap runs from the decision, as before
    assert disclosure_period("severe", D(2026, 5, 11)).max_end == D(2029, 5, 11)


@pytest.mark.parametrize("severity", ["minor", "general", "severe", UNGRADED])
def test_before_2026_04_01_the_58_order_applies(severity: str) -> None:
    period = disclosure_period(severity, D(2026, 3, 31))
    assert (period.min_end, period.max_end) == (D(2026, 6, 30), D(2029, 3, 31))
    assert "58" in period.rule


@pytest.mark.parametrize(
    ("severity", "low", "high"),
    [
        ("general", D(2023, 7, 30), D(2024, 4, 30)),  # 一般失信 3 months - 1 year
        ("severe", D(2023, 10, 30), D(2026, 4, 30)),  # 严重失信 6 months - 3 years
    ],
)
def test_before_2023_05_01_the_527_notice_applies(severity: str, low: D, high: D) -> None:
    # catalogue-facts §1 and §5.3: 令第58号 took effect on 2023-05-01 ("historical records
    # decided 2023-05 … 2026-03"); a decision before it was published under 发改办财金〔2019〕
    # 527号: 一般失信 3 months - 1 year, 严重失信 6 months - 3 years, from the decision date.
    period = disclosure_period(severity, D(2023, 4, 30))
    assert (period.min_end, period.max_end) == (low, high)
    assert "527" in period.rule
    assert "58" not in period.rule
    # the first day of 令第58号
    period = disclosure_period(severity, D(2023, 5, 1))
    assert (period.min_end, period.max_end) == (D(2023, 8, 1), D(2026, 5, 1))
    assert "58" in period.rule


@pytest.mark.parametrize("severity", ["minor", UNGRADED])
def test_before_2023_05_01_a_grade_527_does_not_know_keeps_the_widest_window(
    severity: str,
) -> None:
    # 527号 graded only 一般 and 严重; the reference gives no period for an ungraded (or 轻微)
    # record of that time, so it keeps the bounds of both grades (3 months - 3 years), named
    # as such rather than as 令第58号, which did not yet apply
    period = disclosure_period(severity, D(2022, 6, 1))
    assert (period.min_end, period.max_end) == (D(2022, 9, 1), D(2025, 6, 1))
    assert "527" in period.rule
    assert "58" not in period.rule


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (D(2026, 11, 30), 3, D(2027, 2, 28)),  # missing day -> last day of the month
        (D(2027, 11, 30), 3, D(2028, 2, 29)),  # leap year
        (D(2024, 2, 29), 12, D(2025, 2, 28)),
        (D(2026, 1, 31), 1, D(2026, 2, 28)),
        (D(2026, 3, 31), 1, D(2026, 4, 30)),
        (D(2026, 12, 15), 1, D(2027, 1, 15)),
        (D(2026, 5, 11), 0, D(2026, 5, 11)),
    ],
)
def test_civil_code_month_arithmetic(start: D, months: int, end: D) -> None:
    assert add_months(start, months) == end


def test_bad_input() -> None:
    with pytest.raises(CatalogError, match="unknown severity"):
        disclosure_period("huge", D(2026, 5, 11))
    with pytest.raises(CatalogError, match="negative"):
        add_months(D(2026, 5, 11), -1)


_days = st.dates(D(2015, 1, 1), D(2040, 12, 31))


@given(_days, st.sampled_from(["general", "severe"]))
def test_window_is_ordered_and_capped_at_five_years(day: D, severity: str) -> None:
    period = disclosure_period(severity, day)
    assert period.min_end is not None
    assert period.max_end is not None
    assert day < period.min_end <= period.max_end
    assert period.max_end <= add_months(day, 60)  # Shandong Art. 38


@given(_days, st.integers(0, 3000), st.sampled_from(["minor", "general", "severe", UNGRADED]))
def test_every_window_is_empty_or_ordered_and_within_the_conduct_cap(
    day: D, days_before: int, severity: str
) -> None:
    if severity == UNGRADED and day >= D(2026, 4, 1):
        return  # refused: 令第36号 needs the grade
    ended = day - datetime.timedelta(days=days_before)
    period = disclosure_period(severity, day, conduct_ended_on=ended)
    assert period.min_end is not None
    assert period.max_end is not None
    assert period.withheld == never_disclosed(day, period.max_end)
    if period.withheld:
        assert period.min_end == period.max_end == day
    else:
        assert day < period.min_end <= period.max_end
        assert period.max_end <= add_months(ended, 60)  # Shandong Art. 38, from the conduct


@given(_days, _days, st.sampled_from(["general", "severe"]))
def test_later_decisions_never_end_earlier(a: D, b: D, severity: str) -> None:
    first, second = sorted((a, b))

    def regime(day: D) -> int:  # 527号, 令第58号, 令第36号
        return (day >= D(2023, 5, 1)) + (day >= D(2026, 4, 1))

    if regime(first) != regime(second):
        return  # the regime changes between them
    p1, p2 = disclosure_period(severity, first), disclosure_period(severity, second)
    assert p1.min_end is not None
    assert p2.min_end is not None
    assert p1.max_end is not None
    assert p2.max_end is not None
    assert p1.min_end <= p2.min_end
    assert p1.max_end <= p2.max_end


@given(_days, st.integers(0, 120))
def test_add_months_lands_in_the_right_month_on_the_right_day(day: D, months: int) -> None:
    end = add_months(day, months)
    assert (end.year * 12 + end.month) - (day.year * 12 + day.month) == months
    assert end.day == day.day or (end.day < day.day and (end + datetime.timedelta(days=1)).day == 1)
