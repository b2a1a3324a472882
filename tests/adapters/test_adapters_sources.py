"""File sources: encodings without mojibake, delimiters, quoted newlines, Excel, JSON Lines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import (
    CsvSource,
    JsonlSource,
    ResumeState,
    SourceError,
    XlsxSource,
    delimited,
    detect_encoding,
)
from adapters.delimited import physical_lines
from adapters.source import EXTRA_CELLS, ProblemRow, cell_text, row_cells
from adapters.xlsx import header_names

HEADER = ["行政相对人名称", "处罚决定日期", "备注"]
ROWS = [
    ["淄博张店某某商贸有限公司", "2024/9/27", "首次违法"],
    ["山东某某化工有限公司", "2024年10月8日", "含，全角，标点"],
]


def _write(path: Path, text: str, encoding: str) -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _csv_text(rows: list[list[str]], sep: str = ",") -> str:
    return "".join(sep.join(r) + "\r\n" for r in [HEADER, *rows])


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk"])
def test_csv_in_each_encoding_reads_the_same_rows(tmp_path: Path, encoding: str) -> None:
    path = _write(tmp_path / "export.csv", _csv_text(ROWS), encoding)
    source = CsvSource(path)
    assert source.columns() == tuple(HEADER)
    rows = list(source.rows())
    assert [r for _, r in rows] == [dict(zip(HEADER, r, strict=True)) for r in ROWS]
    assert [n for n, _ in rows] == [2, 3]  # the header is row 1, as in a spreadsheet


def test_detection_prefers_utf8_and_falls_back_to_gb18030() -> None:
    assert detect_encoding("张店".encode(), "x") == ("utf-8", 0)
    assert detect_encoding("张店".encode("gb18030"), "x") == ("gb18030", 0)
    assert detect_encoding(b"\xef\xbb\xbfabc", "x") == ("utf-8", 3)
    assert detect_encoding(b"plain ascii", "x") == ("utf-8", 0)


def test_detection_refuses_utf16_and_garbage() -> None:
    with pytest.raises(SourceError, match="UTF-16"):
        detect_encoding("张店".encode("utf-16"), "x.csv")
    with pytest.raises(SourceError, match="neither UTF-8 nor GB18030") as error:
        detect_encoding(b"ok,\x80\x80\xff\xff", "x.csv")
    assert error.value.byte_offset == 3


def test_gbk_file_read_as_utf8_fails_loudly_with_row_and_offset(tmp_path: Path) -> None:
    path = _write(tmp_path / "gbk.csv", _csv_text(ROWS), "gbk")
    with pytest.raises(SourceError) as error:
        list(CsvSource(path, encoding="utf-8").rows())
    assert error.value.row == 1
    assert error.value.byte_offset == 0
    assert "gbk.csv" in str(error.value)
    assert "UTF-8" in str(error.value)


def test_gbk_bytes_after_a_utf8_start_stop_the_run_at_the_right_row(tmp_path: Path) -> None:
    # The first 64 KiB are ASCII, so detection says UTF-8; row 4002 is GBK.
    lines = [",".join(HEADER)] + [f"company{i},2024-01-01,ok" for i in range(4000)]
    good = ("\n".join(lines) + "\n").encode()
    bad_line = "张店区某公司,2024-01-01,坏".encode("gbk") + b"\n"
    path = tmp_path / "mixed.csv"
    path.write_bytes(good + bad_line)
    seen: list[tuple[int, dict[str, str]]] = []
    rows = CsvSource(path).rows()
    with pytest.raises(SourceError) as error:
        seen.extend(rows)
    assert len(seen) == 4000  # every good row came through, no garbled one
    assert error.value.row == 4002
    assert error.value.byte_offset == len(good)
    assert "encoding" in str(error.value)


def test_explicit_encoding_is_used_even_when_detection_would_differ(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.csv", _csv_text(ROWS), "gb18030")
    assert CsvSource(path, encoding="gb18030").encoding == "gb18030"
    with pytest.raises(SourceError, match="unsupported encoding"):
        CsvSource(path, encoding="latin-1")


@pytest.mark.parametrize("sep", [",", "\t", ";", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, sep: str) -> None:
    path = _write(tmp_path / "d.csv", _csv_text(ROWS, sep), "utf-8")
    rows = [r for _, r in CsvSource(path).rows()]
    assert rows[1]["备注"] == "含，全角，标点"


def test_quoted_newlines_and_delimiters_stay_inside_the_cell(tmp_path: Path) -> None:
    text = '名称,事实\n"A公司","第一行\n第二行, 含逗号"\nB公司,简单\n'
    path = _write(tmp_path / "q.csv", text, "gb18030")
    rows = list(CsvSource(path).rows())
    assert rows[0] == (2, {"名称": "A公司", "事实": "第一行\n第二行, 含逗号"})
    assert rows[1] == (3, {"名称": "B公司", "事实": "简单"})


def test_title_line_above_the_header_and_blank_rows(tmp_path: Path) -> None:
    text = "2024年行政处罚信息,,\n" + _csv_text(ROWS) + ",,\n\n"
    path = _write(tmp_path / "t.csv", text, "utf-8")
    source = CsvSource(path, header_row=2)
    assert source.columns() == tuple(HEADER)
    assert [n for n, _ in source.rows()] == [3, 4]


def test_short_rows_are_padded_and_long_rows_keep_their_extra_cells(tmp_path: Path) -> None:
    text = "a,b\n1\n1,2,3,4\n"
    rows = [r for _, r in CsvSource(_write(tmp_path / "s.csv", text, "utf-8")).rows()]
    assert rows[0] == {"a": "1", "b": ""}
    assert rows[1][EXTRA_CELLS] == "3\t4"


def test_blank_and_duplicate_header_names_stay_distinct(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.csv", "备注,,备注\n1,2,3\n", "utf-8")
    assert CsvSource(path).columns() == ("备注", "(column 2)", "备注#2")


def test_resume_after_any_row_continues_without_loss_or_repeat(tmp_path: Path) -> None:
    rows = [[f"公司{i}", "2024-01-01", f"第{i}行\n续"] for i in range(50)]
    path = _write(tmp_path / "r.csv", _csv_text(rows), "gb18030")
    full = list(CsvSource(path).rows())
    for stop in (0, 1, 17, 49):
        first = CsvSource(path)
        head = []
        iterator = first.rows()
        for _ in range(stop):
            head.append(next(iterator))
        state = ResumeState.from_json(first.position().to_json())
        tail = list(CsvSource(path).rows(state))
        assert head + tail == full


def test_resume_refuses_a_changed_file_or_another_source(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", _csv_text(ROWS), "utf-8")
    source = CsvSource(path)
    next(source.rows())
    state = source.position()
    _write(path, _csv_text(list(reversed(ROWS))), "utf-8")
    with pytest.raises(SourceError, match="changed"):
        list(CsvSource(path).rows(state))
    with pytest.raises(SourceError, match="belongs to"):
        list(CsvSource(path, name="other.csv").rows(state))


def _many(n: int) -> list[list[str]]:
    return [[f"公司{i}", "2024-01-01", f"第{i}行"] for i in range(n)]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_resume_refuses_a_file_rewritten_before_the_offset_beyond_64_kib(
    tmp_path: Path, kind: str
) -> None:
    def write(rows: list[list[str]]) -> Path:
        if kind == "csv":
            return _write(tmp_path / "r.csv", _csv_text(rows), "utf-8")
        lines = [json.dumps(dict(zip(HEADER, r, strict=True)), ensure_ascii=False) for r in rows]
        return _write(tmp_path / "r.jsonl", "\n".join(lines) + "\n", "utf-8")

    def source(path: Path) -> CsvSource | JsonlSource:
        return CsvSource(path) if kind == "csv" else JsonlSource(path)

    rows = _many(3000)  # well over 64 KiB
    path = write(rows)
    first = source(path)
    iterator = first.rows()
    for _ in range(2500):
        next(iterator)
    state = ResumeState.from_json(first.position().to_json())
    assert state.position["offset"] > 64 * 1024
    # Re-exported with one row withdrawn after the first 64 KiB but before the offset: the
    # offset now points one row further on, and that row would be skipped.
    write([r for i, r in enumerate(rows) if i != 2000])
    with pytest.raises(SourceError, match="changed in its first"):
        list(source(path).rows(state))
    # Growth after the offset is new rows.
    write([*rows, ["公司新", "2024-01-02", "新"]])
    tail = [r for _, r in source(path).rows(state)]
    assert [r[HEADER[0]] for r in tail] == [f"公司{i}" for i in range(2500, 3000)] + ["公司新"]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_resume_state_of_an_older_credex_is_refused_clearly(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"r.{kind}"
    path.write_text(_csv_text(ROWS) if kind == "csv" else '{"a": 1}\n{"a": 2}\n', "utf-8")
    old = ResumeState(kind, path.name, 2, {"offset": 10, "fingerprint": "0" * 64})
    reader = CsvSource(path) if kind == "csv" else JsonlSource(path)
    with pytest.raises(SourceError, match=r"older credex.*--restart"):
        list(reader.rows(old))


def test_resume_state_from_garbage_is_refused() -> None:
    with pytest.raises(SourceError, match="resume state"):
        ResumeState.from_json("{not json")
    with pytest.raises(SourceError, match="resume state"):
        ResumeState.from_json('{"kind": 1, "source": "x", "row_number": "2"}')


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        CsvSource(tmp_path / "nope.csv").columns()


def test_malformed_quotes_are_a_source_error_with_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", 'a,b\n1,2\n"x"y,3\n', "utf-8")
    with pytest.raises(SourceError, match="malformed CSV") as error:
        list(CsvSource(path).rows())
    assert error.value.row == 3


# --- Excel -----------------------------------------------------------------------------------


def _licence_workbook(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "许可"
    ws.append(["行政许可信息导出", None, None, None, None])
    ws.append(["序号", "行政相对人", None, "许可决定日期", "有效期至"])
    ws.append([None, "名称", "统一社会信用代码", None, None])
    ws.merge_cells("B2:C2")
    ws.merge_cells("A2:A3")
    ws.append([1, "张店某某餐饮店", "92370303MA3ABCDE1X", dt.datetime(2024, 9, 27), 45562])
    ws.append([None, None, None, None, None])
    ws.append([2, "某某药房", "91370303MA3XYZ1234", dt.datetime(2024, 9, 27, 14, 30), 2.5])
    wb.save(path)
    return path


def test_xlsx_two_row_merged_header_and_dates(tmp_path: Path) -> None:
    source = XlsxSource(_licence_workbook(tmp_path / "l.xlsx"), header_row=2, header_rows=2)
    assert source.columns() == (
        "序号",
        "行政相对人/名称",
        "行政相对人/统一社会信用代码",
        "许可决定日期",
        "有效期至",
    )
    rows = list(source.rows())
    assert [n for n, _ in rows] == [4, 6]  # the empty row 5 is skipped, numbers stay true
    first = rows[0][1]
    assert first["许可决定日期"] == "2024-09-27"
    assert first["有效期至"] == "45562"  # a serial without date format: the date transform's job
    assert first["序号"] == "1"
    assert rows[1][1]["许可决定日期"] == "2024-09-27 14:30:00"
    assert rows[1][1]["有效期至"] == "2.5"


def test_xlsx_one_row_header_carries_merged_groups(tmp_path: Path) -> None:
    assert header_names([["名称", "处罚机关", "", "备注"]]) == (
        "名称",
        "处罚机关",
        "处罚机关#2",
        "备注",
    )
    assert header_names([["序号", "", "机关"], ["", "名称", ""]]) == ("序号", "名称", "机关")


def test_xlsx_resume_and_named_sheet(tmp_path: Path) -> None:
    path = _licence_workbook(tmp_path / "l.xlsx")
    first = XlsxSource(path, sheet="许可", header_row=2, header_rows=2)
    iterator = first.rows()
    next(iterator)
    state = first.position()
    rest = list(XlsxSource(path, sheet="许可", header_row=2, header_rows=2).rows(state))
    assert [n for n, _ in rest] == [6]
    with pytest.raises(SourceError, match="no sheet"):
        XlsxSource(path, sheet="Sheet9").columns()


def _with_dimension(path: Path, ref: str) -> Path:
    """The same workbook with the first sheet's <dimension> tag rewritten (a stale export)."""
    out = path.with_name("stale-" + path.name)
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data, count = re.subn(
                    rb'<dimension ref="[^"]*"\s*/>', f'<dimension ref="{ref}"/>'.encode(), data
                )
                assert count == 1
            zout.writestr(info, data)
    return out


