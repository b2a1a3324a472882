"""Generated department exports for the demo, the reliability suite and the PII scan.

`write_demo_data(directory, today=...)` writes what a market-supervision bureau (市场监管) would
hand over: a GB18030 CSV of administrative penalties with Chinese headers, an .xlsx of
administrative licences, and the two mapping files. A few rows in each are deliberately bad
(wrong USCC check digit, impossible date, missing 违法事实, unknown licence category) so the
demo can show what is rejected and why.

Every identifier is checksum-valid (GB 32100 USCC, GB 11643 citizen ID numbers) and every
legal representative has a generated three-character Chinese name: `DemoData.persons` lists
them, so the PII scan can look for each one in every output. All of it is synthetic and
deterministic for a given seed; dates are relative to `today` so the records are inside their
disclosure period whenever the demo runs.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from dataclasses import dataclass
from pathlib import Path

import openpyxl
from stdnum.cn import ric, uscc

__all__ = [
    "MARKET_AUTHORITY",
    "DemoData",
    "make_ric",
    "make_uscc",
    "numbered_uscc",
    "write_demo_data",
]

MARKET_AUTHORITY = "淄博市张店区市场监督管理局"
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_SURNAMES = "赵钱孙李周吴郑冯陈褚卫蒋沈韩杨朱秦尤许何吕施孔曹严华金魏陶姜"
_GIVEN = "嘉毅俊峰晓慧欣怡子涵浩宇梓萱雨泽诗琪博文思远若曦景行"
_TRADES = ("商贸", "餐饮", "建材", "电子", "食品", "医药", "物流", "纺织", "化工", "机械")
_WORDS = ("鑫源", "华泰", "恒昌", "瑞丰", "金鼎", "宏达", "齐鲁", "泰和", "博远", "正信")


def make_uscc(rng: random.Random, *, prefix: str = "91370303") -> str:
    """A random GB 32100 unified social credit code with a correct check digit."""
    body = "".join(rng.choice(_USCC_ALPHABET[:10]) for _ in range(8))
    body += rng.choice(_USCC_ALPHABET[:10])
    code = prefix + body
    return code + uscc.calc_check_digit(code)


def numbered_uscc(prefix: str, n: int) -> str:
    """The `n`-th GB 32100 code under an 8-character `prefix` (registration department, kind,
    area), with a correct check digit: distinct codes for distinct `n`, for bulk test data."""
    body = ""
    for _ in range(9):
        n, digit = divmod(n, len(_USCC_ALPHABET))
        body += _USCC_ALPHABET[digit]
    return prefix + body + uscc.calc_check_digit(prefix + body)


def make_ric(rng: random.Random, *, born: dt.date) -> str:
    """A GB 11643 citizen ID number of Zhangdian (370303) with a correct check digit."""
    stem = f"370303{born:%Y%m%d}{rng.randrange(1000):03d}"
    return stem + ric.calc_check_digit(stem + "0")  # stdnum wants a placeholder check digit


def _person_name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = rng.choice(_SURNAMES) + rng.choice(_GIVEN) + rng.choice(_GIVEN)
        if name not in used and name[1] != name[2]:
            used.add(name)
            return name


@dataclass(frozen=True)
class DemoCompany:
    """One generated organisation: its name, USCC, and legal representative."""

    name: str
    uscc: str
    legal_rep: str
    legal_rep_id: str


@dataclass(frozen=True)
class DemoData:
    """The files written and the facts a demo or a test needs about them."""

    penalties_csv: Path
    penalties_mapping: Path
    licences_xlsx: Path
    licences_mapping: Path
    companies: tuple[DemoCompany, ...]
    focus: DemoCompany  # the company hrss asks about; it has a penalty and a licence
    focus_penalty_no: str  # that penalty's decision number (the one repaired in the demo)
    penalties_good: int
    penalties_bad: int
    licences_good: int
    licences_bad: int

    @property
    def persons(self) -> tuple[tuple[str, str], ...]:
        """(name, citizen ID number) of every natural person in the data."""
        return tuple((c.legal_rep, c.legal_rep_id) for c in self.companies)


_PENALTY_HEADER = [
    "序号", "行政相对人名称", "行政相对人类别", "统一社会信用代码", "法定代表人",
    "法定代表人证件号码", "行政处罚决定书文号", "违法行为类型", "违法事实", "处罚依据",
    "处罚类别", "处罚内容", "罚款金额（元）", "处罚决定日期", "处罚机关",
    "处罚机关统一社会信用代码", "失信程度", "处罚程序",
]  # fmt: skip

_VIOLATIONS = (
    ("销售不合格产品", "经查，当事人销售的产品经抽检不合格。",
     "《中华人民共和国产品质量法》第四十九条"),
    ("虚假宣传", "经查，当事人在店招上使用虚假的获奖信息进行宣传。",
     "《中华人民共和国反不正当竞争法》第二十条"),
    ("未按规定公示年度报告", "经查，当事人未按规定期限公示年度报告。",
     "《企业信息公示暂行条例》第十七条"),
    ("经营过期食品", "经查，当事人经营超过保质期的食品。",
     "《中华人民共和国食品安全法》第一百二十四条"),
)  # fmt: skip


def write_demo_data(
    directory: Path, *, today: dt.date, seed: int = 20261125, companies: int = 12
) -> DemoData:
    """Write penalties.csv (GB18030), licences.xlsx and their mappings into `directory`.

    Promises: `penalties_good + penalties_bad` rows in the CSV and `licences_good +
    licences_bad` in the sheet; every good row validates against the shipped catalogue on
    `today`; every bad row is rejected for the reason its comment states. Refuses
    (ValueError) fewer than 7 companies.
    """
    if companies < 7:
        raise ValueError("write_demo_data needs at least 7 companies (the bad rows use 7)")
    rng = random.Random(seed)  # noqa: S311 - synthetic test data, reproducible by seed
    directory.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    firms: list[DemoCompany] = []
    for i in range(companies):
        born = dt.date(1960 + rng.randrange(35), 1 + rng.randrange(12), 1 + rng.randrange(28))
        firms.append(
            DemoCompany(
                name=f"淄博{_WORDS[i % len(_WORDS)]}{_TRADES[(i * 3) % len(_TRADES)]}有限公司"
                + ("" if i < len(_WORDS) else f"第{i}分公司"),
                uscc=make_uscc(rng),
                legal_rep=_person_name(rng, used),
                legal_rep_id=make_ric(rng, born=born),
            )
        )
    authority_uscc = make_uscc(rng, prefix="11370303")
    focus = firms[0]

    # --- penalties (GB18030 CSV) -------------------------------------------------------
    rows: list[list[str]] = []
    for i, firm in enumerate(firms):
        kind, facts, basis = _VIOLATIONS[i % len(_VIOLATIONS)]
        # 100+ days ago: past the 3-month minimum disclosure of a general penalty, so the demo
        # can repair one (令第36号), and well inside its 1-year maximum.
        decided = today - dt.timedelta(days=100 + 7 * i)
        fine = 5000 + 1000 * (i % 7)
        severity = "严重" if i == 3 else "一般"
        rows.append(
            [str(i + 1), firm.name, "企业", firm.uscc, firm.legal_rep, firm.legal_rep_id,
             f"张市监罚〔{decided.year}〕{101 + i}号", kind, facts, basis, "警告、罚款",
             f"警告，并处罚款{fine}元", f"{fine:,}", decided.strftime("%Y/%m/%d"),
             MARKET_AUTHORITY, authority_uscc, severity, "普通程序"]
        )  # fmt: skip
    good_penalties = len(rows)
    bad_uscc = firms[1].uscc[:-1] + ("0" if firms[1].uscc[-1] != "0" else "1")
    bad_rows = [
        # wrong USCC check digit
        [str(len(rows) + 1), firms[1].name, "企业", bad_uscc, firms[1].legal_rep,
         firms[1].legal_rep_id, f"张市监罚〔{today.year}〕901号", *_VIOLATIONS[0], "罚款",
         "罚款3000元", "3,000", today.strftime("%Y/%m/%d"), MARKET_AUTHORITY, authority_uscc,
         "一般", "普通程序"],
        # impossible date (month 13)
        [str(len(rows) + 2), firms[2].name, "企业", firms[2].uscc, firms[2].legal_rep,
         firms[2].legal_rep_id, f"张市监罚〔{today.year}〕902号", *_VIOLATIONS[1], "罚款",
         "罚款2000元", "2,000", f"{today.year}/13/05", MARKET_AUTHORITY, authority_uscc, "一般",
         "普通程序"],
        # 违法事实 missing
        [str(len(rows) + 3), firms[4].name, "企业", firms[4].uscc, firms[4].legal_rep,
         firms[4].legal_rep_id, f"张市监罚〔{today.year}〕903号", _VIOLATIONS[2][0], "",
         _VIOLATIONS[2][2], "警告", "警告", "", today.strftime("%Y/%m/%d"), MARKET_AUTHORITY,
         authority_uscc, "轻微", "普通程序"],
    ]  # fmt: skip
    rows.extend(bad_rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(_PENALTY_HEADER)
    writer.writerows(rows)
    penalties_csv = directory / "penalties.csv"
    penalties_csv.write_bytes(text.getvalue().encode("gb18030"))
    penalties_mapping = directory / "penalties.toml"
    penalties_mapping.write_text(_PENALTY_MAPPING.format(authority=MARKET_AUTHORITY,
                                                         authority_uscc=authority_uscc),
                                 encoding="utf-8")  # fmt: skip

    # --- licences (.xlsx) ---------------------------------------------------------------
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "行政许可"
    sheet.append(
        ["行政相对人名称", "统一社会信用代码", "法定代表人", "许可决定书名称", "许可决定书文号",
         "许可类别", "许可证书名称", "许可编号", "许可内容", "许可决定日期", "有效期自",
         "有效期至", "当前状态"]
    )  # fmt: skip
    licence_firms = firms[: max(2, companies // 2)]
    for i, firm in enumerate(licence_firms):
        decided = today - dt.timedelta(days=30 + 11 * i)
        sheet.append(
            [firm.name, firm.uscc, firm.legal_rep, "食品经营许可决定书",
             f"张市监许〔{decided.year}〕{201 + i}号", "普通", "食品经营许可证",
             f"JY13703030{i:05d}", "预包装食品销售", decided, decided,
             decided + dt.timedelta(days=5 * 365), "有效"]
        )  # fmt: skip
    sheet.append(  # unknown licence category
        [firms[5].name, firms[5].uscc, firms[5].legal_rep, "食品经营许可决定书",
         f"张市监许〔{today.year}〕299号", "临时", "食品经营许可证", "JY1370303099999",
         "散装食品销售", today, today, today + dt.timedelta(days=365), "有效"]
    )  # fmt: skip
    sheet.append(  # valid_to missing
        [firms[6].name, firms[6].uscc, firms[6].legal_rep, "食品经营许可决定书",
         f"张市监许〔{today.year}〕298号", "普通", "食品经营许可证", "JY1370303099998",
         "热食类食品制售", today, today, None, "有效"]
    )  # fmt: skip
    licences_xlsx = directory / "licences.xlsx"
    book.save(licences_xlsx)
    licences_mapping = directory / "licences.toml"
    licences_mapping.write_text(
        _LICENCE_MAPPING.format(authority=MARKET_AUTHORITY, authority_uscc=authority_uscc),
        encoding="utf-8",
    )
    return DemoData(
        penalties_csv=penalties_csv,
        penalties_mapping=penalties_mapping,
        licences_xlsx=licences_xlsx,
        licences_mapping=licences_mapping,
        companies=tuple(firms),
        focus=focus,
        focus_penalty_no=rows[0][6],
        penalties_good=good_penalties,
        penalties_bad=len(bad_rows),
        licences_good=len(licence_firms),
        licences_bad=2,
    )


_PENALTY_MAPPING = """\
# 市场监管局 行政处罚 export (GB18030 CSV) -> catalogue item admin_penalty
item = "admin_penalty"

