"""Disclosure periods of dishonesty information (失信信息公示期限).

Rules (docs/catalog.md, "Disclosure periods"; catalogue-facts §5):
- Decided on or after 2026-04-01: 国家发展改革委令第36号. 轻微 (minor): 原则上不予公示, so the
  record is withheld: it gets an explicit empty window (below), never "no end"; 一般 (general):
  at least 3 months, at most 1 year; 严重 (severe): at least 1 year, at most 3 years. The sector
  exception for minor records (≤ 3 months where the 行业主管部门 deems it necessary) is not
  modelled: the catalogue has no sector field (docs/catalog.md).
- Decided from 2023-05-01 to 2026-03-31: the repealed 令第58号 under which such records were
  published: at least 3 months, at most 3 years, whatever the severity (it had no grading), so
  a record with no 失信程度 (`UNGRADED`) gets this window too. Its sector rule (1 year minimum
  for 特种设备、安全生产、消防) is not modelled: the catalogue has no sector field.
- Decided before 2023-05-01 (when 令第58号 took effect, facts §1, §5.3): the superseded
  发改办财金〔2019〕527号 under which they were published: 一般失信 3 months to 1 year, 严重失信
  6 months to 3 years. It had only those two grades; for a record without one (`UNGRADED`, or
  轻微) the reference names no period, so it keeps the bounds of both grades (3 months to 3
  years) and the rule text says so. Whether a later instrument re-timed such records is not
  in the reference (facts §5.3: transition provisions not found).
- Arithmetic per 民法典 Arts. 201-202: the decision day is not counted, a period of months or
  years ends on the corresponding day of the last month, or on that month's last day when the
  day does not exist (2026-11-30 + 3 months = 2027-02-28).
- 山东省社会信用条例 Art. 38: never more than 5 years, counted from the day the dishonest conduct
  ended (失信行为终止之日) when the record states it, else from the decision day (applied as a cap
  on `max_end`; a cap that has already run out at the decision withholds the record).

Validity (not dishonesty): an item naming `valid_until` (the red list's 有效期至) is disclosed up
to that day inclusive and then expires like a dishonesty record past `max_end`; a revoked entry
(`revoked_when`, 状态=撤销) gets the empty window (`record_period`).

A record's own end bounds a dishonesty period too (`record_period`, `disclosure_end`): a list
entry marked 移出 (期满, 信用修复, 决定撤销) is not disclosed or shared from its 移出日期 on
(令第36号 Art. 3: 终止公示, 停止共享和使用; 山东 Art. 40), and no record outlives its item's
有效期限 (`max_disclosure_months`, Shandong Art. 10), counted from the decision day like the
period itself (民法典 Arts. 201-202).

The empty window. A withheld record has `min_end == max_end == decided_on`: a period of zero
months that starts the day after the decision (Art. 201) ends before it starts. Every reader
treats `max_end <= decided_on` as "never disclosed, never shared" (`never_disclosed`); the
store's own rule "hidden from the day after `max_end`" agrees from the day after the decision.
"""

from __future__ import annotations

import calendar
import datetime
import functools
from dataclasses import dataclass

from catalog.errors import CatalogError

ORDER_36_EFFECTIVE = datetime.date(2026, 4, 1)
ORDER_58_EFFECTIVE = datetime.date(2023, 5, 1)
MAX_DISCLOSURE_MONTHS = 60  # Shandong Art. 38
# The severity of a dishonesty record that states no 失信程度: allowed only for decisions before
# 2026-04-01, when no grading existed (令第58号). Never a code-table value, so no row can carry it.
UNGRADED = "ungraded"
PERIOD_SEVERITIES = ("minor", "general", "severe", UNGRADED)

