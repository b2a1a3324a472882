"""validate_record: good and bad rows per item, the legal record checks, and properties."""

from __future__ import annotations

import datetime
import pickle
import tomllib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog import (
    UnknownItem,
    ValidationResult,
    default_catalog,
    record_subject_kind,
    validate_record,
)
from catalog.loader import DEFAULT_PATH, build_catalog
from catalog.periods import UNGRADED
from tests.catalog.catalog_testdata import (
    AUTHORITY_USCC,
    COMPANY_USCC,
    PERSON_ID,
    SHOP_USCC,
    TODAY,
    make_ric,
    penalty_org,
    penalty_person,
)

REP_ID = make_ric("370303", "19700505", "011")
PRINCIPAL_ID = make_ric("370302", "19800606", "022")


def _codes(result: ValidationResult) -> set[tuple[str, str]]:
    return {(e.field_id, e.code) for e in result.errors}


def check(item: str, row: dict[str, str | None]) -> ValidationResult:
    return validate_record(item, row, today=TODAY)


# --- penalties ------------------------------------------------------------------------------


def test_good_org_penalty_is_normalised() -> None:
    result = check(
        "admin_penalty",
        penalty_org(
            uscc="9135 0100 m000 100y43",
            penalty_types="罚款，警告",
            fine_wan_yuan="5.000000",
            decision_date="2026/05/11",
            penalty_valid_until="20270511",
        ),
    )
    assert result.ok, result.errors
    record = result.record
    assert record is not None
    assert record.subject_kind == "organisation"
    assert record.subject_id == COMPANY_USCC
    assert record.fields["uscc"] == COMPANY_USCC
    assert record.fields["penalty_types"] == "警告;罚款"  # code-table order
    assert record.fields["fine_wan_yuan"] == "5"
    assert record.fields["decision_date"] == "2026-05-11"
    assert record.fields["penalty_valid_until"] == "2027-05-11"
    assert record.severity == "general"
    assert record.decided_on == datetime.date(2026, 5, 11)
    assert record.natural_key == ("张市监罚〔2026〕12号", COMPANY_USCC)
    assert record.catalog_version == default_catalog().version
    assert record.linked_subject_ids == ()


def test_good_person_penalty() -> None:
    result = check(
        "admin_penalty_person", penalty_person(id_number=PERSON_ID.lower(), id_type="01")
    )
    assert result.ok, result.errors
    assert result.record is not None
    assert result.record.subject_kind == "natural_person"
    assert result.record.subject_id == PERSON_ID
    assert result.record.fields["id_type"] == "身份证"


def test_person_with_passport_gets_a_typed_subject_id() -> None:
    result = check("admin_penalty_person", penalty_person(id_type="护照", id_number="e 1234567"))
    assert result.ok, result.errors
    assert result.record is not None
    assert result.record.subject_id == "护照号:E1234567"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"decision_no": None}, ("decision_no", "required")),
        ({"decision_date": "2024-13-01"}, ("decision_date", "bad_date")),
        ({"decision_date": "2026-11-26"}, ("decision_date", "future_date")),
        ({"penalty_types": "打板子"}, ("penalty_types", "unknown_code")),
        ({"fine_wan_yuan": None}, ("fine_wan_yuan", "required")),
        ({"fine_wan_yuan": "1.1234567"}, ("fine_wan_yuan", "bad_number")),
        ({"fine_wan_yuan": "1e3"}, ("fine_wan_yuan", "bad_number")),
        ({"fine_wan_yuan": "-5"}, ("fine_wan_yuan", "bad_number")),
        ({"fine_wan_yuan": "1234567890123"}, ("fine_wan_yuan", "bad_number")),
        ({"penalty_types": "没收违法所得"}, ("confiscation_wan_yuan", "required")),
        ({"penalty_types": "吊销许可证件"}, ("license_suspended_or_revoked", "required")),
        ({"decision_no": "号" * 129}, ("decision_no", "too_long")),
        ({"violation_facts": "a\x00b"}, ("violation_facts", "bad_text")),
        ({"uscc": "91350100M000100Y44"}, ("uscc", "bad_identifier")),
        ({"uscc": None}, ("uscc", "required")),
        ({"authority_uscc": "000000000000000000"}, ("authority_uscc", "bad_identifier")),
        ({"severity": None}, ("severity", "required")),
        ({"severity": "灾难"}, ("severity", "unknown_code")),
        ({"subject_category": "自然人"}, ("subject_category", "wrong_subject_kind")),
        ({"legal_rep_name": None}, ("legal_rep_name", "required")),
        ({"religion": "某教"}, ("religion", "prohibited")),
        ({"血型": "A"}, ("血型", "prohibited")),
        ({"favourite_colour": "red"}, ("favourite_colour", "unknown_field")),
        ({"procedure": "简易程序"}, ("procedure", "summary_procedure")),
        ({"procedure": "当场处罚"}, ("procedure", "summary_procedure")),
    ],
)
def test_bad_org_penalties(changes: dict[str, str | None], expected: tuple[str, str]) -> None:
    result = check("admin_penalty", penalty_org(**changes))
    assert not result.ok
    assert result.record is None
    assert expected in _codes(result), result.errors


