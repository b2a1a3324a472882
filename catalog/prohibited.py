"""Information that must never be collected as credit information, recognised by name.

Shandong Art. 42 (and 征信业管理条例 Art. 14) forbid collecting religion, genes, fingerprints,
blood type, illness and medical history, and (unless lawfully) income, deposits, securities,
commercial insurance, real estate and tax amounts. The catalogue loader refuses an item or field
whose id or name names one of them, and the adapters refuse a source column the same way, so a
prohibited column never reaches a record.

Chinese terms match as substrings. English terms match whole words of an identifier split on
non-letters and camelCase (`blood_type`, `BloodType`, `blood type`), so `general` is not `gene`
and `tax_reg_no` (税务登记号, allowed) is not a tax amount. A few lawful phrases that contain a
term (`违法所得`, `illegal_income`: confiscated illegal gains are a penalty type) are exempt.
"""

from __future__ import annotations

import re
import unicodedata

_ART42 = "山东省社会信用条例第四十二条 / 征信业管理条例第十四条"
_PIPL_MIN = "个人信息保护法第六条、第二十八条（最小必要；民族属特定身份敏感信息，信用信息无需）"

# (Chinese substrings, English word sequences, reason)
_TERMS: tuple[tuple[tuple[str, ...], tuple[tuple[str, ...], ...], str], ...] = (
    (("宗教", "信仰"), (("religion",), ("religious",), ("belief",), ("beliefs",)), "宗教信仰"),
    (("基因",), (("gene",), ("genes",), ("genetic",), ("genome",), ("dna",)), "基因"),
    (("指纹",), (("fingerprint",), ("fingerprints",)), "指纹"),
    (
        ("血型",),
        (("blood", "type"), ("blood", "group"), ("bloodtype",), ("bloodgroup",)),
        "血型",
    ),
    (
        ("疾病", "病史", "病历", "诊断", "健康状况"),
        (("illness",), ("disease",), ("diseases",), ("medical", "history"), ("diagnosis",)),
        "疾病和病史",
    ),
    (
        ("收入", "工资", "薪酬", "薪资"),
        (("income",), ("incomes",), ("salary",), ("salaries",), ("wage",), ("wages",)),
        "收入",
    ),
    (
        ("存款", "储蓄", "存折", "账户余额"),
        (("deposit",), ("deposits",), ("savings",), ("account", "balance"), ("bank", "balance")),
        "存款",
    ),
    (
        ("有价证券", "证券账户", "股票账户", "持股"),
        (
            ("securities", "holding"),
            ("securities", "holdings"),
            ("securities", "account"),
            ("stock", "holding"),
            ("stock", "holdings"),
            ("shareholding",),
            ("shareholdings",),
        ),
        "有价证券",
    ),
    (
        ("商业保险", "保单", "人寿保险"),
        (
            ("commercial", "insurance"),
            ("insurance", "policy"),
            ("life", "insurance"),
        ),
        "商业保险",
    ),
    (
        ("不动产", "房产", "房屋产权", "房地产权"),
        (("real", "estate"), ("realestate",), ("property", "ownership"), ("house", "property")),
        "不动产",
    ),
    (
        ("纳税数额", "纳税额", "纳税金额", "缴税金额", "缴税额", "完税金额"),
        (
            ("tax", "amount"),
            ("tax", "paid"),
            ("taxes", "paid"),
            ("tax", "payment"),
            ("tax", "payments"),
        ),
        "纳税数额",
    ),
)
_ETHNICITY = (("民族",), (("ethnicity",), ("ethnic",), ("nationality", "ethnic")))

# Lawful phrases that contain a prohibited term (removed before matching).
_EXEMPT_ZH = ("违法所得", "违法收入", "非法收入", "非法所得")
_EXEMPT_EN = (("illegal", "income"), ("illegal", "incomes"), ("unlawful", "income"))

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[a-z0-9]+")


def _words(name: str) -> list[str]:
    return _WORD.findall(_CAMEL.sub(" ", name).lower())


def _contains(words: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(words[i : i + n]) == phrase for i in range(len(words) - n + 1))


def _strip_exempt(words: list[str]) -> list[str]:
    out = list(words)
    for phrase in _EXEMPT_EN:
        n = len(phrase)
        i = 0
        while i <= len(out) - n:
            if tuple(out[i : i + n]) == phrase:
                out[i : i + n] = ["_"]
            i += 1
    return out


def prohibited_reason(column_or_field_name: str) -> str | None:
    """Return why a column/field/item name is prohibited credit information, or None if it is not.

    The reason names the prohibited category and the legal source, e.g.
    "指纹: 不得作为信用信息采集 (山东省社会信用条例第四十二条 / 征信业管理条例第十四条)".
    Matching is by name only (see the module docstring); it never looks at values.
    """
    text = unicodedata.normalize("NFKC", column_or_field_name)
    zh = text
    for phrase in _EXEMPT_ZH:
        zh = zh.replace(phrase, "_")
    words = _strip_exempt(_words(text))
    for zh_terms, en_terms, label in _TERMS:
        if any(term in zh for term in zh_terms) or any(_contains(words, p) for p in en_terms):
            return f"{label}: 不得作为信用信息采集 ({_ART42})"
    zh_terms, en_terms = _ETHNICITY
    if any(term in zh for term in zh_terms) or any(_contains(words, p) for p in en_terms):
        return f"民族: 与信用无关，不得采集 ({_PIPL_MIN})"
    return None
