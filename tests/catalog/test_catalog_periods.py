"""Disclosure periods: the reference examples, month-end arithmetic, and properties."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import CatalogError, add_months, disclosure_period

D = datetime.date


def test_facts_example_general_penalty() -> None:
    # catalogue-facts §5.2: 一般 decided 2026-05-11 -> min 2026-08-11, max 2027-05-11
    period = disclosure_period("general", D(2026, 5, 11))
    assert (period.min_end, period.max_end) == (D(2026, 8, 11), D(2027, 5, 11))
    assert "令第36号" in period.rule


def test_severe_under_order_36() -> None:
    period = disclosure_period("severe", D(2026, 5, 11))
    assert (period.min_end, period.max_end) == (D(2027, 5, 11), D(2029, 5, 11))


def test_minor_is_not_disclosed() -> None:
    period = disclosure_period("minor", D(2026, 4, 1))
    assert period.min_end is None
    assert period.max_end is None
    assert "轻微" in period.rule


@pytest.mark.parametrize("severity", ["minor", "general", "severe"])
def test_before_2026_04_01_the_58_order_applies(severity: str) -> None:
    period = disclosure_period(severity, D(2026, 3, 31))
    assert (period.min_end, period.max_end) == (D(2026, 6, 30), D(2029, 3, 31))
    assert "58" in period.rule


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


@given(_days, _days, st.sampled_from(["general", "severe"]))
def test_later_decisions_never_end_earlier(a: D, b: D, severity: str) -> None:
    first, second = sorted((a, b))
    if (first < D(2026, 4, 1)) != (second < D(2026, 4, 1)):
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
