"""run_mapping from an .xlsx licence export, a JSON Lines file and SQL tables (with resume)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import sqlalchemy as sa
from stdnum.cn import ric

from adapters import Batch, ResumeState, Summary, load_mapping, run_mapping

TODAY = dt.date(2026, 11, 25)


def _collect(batches: list[Batch]) -> Summary:
    summary = Summary()
    for batch in batches:
        summary.add(batch)
    assert summary.balanced
    return summary


def _licence_export(path: Path, kit: Any) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(
        [
            "序号",
            "行政相对人",
            None,
            None,
            "许可文书",
            None,
            "许可类别",
            "许可内容",
            "许可决定日期",
            "有效期自",
            "有效期至",
            "许可机关",
            None,
            "状态",
        ]
    )
    ws.append(
        [
            None,
            "名称",
            "统一社会信用代码",
            "法定代表人",
            "名称",
            "文号",
            None,
            None,
            None,
            None,
            None,
            "名称",
            "代码",
            None,
        ]
    )
    for cells in (
        "A1:A2",
        "B1:D1",
        "E1:F1",
        "G1:G2",
        "H1:H2",
        "I1:I2",
        "J1:J2",
        "K1:K2",
        "L1:M1",
        "N1:N2",
    ):
        ws.merge_cells(cells)
    for i in range(1, 6):
        ws.append(
            [
                i,
                f"张店某某餐饮店{i}",
                kit.make_uscc("92370303", 500 + i),
                "李某",
                "食品经营许可决定书",
                f"JY13703030{i:05d}",
                "普通",
                "食品经营（餐饮服务）",
                dt.datetime(2024, 9, 27),  # a real date cell
                45562,  # an Excel serial without a date format
                "2029/9/26",
                "淄博市张店区行政审批服务局",
                kit.authority_uscc,
                "有效",
            ]
        )
    ws.append(
        [
            6,
            "某某药房",
            kit.make_uscc("91370303", 600),
            "赵某",
            "药品经营许可",
            "JY-6",
            "普通",
            "药品零售",
            dt.datetime(2024, 9, 27),
            "无效日期",
            "2029/9/26",
            "淄博市张店区行政审批服务局",
            kit.authority_uscc,
            "有效",
        ]
    )
    wb.save(path)


LICENCE_MAPPING = """
item = "admin_licence"

[source]
kind = "xlsx"
path = "licences.xlsx"
header_rows = 2

[fields]
subject_name = "行政相对人/名称"
legal_rep_name = "行政相对人/法定代表人"
decision_title = "许可文书/名称"
decision_no = "许可文书/文号"
license_category = "许可类别"
content = "许可内容"
authority_name = "许可机关/名称"
authority_uscc = "许可机关/代码"
status = "状态"

[fields.subject_category]
const = "个体工商户"

[fields.uscc]
column = "行政相对人/统一社会信用代码"

[fields.decision_date]
column = "许可决定日期"
transforms = ["date"]

[fields.valid_from]
column = "有效期自"
transforms = [{ date = ["iso", "excel"] }]

[fields.valid_to]
column = "有效期至"
transforms = ["date"]

[fields.source_unit]
const = "淄博市张店区行政审批服务局"

[fields.source_unit_uscc]
const = "AUTH"
"""


def test_xlsx_licence_export_with_merged_header_and_serial_dates(tmp_path: Path, kit: Any) -> None:
    _licence_export(tmp_path / "licences.xlsx", kit)
    mapping = tmp_path / "licences.toml"
    mapping.write_text(LICENCE_MAPPING.replace("AUTH", kit.authority_uscc), encoding="utf-8")
    batches = list(run_mapping(load_mapping(mapping), today=TODAY, batch_size=2))
    summary = _collect(batches)
    assert (summary.read, summary.accepted, summary.rejected) == (6, 5, 1)
    record = batches[0].accepted[0].record
    assert record.fields["decision_date"] == "2024-09-27"
    assert record.fields["valid_from"] == "2024-09-27"  # from serial 45562
    assert record.fields["valid_to"] == "2029-09-26"
    assert batches[0].accepted[0].row_number == 3
    rejected = batches[-1].rejected[0]
    assert rejected.row_number == 8
    assert {(p.field_id, p.code) for p in rejected.problems} == {("valid_from", "bad_date")}


ARREARS_MAPPING = """
item = "utility_arrears"

[source]
{source}

[fields]
subject_name = "name"
provider_name = "provider"
provider_uscc = "provider_code"
arrears_from = "since"
arrears_to = "until"
recognition_date = "recognised"

