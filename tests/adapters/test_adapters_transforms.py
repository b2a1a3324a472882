"""Transforms: table tests from real export spellings, and properties where an invariant exists."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.mapper import map_row
from adapters.mapping import FieldSpec, parse_mapping
from adapters.transforms import (
    DATE_FORMATS,
    TEXT_DATE_FORMATS,
    DateTransform,
    DefaultTransform,
    MapTransform,
    RegexTransform,
    SimpleTransform,
    SplitTransform,
    Transform,
    TransformFailed,
    UnitTransform,
    apply_all,
    excel_serial_to_date,
    plain_decimal,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-09-27", "2024-09-27"),
        ("2024-9-7", "2024-09-07"),
        ("2024/9/27", "2024-09-27"),
        ("2024/09/27 00:00:00", "2024-09-27"),
        ("20240927", "2024-09-27"),
        ("2024年9月27日", "2024-09-27"),
        ("2024 年 09 月 27 日", "2024-09-27"),
        ("2024.09.27", "2024-09-27"),
        ("45562", "2024-09-27"),
        ("45562.75", "2024-09-27"),
        ("2024-09-27T10:30:00", "2024-09-27"),
        (" 2024-09-27 ", "2024-09-27"),
    ],
)
def test_dates_in_every_export_spelling_become_iso(text: str, expected: str) -> None:
    assert DateTransform(DATE_FORMATS).apply(text) == expected


@pytest.mark.parametrize("text", ["2024", "12", "45", "9999", "45562"])
def test_a_bare_number_is_no_date_unless_excel_serials_are_asked_for(text: str) -> None:
    # In a CSV or JSON export "2024" is a year, not Excel's 1905-07-16.
    with pytest.raises(TransformFailed) as failed:
        DateTransform().apply(text)
    assert failed.value.code == "bad_date"
    assert "excel" not in TEXT_DATE_FORMATS


@pytest.mark.parametrize("text", ["2024", "12", "45", "9999", "1"])
def test_excel_serials_shorter_than_five_digits_are_refused(text: str) -> None:
    with pytest.raises(TransformFailed):
        DateTransform(("excel",)).apply(text)
    assert DateTransform(("excel",)).apply("10000") == "1927-05-18"


@pytest.mark.parametrize(("kind", "serials"), [("csv", False), ("jsonl", False), ("xlsx", True)])
def test_plain_date_reads_serials_only_from_workbooks(kind: str, serials: bool) -> None:
    data = {
        "item": "admin_penalty",
        "source": {"kind": kind, "path": "x"},
        "fields": {"decision_date": {"column": "d", "transforms": ["date"]}},
    }
    step = parse_mapping(data, Path("m.toml")).fields["decision_date"].transforms[0]
    assert isinstance(step, DateTransform)
    assert ("excel" in step.formats) is serials


@pytest.mark.parametrize(
    "text", ["2024-02-30", "2024/13/01", "27.09.2024", "昨天", "2024-09", "60", "0", "99999999"]
)
def test_bad_dates_are_refused_with_bad_date(text: str) -> None:
    with pytest.raises(TransformFailed) as failed:
        DateTransform().apply(text)
    assert failed.value.code == "bad_date"
    assert text not in failed.value.message  # never echo the value


def test_restricted_formats_refuse_the_others() -> None:
    compact_only = DateTransform(("compact",))
    assert compact_only.apply("20240927") == "2024-09-27"
    with pytest.raises(TransformFailed):
        compact_only.apply("2024-09-27")
    with pytest.raises(TransformFailed):
        DateTransform(("iso",)).apply("45562")


def test_unknown_date_format_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="unknown date format"):
        DateTransform(("american",))


@pytest.mark.parametrize(
    ("serial", "expected"),
    [
        (1, dt.date(1900, 1, 1)),
        (59, dt.date(1900, 2, 28)),
        (61, dt.date(1900, 3, 1)),
        (45562, dt.date(2024, 9, 27)),
        (2958465, dt.date(9999, 12, 31)),
    ],
)
def test_excel_serials_follow_the_1900_system(serial: int, expected: dt.date) -> None:
    assert excel_serial_to_date(serial) == expected


@given(st.dates(min_value=dt.date(1927, 5, 18), max_value=dt.date(9999, 12, 31)))
def test_excel_serial_round_trips(day: dt.date) -> None:
    serial = (day - dt.date(1899, 12, 30)).days
    assert DateTransform(("excel",)).apply(str(serial)) == day.isoformat()


@given(st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_every_date_written_any_way_parses_back(day: dt.date) -> None:
    spellings = [
        day.isoformat(),
        f"{day.year}/{day.month}/{day.day}",
        day.strftime("%Y%m%d"),
        f"{day.year}年{day.month}月{day.day}日",
    ]
    for text in spellings:
        assert DateTransform().apply(text) == day.isoformat()


def test_trim_removes_ideographic_and_invisible_spaces() -> None:
    assert SimpleTransform("trim").apply("\u3000\ufeff 张店区 \u00a0\u200b") == "张店区"


def test_fullwidth_folds_to_halfwidth_and_keeps_chinese() -> None:
    assert SimpleTransform("fullwidth").apply("ＡＢＣ１２３（张店）") == "ABC123(张店)"


def test_unknown_simple_transform_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transform"):
        SimpleTransform("titlecase")


def test_value_map_maps_codes_and_passes_unknowns_to_the_catalogue() -> None:
    sexes = MapTransform({"男": "1", "女": "2"})
    assert sexes.apply("男") == "1"
    assert sexes.apply("未知") == "未知"
    with pytest.raises(TransformFailed) as failed:
        MapTransform({"男": "1"}, strict=True).apply("未知")
    assert failed.value.code == "unmapped_value"


def test_value_map_maps_each_part_of_a_code_list() -> None:
    steps: list[Transform] = [
        SplitTransform(("、", ",")),
        MapTransform({"罚没": "没收违法所得", "警": "警告"}),
    ]
    assert apply_all(steps, "警、罚款,罚没") == "警告;罚款;没收违法所得"


@pytest.mark.parametrize(
    ("text", "from_unit", "to_unit", "expected"),
    [
        ("5000", "元", "万元", "0.5"),
        ("1,234.56元", "元", "万元", "0.123456"),
        ("0.5", "万元", "元", "5000"),
        ("3", "亿元", "万元", "30000"),
        ("-200", "元", "万元", "-0.02"),
        ("0", "元", "万元", "0"),
    ],
)
def test_units_convert_exactly(text: str, from_unit: str, to_unit: str, expected: str) -> None:
    assert UnitTransform(from_unit, to_unit).apply(text) == expected


@pytest.mark.parametrize("text", ["五千", "1e5", "12万", "1.2.3", "--5"])
def test_non_numbers_are_refused_with_bad_number(text: str) -> None:
    with pytest.raises(TransformFailed) as failed:
        UnitTransform("元", "万元").apply(text)
    assert failed.value.code == "bad_number"


def test_unknown_units_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown unit"):
        UnitTransform("美元", "万元")


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=2, allow_nan=False))
def test_unit_conversion_round_trips(amount: Decimal) -> None:
    there = UnitTransform("元", "万元").apply(str(amount))
    back = UnitTransform("万元", "元").apply(there)
    assert Decimal(back) == amount
    assert "E" not in there.upper()


def test_plain_decimal_never_uses_an_exponent() -> None:
    assert plain_decimal(Decimal("1E+3")) == "1000"
    assert plain_decimal(Decimal("0.000001")) == "0.000001"
    assert plain_decimal(Decimal("-0.0")) == "0"


def test_regex_uses_named_group_then_group_one_then_whole_match() -> None:
    assert RegexTransform(re.compile(r"(\d+)-(?P<no>\w+)")).apply("x 12-ab") == "ab"
    assert RegexTransform(re.compile(r"第(\d+)号")).apply("张市监罚〔2024〕第15号") == "15"
    assert RegexTransform(re.compile(r"\d{4}")).apply("于2024年") == "2024"
    with pytest.raises(TransformFailed) as failed:
        RegexTransform(re.compile(r"\d{4}")).apply("无")
    assert failed.value.code == "no_match"


def test_default_fills_only_empty_values_and_empty_skips_other_steps() -> None:
    steps: list[Transform] = [
        SimpleTransform("trim"),
        DateTransform(),
        DefaultTransform("2099-12-31"),
    ]
    assert apply_all(steps, "   ") == "2099-12-31"
    assert apply_all(steps, "2024/1/2") == "2024-01-02"
    assert apply_all([DateTransform()], "") == ""


@given(st.text())
def test_trim_and_fullwidth_are_idempotent(text: str) -> None:
    for name in ("trim", "fullwidth"):
        once = SimpleTransform(name).apply(text)
        assert SimpleTransform(name).apply(once) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234,567.89", "123.456789"),
        ("-1,234元", "-0.1234"),
        ("1，200.50元", "0.12005"),  # a full-width comma between groups of three
        ("123,456", "12.3456"),
        ("999", "0.0999"),
    ],
)
def test_units_accept_well_formed_thousands_groups(text: str, expected: str) -> None:
    assert UnitTransform("元", "万元").apply(text) == expected


@pytest.mark.parametrize(
    "text", ["1.200,50", "12,00", "1,5", "1,2345", ",123", "1,,234", "1,234,56", "1,234.5,6"]
)
def test_decimal_commas_and_broken_groups_are_refused_not_rescaled(text: str) -> None:
    with pytest.raises(TransformFailed) as failed:
        UnitTransform("元", "万元").apply(text)
    assert failed.value.code == "bad_number"
    # the message names the rule, never the value: it is the same for every refused value
    with pytest.raises(TransformFailed) as other:
        UnitTransform("元", "万元").apply("五千")
    assert failed.value.message == other.value.message


def test_a_refused_amount_is_a_row_problem_naming_the_field() -> None:
    spec = FieldSpec(
        field_id="fine_wan_yuan",
        column="罚款金额（元）",
        transforms=(UnitTransform("元", "万元"),),
    )
    values, problems = map_row({"fine_wan_yuan": spec}, {"罚款金额（元）": "1.200,50"})
    assert "fine_wan_yuan" not in values
    assert [(p.column, p.field_id, p.code) for p in problems] == [
        ("罚款金额（元）", "fine_wan_yuan", "bad_number")
    ]
