"""Shared test data for the catalogue tests: independent check-digit arithmetic and good rows.

The check digits here are computed from the standards' formulas directly (GB 11643 MOD 11-2,
GB 32100 mod 31), independently of python-stdnum, so the tests cross-check the implementation.
"""

from __future__ import annotations

import datetime

TODAY = datetime.date(2026, 11, 25)
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def ric_check(body17: str) -> str:
    """GB 11643: weights 2^(18-i) mod 11, check = (12 - S mod 11) mod 11, 10 -> X."""
    s = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(body17))
    value = (12 - s % 11) % 11
    return "X" if value == 10 else str(value)


def make_ric(area: str = "370303", born: str = "19900101", seq: str = "001") -> str:
    body = area + born + seq
    return body + ric_check(body)


def uscc_check(body17: str) -> str:
    """GB 32100: weights 3^(i-1) mod 31, C18 = 31 - (S mod 31), 31 -> 0."""
    s = sum(USCC_ALPHABET.index(c) * (3**i % 31) for i, c in enumerate(body17))
    return USCC_ALPHABET[(31 - s % 31) % 31]


def make_uscc(body17: str) -> str:
    return body17 + uscc_check(body17)


PERSON_ID = make_ric()  # 37030319900101001?
AUTHORITY_USCC = make_uscc("11370303MB0280001")  # a district organ (机构编制, 机关)
COMPANY_USCC = "91350100M000100Y43"  # GB 32100 worked example
SHOP_USCC = make_uscc("92370303MA3C00001")


def penalty_org(**changes: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {
        "subject_name": "淄博某某商贸有限公司",
        "subject_category": "法人及非法人组织",
        "uscc": COMPANY_USCC,
        "legal_rep_name": "张某",
        "decision_no": "张市监罚〔2026〕12号",
        "violation_type": "虚假宣传",
        "violation_facts": "发布虚假广告",
        "legal_basis": "反不正当竞争法第二十条",
        "penalty_types": "罚款",
        "penalty_content": "罚款五万元",
        "fine_wan_yuan": "5",
        "decision_date": "2026-05-11",
        "penalty_valid_until": "2027-05-11",
        "authority_name": "张店区市场监督管理局",
        "authority_uscc": AUTHORITY_USCC,
        "source_unit": "张店区市场监督管理局",
        "source_unit_uscc": AUTHORITY_USCC,
        "severity": "一般",
        "procedure": "普通程序",
    }
    row.update(changes)
    return row


def penalty_person(**changes: str | None) -> dict[str, str | None]:
    row = penalty_org(
        subject_name="李某",
        subject_category="自然人",
        uscc=None,
        legal_rep_name=None,
        id_type="身份证",
        id_number=PERSON_ID,
    )
    row.update(changes)
    return row


def licence_fields(n: int, subject_name: str = "张三") -> dict[str, str]:
    """The fields of a person's administrative licence (admin_licence_person), decision
    number `n`; the ID number is left to the caller's subject (a placeholder)."""
    return {
        "subject_name": subject_name,
        "subject_category": "自然人",
        "id_type": "身份证",
        "id_number": "redacted-in-test",
        "decision_title": "食品经营许可",
        "decision_no": f"淄张市监许〔2026〕{n}号",
        "license_category": "普通",
        "content": "预包装食品销售",
        "decision_date": "2026-03-01",
        "valid_from": "2026-03-01",
        "valid_to": "2031-02-28",
        "authority_name": "淄博市张店区市场监督管理局",
        "authority_uscc": "11370303MB1234567X",
        "status": "有效",
        "source_unit": "张店区市场监管局",
        "source_unit_uscc": "11370303MB1234567X",
    }
