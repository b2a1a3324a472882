"""Loading the catalogue: the shipped one is consistent; every consistency rule refuses."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from catalog import CatalogInconsistent, UnknownItem, default_catalog, load_catalog
from catalog.loader import DEFAULT_PATH, build_catalog

RAW: dict[str, Any] = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _item(data: dict[str, Any], item_id: str) -> dict[str, Any]:
    return next(i for i in data["items"] if i["id"] == item_id)


def test_shipped_catalogue_loads_and_is_cached() -> None:
    cat = default_catalog()
    assert cat is default_catalog()
    assert cat.version == "2026.1"
    categories = {i.category for i in cat.items.values()}
    assert {
        "基础信息",
        "资格资质",
        "表彰奖励",
        "公共事业费欠缴",
        "金融活动",
        "行政处罚",
        "行政许可",
        "严重失信主体名单",
        "红名单",
    } <= categories


def test_shipped_catalogue_keeps_the_house_rules() -> None:
    cat = default_catalog()
    for item in cat.items.values():
        if "natural_person" in item.subject_kinds:
            assert item.personal
            assert "public" not in item.disclosure_modes, item.id
    assert any(i.share_type == "none" for i in cat.items.values())
    assert all(f.id != "ethnicity" for i in cat.items.values() for f in i.fields)
    penalty = cat.item("admin_penalty")
    assert penalty.share_type == "unconditional"
    assert penalty.field("fine_wan_yuan").unit == "万元"
    assert penalty.field("fine_wan_yuan").required == "penalty_types contains 罚款"
    assert cat.item("utility_arrears").field("arrears_amount_yuan").unit == "元"
    assert cat.item("severe_dishonesty_list").record_checks == ("responsible_person",)
    # fixed lengths are exact (facts §4.1), and identifier checks sit on them
    org_code = penalty.field("org_code")
    assert (org_code.max_len, org_code.exact_len, org_code.check) == (9, True, "org_code")
    assert not penalty.field("decision_no").exact_len
    identity = cat.item("natural_person_identity")
    assert identity.field("admin_division").check == "admin_division"
    assert identity.record_checks == ("birth_date_matches_id",)
    # every dishonesty item yields a severity and so a period; penalties and severe lists may
    # state the end of the conduct (Shandong Art. 38)
    for item in cat.items.values():
        assert (item.info_nature == "dishonesty") == (item.severity_rule != "none"), item.id
    assert penalty.conduct_end_field == "conduct_end_date"
    assert cat.item("severe_dishonesty_list_person").conduct_end_field == "conduct_end_date"


def test_unknown_item_and_field_and_version() -> None:
    cat = default_catalog()
    with pytest.raises(UnknownItem, match="nope"):
        cat.item("nope")
    with pytest.raises(UnknownItem, match="no field"):
        cat.item("admin_penalty").field("nope")
    cat.check_version("2026.1")
    with pytest.raises(UnknownItem, match=r"2025\.9"):
        cat.check_version("2025.9")


def _person_public(data: dict[str, Any]) -> None:
    _item(data, "admin_penalty_person")["disclosure_modes"].append("public")


def _prohibited_field(data: dict[str, Any]) -> None:
    _item(data, "admin_penalty")["fields"] = [
        {"id": "blood_type", "name_zh": "血型", "type": "C..3"}
    ]


def _prohibited_chinese_name(data: dict[str, Any]) -> None:
    _item(data, "honour")["fields"].append({"id": "x1", "name_zh": "月收入", "type": "C..3"})


def _prohibited_item(data: dict[str, Any]) -> None:
    _item(data, "honour")["name_en"] = "Honours and religious affiliation"


def _too_long(data: dict[str, Any]) -> None:
    _item(data, "admin_penalty")["max_disclosure_months"] = 61


def _unknown_table(data: dict[str, Any]) -> None:
    _item(data, "honour")["fields"][1]["code_table"] = "no_such_table"


def _money_without_unit(data: dict[str, Any]) -> None:
    _item(data, "utility_arrears")["fields"][1].pop("unit")


def _money_by_name_without_unit(data: dict[str, Any]) -> None:
    _item(data, "honour")["fields"].append(
        {"id": "bonus", "name_zh": "奖金金额", "type": "N..10,2"}
    )


def _none_with_sharing(data: dict[str, Any]) -> None:
    _item(data, "utility_account")["disclosure_modes"] = ["gov_sharing"]


def _conditional_without_basis(data: dict[str, Any]) -> None:
    _item(data, "honour")["legal_basis"] = ""


def _bad_rule_field(data: dict[str, Any]) -> None:
    data["field_groups"]["penalty"]["fields"][6]["required"] = "nope contains 罚款"


def _bad_rule_value(data: dict[str, Any]) -> None:
    data["field_groups"]["penalty"]["fields"][6]["required"] = "penalty_types contains 打板子"


def _bad_natural_key(data: dict[str, Any]) -> None:
    _item(data, "honour")["natural_key"] = ["nope"]


def _bad_severity_rule(data: dict[str, Any]) -> None:
    _item(data, "honour")["severity_rule"] = "fixed:catastrophic"


def _duplicate_item(data: dict[str, Any]) -> None:
    data["items"].append(copy.deepcopy(_item(data, "honour")))


def _bad_kind(data: dict[str, Any]) -> None:
    _item(data, "honour")["fields"].append({"id": "x2", "name_zh": "某项", "type": "blob"})


def _bad_subject_kind(data: dict[str, Any]) -> None:
    _item(data, "honour")["subject_kinds"] = ["martian"]


def _dishonesty_without_date(data: dict[str, Any]) -> None:
    _item(data, "admin_penalty").pop("decided_on")


def _unknown_record_check(data: dict[str, Any]) -> None:
    _item(data, "honour")["record_checks"] = ["astrology"]


def _record_check_missing_fields(data: dict[str, Any]) -> None:
    _item(data, "honour")["record_checks"] = ["summary_procedure"]


def _dishonesty_without_severity(data: dict[str, Any]) -> None:
    # every 失信 record needs a severity, else it would get no period and no 5-year cap
    _item(data, "utility_arrears")["severity_rule"] = "none"


def _dishonesty_with_optional_date(data: dict[str, Any]) -> None:
    fields = _item(data, "utility_arrears")["fields"]
    next(f for f in fields if f["id"] == "recognition_date")["required"] = "O"


def _severity_on_basic_item(data: dict[str, Any]) -> None:
    _item(data, "honour")["severity_rule"] = "fixed:general"


def _conduct_end_unknown(data: dict[str, Any]) -> None:
    _item(data, "admin_penalty")["conduct_end"] = "nope"


def _conduct_end_not_a_date(data: dict[str, Any]) -> None:
    _item(data, "admin_penalty")["conduct_end"] = "decision_no"


def _conduct_end_on_basic_item(data: dict[str, Any]) -> None:
    _item(data, "honour")["conduct_end"] = "grant_date"


def _org_code_not_fixed(data: dict[str, Any]) -> None:
    fields = data["field_groups"]["subject"]["fields"]
    next(f for f in fields if f["id"] == "org_code")["type"] = "C..9"


def _no_version(data: dict[str, Any]) -> None:
    data.pop("version")


def _unknown_group(data: dict[str, Any]) -> None:
    _item(data, "honour")["include"].append("nope")


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (_person_public, ["item admin_penalty_person", "第二十条"]),
        (_prohibited_field, ["field blood_type", "血型", "第四十二条"]),
        (_prohibited_chinese_name, ["field x1", "收入", "第四十二条"]),
        (_prohibited_item, ["item honour", "宗教信仰"]),
        (_too_long, ["item admin_penalty", "61 months", "第三十八条"]),
        (_unknown_table, ["item honour field honour_level", "no_such_table"]),
        (_money_without_unit, ["field arrears_amount_yuan", "unit"]),
        (_money_by_name_without_unit, ["field bonus", "unit"]),
        (_none_with_sharing, ["item utility_account", "51号"]),
        (_conditional_without_basis, ["item honour", "legal_basis"]),
        (_bad_rule_field, ["field fine_wan_yuan", "unknown field"]),
        (_bad_rule_value, ["field fine_wan_yuan", "打板子"]),
        (_bad_natural_key, ["item honour", "natural_key"]),
        (_bad_severity_rule, ["item honour", "severity_rule"]),
        (_duplicate_item, ["item honour", "duplicate"]),
        (_bad_kind, ["field x2", "blob"]),
        (_bad_subject_kind, ["item honour", "subject_kinds"]),
        (_dishonesty_without_date, ["item admin_penalty", "decided_on"]),
        (_unknown_record_check, ["item honour", "astrology"]),
        (_record_check_missing_fields, ["item honour", "summary_procedure"]),
        (_dishonesty_without_severity, ["item utility_arrears", "severity rule", "第三十八条"]),
        (_dishonesty_with_optional_date, ["item utility_arrears", "mandatory 'decided_on'"]),
        (_severity_on_basic_item, ["item honour", "not dishonesty"]),
        (_conduct_end_unknown, ["item admin_penalty", "conduct_end", "nope"]),
        (_conduct_end_not_a_date, ["item admin_penalty", "decision_no", "date"]),
        (_conduct_end_on_basic_item, ["item honour", "dishonesty items only"]),
        (_org_code_not_fixed, ["field org_code", "C9"]),
        (_no_version, ["version"]),
        (_unknown_group, ["item honour", "nope"]),
    ],
)
def test_inconsistent_catalogue_is_refused_with_a_clear_message(
    change: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    data = copy.deepcopy(RAW)
    change(data)
    with pytest.raises(CatalogInconsistent) as caught:
        build_catalog(data)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_load_catalog_reports_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogInconsistent, match="cannot be read"):
        load_catalog(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("version = \n", encoding="utf-8")
    with pytest.raises(CatalogInconsistent, match="not valid TOML"):
        load_catalog(broken)


def test_load_catalog_from_a_copy(tmp_path: Path) -> None:
    copy_path = tmp_path / "catalog.toml"
    copy_path.write_text(DEFAULT_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_catalog(copy_path) == default_catalog()
