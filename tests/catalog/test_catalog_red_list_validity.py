"""Red-list validity (守信激励 while valid): 有效期至 ends disclosure; revoked entries never show.

A red-list entry carries `disclosure_end` (its 有效期至, or its listing day when 状态=撤销), which
`catalog.record_period` turns into the stored window, so queries, feeds and the expiry scan
stop it on time. An entry past its end or revoked is accepted (and stored expired) so that, as a
new version, it ends the earlier valid one; a 有效期至 not after the listing day is refused.
"""

from __future__ import annotations

import copy
import datetime
import tomllib
from typing import Any

import pytest

from catalog import CatalogInconsistent, period_facts, record_period, validate_record
from catalog.loader import DEFAULT_PATH, build_catalog
from node.lifecycle import visible
from tests.catalog.catalog_testdata import AUTHORITY_USCC, PERSON_ID, TODAY

LISTED = datetime.date(2023, 3, 1)
ROW: dict[str, str | None] = {
    "subject_name": "李某",
    "subject_category": "自然人",
    "id_type": "身份证",
    "id_number": PERSON_ID,
    "source_unit": "张店区某局",
    "source_unit_uscc": AUTHORITY_USCC,
    "list_name": "诚信个人",
    "recognition_basis": "张店区诚信个人评选办法",
    "recognising_unit": "张店区发展和改革局",
    "recognising_unit_uscc": AUTHORITY_USCC,
    "listed_date": LISTED.isoformat(),
    "status": "有效",
    "incentive_measures": "1,5",
}


def red(**changes: str | None) -> dict[str, str | None]:
    return {**ROW, **changes}


def shown(row: dict[str, str | None], today: datetime.date) -> bool:
    """Would a version stored from `row` be disclosed on `today` (node.lifecycle.visible)?"""
    record = validate_record("red_list", row, today=TODAY).record
    assert record is not None
    period = record_period(record.severity, record.decided_on, disclosure_end=record.disclosure_end)
    return visible(
        state="active",
        severity=record.severity,
        decided_on=record.decided_on,
        disclosure_max_end=period.max_end,
        today=today,
    )


def test_valid_until_is_the_end_of_disclosure() -> None:
    record = validate_record("red_list", red(valid_until="2027-03-01"), today=TODAY).record
    assert record is not None
    assert record.disclosure_end == datetime.date(2027, 3, 1)
    period = record_period(record.severity, record.decided_on, disclosure_end=record.disclosure_end)
    assert (period.min_end, period.max_end, period.withheld) == (
        None,
        datetime.date(2027, 3, 1),
        False,
    )
    assert shown(red(valid_until="2027-03-01"), datetime.date(2027, 3, 1))  # inclusive
    assert not shown(red(valid_until="2027-03-01"), datetime.date(2027, 3, 2))


def test_an_entry_past_its_valid_until_is_accepted_but_never_shown() -> None:
    row = red(valid_until="2024-01-04")
    assert validate_record("red_list", row, today=TODAY).ok  # stored expired (store_batch)
    assert not shown(row, datetime.date(2026, 11, 25))


def test_a_revoked_entry_is_accepted_with_the_empty_window() -> None:
    row = red(status="撤销", valid_until="2099-12-31")
    record = validate_record("red_list", row, today=TODAY).record
    assert record is not None
    assert record.disclosure_end == LISTED
    period = record_period(record.severity, record.decided_on, disclosure_end=LISTED)
    assert period.withheld
    assert (period.min_end, period.max_end) == (LISTED, LISTED)
    assert not shown(row, LISTED + datetime.timedelta(days=1))
    assert not shown(red(status="撤销"), LISTED + datetime.timedelta(days=1))  # no end stated


def test_without_valid_until_a_valid_entry_has_no_end() -> None:
    record = validate_record("red_list", red(), today=TODAY).record
    assert record is not None
    assert record.disclosure_end is None
    assert record_period(None, record.decided_on).max_end is None


def test_valid_until_not_after_the_listing_is_refused_without_the_value() -> None:
    for end in (LISTED.isoformat(), "2023-02-28"):
        result = validate_record("red_list", red(valid_until=end), today=TODAY)
        assert not result.ok
        (error,) = result.errors
        assert (error.field_id, error.code) == ("valid_until", "date_order")
        assert end not in error.message
        assert PERSON_ID not in error.message


