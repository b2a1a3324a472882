"""Working days: weekends, the 2026 National Day holiday, unknown years, holiday files."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest

from catalog import (
    CatalogError,
    WorkCalendar,
    load_holiday_file,
    working_days_after,
    working_days_after_checked,
)

D = datetime.date


def test_across_a_weekend() -> None:
    # Friday 2026-11-20 + 3 working days -> Wednesday 2026-11-25
    assert working_days_after(D(2026, 11, 20), 3) == D(2026, 11, 25)
    assert working_days_after(D(2026, 11, 20), 0) == D(2026, 11, 20)


def test_across_national_day_2026() -> None:
    # 2026-09-30 (Wed) + 1 -> 10-08 (holiday 10-01..10-07); +3 -> 10-10, a Saturday worked (调休)
    assert working_days_after(D(2026, 9, 30), 1) == D(2026, 10, 8)
    assert working_days_after(D(2026, 9, 30), 3) == D(2026, 10, 10)
    # Shandong Art. 39: a 7-working-day objection review received on 2026-09-29
    result = working_days_after_checked(D(2026, 9, 29), 7)
    assert result.date == D(2026, 10, 14)
    assert not result.approximate


def test_unknown_year_falls_back_to_weekdays_visibly(caplog: pytest.LogCaptureFixture) -> None:
    calendar = WorkCalendar()
    result = working_days_after_checked(D(2027, 9, 30), 1, calendar=calendar)
    assert result.date == D(2027, 10, 1)  # weekdays only: wrong in reality, and flagged
    assert result.approximate
    assert result.unknown_years == (2027,)
    with caplog.at_level(logging.WARNING, logger="catalog.workdays"):
        assert working_days_after(D(2031, 1, 2), 1) == D(2031, 1, 3)
    assert any("2031" in r.getMessage() for r in caplog.records)


def test_registered_year_is_exact() -> None:
    calendar = WorkCalendar()
    holidays = [D(2027, 10, d) for d in range(1, 8)]
    calendar.register(2027, holidays, [D(2027, 9, 26)])
    result = calendar.after(D(2027, 9, 24), 2)  # Fri -> Sun 26 (worked) -> Mon 27
    assert result == calendar.after(D(2027, 9, 24), 2)
    assert result.date == D(2027, 9, 27)
    assert not result.approximate
    assert calendar.after(D(2027, 9, 30), 1).date == D(2027, 10, 8)
    calendar.forget(2027)
    assert calendar.after(D(2027, 9, 30), 1).approximate


def test_holiday_file(tmp_path: Path) -> None:
    path = tmp_path / "holidays.toml"
    path.write_text(
        '["2028"]\nholidays = [2028-01-03, "2028-01-04"]\nworkdays = [2028-01-08]\n',
        encoding="utf-8",
    )
    calendar = WorkCalendar()
    assert load_holiday_file(path, calendar) == (2028,)
    assert calendar.after(D(2027, 12, 31), 1).date == D(2028, 1, 5)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('["abc"]\nholidays = []\n', "not a year"),
        ('["2028"]\nholidays = ["2028-13-01"]\n', "2028"),
        ('["2028"]\nholidays = [2029-01-01]\n', "another year"),
        ('["2028"]\nholidays = [2028-01-03]\nworkdays = [2028-01-03]\n', "both"),
        ("not toml [", "cannot be read"),
    ],
)
def test_bad_holiday_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "holidays.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match=fragment):
        load_holiday_file(path, WorkCalendar())


def test_bad_counts() -> None:
    with pytest.raises(CatalogError):
        working_days_after(D(2026, 1, 1), -1)