def test_xlsx_stale_dimension_tag_loses_no_row_or_column(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["a", "b", "c"])
    for i in range(11):
        ws.append([f"r{i}", i, "last column"])
    wb.save(tmp_path / "w.xlsx")
    # Exporters write stale sizes; read-only openpyxl would stop at row 3 and column B.
    source = XlsxSource(_with_dimension(tmp_path / "w.xlsx", "A1:B3"))
    assert source.columns() == ("a", "b", "c")
    rows = list(source.rows())
    assert [n for n, _ in rows] == list(range(2, 13))
    assert all(r["c"] == "last column" for _, r in rows)


def test_xlsx_error_values_reject_their_row_naming_the_column(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["name", "facts", "phone"])
    ws.append(["#N/A", "#REF!", "1"])  # openpyxl stores these as error cells (type "e")
    ws.append(["ok", "fine", "#DIV/0!"])
    ws.append(["ok", "fine", "2"])
    assert ws["A2"].data_type == "e"
    wb.save(tmp_path / "e.xlsx")
    rows = [r for _, r in XlsxSource(tmp_path / "e.xlsx").rows()]
    assert isinstance(rows[0], ProblemRow)
    assert [(p.column, p.code) for p in rows[0].problems] == [
        ("name", "cell_error"),
        ("facts", "cell_error"),
    ]
    assert "#N/A" in rows[0].problems[0].message  # an error code, never personal data
    assert isinstance(rows[1], ProblemRow)
    assert not isinstance(rows[2], ProblemRow)
    # A column the mapping does not read is not judged.
    narrowed = XlsxSource(tmp_path / "e.xlsx")
    narrowed.read_only(["name", "facts"])
    rows = [r for _, r in narrowed.rows()]
    assert isinstance(rows[0], ProblemRow)
    assert not isinstance(rows[1], ProblemRow)


