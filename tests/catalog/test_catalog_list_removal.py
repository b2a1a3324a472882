"""Removal from a dishonesty list (名单状态 = 移出) ends disclosure and sharing.

令第36号 Art. 3: a repaired entry is no longer published (终止公示), shared or used (停止共享和
使用) and the 惩戒 measures are lifted; 山东省社会信用条例 Art. 40: the 失信信息 of a revoked
decision is revoked; an entry whose term is over (期满) is off the list. The three list items
declare `ended_when = "status=移出"` and `ended_on = "removal_date"`: the entry is disclosed up
to the day before its 移出日期 and not from that day on (facts §4.8, §5.3, §7.1).
"""

from __future__ import annotations

import copy
import datetime
import tomllib
from typing import Any

import pytest

from catalog import (
    CatalogInconsistent,
    default_catalog,
    never_disclosed,
    period_facts,
    record_period,
    validate_record,
)
from catalog.loader import DEFAULT_PATH, build_catalog
from node.lifecycle import visible
from tests.catalog.catalog_testdata import PERSON_ID, TODAY
from tests.catalog.test_catalog_validation import GOOD_ROWS, severe_org

LISTED = datetime.date(2026, 5, 1)
REMOVED = datetime.date(2026, 9, 1)
LIST_ITEMS = ("severe_dishonesty_list", "severe_dishonesty_list_person", "financial_enforcement")


def listed(item_id: str, **changes: str | None) -> dict[str, str | None]:
    base = severe_org() if item_id == "severe_dishonesty_list" else dict(GOOD_ROWS[item_id])
    return {**base, "listed_date": LISTED.isoformat(), **changes}


def removed(item_id: str, reason: str = "信用修复", day: datetime.date = REMOVED) -> dict[str, Any]:
    return listed(item_id, status="移出", removal_date=day.isoformat(), removal_reason=reason)


def window(item_id: str, row: dict[str, str | None]) -> tuple[Any, ...]:
    record = validate_record(item_id, row, today=TODAY).record
    assert record is not None
    period = record_period(
        record.severity,
        record.decided_on,
        conduct_ended_on=record.conduct_ended_on,
        disclosure_end=record.disclosure_end,
    )
    return record.decided_on, period


def shown(item_id: str, row: dict[str, str | None], day: datetime.date) -> bool:
    decided_on, period = window(item_id, row)
    return visible(
        state="active",
        severity="severe",
        decided_on=decided_on,
        disclosure_max_end=period.max_end,
        today=day,
    )


def test_every_list_item_with_a_status_declares_its_end() -> None:
    with_status = {
        item.id
        for item in default_catalog().items.values()
        if item.has_field("removal_date") and item.has_field("status")
    }
    assert with_status == set(LIST_ITEMS)
    for item_id in LIST_ITEMS:
        item = default_catalog().item(item_id)
        assert (item.ended_when, item.ended_on_field) == ("status=移出", "removal_date")


@pytest.mark.parametrize("item_id", LIST_ITEMS)
@pytest.mark.parametrize("reason", ["期满", "信用修复", "决定撤销"])
def test_a_removed_entry_is_disclosed_until_the_day_before_its_removal(
    item_id: str, reason: str
) -> None:
    row = removed(item_id, reason)
    _, period = window(item_id, row)
    last = REMOVED - datetime.timedelta(days=1)
    assert (period.min_end, period.max_end, period.withheld) == (last, last, False)
    assert "移出" in period.rule
    assert shown(item_id, row, last)
    # from the removal day on: not disclosed, not shared (令第36号 Art. 3)
    assert not shown(item_id, row, REMOVED)
    assert not shown(item_id, row, datetime.date(2026, 11, 25))


@pytest.mark.parametrize("item_id", LIST_ITEMS)
def test_a_listed_entry_keeps_its_severe_period(item_id: str) -> None:
    _, period = window(item_id, listed(item_id))
    assert (period.min_end, period.max_end) == (
        datetime.date(2027, 5, 1),
        datetime.date(2029, 5, 1),
    )
    # a removal date on an entry still listed is not its end
    _, period = window(item_id, listed(item_id, removal_date=REMOVED.isoformat()))
    assert period.max_end == datetime.date(2029, 5, 1)