[source]
kind = "csv"
path = "penalties.csv"
encoding = "gb18030"

[fields]
subject_name = "行政相对人名称"
legal_rep_name = "法定代表人"
violation_type = "违法行为类型"
violation_facts = "违法事实"
legal_basis = "处罚依据"
penalty_content = "处罚内容"
authority_name = "处罚机关"
severity = "失信程度"
procedure = "处罚程序"
source_unit = {{ const = "{authority}" }}
source_unit_uscc = {{ const = "{authority_uscc}" }}
legal_rep_id_type = {{ const = "身份证" }}

[fields.legal_rep_id_number]
column = "法定代表人证件号码"
transforms = ["trim"]

[fields.subject_category]
column = "行政相对人类别"
transforms = ["trim", {{ map = {{ "企业" = "法人及非法人组织", "个体" = "个体工商户" }} }}]

[fields.uscc]
column = "统一社会信用代码"
transforms = ["trim", "upper"]

[fields.decision_no]
column = "行政处罚决定书文号"
transforms = ["trim"]

[fields.penalty_types]
column = "处罚类别"
transforms = [{{ split = ["、", "，", ","] }}]

[fields.fine_wan_yuan]
column = "罚款金额（元）"
transforms = ["trim", {{ unit = {{ from = "元", to = "万元" }} }}]