def test_not_an_xlsx_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.xlsx"
    path.write_bytes(b"not a zip")
    with pytest.raises(SourceError, match=r"not a readable \.xlsx"):
        XlsxSource(path).columns()


# --- JSON Lines ------------------------------------------------------------------------------


def test_jsonl_keeps_number_text_and_flattens_nested_values(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = [
        {"name": "某某公司", "amount": 0.1, "n": 12, "ok": True, "none": None, "tags": ["a", "b"]},
        {},
    ]
    path.write_text(
        "\ufeff" + "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n",
        encoding="utf-8",
    )
    rows = list(JsonlSource(path).rows())
    assert rows[0] == (
        1,
        {
            "name": "某某公司",
            "amount": "0.1",
            "n": "12",
            "ok": "true",
            "none": "",
            "tags": '["a","b"]',
        },
    )
    assert rows[1] == (2, {})


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"a": 1}\n{"a": \n', "not valid JSON"),
        (b'{"a": 1}\n[1, 2]\n', "not a JSON object"),
        (b'{"a": 1}\n{"a": NaN}\n', "not valid JSON"),
        (b'{"a": 1}\n' + '{"a": "张店"}\n'.encode("gbk"), "not valid UTF-8"),
    ],
)
def test_jsonl_bad_lines_stop_with_line_and_offset(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "b.jsonl"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=why) as error:
        list(JsonlSource(path).rows())
    assert error.value.row == 2
    assert error.value.byte_offset is not None
    assert error.value.byte_offset >= 9


