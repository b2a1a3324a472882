"""load_mapping (shape, errors naming file and key) and check_mapping (against the catalogue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import catalog as cat
from adapters import MappingError, check_columns, check_mapping, load_mapping
from adapters.transforms import DateTransform, MapTransform, UnitTransform


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
item = "admin_penalty"
[source]
kind = "csv"
path = "data/p.csv"
"""


def test_penalty_mapping_loads_with_its_transforms(penalty_mapping: Path) -> None:
    spec = load_mapping(penalty_mapping)
    assert spec.item == "admin_penalty"
    assert spec.source.path == penalty_mapping.parent / "penalties.csv"  # relative to the mapping
    assert spec.fields["subject_name"].column == "行政相对人名称"
    assert spec.fields["source_unit"].const == "淄博市张店区市场监督管理局"
    assert isinstance(spec.fields["decision_date"].transforms[1], DateTransform)
    assert isinstance(spec.fields["subject_category"].transforms[1], MapTransform)
    assert spec.fields["fine_wan_yuan"].units() == (UnitTransform("元", "万元"),)


def test_the_penalty_mapping_is_sound(penalty_mapping: Path) -> None:
    problems = check_mapping(load_mapping(penalty_mapping), cat.default_catalog())
    assert [p for p in problems if p.is_error] == []


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ("item = 'x'\n", "source", "[source] table is required"),
        (BASE, "fields", "at least one"),
        (BASE + "[fields.a]\ncolum = 'x'\n", "fields.a.colum", "unknown key"),
        (BASE + "[fields.a]\ncolumn = 'x'\nconst = 'y'\n", "fields.a", "exactly one"),
        (
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = ['shout']\n",
            "fields.a.transforms[0]",
            "unknown transform",
        ),
        (  # the list names every transform, "date" and the table forms too (it had only five)
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = ['dat']\n",
            "fields.a.transforms[0]",
            "'date', 'fullwidth', 'lower', 'remove_spaces', 'trim', 'upper'], tables: ['map', "
            "'split', 'unit', 'regex', 'default', 'date']",
        ),
        (
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = [{trim = true}]\n",
            "fields.a.transforms[0]",
            "unknown transform 'trim'; tables: ['map', 'split', 'unit', 'regex', 'default', "
            "'date']",
        ),
        (
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = [{regex = '('}]\n",
            "fields.a.transforms[0].regex",
            "bad regular expression",
        ),
        (
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = [{unit = {from = '元'}}]\n",
            "fields.a.transforms[0].unit",
            "from",
        ),
        (
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = [{unit = {from = '美元', to = '元'}}]\n",
            "fields.a.transforms[0]",
            "unknown unit",
        ),
        (
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = [{date = ['mm/dd/yyyy']}]\n",
            "fields.a.transforms[0]",
            "unknown date format",
        ),
        (
            BASE + "[fields.a]\ncolumn = 'x'\ntransforms = [{map = {a = 1}}]\n",
            "fields.a.transforms[0].map",
            "table",
        ),
        (BASE + "[fields.a]\nconcat = ['x']\n", "fields.a.concat", "at least two"),
        (BASE.replace('"csv"', '"xls"') + "[fields]\na = 'x'\n", "source.kind", "must be one of"),
        (
            BASE.replace('kind = "csv"', 'kind = "csv"\nencoding = "latin-1"')
            + "[fields]\na='x'\n",
            "source.encoding",
            "must be",
        ),
        (
            BASE.replace('kind = "csv"', 'kind = "csv"\ndelimiter = "::"') + "[fields]\na='x'\n",
            "source.delimiter",
            "one character",
        ),
        (
            BASE.replace('kind = "csv"', 'kind = "csv"\nheader_row = 0') + "[fields]\na='x'\n",
            "source.header_row",
            "positive",
        ),
        (
            "item = 'x'\n[source]\nkind = 'sql'\ntable = 't'\nkey = 'id'\n[fields]\na = 'b'\n",
            "source.url",
            "url and url_env",
        ),
        (
            "item = 'x'\n[source]\nkind = 'sql'\nurl = 'mysql://h/d'\ntable = 't'\n"
            "[fields]\na = 'b'\n",
            "source.key",
            "unique key",
        ),
        ("item = 'x'\nitme = 'y'\n", "itme", "unknown key"),
        ("item = \n", "", "not valid TOML"),
    ],
)
def test_bad_mapping_files_name_the_file_and_key(
    tmp_path: Path, text: str, key: str, why: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    assert error.value.key == key
    assert why in error.value.why
    assert str(path) in str(error.value)


def test_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "absent.toml")


