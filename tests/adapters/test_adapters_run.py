"""run_mapping end to end on a GB18030 penalty export: accepted, rejected, idempotent, resumable."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import catalog as cat
from adapters import (
    AcceptedRecord,
    MappingError,
    RejectedRow,
    ResumeState,
    RowProblem,
    RunProgress,
    SourceError,
    Summary,
    content_hash,
    load_mapping,
    mapped_columns,
    open_reject_writer,
    record_key,
    run_mapping,
)

TODAY = dt.date(2026, 11, 25)


def _run(mapping: Path, **kwargs: Any) -> tuple[list[AcceptedRecord], list[RejectedRow], Summary]:
    spec = load_mapping(mapping)
    accepted: list[AcceptedRecord] = []
    rejected: list[RejectedRow] = []
    summary = Summary()
    for batch in run_mapping(spec, today=TODAY, **kwargs):
        assert batch.read == len(batch.accepted) + len(batch.rejected) + batch.skipped_unchanged
        accepted += batch.accepted
        rejected += batch.rejected
        summary.add(batch)
    return accepted, rejected, summary


def test_penalty_export_maps_good_rows_and_explains_bad_ones(penalty_mapping: Path) -> None:
    accepted, rejected, summary = _run(penalty_mapping)
    assert summary.read == 7
    assert summary.balanced
    assert [a.row_number for a in accepted] == [2, 3, 8]
    first = accepted[0].record
    assert first.item_id == "admin_penalty"
    assert first.fields["fine_wan_yuan"] == "0.5"
    assert first.fields["decision_date"] == "2024-09-27"
    assert first.fields["penalty_valid_until"] == "2099-12-31"
    assert first.fields["subject_category"] == "法人及非法人组织"
    assert "罚款" in first.fields["penalty_types"]
    assert accepted[2].record.fields["severity"] == "一般"
    # the lower-case, space-padded USCC of row 3 was normalised
    assert accepted[1].record.subject_id == accepted[1].record.subject_id.upper()

    by_row = {r.row_number: r for r in rejected}
    assert sorted(by_row) == [4, 5, 6, 7]
    codes = {n: {(p.field_id, p.code) for p in r.problems} for n, r in by_row.items()}
    assert ("decision_date", "bad_date") in codes[4]
    assert any(f == "penalty_types" and c == "unknown_code" for f, c in codes[5])
    assert ("violation_facts", "required") in codes[6]
    assert any(f == "uscc" and c == "bad_identifier" for f, c in codes[7])
    # a bad date is reported once, not again as "required"
    assert len([p for p in by_row[4].problems if p.field_id == "decision_date"]) == 1
    assert by_row[4].problems[0].column == "处罚决定日期"
    assert by_row[4].raw["处罚决定日期"] == "2024/13/45"
    assert "序号" not in by_row[4].raw  # unmapped columns never travel on


def test_messages_never_carry_identifiers(penalty_mapping: Path, kit: Any) -> None:
    _, rejected, _ = _run(penalty_mapping)
    bad = kit.corrupt_check_digit(kit.make_uscc("91370303", 1006))
    for row in rejected:
        for problem in row.problems:
            assert bad not in problem.message
            assert "王某某" not in problem.message


def test_rerun_gives_the_same_keys_and_hashes(penalty_mapping: Path) -> None:
    first, _, _ = _run(penalty_mapping)
    second, _, _ = _run(penalty_mapping)
    assert [(a.record_key, a.content_hash) for a in first] == [
        (a.record_key, a.content_hash) for a in second
    ]
    for a in first:
        assert a.record_key == record_key("admin_penalty", a.record.natural_key)
        assert a.content_hash == content_hash(a.record.fields)


def test_changed_row_keeps_its_key_and_gets_a_new_hash(penalty_mapping: Path, kit: Any) -> None:
    before, _, _ = _run(penalty_mapping)
    rows = kit.bad_rows()
    rows[0]["罚款金额（元）"] = "8000"
    kit.write_csv(penalty_mapping.parent / "penalties.csv", rows)
    after, _, _ = _run(penalty_mapping)
    assert after[0].record_key == before[0].record_key
    assert after[0].content_hash != before[0].content_hash
    assert after[0].record.fields["fine_wan_yuan"] == "0.8"
    assert [a.content_hash for a in after[1:]] == [a.content_hash for a in before[1:]]


def test_seen_records_are_skipped_and_the_summary_still_adds_up(penalty_mapping: Path) -> None:
    first, _, _ = _run(penalty_mapping)
    store = {(a.record_key, a.content_hash) for a in first}
    again, rejected, summary = _run(penalty_mapping, seen=lambda k, h: (k, h) in store)
    assert again == []
    assert summary.skipped_unchanged == 3
    assert summary.rejected == len(rejected) == 4
    assert summary.balanced


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3])
def test_crash_between_batches_then_resume_loses_and_doubles_nothing(
    penalty_mapping: Path, crash_after: int
) -> None:
    spec = load_mapping(penalty_mapping)
    full_acc, full_rej, _ = _run(penalty_mapping)
    stored: list[int] = []
    saved: str | None = None
    for index, batch in enumerate(run_mapping(spec, today=TODAY, batch_size=2)):
        if index == crash_after:
            break  # the process dies while storing this batch: nothing of it was committed
        stored += [a.row_number for a in batch.accepted] + [r.row_number for r in batch.rejected]
        saved = batch.resume.to_json()  # saved only after the batch is stored
    resume = ResumeState.from_json(saved) if saved else None
    for batch in run_mapping(spec, today=TODAY, batch_size=2, resume=resume):
        stored += [a.row_number for a in batch.accepted] + [r.row_number for r in batch.rejected]
    expected = sorted([a.row_number for a in full_acc] + [r.row_number for r in full_rej])
    assert sorted(stored) == expected
    assert len(stored) == len(set(stored))


def test_limit_stops_after_n_rows(penalty_mapping: Path) -> None:
    _, _, summary = _run(penalty_mapping, limit=3, batch_size=2)
    assert summary.read == 3


def test_invalid_mapping_is_refused_before_reading(penalty_mapping: Path) -> None:
    text = penalty_mapping.read_text(encoding="utf-8").replace('"admin_penalty"', '"no_such_item"')
    penalty_mapping.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match="no_such_item"):
        list(run_mapping(load_mapping(penalty_mapping), today=TODAY))


def test_a_mapped_column_missing_from_the_export_is_refused(penalty_mapping: Path) -> None:
    text = penalty_mapping.read_text(encoding="utf-8").replace('"违法事实"', '"违法事实描述"')
    penalty_mapping.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match="违法事实描述"):
        list(run_mapping(load_mapping(penalty_mapping), today=TODAY))


def test_gbk_export_named_as_utf8_is_an_error_not_mojibake(penalty_mapping: Path) -> None:
    text = penalty_mapping.read_text(encoding="utf-8").replace(
        'kind = "csv"', 'kind = "csv"\nencoding = "utf-8"'
    )
    penalty_mapping.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match="not valid UTF-8"):
        list(run_mapping(load_mapping(penalty_mapping), today=TODAY))


def test_reject_reports_in_csv_and_jsonl(penalty_mapping: Path, tmp_path: Path) -> None:
    spec = load_mapping(penalty_mapping)
    _, rejected, _ = _run(penalty_mapping)
    columns = mapped_columns(spec.fields)
    for suffix in (".csv", ".jsonl"):
        with open_reject_writer(tmp_path / f"rejects{suffix}", columns) as writer:
            for row in rejected:
                writer.write(row)
    raw_csv = (tmp_path / "rejects.csv").read_bytes()
    assert raw_csv.startswith(b"\xef\xbb\xbf")  # Excel on a Chinese desktop needs the BOM
    lines = list(csv.DictReader(raw_csv.decode("utf-8-sig").splitlines()))
    assert len(lines) == sum(len(r.problems) for r in rejected)
    assert lines[0]["source"] == "penalties.csv"
    assert {line["row"] for line in lines} == {"4", "5", "6", "7"}
    bad_date = next(line for line in lines if line["code"] == "bad_date")
    assert bad_date["field"] == "decision_date"
    assert bad_date["column"] == "处罚决定日期"
    assert bad_date["处罚决定日期"] == "2024/13/45"
    objects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text("utf-8").splitlines()]
    assert [o["row"] for o in objects] == [4, 5, 6, 7]
    assert objects[0]["values"]["处罚决定日期"] == "2024/13/45"
    assert objects[0]["problems"][0]["code"] == "bad_date"


def test_reject_csv_defuses_formulas(tmp_path: Path) -> None:
    row = RejectedRow(
        "x.csv", 2, {"a": "=HYPERLINK(1)", "b": "-5", "c": "-x"}, (RowProblem("a", "f", "c", "m"),)
    )
    with open_reject_writer(tmp_path / "r.csv", ["a", "b", "c"]) as writer:
        writer.write(row)
    line = next(csv.DictReader((tmp_path / "r.csv").read_text("utf-8-sig").splitlines()))
    assert (line["a"], line["b"], line["c"]) == ("'=HYPERLINK(1)", "-5", "'-x")


def test_catalog_is_the_shipped_one_by_default(penalty_mapping: Path) -> None:
    accepted, _, _ = _run(penalty_mapping, catalog=cat.default_catalog())
    assert accepted[0].record.catalog_version == cat.default_catalog().version


def test_progress_reports_counts_and_stays_quiet_for_json(penalty_mapping: Path) -> None:
    for quiet in (False, True):
        out = io.StringIO()
        console = Console(file=out, force_terminal=False, width=120)
        with RunProgress(console, label="penalties.csv", quiet=quiet) as progress:
            for batch in run_mapping(load_mapping(penalty_mapping), today=TODAY):
                progress.advance(batch)
        text = out.getvalue()
        assert (text == "") is quiet
        if not quiet:
            assert "7 rows" in text
            assert "rejected 4" in text


def test_progress_shows_a_label_with_brackets_as_text(penalty_mapping: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with RunProgress(console, label="exports/[2026]/[/]penalties.csv") as progress:
        for batch in run_mapping(load_mapping(penalty_mapping), today=TODAY):
            progress.advance(batch)
    assert "exports/[2026]/[/]penalties.csv" in out.getvalue()


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("+1+1", "'+1+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-1.25-1", "'-1.25-1"),
        ("-", "'-"),
        ("-5", "-5"),
        ("-1.25", "-1.25"),
        ("+3", "+3"),
        ("-.5", "-.5"),
        ("张三", "张三"),
    ],
)
def test_reject_csv_defuses_every_formula_but_keeps_plain_numbers(
    tmp_path: Path, value: str, written: str
) -> None:
    row = RejectedRow("x.csv", 2, {"a": value}, (RowProblem("a", "f", "c", "m"),))
    with open_reject_writer(tmp_path / "r.csv", ["a"]) as writer:
        writer.write(row)
    with (tmp_path / "r.csv").open(encoding="utf-8-sig", newline="") as handle:
        line = next(csv.DictReader(handle))
    assert line["a"] == written


def test_rows_a_source_reads_only_in_part_are_rejected_and_the_run_goes_on(
    tmp_path: Path, kit: Any
) -> None:
    big = "经" * (csv.field_size_limit() + 1)
    rows = [kit.row(1), kit.row(2, 违法事实=big), kit.row(3)]
    kit.write_csv(tmp_path / "penalties.csv", rows)
    mapping = tmp_path / "penalties.toml"
    mapping.write_text(kit.mapping_text, encoding="utf-8")
    accepted, rejected, summary = _run(mapping)
    assert summary.balanced
    assert [a.row_number for a in accepted] == [2, 4]
    assert [r.row_number for r in rejected] == [3]
    problem = rejected[0].problems[0]
    assert (problem.column, problem.field_id, problem.code) == (
        "违法事实",
        "violation_facts",
        "cell_too_large",
    )
    assert len(rejected[0].problems) == 1  # the incomplete row is not judged any further
    assert rejected[0].raw["行政相对人名称"] == kit.row(2)["行政相对人名称"]


def test_jsonl_duplicate_keys_are_rejected_naming_the_field(tmp_path: Path, kit: Any) -> None:
    lines = [json.dumps(kit.row(i), ensure_ascii=False) for i in (1, 2, 3)]
    lines[1] = lines[1][:-1] + ', "统一社会信用代码": "bogus"}'
    lines[2] = '{"统一社会信用代码": "bogus", ' + lines[2][1:]
    (tmp_path / "penalties.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = tmp_path / "penalties.toml"
    mapping.write_text(
        kit.mapping_text.replace(
            'kind = "csv"\npath = "penalties.csv"', 'kind = "jsonl"\npath = "penalties.jsonl"'
        ),
        encoding="utf-8",
    )
    accepted, rejected, summary = _run(mapping)
    assert summary.balanced
    assert [a.row_number for a in accepted] == [1]
    assert [r.row_number for r in rejected] == [2, 3]
    for row in rejected:
        assert [(p.field_id, p.code) for p in row.problems] == [("uscc", "duplicate_key")]
        assert "bogus" not in row.problems[0].message


def test_jsonl_unpaired_surrogate_rejects_the_row_and_the_run_goes_on(
    tmp_path: Path, kit: Any
) -> None:
    lines = [json.dumps(kit.row(i)) for i in (1, 2, 3)]
    assert '"\\u7ecf' in lines[1]  # 违法事实 starts with 经
    lines[1] = lines[1].replace('"\\u7ecf', '"\\ud800\\u7ecf', 1)
    (tmp_path / "penalties.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = tmp_path / "penalties.toml"
    mapping.write_text(
        kit.mapping_text.replace(
            'kind = "csv"\npath = "penalties.csv"', 'kind = "jsonl"\npath = "penalties.jsonl"'
        ),
        encoding="utf-8",
    )
    accepted, rejected, summary = _run(mapping)
    assert summary.balanced
    assert [a.row_number for a in accepted] == [1, 3]
    assert [r.row_number for r in rejected] == [2]
    assert [(p.column, p.field_id, p.code) for p in rejected[0].problems] == [
        ("违法事实", "violation_facts", "bad_text")
    ]


def _jsonl_penalties(tmp_path: Path, kit: Any, lines: list[str], mapping_text: str) -> Path:
    (tmp_path / "penalties.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = tmp_path / "penalties.toml"
    mapping.write_text(
        mapping_text.replace(
            'kind = "csv"\npath = "penalties.csv"', 'kind = "jsonl"\npath = "penalties.jsonl"'
        ),
        encoding="utf-8",
    )
    return mapping


def test_jsonl_mapped_key_no_object_holds_refuses_the_run(tmp_path: Path, kit: Any) -> None:
    lines = [json.dumps(kit.row(i, 失信程度="严重"), ensure_ascii=False) for i in (1, 2)]
    typo = kit.mapping_text.replace('column = "失信程度"', 'column = "失信等级"')
    mapping = _jsonl_penalties(tmp_path, kit, lines, typo)
    # A key missing from every object is a typo: the field would be empty on every row.
    with pytest.raises(SourceError, match=r"fields\.severity: no object .* key '失信等级'"):
        list(run_mapping(load_mapping(mapping), today=TODAY))


def test_jsonl_key_some_objects_leave_out_is_just_empty_there(tmp_path: Path, kit: Any) -> None:
    first = kit.row(1, 备注="已整改")
    second = {k: v for k, v in kit.row(2).items() if k != "备注"}
    lines = [json.dumps(first, ensure_ascii=False), json.dumps(second, ensure_ascii=False)]
    mapping = _jsonl_penalties(tmp_path, kit, lines, kit.mapping_text)
    accepted, rejected, _ = _run(mapping)
    assert not rejected
    assert [a.record.fields.get("remarks") for a in accepted] == ["已整改", None]


def test_reject_writers_survive_text_that_is_no_utf8(tmp_path: Path) -> None:
    row = RejectedRow("x.jsonl", 2, {"a": "\ud800x"}, (RowProblem("a", "f", "c", "m\udfff"),))
    for suffix in (".csv", ".jsonl"):
        with open_reject_writer(tmp_path / f"r{suffix}", ["a"]) as writer:
            writer.write(row)
    assert "\\ud800x" in (tmp_path / "r.csv").read_text("utf-8-sig")
    assert json.loads((tmp_path / "r.jsonl").read_text("utf-8"))["values"]["a"] == "\ud800x"


class _NarrowableSource:
    """A source that can read only some columns, like the SQL reader; records what it is told."""

    kind = "fake"
    name = "fake"

    def __init__(self, header: tuple[str, ...], rows: list[dict[str, str]]) -> None:
        self.header = header
        self.data = rows
        self.only: tuple[str, ...] | None = None

    def columns(self) -> tuple[str, ...]:
        return self.header

    def read_only(self, columns: Iterable[str]) -> None:
        self.only = tuple(columns)

    def rows(self, resume: ResumeState | None = None) -> Iterator[tuple[int, dict[str, str]]]:
        assert self.only is not None, "run_mapping must narrow the source before reading"
        for number, row in enumerate(self.data, start=2):
            yield number, {c: row[c] for c in self.only}

    def position(self) -> ResumeState:
        return ResumeState(kind=self.kind, source=self.name, row_number=0)


def test_a_source_that_can_read_fewer_columns_reads_only_the_mapped_ones(
    penalty_mapping: Path, kit: Any
) -> None:
    header = (*kit.header, "联系电话")
    rows = [{**kit.row(1), "联系电话": "13800000000"}]
    source = _NarrowableSource(header, rows)
    accepted, _, _ = _run(penalty_mapping, source=source)
    assert source.only == mapped_columns(load_mapping(penalty_mapping).fields)
    assert "联系电话" not in (source.only or ())
    assert [a.row_number for a in accepted] == [2]