def test_jsonl_resume(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)), encoding="utf-8")
    source = JsonlSource(path)
    iterator = source.rows()
    for _ in range(4):
        next(iterator)
    rest = list(JsonlSource(path).rows(source.position()))
    assert [r["i"] for _, r in rest] == [str(i) for i in range(4, 10)]


def test_cell_text_is_lossless_for_database_and_excel_types() -> None:
    assert cell_text(Decimal("0.000001")) == "0.000001"
    assert cell_text(1.0) == "1"
    assert cell_text(dt.date(2024, 9, 27)) == "2024-09-27"
    assert cell_text(dt.datetime(2024, 9, 27, 0, 0)) == "2024-09-27"
    assert cell_text(False) == "false"
    assert cell_text(None) == ""
    assert cell_text(b"\x01\xff") == "01ff"


# --- audit fixes: line endings, title lines, oversize cells, odd JSON, missing files ----------


def test_cr_only_line_endings_are_lines(tmp_path: Path) -> None:
    text = _csv_text(ROWS).replace("\r\n", "\r")
    path = _write(tmp_path / "mac.csv", text, "gb18030")
    source = CsvSource(path)
    assert source.columns() == tuple(HEADER)
    rows = list(source.rows())
    assert [n for n, _ in rows] == [2, 3]
    assert rows[1][1]["备注"] == "含，全角，标点"


