"""The item's declared 有效期限 (`max_disclosure_months`, 山东省社会信用条例 Art. 10) bounds the
window of every record of it, counted from the decision day with 民法典 Arts. 201-202.

`utility_arrears` declares 12 months (docs/catalog.md: graded general and capped at 12), and
the Catalog service tells peers so; a record recognised before 2026-04-01 would otherwise get
令第58号's 3 years.
"""

from __future__ import annotations

import copy
import datetime
import tomllib
from typing import Any

import pytest

from catalog import (
    Catalog,
    add_months,
    default_catalog,
    period_facts,
    record_period,
    validate_record,
)
from catalog.loader import DEFAULT_PATH, build_catalog
from node.lifecycle import visible
from tests.catalog.test_catalog_validation import GOOD_ROWS

ARREARS = "utility_arrears"
D = datetime.date


def window(
    row: dict[str, str | None], *, today: datetime.date, catalog: Catalog | None = None
) -> Any:
    record = validate_record(ARREARS, row, today=today, catalog=catalog).record
    assert record is not None
    return record_period(
        record.severity,
        record.decided_on,
        conduct_ended_on=record.conduct_ended_on,
        disclosure_end=record.disclosure_end,
    )


def arrears(recognised: datetime.date) -> dict[str, str | None]:
    return {**GOOD_ROWS[ARREARS], "recognition_date": recognised.isoformat()}


def shown(recognised: datetime.date, day: datetime.date) -> bool:
    period = window(arrears(recognised), today=D(2030, 1, 1))
    return visible(
        state="active",
        severity="general",
        decided_on=recognised,
        disclosure_max_end=period.max_end,
        today=day,
    )


def test_the_catalogue_declares_twelve_months_for_arrears() -> None:
    assert default_catalog().item(ARREARS).max_disclosure_months == 12


def test_arrears_recognised_under_order_58_end_after_twelve_months() -> None:
    """The auditor's case: recognised 2026-02-01, 令第58号 alone would end 2029-02-01."""
    period = window(arrears(D(2026, 2, 1)), today=D(2026, 11, 24))
    assert (period.min_end, period.max_end, period.withheld) == (
        D(2026, 5, 1),
        D(2027, 2, 1),
        False,
    )
    assert "有效期限" in period.rule
    assert shown(D(2026, 2, 1), D(2027, 2, 1))  # the last day
    assert not shown(D(2026, 2, 1), D(2027, 2, 2))
    assert not shown(D(2026, 2, 1), D(2028, 6, 1))


def test_order_36_general_arrears_already_end_at_twelve_months() -> None:
    period = window(arrears(D(2026, 5, 11)), today=D(2026, 11, 24))
    assert (period.min_end, period.max_end) == (D(2026, 8, 11), D(2027, 5, 11))
    assert "有效期限" not in period.rule  # the period itself was not shortened


@pytest.mark.parametrize(
    ("recognised", "last_day"),
    [
        (D(2024, 2, 29), D(2025, 2, 28)),  # no 29 February in 2025: the month's last day
        (D(2028, 2, 29), D(2029, 2, 28)),
        (D(2027, 2, 28), D(2028, 2, 28)),  # the corresponding day, not the leap day
        (D(2025, 3, 31), D(2026, 3, 31)),
    ],
)
def test_the_last_day_across_leap_years(recognised: datetime.date, last_day: datetime.date) -> None:
    assert add_months(recognised, 12) == last_day
    assert window(arrears(recognised), today=D(2030, 1, 1)).max_end == last_day
    assert shown(recognised, last_day)
    assert not shown(recognised, last_day + datetime.timedelta(days=1))


RAW: dict[str, Any] = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _months(months: int) -> Catalog:
    data = copy.deepcopy(RAW)
    next(i for i in data["items"] if i["id"] == ARREARS)["max_disclosure_months"] = months
    return build_catalog(data)


def test_a_validity_shorter_than_the_minimum_ends_both() -> None:
    # 2 months: before 令第36号's 3-month minimum for general records
    period = window(arrears(D(2026, 5, 31)), today=D(2026, 11, 24), catalog=_months(2))
    assert (period.min_end, period.max_end, period.withheld) == (
        D(2026, 7, 31),
        D(2026, 7, 31),
        False,
    )


def test_a_validity_of_zero_months_withholds() -> None:
    period = window(arrears(D(2026, 5, 31)), today=D(2026, 11, 24), catalog=_months(0))
    assert period.withheld
    assert (period.min_end, period.max_end) == (D(2026, 5, 31), D(2026, 5, 31))


def test_the_catalog_service_promise_holds_for_every_item() -> None:
    """No record's window is longer than the 有效期限 its item tells peers."""
    for item_id, row in GOOD_ROWS.items():
        item = default_catalog().item(item_id)
        record = validate_record(item_id, row, today=D(2026, 11, 25)).record
        assert record is not None, item_id
        period = record_period(
            record.severity,
            record.decided_on,
            conduct_ended_on=record.conduct_ended_on,
            disclosure_end=record.disclosure_end,
        )
        if item.max_disclosure_months is None or record.decided_on is None:
            continue
        limit = add_months(record.decided_on, item.max_disclosure_months)
        assert period.max_end is not None, item_id
        assert period.max_end <= limit, item_id


def test_period_facts_apply_the_validity_too() -> None:
    """A stored arrears record is bounded by the refresh as ingest would bound it."""
    row = arrears(D(2026, 2, 1))
    facts = period_facts(ARREARS, row)
    assert facts.disclosure_end == D(2027, 2, 1)
    record = validate_record(ARREARS, row, today=D(2026, 11, 24)).record
    assert record is not None
    assert record.disclosure_end == facts.disclosure_end