def test_honours_and_dishonesty_keep_their_rules() -> None:
    assert record_period("severe", datetime.date(2026, 6, 1)).max_end == datetime.date(2029, 6, 1)
    honour = validate_record(
        "honour",
        {
            **{k: v for k, v in ROW.items() if k in {"subject_name", "subject_category"}},
            "id_type": "身份证",
            "id_number": PERSON_ID,
            "source_unit": "张店区某局",
            "source_unit_uscc": AUTHORITY_USCC,
            "honour_name": "张店区道德模范",
            "granting_authority": "张店区人民政府",
            "granting_authority_uscc": AUTHORITY_USCC,
            "decision_no": "张政字〔2026〕1号",
            "grant_date": "2026-01-10",
            "status": "有效",
        },
        today=TODAY,
    ).record
    assert honour is not None
    assert honour.disclosure_end is None


RAW: dict[str, Any] = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _with(item_id: str, **keys: str) -> dict[str, Any]:
    data = copy.deepcopy(RAW)
    item = next(i for i in data["items"] if i["id"] == item_id)
    item.update(keys)
    return data


@pytest.mark.parametrize(
    ("item_id", "keys", "message"),
    [
        ("severe_dishonesty_list", {"valid_until": "decision_date"}, "not dishonesty"),
        ("red_list", {"valid_until": "list_name"}, "date field"),
        ("red_list", {"valid_until": "listed_date"}, "date field"),
        ("red_list", {"revoked_when": "status=注销"}, "not in code table"),
        ("red_list", {"revoked_when": "status>=2026-01-01"}, "FIELD=V"),
        ("red_list", {"revoked_when": "nope=1"}, "FIELD=V"),
    ],
)
def test_the_loader_refuses_bad_validity_rules(
    item_id: str, keys: dict[str, str], message: str
) -> None:
    with pytest.raises(CatalogInconsistent, match=message):
        build_catalog(_with(item_id, **keys))


HONOUR: dict[str, str | None] = {
    **{k: v for k, v in ROW.items() if k in ("subject_name", "subject_category", "id_type")},
    "id_number": PERSON_ID,
    "source_unit": "张店区某局",
    "source_unit_uscc": AUTHORITY_USCC,
    "honour_name": "张店区道德模范",
    "honour_level": "区县级",
    "granting_authority": "张店区人民政府",
    "granting_authority_uscc": AUTHORITY_USCC,
    "decision_no": "张政字〔2026〕1号",
    "grant_date": "2026-01-10",
    "status": "有效",
}


def honour_shown(row: dict[str, str | None], today: datetime.date) -> bool:
    record = validate_record("honour", row, today=TODAY).record
    assert record is not None
    period = record_period(record.severity, record.decided_on, disclosure_end=record.disclosure_end)
    return visible(
        state="active",
        severity=record.severity,
        decided_on=record.decided_on,
        disclosure_max_end=period.max_end,
        today=today,
    )


def test_honours_follow_the_same_validity_rules() -> None:
    """An honour (表彰奖励) is shown until its 有效期至, and never once revoked (撤销)."""
    later = datetime.date(2026, 6, 1)
    assert honour_shown(HONOUR, later)
    lapsing = {**HONOUR, "valid_until": "2026-05-31"}
    assert honour_shown(lapsing, datetime.date(2026, 5, 31))
    assert not honour_shown(lapsing, later)
    assert not honour_shown({**HONOUR, "status": "撤销"}, datetime.date(2026, 1, 11))


def test_period_facts_agree_with_validation_on_valid_entries() -> None:
    for changes in ({"valid_until": "2027-03-01"}, {"status": "撤销"}, {}):
        row = red(**changes)
        record = validate_record("red_list", row, today=TODAY).record
        assert record is not None
        facts = period_facts("red_list", row)
        assert (facts.severity, facts.decided_on, facts.disclosure_end) == (
            record.severity,
            record.decided_on,
            record.disclosure_end,
        ), changes


def test_period_facts_bound_an_entry_that_no_longer_validates() -> None:
    """Stored by a release with fewer checks: a 有效期至 on the listing day (date_order now)
    gives the empty window, and a field that fails its own check does not stop the rest."""
    lapsed = red(valid_until=LISTED.isoformat(), id_number="not an id")
    assert validate_record("red_list", lapsed, today=TODAY).errors
    facts = period_facts("red_list", lapsed)
    assert (facts.decided_on, facts.disclosure_end) == (LISTED, LISTED)
    period = record_period(facts.severity, facts.decided_on, disclosure_end=facts.disclosure_end)
    assert period.max_end == LISTED  # withheld, never "no end"
    # a listing day that does not read as a date leaves nothing to bound by: no window facts
    assert period_facts("red_list", red(listed_date="someday")).decided_on is None
