"""Disclosure periods of dishonesty information (失信信息公示期限).

Rules (docs/catalog.md, "Disclosure periods"):
- Decided on or after 2026-04-01: 国家发展改革委令第36号. 轻微 (minor): not disclosed, so both
  ends are None; 一般 (general): at least 3 months, at most 1 year; 严重 (severe): at least 1 year,
  at most 3 years.
- Decided before 2026-04-01: the repealed 令第58号 under which such records were published: at
  least 3 months, at most 3 years, whatever the severity (it had no grading). Its sector rule
  (1 year minimum for 特种设备、安全生产、消防) is not modelled: the catalogue has no sector field.
- Arithmetic per 民法典 Arts. 201-202: the decision day is not counted, a period of months or
  years ends on the corresponding day of the last month, or on that month's last day when the
  day does not exist (2026-11-30 + 3 months = 2027-02-28).
- Shandong Art. 38: never more than 5 years (applied as a cap on `max_end`).
"""

from __future__ import annotations

import calendar
import datetime
import functools
from dataclasses import dataclass

from catalog.errors import CatalogError

ORDER_36_EFFECTIVE = datetime.date(2026, 4, 1)
MAX_DISCLOSURE_MONTHS = 60  # Shandong Art. 38

_ORDER_36 = {
    "general": (3, 12),
    "severe": (12, 36),
}


@dataclass(frozen=True)
class DisclosurePeriod:
    """The window in which a record may be disclosed: repair may be applied for after `min_end`,
    disclosure stops automatically after `max_end`; both None means it is not disclosed."""

    min_end: datetime.date | None
    max_end: datetime.date | None
    rule: str


def add_months(start: datetime.date, months: int) -> datetime.date:
    """Return the day a period of `months` months that starts after `start` ends on
    (民法典 Arts. 201-202: the corresponding day, or the last day of a shorter month)."""
    if months < 0:
        raise CatalogError(f"a period cannot be negative ({months} months)")
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return datetime.date(year, month, min(start.day, last))


def disclosure_period(severity: str, decided_on: datetime.date) -> DisclosurePeriod:
    """Return the disclosure window of a dishonesty record decided on `decided_on`.

    `severity` is "minor", "general" or "severe" (anything else raises CatalogError). The rule
    text names the instrument applied. `max_end` never lies more than 5 years after the decision.
    """
    return _disclosure_period(severity, decided_on)


# A pure function of two values that repeat across an ingest or a feed batch (few decision
# dates per day), so results are cached once here for every caller.
@functools.lru_cache(maxsize=4096)
def _disclosure_period(severity: str, decided_on: datetime.date) -> DisclosurePeriod:
    if severity not in ("minor", "general", "severe"):
        raise CatalogError(
            f"unknown severity {severity!r} (expected 'minor', 'general' or 'severe')"
        )
    cap = add_months(decided_on, MAX_DISCLOSURE_MONTHS)
    if decided_on >= ORDER_36_EFFECTIVE:
        if severity == "minor":
            return DisclosurePeriod(
                None, None, "令第36号: 轻微失信信息原则上不予公示 (minor: not disclosed)"
            )
        low, high = _ORDER_36[severity]
        label = "一般失信 3个月-1年" if severity == "general" else "严重失信 1年-3年"
        return DisclosurePeriod(
            add_months(decided_on, low),
            min(add_months(decided_on, high), cap),
            f"令第36号: {label}; 民法典第201-202条; 山东省社会信用条例第38条 (≤5年)",
        )
    return DisclosurePeriod(
        add_months(decided_on, 3),
        min(add_months(decided_on, 36), cap),
        "令第58号 (decided before 2026-04-01): 3个月-3年; 民法典第201-202条; "
        "山东省社会信用条例第38条 (≤5年)",
    )