def test_cr_only_file_resumes_by_byte_offset(tmp_path: Path) -> None:
    rows = [[f"公司{i}", "2024-01-01", f'"第{i}行\r续"'] for i in range(20)]
    path = _write(tmp_path / "mac.csv", _csv_text(rows).replace("\r\n", "\r"), "utf-8")
    full = list(CsvSource(path).rows())
    assert full[3][1]["备注"] == "第3行\r续"  # a CR inside quotes stays in the cell
    first = CsvSource(path)
    iterator = first.rows()
    head = [next(iterator) for _ in range(7)]
    assert head + list(CsvSource(path).rows(first.position())) == full


@given(st.lists(st.sampled_from([b"a", b"\xe5\xbc\xa0", b"\r", b"\n", b"\r\n"]), max_size=40))
def test_physical_lines_split_like_universal_newlines_at_any_block_size(
    parts: list[bytes],
) -> None:
    data = b"".join(parts)
    for size in (1, 2, 3, 64 * 1024):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(delimited, "_BLOCK", size)
            assert list(physical_lines(io.BytesIO(data))) == data.splitlines(keepends=True)


@pytest.mark.parametrize("sep", ["\t", ";", "|"])
def test_delimiter_is_sniffed_below_a_title_line(tmp_path: Path, sep: str) -> None:
    text = "某局行政处罚公示表\r\n" + _csv_text(ROWS, sep)
    source = CsvSource(_write(tmp_path / "t.csv", text, "gb18030"), header_row=2)
    assert source.columns() == tuple(HEADER)
    assert [r["备注"] for _, r in source.rows()] == ["首次违法", "含，全角，标点"]


@pytest.mark.parametrize("quoted", [False, True])
def test_a_cell_over_the_csv_limit_rejects_its_row_and_the_file_goes_on(
    tmp_path: Path, quoted: bool
) -> None:
    big = "事" * (csv.field_size_limit() + 10)
    # a quoted oversize cell may span lines, and hold delimiters and doubled quotes
    cell = '"' + big[:100] + '\r\n,""\r\n' + big + '"' if quoted else big
    text = "a,b,c\r\n1,x,y\r\n2," + cell + ",z\r\n3,u,v\r\n"
    path = _write(tmp_path / "big.csv", text, "utf-8")
    rows = list(CsvSource(path).rows())
    assert [n for n, _ in rows] == [2, 3, 4]
    bad = rows[1][1]
    assert isinstance(bad, ProblemRow)
    assert [(p.column, p.code) for p in bad.problems] == [("b", "cell_too_large")]
    assert dict(bad) == {"a": "2", "b": "", "c": "z"}  # the other cells, for the report
    assert rows[2][1] == {"a": "3", "b": "u", "c": "v"}
    assert not any(isinstance(r, ProblemRow) for _, r in (rows[0], rows[2]))


