"""Shared fixtures for the adapters tests: database URLs (skip or fail when a server is down)."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from node.demo_data import numbered_uscc
from tests.workers import worker_tag

DATABASES = {
    "mariadb": ["mysql+pymysql://root@127.0.0.1:3306/test"],
    "postgres": [
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://root@127.0.0.1:5432/test",
    ],
}


def _reachable(kind: str) -> str:
    problems = []
    for url in DATABASES[kind]:
        engine = sa.create_engine(
            url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3}
        )
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return url
        except sa.exc.SQLAlchemyError as error:
            problems.append(type(getattr(error, "orig", None) or error).__name__)
        finally:
            engine.dispose()
    reason = f"{kind} at 127.0.0.1 is unreachable ({', '.join(problems)})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


@pytest.fixture(params=["mariadb", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A reachable database URL, once for MariaDB and once for PostgreSQL."""
    kind: str = request.param
    request.applymarker(getattr(pytest.mark, kind))
    return _reachable(kind)


@pytest.fixture
def table_name(db_url: str) -> Iterator[str]:
    """A table name no other test or xdist worker uses (MariaDB tests share the database
    `test`), dropped afterwards."""
    name = f"credex_arrears_{worker_tag()}_{uuid.uuid4().hex[:12]}"
    yield name
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    finally:
        engine.dispose()


# --- a 双公示-style penalty export (GB18030, Chinese headers) and its mapping ------------------


def corrupt_check_digit(code: str) -> str:
    """The same code with a wrong check digit."""
    last = code[-1]
    return code[:-1] + ("1" if last != "1" else "2")


AUTHORITY_USCC = numbered_uscc("11370303", 1)
SOURCE_UNIT_USCC = numbered_uscc("11370303", 2)

PENALTY_HEADER = [
    "序号",
    "行政相对人名称",
    "行政相对人类别",
    "统一社会信用代码",
    "法定代表人",
    "行政处罚决定书文号",
    "违法行为类型",
    "违法事实",
    "处罚依据",
    "处罚类别",
    "处罚内容",
    "罚款金额（元）",
    "处罚决定日期",
    "处罚有效期",
    "处罚机关",
    "处罚机关统一社会信用代码",
    "失信程度",
    "备注",
]


def penalty_row(i: int, **changes: str) -> dict[str, str]:
    """One good penalty row (organisation, fine), with optional column changes."""
    row = {
        "序号": str(i),
        "行政相对人名称": f"淄博张店某某商贸有限公司{i}",
        "行政相对人类别": "企业",
        "统一社会信用代码": numbered_uscc("91370303", 1000 + i),
        "法定代表人": "王某某",
        "行政处罚决定书文号": f"张市监罚〔2024〕{i}号",
        "违法行为类型": "销售不合格产品",
        "违法事实": "经查，当事人销售的产品经抽检不合格。",
        "处罚依据": "《中华人民共和国产品质量法》第四十九条",
        "处罚类别": "警告、罚款",
        "处罚内容": "警告，并处罚款",
        "罚款金额（元）": "5,000",
        "处罚决定日期": "2024/9/27",
        "处罚有效期": "",
        "处罚机关": "淄博市张店区市场监督管理局",
        "处罚机关统一社会信用代码": AUTHORITY_USCC,
        "失信程度": "",
        "备注": "",
    }
    row.update(changes)
    return row


def write_penalty_csv(path: Path, rows: list[dict[str, str]], encoding: str = "gb18030") -> Path:
    """Write rows as a 双公示-style CSV export (CRLF, quoted where needed)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PENALTY_HEADER, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


PENALTY_MAPPING = f'''
item = "admin_penalty"

[source]
kind = "csv"
path = "penalties.csv"

[fields]
subject_name = "行政相对人名称"
legal_rep_name = "法定代表人"
violation_type = "违法行为类型"
violation_facts = "违法事实"
legal_basis = "处罚依据"
penalty_content = "处罚内容"
authority_name = "处罚机关"
remarks = "备注"

[fields.subject_category]
column = "行政相对人类别"
transforms = ["trim", {{ map = {{ "企业" = "法人及非法人组织", "个体" = "个体工商户" }} }}]

[fields.uscc]
column = "统一社会信用代码"
transforms = ["trim", "fullwidth", "upper"]

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
column = "处罚有效期"
transforms = ["trim", "date", {{ default = "2099-12-31" }}]

[fields.authority_uscc]
column = "处罚机关统一社会信用代码"
transforms = ["trim", "upper"]

[fields.severity]
column = "失信程度"
transforms = ["trim"]

[fields.source_unit]
const = "淄博市张店区市场监督管理局"

[fields.source_unit_uscc]
const = "{SOURCE_UNIT_USCC}"
'''


def bad_penalty_rows() -> list[dict[str, str]]:
    """Seven rows: three good, then a bad date, an unknown code, a missing field, a bad USCC."""
    return [
        penalty_row(1),
        penalty_row(
            2,
            处罚类别="罚款",
            处罚内容="罚款一万二千元",
            统一社会信用代码=" " + numbered_uscc("91370303", 1002).lower(),
            **{"罚款金额（元）": "12000元"},
        ),
        penalty_row(3, 处罚决定日期="2024/13/45"),
        penalty_row(4, 处罚类别="罚酒三杯"),
        penalty_row(5, 违法事实=""),
        penalty_row(6, 统一社会信用代码=corrupt_check_digit(numbered_uscc("91370303", 1006))),
        penalty_row(7, 处罚决定日期="2026年5月6日", 失信程度="一般", 备注="=HYPERLINK(1)"),
    ]


@pytest.fixture
def penalty_mapping(tmp_path: Path) -> Path:
    """A mapping file beside a GB18030 penalty export with the rows of bad_penalty_rows()."""
    write_penalty_csv(tmp_path / "penalties.csv", bad_penalty_rows())
    mapping = tmp_path / "penalties.toml"
    mapping.write_text(PENALTY_MAPPING, encoding="utf-8")
    return mapping


class PenaltyKit:
    """The helpers above, handed to tests through the `kit` fixture (conftest is not importable)."""

    header = PENALTY_HEADER
    mapping_text = PENALTY_MAPPING
    authority_uscc = AUTHORITY_USCC
    source_unit_uscc = SOURCE_UNIT_USCC
    make_uscc = staticmethod(numbered_uscc)
    corrupt_check_digit = staticmethod(corrupt_check_digit)
    row = staticmethod(penalty_row)
    bad_rows = staticmethod(bad_penalty_rows)
    write_csv = staticmethod(write_penalty_csv)


@pytest.fixture
def kit() -> PenaltyKit:
    """Fixture-building helpers for penalty exports."""
    return PenaltyKit()