_ORDER_36 = {
    "general": (3, 12),
    "severe": (12, 36),
}
# 发改办财金〔2019〕527号 (decisions before 2023-05-01): 一般 3 months-1 year, 严重 6 months-3 years
_NOTICE_527 = {
    "general": (3, 12),
    "severe": (6, 36),
}
_CAP = "山东省社会信用条例第38条 (≤5年, 自失信行为终止之日起)"


@dataclass(frozen=True)
class DisclosurePeriod:
    """The window in which a record may be disclosed and shared: repair may be applied for
    after `min_end`, disclosure stops automatically after `max_end`.

    `withheld` is True when the window is empty (`min_end == max_end == decided_on`): the record
    is never disclosed or shared (minor under 令第36号, or a 5-year cap that had run out by the
    decision). Both ends None means "not a dishonesty record": no period at all.
    """

    min_end: datetime.date | None
    max_end: datetime.date | None
    rule: str
    withheld: bool = False


def add_months(start: datetime.date, months: int) -> datetime.date:
    """Return the day a period of `months` months that starts after `start` ends on
    (民法典 Arts. 201-202: the corresponding day, or the last day of a shorter month); the
    last day of the calendar (9999-12-31) for a period that would end after it, so that a
    nonsensical far-future date gets a refusal from validation, never an exception here."""
    if months < 0:
        raise CatalogError(f"a period cannot be negative ({months} months)")
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    if year > datetime.MAXYEAR:
        return datetime.date.max
    last = calendar.monthrange(year, month)[1]
    return datetime.date(year, month, min(start.day, last))


def never_disclosed(
    decided_on: datetime.date | None, disclosure_max_end: datetime.date | None
) -> bool:
    """True when a stored window is the explicit empty one: `max_end` on or before the decision
    day, so the period (which starts the day after the decision) never opens."""
    return (
        decided_on is not None
        and disclosure_max_end is not None
        and disclosure_max_end <= decided_on
    )


def disclosure_period(
    severity: str,
    decided_on: datetime.date,
    *,
    conduct_ended_on: datetime.date | None = None,
) -> DisclosurePeriod:
    """Return the disclosure window of a dishonesty record decided on `decided_on`.

    `severity` is "minor", "general", "severe", or `UNGRADED` for a record without 失信程度
    (anything else raises CatalogError; so does `UNGRADED` for a decision from 2026-04-01, when
    令第36号 requires the grade). A minor record under 令第36号 gets the empty, `withheld`
    window. `conduct_ended_on` (失信行为终止日期, optional) starts the Shandong 5-year cap; without
    it the cap runs from the decision. The rule text names the instruments applied.
    """
    return _disclosure_period(severity, decided_on, conduct_ended_on)


NO_PERIOD_RULE = "no disclosure period: not a dishonesty record"
VALIDITY_RULE = (
    "有效期至 (valid until): 山东省社会信用条例第二十五条、第二十六条 (守信激励 while valid)"
)
REVOKED_RULE = "已撤销 (revoked): never disclosed or shared"
# A dishonesty record's own end: the day before its 移出日期, or the last day of its item's
# 有效期限. The stored end alone does not say which, so the text names both.
ENDED_RULE = (
    "移出名单 (removed: 令第36号第三条 终止公示、停止共享) or the item's 有效期限 "
    "(山东省社会信用条例第十条)"
)