def test_a_removal_never_lengthens_the_period() -> None:
    item_id = "severe_dishonesty_list_person"
    # listed 2021-01-04 (令第58号: 3 years, to 2024-01-04), removed 2024-06-01
    row = removed(item_id, "期满", datetime.date(2024, 6, 1))
    row["listed_date"] = "2021-01-04"
    _, period = window(item_id, row)
    assert period.max_end == datetime.date(2024, 1, 4)


def test_an_entry_removed_on_its_listing_day_is_never_disclosed() -> None:
    item_id = "severe_dishonesty_list"
    row = removed(item_id, "决定撤销", LISTED)
    record = validate_record(item_id, row, today=TODAY).record
    assert record is not None
    assert record.disclosure_end == LISTED
    _, period = window(item_id, row)
    assert period.withheld
    assert (period.min_end, period.max_end) == (LISTED, LISTED)
    assert never_disclosed(LISTED, period.max_end)
    assert not shown(item_id, row, LISTED)
    assert not shown(item_id, row, LISTED + datetime.timedelta(days=1))


@pytest.mark.parametrize("item_id", LIST_ITEMS)
def test_removed_without_a_removal_date_is_refused(item_id: str) -> None:
    row = removed(item_id)
    row["removal_date"] = None
    result = validate_record(item_id, row, today=TODAY)
    assert not result.ok
    (error,) = result.errors
    assert (error.field_id, error.field_name_zh, error.code) == (
        "removal_date",
        "移出日期",
        "required",
    )
    assert "status=移出" in error.message


@pytest.mark.parametrize("item_id", LIST_ITEMS)
def test_a_removal_before_the_listing_is_refused_without_the_value(item_id: str) -> None:
    row = removed(item_id, day=datetime.date(2026, 4, 30))
    result = validate_record(item_id, row, today=TODAY)
    assert not result.ok
    (error,) = result.errors
    assert (error.field_id, error.code) == ("removal_date", "date_order")
    assert "2026-04-30" not in error.message
    assert PERSON_ID not in error.message
    listing = default_catalog().item(item_id).field("listed_date").name_zh
    assert listing in error.message  # 列入日期 / 发布日期: the field to check


@pytest.mark.parametrize("item_id", LIST_ITEMS)
def test_period_facts_agree_with_validation(item_id: str) -> None:
    for row in (listed(item_id), removed(item_id), removed(item_id, day=LISTED)):
        record = validate_record(item_id, row, today=TODAY).record
        assert record is not None
        facts = period_facts(item_id, row)
        assert (facts.severity, facts.decided_on, facts.disclosure_end) == (
            record.severity,
            record.decided_on,
            record.disclosure_end,
        )


def test_period_facts_bound_a_stored_removal_that_no_longer_validates() -> None:
    """A stored version refused today still gets a bounded window (docs/decisions/0014)."""
    item_id = "severe_dishonesty_list_person"
    undated = removed(item_id)
    undated["removal_date"] = None
    assert period_facts(item_id, undated).disclosure_end == LISTED  # removed: by now at least
    early = removed(item_id, day=datetime.date(2026, 4, 1))
    assert period_facts(item_id, early).disclosure_end == LISTED


RAW: dict[str, Any] = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _with(item_id: str, drop: tuple[str, ...] = (), **keys: Any) -> dict[str, Any]:
    data = copy.deepcopy(RAW)
    item = next(i for i in data["items"] if i["id"] == item_id)
    for key in drop:
        item.pop(key)
    item.update(keys)
    return data


def _optional_removal_date() -> dict[str, Any]:
    data = _with("financial_enforcement")
    item = next(i for i in data["items"] if i["id"] == "financial_enforcement")
    next(f for f in item["fields"] if f["id"] == "removal_date")["required"] = "O"
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with("financial_enforcement", drop=("ended_on",)), "go together"),
        (_with("financial_enforcement", drop=("ended_when",)), "go together"),
        (_with("financial_enforcement", ended_on="case_no"), "date field"),
        (_with("financial_enforcement", ended_on="listed_date"), "date field"),
        (_with("financial_enforcement", ended_when="status=撤销"), "not in code table"),
        (_with("financial_enforcement", ended_when="status>=2026-01-01"), "FIELD=V"),
        (_with("financial_enforcement", ended_when="nope=1"), "FIELD=V"),
        (_optional_removal_date(), "must be required"),
        (
            _with("utility_account", ended_when="utility_type=电", ended_on="account_opened"),
            "decided_on",
        ),
    ],
)
def test_the_loader_refuses_bad_end_rules(data: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogInconsistent, match=message):
        build_catalog(data)