def test_a_cell_over_the_csv_limit_then_resume(tmp_path: Path) -> None:
    big = "x" * (csv.field_size_limit() + 1)
    text = 'a,b\n1,"' + big + '\n"\n2,y\n3,z\n'
    path = _write(tmp_path / "big.csv", text, "utf-8")
    source = CsvSource(path)
    iterator = source.rows()
    assert next(iterator)[0] == 2
    assert [r["a"] for _, r in CsvSource(path).rows(source.position())] == ["2", "3"]


def test_missing_or_truncated_xlsx_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open the file"):
        XlsxSource(tmp_path / "nope.xlsx").columns()
    data = _licence_workbook(tmp_path / "whole.xlsx").read_bytes()
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SourceError, match=r"not a readable \.xlsx"):
        XlsxSource(cut).columns()


def test_jsonl_line_nested_too_deeply_is_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"i": 1}\n{"a": ' + "[" * 5000 + "]" * 5000 + '}\n{"i": 3}\n', "utf-8")
    rows = list(JsonlSource(path).rows())
    assert [n for n, _ in rows] == [1, 2, 3]
    deep = rows[1][1]
    assert isinstance(deep, ProblemRow)
    assert [p.code for p in deep.problems] == ["too_deep"]
    assert rows[2][1] == {"i": "3"}


def test_jsonl_repeated_keys_reject_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(
        '{"id": "A", "id": "B", "n": 1}\n{"id": "C", "x": {"k": 1, "k": 2}}\n{"id": "D"}\n',
        "utf-8",
    )
    rows = [r for _, r in JsonlSource(path).rows()]
    assert isinstance(rows[0], ProblemRow)
    assert [(p.column, p.code) for p in rows[0].problems] == [("id", "duplicate_key")]
    assert isinstance(rows[1], ProblemRow)
    assert [(p.column, p.code) for p in rows[1].problems] == [("", "duplicate_key")]
    assert rows[2] == {"id": "D"}
    assert not isinstance(rows[2], ProblemRow)
    for row in rows[:2]:
        assert isinstance(row, ProblemRow)
        assert not any(v in p.message for p in row.problems for v in ("A", "B", "C"))


def test_jsonl_unpaired_surrogate_rejects_its_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"id": "A", "name": "\\ud800x"}\n'
        '{"id": "B", "x": ["\\udfff"]}\n'
        '{"id": "C", "\\ud800": "y"}\n'
        '{"id": "D", "emoji": "\\ud83d\\ude00"}\n',
        "utf-8",
    )
    rows = [r for _, r in JsonlSource(path).rows()]
    assert len(rows) == 4
    expected = [("name", "bad_text"), ("x", "bad_text"), ("", "bad_text")]
    for row, problem in zip(rows[:3], expected, strict=True):
        assert isinstance(row, ProblemRow)
        assert [(p.column, p.code) for p in row.problems] == [problem]
        # What travels on is text again: it can be hashed, written and printed.
        "".join([*row, *row.values()]).encode("utf-8")
    assert rows[0]["name"] == ""
    assert rows[3] == {"id": "D", "emoji": "\U0001f600"}  # a surrogate pair is a character


def test_cell_text_writes_database_arrays_and_json_as_json_text() -> None:
    assert cell_text([Decimal("1.5"), None, dt.date(2024, 1, 2)]) == '["1.5",null,"2024-01-02"]'
    assert (
        cell_text({"金额": Decimal("2"), "tags": ("a", b"\x01")})
        == '{"金额":"2","tags":["a","01"]}'
    )
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="cannot be written") as error:
        cell_text({(1, 2): "张三"})
    assert "张三" not in str(error.value)
    row = row_cells({"a": circular, "b": [Decimal("1")], "c": "x"}, ["b", "a"])
    assert isinstance(row, ProblemRow)
    assert dict(row) == {"b": '["1"]', "a": ""}
    assert [(p.column, p.code) for p in row.problems] == [("a", "unreadable_cell")]