def record_period(
    severity: str | None,
    decided_on: datetime.date | None,
    *,
    conduct_ended_on: datetime.date | None = None,
    disclosure_end: datetime.date | None = None,
) -> DisclosurePeriod:
    """The window stored with any record version (ingest, correction, receipt, refresh).

    `disclosure_end` (`NormalisedRecord.disclosure_end`) is the last day the record's own facts
    and item allow: a red-list 有效期至, the day before a list entry's 移出日期, the last day of
    the item's 有效期限 (`max_disclosure_months`). A dishonesty
    record (a severity and a decision day) gets `disclosure_period`, ended at `disclosure_end`
    when that comes first (the minimum end too, when it is later); an end on or before the
    decision day gives the empty, `withheld` window (removed on the day it was listed). Any
    other record with `disclosure_end` is disclosed and shared up to that day inclusive, with
    no minimum (there is nothing to repair), and on or before its decision day gets the empty
    window (a revoked entry). Anything else has no period (both ends None: "never ends"). A
    dishonesty record's window never ends later than `disclosure_period` alone.
    """
    if severity is not None and decided_on is not None:
        period = disclosure_period(severity, decided_on, conduct_ended_on=conduct_ended_on)
        if disclosure_end is None or period.max_end is None or period.max_end <= disclosure_end:
            return period
        if disclosure_end <= decided_on:
            return _withheld(decided_on, f"{ENDED_RULE}: ended by its decision day (withheld)")
        low = disclosure_end if period.min_end is None else min(period.min_end, disclosure_end)
        return DisclosurePeriod(
            low, disclosure_end, f"{period.rule}; {ENDED_RULE}: until {disclosure_end}"
        )
    if disclosure_end is not None:
        if decided_on is not None and disclosure_end <= decided_on:
            return _withheld(decided_on, REVOKED_RULE)
        return DisclosurePeriod(None, disclosure_end, VALIDITY_RULE)
    return DisclosurePeriod(None, None, NO_PERIOD_RULE)


def _withheld(decided_on: datetime.date, rule: str) -> DisclosurePeriod:
    return DisclosurePeriod(decided_on, decided_on, rule, withheld=True)


# A pure function of values that repeat across an ingest or a feed batch (few decision dates
# per day), so results are cached once here for every caller.
@functools.lru_cache(maxsize=4096)
def _disclosure_period(
    severity: str, decided_on: datetime.date, conduct_ended_on: datetime.date | None
) -> DisclosurePeriod:
    if severity not in PERIOD_SEVERITIES:
        raise CatalogError(
            f"unknown severity {severity!r} (expected 'minor', 'general', 'severe' or {UNGRADED!r})"
        )
    cap = add_months(
        decided_on if conduct_ended_on is None else conduct_ended_on, MAX_DISCLOSURE_MONTHS
    )
    if decided_on >= ORDER_36_EFFECTIVE:
        if severity == UNGRADED:
            raise CatalogError(
                "a dishonesty record decided on or after 2026-04-01 needs its 失信程度 "
                "(令第36号 grading)"
            )
        if severity == "minor":
            return _withheld(
                decided_on,
                "令第36号: 轻微失信信息原则上不予公示 (minor: withheld, not disclosed or shared)",
            )
        low, high = _ORDER_36[severity]
        label = "一般失信 3个月-1年" if severity == "general" else "严重失信 1年-3年"
        rule = f"令第36号: {label}; 民法典第201-202条; {_CAP}"
    elif decided_on >= ORDER_58_EFFECTIVE:
        low, high = 3, 36
        rule = f"令第58号 (decided before 2026-04-01): 3个月-3年; 民法典第201-202条; {_CAP}"
    elif severity in _NOTICE_527:
        low, high = _NOTICE_527[severity]
        label = "一般失信 3个月-1年" if severity == "general" else "严重失信 6个月-3年"
        rule = (
            f"发改办财金〔2019〕527号 (decided before 2023-05-01): {label}; "
            f"民法典第201-202条; {_CAP}"
        )
    else:
        low, high = 3, 36
        rule = (
            "发改办财金〔2019〕527号 (decided before 2023-05-01) graded only 一般/严重: "
            f"no period known for this record, 3个月-3年 (the bounds of both); "
            f"民法典第201-202条; {_CAP}"
        )
    max_end = min(add_months(decided_on, high), cap)
    if max_end <= decided_on:
        # Art. 38: five years from the end of the conduct had passed by the decision day
        return _withheld(decided_on, f"{_CAP}: the cap had run out by the decision (withheld)")
    return DisclosurePeriod(min(add_months(decided_on, low), max_end), max_end, rule)