def test_wrong_subject_kind_points_to_the_right_item() -> None:
    result = check("admin_penalty", penalty_org(subject_category="自然人"))
    assert any("admin_penalty_person" in e.message for e in result.errors)


def test_severity_optional_before_2026_04_01_but_the_record_stays_dishonesty() -> None:
    # 失信程度 is required from 2026-04-01 only (令第36号); an ungraded older penalty is still
    # 失信信息: it gets `ungraded`, so it has a period (令第58号) and the 5-year cap
    result = check("admin_penalty", penalty_org(severity=None, decision_date="2025-06-01"))
    assert result.ok, result.errors
    assert result.record is not None
    assert result.record.severity == UNGRADED
    # a value no row can carry: `ungraded` is not a spelling of the severity table
    assert ("severity", "unknown_code") in _codes(
        check("admin_penalty", penalty_org(severity=UNGRADED, decision_date="2025-06-01"))
    )


def test_ungraded_decisions_from_2026_04_01_are_refused_whatever_the_catalogue_says() -> None:
    # a catalogue whose severity field lost its conditional rule still cannot make a record
    # without a lawful period (令第36号 grades every decision from 2026-04-01)
    raw = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    for f in raw["field_groups"]["penalty"]["fields"]:
        if f["id"] == "severity":
            f["required"] = "O"
    lax = build_catalog(raw)
    result = validate_record("admin_penalty", penalty_org(severity=None), today=TODAY, catalog=lax)
    assert ("severity", "required") in _codes(result)
    assert len(result.errors) == 1
    # the shipped catalogue says it once, not twice
    assert [e.code for e in check("admin_penalty", penalty_org(severity=None)).errors] == [
        "required"
    ]


def test_the_end_of_the_conduct_is_carried_for_the_five_year_cap() -> None:
    result = check("admin_penalty", penalty_org(conduct_end_date="2025/12/31"))
    assert result.record is not None, result.errors
    assert result.record.conduct_ended_on == datetime.date(2025, 12, 31)
    assert check("admin_penalty", penalty_org()).record.conduct_ended_on is None  # type: ignore[union-attr]
    listed = check("severe_dishonesty_list_person", GOOD_ROWS["severe_dishonesty_list_person"])
    assert listed.record is not None
    assert listed.record.conduct_ended_on is None
    future = check("admin_penalty", penalty_org(conduct_end_date="2026-12-01"))
    assert ("conduct_end_date", "future_date") in _codes(future)


def test_pre_2021_penalty_type_only_for_old_decisions() -> None:
    old = penalty_org(
        penalty_types="没收违法所得、没收非法财物",
        confiscation_wan_yuan="1",
        decision_date="2019-03-01",
        severity=None,
        fine_wan_yuan=None,
    )
    assert check("admin_penalty", old).ok
    new = dict(old, decision_date="2022-03-01")
    assert ("penalty_types", "outdated_code") in _codes(check("admin_penalty", new))


