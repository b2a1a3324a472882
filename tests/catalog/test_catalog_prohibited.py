"""Prohibited information (Shandong Art. 42) is recognised by name, without false alarms."""

from __future__ import annotations

import pytest

from catalog import default_catalog, prohibited_reason


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("religion", "宗教信仰"),
        ("宗教信仰", "宗教信仰"),
        ("ReligiousAffiliation", "宗教信仰"),
        ("gene_test", "基因"),
        ("DNA", "基因"),
        ("基因检测结果", "基因"),
        ("fingerprint", "指纹"),
        ("指纹特征", "指纹"),
        ("blood_type", "血型"),
        ("BloodType", "血型"),
        ("blood type", "血型"),
        ("血型", "血型"),
        ("illness", "疾病和病史"),
        ("medical_history", "疾病和病史"),
        ("既往病史", "疾病和病史"),
        ("monthly_income", "收入"),
        ("月收入", "收入"),
        ("salary", "收入"),
        ("deposit_balance", "存款"),
        ("银行存款", "存款"),
        ("savings", "存款"),
        ("securities_holdings", "有价证券"),
        ("有价证券", "有价证券"),
        ("commercial_insurance", "商业保险"),
        ("保单号", "商业保险"),
        ("real_estate", "不动产"),
        ("不动产登记", "不动产"),
        ("房产套数", "不动产"),
        ("tax_amount", "纳税数额"),
        ("纳税金额", "纳税数额"),
        ("TaxPaid", "纳税数额"),
        ("ethnicity", "民族"),
        ("民族", "民族"),
    ],
)
def test_prohibited_names(name: str, label: str) -> None:
    reason = prohibited_reason(name)
    assert reason is not None
    assert reason.startswith(label)
    assert "条" in reason  # names its legal source


@pytest.mark.parametrize(
    "name",
    [
        "general",
        "generation",
        "tax_reg_no",
        "税务登记号",
        "confiscation_wan_yuan",
        "没收违法所得、没收非法财物的金额（万元）",
        "illegal_income",
        "violation_facts",
        "legal_rep_id_number",
        "arrears_amount_yuan",
        "securities_regulator",
        "good_faith",
        "insurance_company",
        "penalty_types",
        "处罚依据",
        "subject_name",
    ],
)
def test_allowed_names(name: str) -> None:
    assert prohibited_reason(name) is None


def test_shipped_catalogue_has_no_prohibited_names() -> None:
    for item in default_catalog().items.values():
        assert prohibited_reason(item.name_zh) is None
        for f in item.fields:
            assert prohibited_reason(f.id) is None, f.id
            assert prohibited_reason(f.name_zh) is None, f.name_zh