[fields.decision_date]
column = "处罚决定日期"
transforms = ["trim", "date"]

[fields.penalty_valid_until]
const = "2099-12-31"

[fields.authority_uscc]
column = "处罚机关统一社会信用代码"
transforms = ["trim", "upper"]
"""

_LICENCE_MAPPING = """\
# 市场监管局 行政许可 export (.xlsx) -> catalogue item admin_licence
item = "admin_licence"

[source]
kind = "xlsx"
path = "licences.xlsx"
sheet = "行政许可"

[fields]
subject_name = "行政相对人名称"
subject_category = {{ const = "法人及非法人组织" }}
legal_rep_name = "法定代表人"
decision_title = "许可决定书名称"
decision_no = "许可决定书文号"
license_category = "许可类别"
certificate_name = "许可证书名称"
license_no = "许可编号"
content = "许可内容"
decision_date = "许可决定日期"
valid_from = "有效期自"
valid_to = "有效期至"
status = "当前状态"
authority_name = {{ const = "{authority}" }}
authority_uscc = {{ const = "{authority_uscc}" }}
source_unit = {{ const = "{authority}" }}
source_unit_uscc = {{ const = "{authority_uscc}" }}

[fields.uscc]
column = "统一社会信用代码"
transforms = ["trim", "upper"]
"""