# 山东省社会信用条例第十三条 / 行政处罚法第五十一条 (rule in docs/catalog.md)
@pytest.mark.parametrize(
    ("item", "row", "refused"),
    [
        (
            "admin_penalty",
            penalty_org(procedure=None, penalty_types="警告", fine_wan_yuan=None),
            True,
        ),
        ("admin_penalty", penalty_org(procedure=None, fine_wan_yuan="0.3"), True),  # 3000 元
        ("admin_penalty", penalty_org(procedure=None, fine_wan_yuan="0.300001"), False),
        (
            "admin_penalty",
            penalty_org(procedure=None, fine_wan_yuan="0.3", penalty_types="罚款;责令停产停业"),
            False,
        ),
        ("admin_penalty", penalty_org(penalty_types="警告", fine_wan_yuan=None), False),  # 普通程序
        (
            "admin_penalty_person",
            penalty_person(procedure=None, fine_wan_yuan="0.02"),
            True,
        ),  # 200 元
        ("admin_penalty_person", penalty_person(procedure=None, fine_wan_yuan="0.0201"), False),
        ("admin_penalty_person", penalty_person(procedure="简易程序", fine_wan_yuan="1"), True),
        (
            "admin_penalty",
            penalty_org(
                subject_category="个体工商户", uscc=SHOP_USCC, procedure=None, fine_wan_yuan="0.05"
            ),
            False,
        ),
        (
            "admin_penalty",
            penalty_org(
                subject_category="个体工商户", uscc=SHOP_USCC, procedure=None, fine_wan_yuan="0.02"
            ),
            True,
        ),
    ],
)
def test_summary_procedure_penalties_are_refused(
    item: str, row: dict[str, str | None], refused: bool
) -> None:
    result = check(item, row)
    assert ("summary_procedure" in {e.code for e in result.errors}) is refused, result.errors
    if not refused:
        assert result.ok, result.errors


@pytest.mark.parametrize("fine", ["abc", "-0.01", "1e3"])
def test_a_fine_that_does_not_parse_is_one_error_not_also_a_small_fine(fine: str) -> None:
    result = check("admin_penalty_person", penalty_person(procedure=None, fine_wan_yuan=fine))
    codes = _codes(result)
    assert any(field == "fine_wan_yuan" for field, _code in codes), codes
    assert "summary_procedure" not in {code for _field, code in codes}


@pytest.mark.parametrize("blank", ["\u200b", "\ufeff\u200b ", "\u3000\u200d"])
def test_a_name_of_invisible_characters_only_is_missing(blank: str) -> None:
    result = check("admin_penalty", penalty_org(subject_name=blank))
    assert ("subject_name", "required") in _codes(result)


def test_invisible_characters_around_a_value_are_trimmed() -> None:
    result = check(
        "admin_penalty", penalty_org(subject_name="\ufeff\u200b淄博某某商贸有限公司\u200b ")
    )
    assert result.ok, result.errors
    assert result.record is not None
    assert result.record.fields["subject_name"] == "淄博某某商贸有限公司"


def test_individual_business_placeholder_needs_business_reg_no() -> None:
    shop = penalty_org(subject_category="个体工商户", uscc="00000000000000000x")
    assert ("business_reg_no", "required") in _codes(check("admin_penalty", shop))
    shop["business_reg_no"] = "370303600123456"
    result = check("admin_penalty", shop)
    assert result.ok, result.errors
    assert result.record is not None
    assert result.record.subject_id == "工商注册号:370303600123456"
    assert result.record.fields["uscc"] == "00000000000000000X"


def test_placeholder_refused_for_organisations() -> None:
    row = penalty_org(uscc="00000000000000000X", business_reg_no="370303600123456")
    assert ("uscc", "bad_identifier") in _codes(check("admin_penalty", row))


# --- severe dishonesty list (Shandong Art. 31) ----------------------------------------------