[fields.subject_category]
column = "kind"
transforms = [{{ map = {{ "居民" = "自然人", "单位" = "法人及非法人组织" }} }}]

[fields.id_type]
const = "身份证"

[fields.id_number]
column = "id_no"

[fields.utility_type]
column = "utility"

[fields.arrears_amount_yuan]
column = "amount"

[fields.settled]
column = "settled"
transforms = [{{ map = {{ "0" = "否", "1" = "是" }} }}]
"""


def _ric(n: int) -> str:
    body = f"370303198{n % 10}0101{n:03d}"
    return body + ric.calc_check_digit(body + "0")  # stdnum wants the check place included


def _arrears(i: int, provider_code: str) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"张某{i}",
        "kind": "居民",
        "id_no": _ric(i),
        "utility": "水费",
        "amount": Decimal(f"{100 + i}.50"),
        "since": dt.date(2026, 1, 1),
        "until": dt.date(2026, 6, 30),
        "recognised": dt.date(2026, 8, 1),
        "settled": 0,
        "provider": "张店区供水公司",
        "provider_code": provider_code,
        "updated_at": dt.datetime(2026, 9, 1) + dt.timedelta(hours=i // 2),
    }


def test_jsonl_arrears(tmp_path: Path, kit: Any) -> None:
    path = tmp_path / "arrears.jsonl"
    rows = [_arrears(i, kit.authority_uscc) for i in range(1, 5)]
    rows[3]["id_no"] = rows[3]["id_no"][:-1] + ("0" if rows[3]["id_no"][-1] != "0" else "1")
    path.write_text(
        "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows),
        encoding="utf-8",
    )
    mapping = tmp_path / "arrears.toml"
    mapping.write_text(
        ARREARS_MAPPING.format(source='kind = "jsonl"\npath = "arrears.jsonl"'), encoding="utf-8"
    )
    batches = list(run_mapping(load_mapping(mapping), today=TODAY))
    summary = _collect(batches)
    assert (summary.accepted, summary.rejected) == (3, 1)
    record = batches[0].accepted[0].record
    assert record.subject_kind == "natural_person"
    assert record.fields["arrears_amount_yuan"] in {"101.5", "101.50"}
    assert {p.code for p in batches[0].rejected[0].problems} == {"bad_identifier"}


def test_sql_arrears_incremental_with_crash_and_resume(
    db_url: str, table_name: str, tmp_path: Path, kit: Any
) -> None:
    meta = sa.MetaData()
    table = sa.Table(
        table_name,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(50)),
        sa.Column("kind", sa.String(10)),
        sa.Column("id_no", sa.String(18)),
        sa.Column("utility", sa.String(10)),
        sa.Column("amount", sa.Numeric(18, 2)),
        sa.Column("since", sa.Date),
        sa.Column("until", sa.Date),
        sa.Column("recognised", sa.Date),
        sa.Column("settled", sa.Integer),
        sa.Column("provider", sa.String(50)),
        sa.Column("provider_code", sa.String(18)),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [_arrears(i, kit.authority_uscc) for i in range(1, 12)])
        mapping = tmp_path / "arrears.toml"
        source = (
            f'kind = "sql"\nurl = "{db_url}"\ntable = "{table_name}"\n'
            'key = "id"\nwatermark = "updated_at"'
        )
        mapping.write_text(ARREARS_MAPPING.format(source=source), encoding="utf-8")
        spec = load_mapping(mapping)

        stored: dict[str, str] = {}
        saved: str | None = None
        for index, batch in enumerate(run_mapping(spec, today=TODAY, batch_size=3)):
            if index == 2:
                break  # crash while storing the third batch
            stored.update((a.record_key, a.content_hash) for a in batch.accepted)
            saved = batch.resume.to_json()
        assert saved is not None
        state = ResumeState.from_json(saved)
        resumed = list(run_mapping(spec, today=TODAY, batch_size=3, resume=state))
        assert sum(b.read for b in resumed) == 11 - 6
        for batch in resumed:
            stored.update((a.record_key, a.content_hash) for a in batch.accepted)
        assert len(stored) == 11
        final = resumed[-1].resume

        # one row changes: the next incremental run reads only it; same key, new hash
        with engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.id == 4)
                .values(amount=Decimal("999.00"), updated_at=dt.datetime(2026, 10, 1))
            )
        changed = [a for b in run_mapping(spec, today=TODAY, resume=final) for a in b.accepted]
        assert len(changed) == 1
        assert changed[0].record_key in stored
        assert stored[changed[0].record_key] != changed[0].content_hash
    finally:
        engine.dispose()
