"""Working-day deadlines (e.g. the 3/7 working days of an objection review, Shandong Art. 39).

The chinese-calendar package knows the official holiday schedule only up to its release year
(1.11.0: 2004-2026). The State Council publishes the next year's schedule around November, so an
operator can register it (`register_holidays`, or `load_holiday_file` for a TOML file). For a
year neither knows, the count falls back to Monday-Friday: `working_days_after_checked` says so
with `approximate=True`, and `working_days_after` logs one warning per unknown year. It never
raises for a date outside the package's range.
"""

from __future__ import annotations

import datetime
import logging
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import chinese_calendar

from catalog.errors import CatalogError

_log = logging.getLogger("catalog.workdays")
_MAX_DAYS = 3660  # a deadline of more than ten years of working days is an input error


@dataclass(frozen=True)
class _YearOverride:
    holidays: frozenset[datetime.date]
    workdays: frozenset[datetime.date]


@dataclass(frozen=True)
class WorkingDayResult:
    """A deadline and whether it is exact: `approximate` is True when some year on the way was
    counted as Monday-Friday only (no official schedule known); `unknown_years` names them."""

    date: datetime.date
    approximate: bool
    unknown_years: tuple[int, ...]


class WorkCalendar:
    """Official working days: registered years first, then chinese-calendar, else weekdays."""

    def __init__(self) -> None:
        self._years: dict[int, _YearOverride] = {}
        self._lock = threading.Lock()
        self._warned: set[int] = set()

    def register(
        self,
        year: int,
        holidays: Iterable[datetime.date],
        workdays: Iterable[datetime.date] = (),
    ) -> None:
        """Register a year's schedule: `holidays` are weekdays off, `workdays` are weekend days
        worked (调休). Refuses dates outside `year` or in both lists (CatalogError)."""
        off = frozenset(holidays)
        on = frozenset(workdays)
        stray = sorted(d for d in off | on if d.year != year)
        if stray:
            raise CatalogError(f"holiday schedule for {year} lists {stray[0]} of another year")
        both = sorted(off & on)
        if both:
            raise CatalogError(
                f"holiday schedule for {year} lists {both[0]} as both holiday and workday"
            )
        with self._lock:
            self._years[year] = _YearOverride(off, on)

    def forget(self, year: int) -> None:
        """Drop a registered year (tests, or a corrected schedule)."""
        with self._lock:
            self._years.pop(year, None)
            self._warned.discard(year)

    def is_workday(self, day: datetime.date) -> tuple[bool, bool]:
        """Return (is a working day, exact) for `day`."""
        override = self._years.get(day.year)
        if override is not None:
            if day in override.holidays:
                return False, True
            if day in override.workdays:
                return True, True
            return day.weekday() < 5, True
        try:
            return bool(chinese_calendar.is_workday(day)), True
        except NotImplementedError:
            return day.weekday() < 5, False

    def after(self, start: datetime.date, n: int) -> WorkingDayResult:
        """Return the n-th working day after `start` (`start` itself not counted; n = 0 gives
        `start`). Refuses a negative or absurdly large n (CatalogError)."""
        if n < 0 or n > _MAX_DAYS:
            raise CatalogError(f"working-day count must be between 0 and {_MAX_DAYS}, got {n}")
        day = start
        unknown: set[int] = set()
        left = n
        while left:
            day += datetime.timedelta(days=1)
            working, exact = self.is_workday(day)
            if not exact:
                unknown.add(day.year)
            if working:
                left -= 1
        return WorkingDayResult(day, bool(unknown), tuple(sorted(unknown)))

    def warn_once(self, years: Iterable[int]) -> None:
        """Log (once per year) that deadlines in `years` are counted without holidays."""
        for year in years:
            with self._lock:
                if year in self._warned:
                    continue
                self._warned.add(year)
            _log.warning(
                "no official holiday schedule for %d: working days counted Monday-Friday only; "
                "register the schedule (catalog.register_holidays or a holiday file)",
                year,
            )


DEFAULT_CALENDAR = WorkCalendar()


def register_holidays(
    year: int,
    holidays: Iterable[datetime.date],
    workdays: Iterable[datetime.date] = (),
) -> None:
    """Register the official schedule of `year` on the default calendar (see WorkCalendar)."""
    DEFAULT_CALENDAR.register(year, holidays, workdays)


def load_holiday_file(path: Path, calendar: WorkCalendar | None = None) -> tuple[int, ...]:
    """Register every year of a TOML holiday file and return the years registered.

    Format: one table per year, `["2027"] holidays = [2027-01-01, ...] workdays = [...]`
    (TOML dates or "YYYY-MM-DD" strings). Refuses a malformed file with CatalogError naming it.
    """
    target = calendar or DEFAULT_CALENDAR
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CatalogError(f"holiday file {path}: cannot be read ({error})") from None
    years: list[int] = []
    for key, table in data.items():
        if not key.isdigit() or not isinstance(table, dict):
            raise CatalogError(f"holiday file {path}: [{key}] is not a year table")
        year = int(key)
        try:
            off = [_as_date(v) for v in table.get("holidays", [])]
            on = [_as_date(v) for v in table.get("workdays", [])]
        except (TypeError, ValueError) as error:
            raise CatalogError(f"holiday file {path}: [{key}]: {error}") from None
        target.register(year, off, on)
        years.append(year)
    return tuple(years)


def _as_date(value: object) -> datetime.date:
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value
    if isinstance(value, str):
        return datetime.date.fromisoformat(value)
    raise TypeError(f"{value!r} is not a date")


def working_days_after_checked(
    start: datetime.date, n: int, *, calendar: WorkCalendar | None = None
) -> WorkingDayResult:
    """Return the n-th working day after `start` and whether it is exact (see WorkingDayResult)."""
    return (calendar or DEFAULT_CALENDAR).after(start, n)


def working_days_after(start: datetime.date, n: int) -> datetime.date:
    """Return the n-th working day after `start` (the start day is not counted).

    Official schedules come from registered years, then chinese-calendar; a year neither knows is
    counted Monday-Friday and logged as a warning (never an exception). Use
    `working_days_after_checked` to act on an approximate deadline.
    """
    result = DEFAULT_CALENDAR.after(start, n)
    if result.approximate:
        DEFAULT_CALENDAR.warn_once(result.unknown_years)
    return result.date