def severe_org(**changes: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {
        "subject_name": "淄博某某建设有限公司",
        "subject_category": "法人及非法人组织",
        "uscc": COMPANY_USCC,
        "legal_rep_name": "王某",
        "legal_rep_id_type": "身份证",
        "legal_rep_id_number": REP_ID,
        "list_name": "拖欠农民工工资失信联合惩戒对象名单",
        "dishonest_conduct": "拖欠农民工工资",
        "recognition_basis": "拖欠农民工工资失信联合惩戒对象名单管理暂行办法",
        "recognising_unit": "张店区人力资源和社会保障局",
        "recognising_unit_uscc": AUTHORITY_USCC,
        "decision_no": "张人社认〔2026〕3号",
        "listed_date": "2026-06-01",
        "measures": "3;5;限制或者禁止进入相关市场和相关行业",
        "status": "列入",
        "source_unit": "张店区人力资源和社会保障局",
        "source_unit_uscc": AUTHORITY_USCC,
    }
    row.update(changes)
    return row


def test_severe_org_record_links_responsible_persons() -> None:
    result = check(
        "severe_dishonesty_list",
        severe_org(principal_name="赵某", principal_id_number=PRINCIPAL_ID),
    )
    assert result.ok, result.errors
    record = result.record
    assert record is not None
    assert record.severity == "severe"
    assert record.linked_subject_ids == (REP_ID, PRINCIPAL_ID)
    assert record.fields["measures"].split(";") == [
        "限制或者禁止进入相关市场和相关行业",
        "限制开展融资、授信等金融活动",
        "限制参加政府采购、政府投资项目招标投标以及国有土地招拍挂",
    ]


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({"legal_rep_id_number": None}, False),
        (
            {
                "legal_rep_id_number": None,
                "principal_name": "赵某",
                "principal_id_number": PRINCIPAL_ID,
            },
            True,
        ),
        ({"legal_rep_id_number": None, "principal_name": "赵某"}, False),
        ({"subject_category": "个体工商户", "uscc": SHOP_USCC, "legal_rep_id_number": None}, True),
    ],
)
def test_severe_org_without_legal_rep_is_refused(changes: dict[str, str | None], ok: bool) -> None:
    result = check("severe_dishonesty_list", severe_org(**changes))
    assert result.ok is ok, result.errors
    if not ok:
        assert ("legal_rep_name", "legal_rep_missing") in _codes(result)


def test_removed_list_entry_needs_removal_date_and_reason() -> None:
    result = check("severe_dishonesty_list", severe_org(status="移出"))
    assert {("removal_date", "required"), ("removal_reason", "required")} <= _codes(result)
    fixed = severe_org(status="移出", removal_date="2026-09-01", removal_reason="信用修复")
    assert check("severe_dishonesty_list", fixed).ok


# --- the other items: one good and one bad row each -----------------------------------------

SUBJECT_PERSON = {
    "subject_name": "李某",
    "subject_category": "自然人",
    "id_type": "身份证",
    "id_number": PERSON_ID,
}
SOURCE = {"source_unit": "张店区某局", "source_unit_uscc": AUTHORITY_USCC}

GOOD_ROWS: dict[str, dict[str, str | None]] = {
    "natural_person_identity": {
        "name": "李某",
        "id_type": "身份证",
        "id_number": PERSON_ID,
        "sex": "2",
        "birth_date": "1990-01-01",
        "admin_division": "370303",
        **SOURCE,
    },
    "qualification": {
        **SUBJECT_PERSON,
        **SOURCE,
        "qualification_name": "执业医师",
        "certificate_no": "110370300012345",
        "issuer_name": "淄博市卫生健康委员会",
        "issuer_uscc": AUTHORITY_USCC,
        "issue_date": "2015-07-01",
        "status": "有效",
    },
    "honour": {
        **SUBJECT_PERSON,
        **SOURCE,
        "honour_name": "张店区道德模范",
        "honour_level": "区县级",
        "granting_authority": "张店区人民政府",
        "granting_authority_uscc": AUTHORITY_USCC,
        "decision_no": "张政字〔2026〕1号",
        "grant_date": "2026-01-10",
        "status": "有效",
    },
    "red_list": {
        **SUBJECT_PERSON,
        **SOURCE,
        "list_name": "诚信个人",
        "recognition_basis": "张店区诚信个人评选办法",
        "recognising_unit": "张店区发展和改革局",
        "recognising_unit_uscc": AUTHORITY_USCC,
        "listed_date": "2026-03-01",
        "status": "有效",
        "incentive_measures": "1,5",
    },
    "utility_arrears": {
        **SUBJECT_PERSON,
        "utility_type": "自来水",
        "arrears_amount_yuan": "1,234.50",
        "arrears_from": "2025-01-01",
        "arrears_to": "2025-12-31",
        "recognition_date": "2026-02-01",
        "settled": "否",
        "provider_name": "张店区自来水公司",
        "provider_uscc": COMPANY_USCC,
    },
    "utility_account": {
        **SUBJECT_PERSON,
        "utility_type": "电",
        "account_no": "0301234567",
        "provider_name": "供电公司",
        "provider_uscc": COMPANY_USCC,
    },
    "financial_enforcement": {
        **SUBJECT_PERSON,
        "case_no": "(2026)鲁0303执123号",
        "court_name": "淄博市张店区人民法院",
        "enforcement_basis_no": "(2025)鲁0303民初456号",
        "case_cause": "金融借款合同纠纷",
        "obligation": "偿还借款本金及利息",
        "performance_status": "全部未履行",
        "dishonest_conduct": "1",
        "enforcement_amount_yuan": "150000",
        "filing_date": "2026-01-05",
        "listed_date": "2026-03-05",
        "status": "列入",
    },
    "admin_licence": {
        "subject_name": "淄博某某商贸有限公司",
        "subject_category": "法人及非法人组织",
        "uscc": COMPANY_USCC,
        "legal_rep_name": "张某",
        **SOURCE,
        "decision_title": "食品经营许可决定书",
        "decision_no": "JY13703030012345",
        "license_category": "其他-备案",
        "content": "食品销售",
        "decision_date": "2026-02-02",
        "valid_from": "2026-02-02",
        "valid_to": "2099/12/31",
        "authority_name": "张店区行政审批服务局",
        "authority_uscc": AUTHORITY_USCC,
        "status": "1",
    },
    "severe_dishonesty_list_person": {
        **SUBJECT_PERSON,
        **SOURCE,
        "list_name": "失信被执行人名单",
        "dishonest_conduct": "拒不履行",
        "recognition_basis": "最高人民法院关于公布失信被执行人名单信息的若干规定",
        "recognising_unit": "张店区人民法院",
        "recognising_unit_uscc": AUTHORITY_USCC,
        "decision_no": "(2026)鲁0303执1号",
        "listed_date": "2026-03-01",
        "status": "列入",
    },
}
GOOD_ROWS["admin_licence_person"] = {
    **GOOD_ROWS["admin_licence"],
    **SUBJECT_PERSON,
    "uscc": None,
    "legal_rep_name": None,
}