def _problems(tmp_path: Path, extra: str, item: str = "admin_penalty") -> dict[str, Any]:
    text = f"""
item = "{item}"
[source]
kind = "csv"
path = "p.csv"
[fields]
subject_name = "名称"
{extra}
"""
    problems = check_mapping(load_mapping(_write(tmp_path, text)), cat.default_catalog())
    return {f"{p.code}@{p.key}": p for p in problems}


def test_check_reports_unknown_item_alone(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "", item="admin_punishment")
    assert list(problems) == ["unknown_item@item"]


def test_check_reports_every_kind_of_problem(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
religion_note = "宗教信仰"
nickname = "昵称"
remarks = "名称"
[fields.subject_category]
column = "类别"
transforms = [{ map = { "企业" = "公司" } }]
[fields.fine_wan_yuan]
column = "罚款金额"
transforms = [{ unit = { from = "元", to = "元" } }]
[fields.confiscation_wan_yuan]
column = "没收金额（元）"
""",
    )
    assert problems["prohibited@fields.religion_note"].is_error
    assert "第四十二条" in problems["prohibited@fields.religion_note"].message
    assert "unknown_field@fields.nickname" in problems
    assert "mapped_twice@fields.remarks" in problems
    assert "unknown_code@fields.subject_category.map.企业" in problems
    assert "unit_mismatch@fields.fine_wan_yuan" in problems
    assert problems["unit_unconverted@fields.confiscation_wan_yuan"].severity == "warning"
    assert "required_unmapped@fields.decision_no" in problems
    assert "required_unmapped@fields.source_unit_uscc" in problems
    assert problems["conditional_unmapped@fields.uscc"].severity == "warning"


def test_map_targets_may_be_codes_or_aliases_of_the_table(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
[fields.subject_category]
column = "类别"
transforms = [{ map = { "公司" = "02", "个体" = "个体工商户", "其他" = "法人" } }]
""",
    )
    assert not [k for k in problems if k.startswith("unknown_code")]


def test_check_columns_finds_missing_and_prohibited_columns(penalty_mapping: Path) -> None:
    spec = load_mapping(penalty_mapping)
    problems = check_columns(spec, ["行政相对人名称", "血型"])
    codes = {p.code for p in problems}
    assert "unknown_column" in codes
    present = next(p for p in problems if p.code == "prohibited_column_present")
    assert present.severity == "warning"


def test_a_mapped_column_named_twice_in_the_header_is_a_warning(penalty_mapping: Path) -> None:
    # A header that repeats "违法行为类型" (an export with a column pasted twice) makes the
    # mapping read the first of them; the clerk should hear which one, and how to name the other.
    spec = load_mapping(penalty_mapping)
    header = ["行政相对人名称", "违法行为类型", "违法行为类型#2", "违法行为类型#3", "违法事实"]
    problems = check_columns(spec, header)
    [twice] = [p for p in problems if p.code == "column_repeated"]
    assert twice.severity == "warning"
    assert twice.key == "fields.violation_type"
    assert "3 columns" in twice.message
    assert "'违法行为类型#2'" in twice.message
    unmapped_twice = check_columns(spec, ["行政相对人名称", "序号", "序号#2"])
    assert not [p for p in unmapped_twice if p.code == "column_repeated"]


def test_a_data_row_taken_for_the_header_is_not_echoed_in_full(penalty_mapping: Path) -> None:
    # a wrong header_row makes a data row the header: its cells may hold an ID number and name
    cell = "张三 宗教信仰 11010519491231002X 淄博市张店区某某街道某某小区某号楼某单元"
    problems = check_columns(load_mapping(penalty_mapping), ["行政相对人名称", cell])
    [present] = [p for p in problems if p.code == "prohibited_column_present"]
    assert "19491231" not in present.message
    assert cell not in present.message