BAD_CHANGES: dict[str, tuple[dict[str, str | None], tuple[str, str]]] = {
    "natural_person_identity": (
        {"id_number": "370303199001010018"},
        ("id_number", "bad_identifier"),
    ),
    "qualification": ({"status": "吊"}, ("status", "unknown_code")),
    "honour": ({"grant_date": "10/01/2026"}, ("grant_date", "bad_date")),
    "red_list": ({"incentive_measures": None}, ("incentive_measures", "required")),
    "utility_arrears": ({"settled": "是"}, ("settled_date", "required")),
    "utility_account": ({"account_no": None}, ("account_no", "required")),
    "financial_enforcement": ({"dishonest_conduct": "7"}, ("dishonest_conduct", "unknown_code")),
    "admin_licence": ({"subject_category": "自然人"}, ("subject_category", "wrong_subject_kind")),
    "admin_licence_person": ({"id_number": None}, ("id_number", "required")),
    "severe_dishonesty_list_person": ({"id_type": None}, ("id_type", "required")),
}


@pytest.mark.parametrize("item", sorted(GOOD_ROWS))
def test_good_row_per_item(item: str) -> None:
    result = check(item, GOOD_ROWS[item])
    assert result.ok, result.errors
    assert result.record is not None
    assert result.record.subject_id


@pytest.mark.parametrize("item", sorted(BAD_CHANGES))
def test_bad_row_per_item(item: str) -> None:
    changes, expected = BAD_CHANGES[item]
    result = check(item, {**GOOD_ROWS[item], **changes})
    assert expected in _codes(result), result.errors


def test_every_item_has_a_good_row_test() -> None:
    assert set(GOOD_ROWS) | {
        "admin_penalty",
        "admin_penalty_person",
        "severe_dishonesty_list",
    } == set(default_catalog().items)


def test_item_specific_normalisation() -> None:
    arrears = check("utility_arrears", GOOD_ROWS["utility_arrears"]).record
    assert arrears is not None
    assert arrears.fields["arrears_amount_yuan"] == "1234.5"
    assert arrears.fields["utility_type"] == "水"
    assert arrears.fields["settled"] == "false"
    assert arrears.severity == "general"
    licence = check("admin_licence", GOOD_ROWS["admin_licence"]).record
    assert licence is not None
    assert licence.fields["license_category"] == "其他-备案"
    assert licence.fields["status"] == "有效"
    assert licence.fields["valid_to"] == "2099-12-31"
    identity = check("natural_person_identity", GOOD_ROWS["natural_person_identity"]).record
    assert identity is not None
    assert identity.natural_key == (PERSON_ID,)
    assert identity.fields["sex"] == "女"


def test_unknown_item_raises() -> None:
    with pytest.raises(UnknownItem):
        validate_record("nope", {}, today=TODAY)


# --- fixed-length fields (facts §4.1: `C..n` at most n, `Cn` exactly n) ------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("M000100Y4", True),  # GB 32100 worked example 91350100M000100Y43, positions 9-17
        ("m000100y-4", True),  # the printed form, normalised
        ("M000100Y5", False),  # wrong GB 11714 check character
        ("12", False),
        ("中文", False),
        ("M000100Y4X", False),
        ("M000100Y*", False),
        ("000000000", False),
    ],
)
def test_org_code_is_nine_characters_with_its_gb11714_check(value: str, ok: bool) -> None:
    result = check("admin_penalty", penalty_org(org_code=value))
    if ok:
        assert result.record is not None, result.errors
        assert result.record.fields["org_code"] == "M000100Y4"
    else:
        assert ("org_code", "bad_identifier") in _codes(result)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("370303", True), ("ab", False), ("37030", False), ("3703031", False), ("99030X", False),
     ("990303", False), ("３７０３０３", True)],
)  # fmt: skip
def test_admin_division_is_six_digits(value: str, ok: bool) -> None:
    row = dict(GOOD_ROWS["natural_person_identity"], admin_division=value)
    result = check("natural_person_identity", row)
    if ok:
        assert result.record is not None, result.errors
        assert result.record.fields["admin_division"] == "370303"
    else:
        assert ("admin_division", "bad_identifier") in _codes(result)


@pytest.mark.parametrize(("value", "ok"), [("110000123456", True), ("12345", False)])
def test_other_fixed_length_fields_are_exact(value: str, ok: bool) -> None:
    # 事业单位证书号 is C12 (facts §4.3): twelve characters, not "up to twelve"
    result = check("admin_penalty", penalty_org(public_inst_cert_no=value))
    assert result.ok is ok
    if not ok:
        assert ("public_inst_cert_no", "bad_length") in _codes(result)


def test_a_birth_date_that_contradicts_the_id_number_is_refused() -> None:
    # GB 11643: positions 7-14 are the birth date (PERSON_ID is born 1990-01-01)
    good = check("natural_person_identity", GOOD_ROWS["natural_person_identity"])
    assert good.ok, good.errors
    row = dict(GOOD_ROWS["natural_person_identity"], birth_date="1990-01-02")
    result = check("natural_person_identity", row)
    assert _codes(result) == {("birth_date", "birth_date_mismatch")}
    (error,) = result.errors
    assert "birth_date" in error.message
    assert "id_number" in error.message
    for value in ("1990-01-02", "19900102", "1990-01-01", "19900101", PERSON_ID):
        assert value not in error.message
    # another document type carries no birth date to compare
    passport = dict(row, id_type="护照", id_number="E12345678")
    assert check("natural_person_identity", passport).ok


# --- no personal data in messages -----------------------------------------------------------


def test_messages_never_contain_id_numbers_or_names() -> None:
    bad_id = "370303199001010018"
    row = penalty_person(
        id_number=bad_id,
        subject_name="欧阳" * 101,
        decision_date="2026-02-30",
        legal_rep_id_number="11010519491231002Y",
    )
    result = check("admin_penalty_person", row)
    assert {("id_number", "bad_identifier"), ("subject_name", "too_long")} <= _codes(result)
    text = " ".join(e.message for e in result.errors)
    assert bad_id not in text
    assert "19900101" not in text
    assert "欧阳欧阳" not in text
    assert "11010519491231002Y" not in text


def test_hidden_values_for_personal_dates() -> None:
    row = dict(GOOD_ROWS["natural_person_identity"], birth_date="1990-02-30")
    result = check("natural_person_identity", row)
    assert ("birth_date", "bad_date") in _codes(result)
    assert "1990-02-30" not in result.errors[0].message


# --- properties -----------------------------------------------------------------------------

_dates = st.dates(datetime.date(1990, 1, 1), TODAY)


@settings(max_examples=60)
@given(_dates, st.sampled_from(["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y/%-m/%-d"]))
def test_every_date_spelling_gives_the_iso_date(day: datetime.date, style: str) -> None:
    row = penalty_org(decision_date=day.strftime(style), severity="一般")
    result = check("admin_penalty", row)
    assert result.ok, result.errors
    assert result.record is not None
    assert result.record.fields["decision_date"] == day.isoformat()


@settings(max_examples=60)
@given(st.decimals(min_value=0, max_value=10**11, places=6, allow_nan=False))
def test_fine_round_trips_through_its_canonical_form(amount: Decimal) -> None:
    row = penalty_org(fine_wan_yuan=format(amount, "f"))
    first = check("admin_penalty", row)
    assert first.record is not None, first.errors
    canonical = first.record.fields["fine_wan_yuan"]
    again = check("admin_penalty", dict(row, fine_wan_yuan=canonical))
    assert again.record is not None
    assert again.record.fields == first.record.fields
    assert Decimal(canonical) == amount


@settings(max_examples=60)
@given(st.dictionaries(st.sampled_from(sorted(penalty_org())), st.none() | st.text(max_size=30)))
def test_validation_never_crashes_and_ok_means_record(changes: dict[str, str | None]) -> None:
    result = check("admin_penalty", penalty_org(**changes))
    assert result.ok is (result.record is not None)
    assert result.ok is (not result.errors)


def test_a_used_catalogue_pickles_without_its_compiled_validators() -> None:
    # A feed-checking worker process receives the node's catalogue by pickle, after the node
    # has validated with it (its cache then holds closures, which do not pickle).
    catalogue = default_catalog()
    before = validate_record("admin_penalty", penalty_org(), today=TODAY, catalog=catalogue)
    copy = pickle.loads(pickle.dumps(catalogue))
    assert copy == catalogue
    assert copy._compiled == {}
    assert validate_record("admin_penalty", penalty_org(), today=TODAY, catalog=copy) == before
    assert catalogue._compiled  # the original keeps its cache


def test_a_name_slipped_into_a_public_field_is_not_quoted() -> None:
    """An unquoted comma in a name shifts the columns: the name's tail lands in the public
    subject-category field, whose error must not quote it."""
    row = dict(GOOD_ROWS["honour"], subject_category="小明")
    problems = validate_record("honour", row, today=TODAY).errors
    assert problems
    assert all("小明" not in p.message for p in problems)


# --- an end date before its start ------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "row", "start", "end"),
    [
        ("admin_penalty", penalty_org(), "decision_date", "penalty_valid_until"),
        ("admin_penalty_person", penalty_person(), "decision_date", "penalty_valid_until"),
        ("admin_licence", GOOD_ROWS["admin_licence"], "valid_from", "valid_to"),
        ("admin_licence_person", GOOD_ROWS["admin_licence_person"], "valid_from", "valid_to"),
        ("qualification", GOOD_ROWS["qualification"], "valid_from", "valid_to"),
    ],
)
def test_an_end_date_before_its_start_is_refused(
    item: str, row: dict[str, str | None], start: str, end: str
) -> None:
    assert check(item, row).ok
    day = datetime.date(2025, 6, 1)
    before = dict(row, **{start: day.isoformat(), end: "2025-05-31"})
    result = check(item, before)
    assert _codes(result) == {(end, "date_order")}
    assert "2025" not in result.errors[0].message  # neither value is shown
    assert check(item, dict(before, **{end: day.isoformat()})).ok  # the same day is allowed


def test_a_natural_persons_record_naming_another_person_links_nobody() -> None:
    # Shandong Art. 31 links organisations' records to their responsible persons; a child's
    # enforcement record naming its 法定代理人 stays the child's own
    row = {
        **GOOD_ROWS["financial_enforcement"],
        "legal_rep_name": "王某",
        "legal_rep_id_number": REP_ID,
    }
    assert record_subject_kind("financial_enforcement", row) == "natural_person"
    assert record_subject_kind("financial_enforcement", {**row, "subject_category": "?"}) is None
    assert record_subject_kind("no_such_item", row) is None
    result = check("financial_enforcement", row)
    assert result.record is not None, result.errors
    assert result.record.linked_subject_ids == ()


@pytest.mark.parametrize("item", sorted(GOOD_ROWS))
@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
def test_a_date_at_the_ends_of_the_calendar_is_refused_never_raised(item: str, day: str) -> None:
    # 9999-12-31 plus a disclosure period is past the last day Python has: a refusal (future
    # date, date order ...) or an accepted record, never an exception that stops a run
    dates = [f.id for f in default_catalog().items[item].fields if f.kind == "date"]
    assert dates
    for field_id in dates:
        result = check(item, {**GOOD_ROWS[item], field_id: day})
        assert result.ok or result.errors
