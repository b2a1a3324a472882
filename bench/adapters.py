"""Benchmark: a 1,000,000-row GB18030 penalty export mapped to validated records, in flat memory.

Prints rows per CPU second for CSV -> validated records (adapters.run_mapping with catalogue
validation) beside the raw rate of Python's csv reader on the same file, the rate of the
streaming source alone, and the peak RSS of the process (resource.getrusage). Goals: >= 20,000
rows/s on one core and < 200 MiB peak RSS.

    .venv/bin/python bench/adapters.py [--rows N] [--batch-size N]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

# This script is named like the package it measures: when run as a script its own folder comes
# first on sys.path and would shadow the package, so put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]


from adapters import CsvSource, Summary, load_mapping, run_mapping  # noqa: E402
from node.demo_data import numbered_uscc  # noqa: E402

HEADER = [
    "行政相对人名称", "行政相对人类别", "统一社会信用代码", "法定代表人", "行政处罚决定书文号",
    "违法行为类型", "违法事实", "处罚依据", "处罚类别", "处罚内容", "罚款金额（元）",
    "处罚决定日期", "处罚有效期", "处罚机关", "处罚机关统一社会信用代码", "备注",
]  # fmt: skip


AUTHORITY = numbered_uscc("11370303", 1)
MAPPING = f"""
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
authority_uscc = "处罚机关统一社会信用代码"
remarks = "备注"

[fields.subject_category]
column = "行政相对人类别"
transforms = [{{ map = {{ "企业" = "法人及非法人组织" }} }}]

[fields.uscc]
column = "统一社会信用代码"
transforms = ["trim", "upper"]

[fields.decision_no]
column = "行政处罚决定书文号"
transforms = ["trim"]

[fields.penalty_types]
column = "处罚类别"
transforms = [{{ split = ["、"] }}]

[fields.fine_wan_yuan]
column = "罚款金额（元）"
transforms = [{{ unit = {{ from = "元", to = "万元" }} }}]

[fields.decision_date]
column = "处罚决定日期"
transforms = ["date"]

[fields.penalty_valid_until]
column = "处罚有效期"
transforms = ["date", {{ default = "2099-12-31" }}]

[fields.source_unit]
const = "淄博市张店区市场监督管理局"

[fields.source_unit_uscc]
const = "{numbered_uscc("11370303", 2)}"
"""


def write_export(path: Path, rows: int) -> None:
    """Write `rows` penalty rows (1 in 50 with a bad date) as GB18030, streaming."""
    subjects = [numbered_uscc("91370303", 10_000 + i) for i in range(997)]
    with path.open("w", encoding="gb18030", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            day = dt.date(2020, 1, 1) + dt.timedelta(days=i % 2000)
            writer.writerow(
                [
                    f"淄博张店某某商贸有限公司{i % 997}",
                    "企业",
                    subjects[i % 997],
                    "王某某",
                    f"张市监罚〔{day.year}〕{i}号",
                    "销售不合格产品",
                    "经查，当事人销售的产品经抽检不合格，违反了产品质量法的规定。",
                    "《中华人民共和国产品质量法》第四十九条",
                    "警告、罚款",
                    "警告，并处罚款",
                    f"{5000 + i % 10000}",
                    "2024/13/45" if i % 50 == 0 else f"{day.year}/{day.month}/{day.day}",
                    "",
                    "淄博市张店区市场监督管理局",
                    AUTHORITY,
                    "",
                ]
            )


# Rates are rows per CPU second of this process (time.process_time): "on one core", and steady
# on a shared machine where wall-clock rates swing with the other processes' load.


def raw_csv_rate(path: Path) -> float:
    """Rows/s of Python's csv reader decoding the same file (the floor underneath)."""
    start = time.process_time()
    count = 0
    with path.open(encoding="gb18030", newline="") as handle:
        for _ in csv.reader(handle):
            count += 1
    return (count - 1) / (time.process_time() - start)


def source_rate(path: Path) -> float:
    """Rows/s of the streaming source alone (detection, strict decoding, dict rows)."""
    start = time.process_time()
    count = sum(1 for _ in CsvSource(path).rows())
    return count / (time.process_time() - start)


def main(argv: list[str]) -> int:
    """Generate the export, run the three measurements, print figures and BENCH lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="credex-bench-") as tmp:
        folder = Path(tmp)
        export = folder / "penalties.csv"
        started = time.perf_counter()
        write_export(export, args.rows)
        size = export.stat().st_size / 2**20
        print(f"export: {args.rows:,} rows, {size:,.1f} MiB GB18030, written in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        (folder / "penalties.toml").write_text(MAPPING, encoding="utf-8")
        spec = load_mapping(folder / "penalties.toml")

        raw = raw_csv_rate(export)
        print(f"python csv reader:          {raw:>12,.0f} rows/s")
        src = source_rate(export)
        print(f"adapters CsvSource:         {src:>12,.0f} rows/s")

        summary = Summary()
        start, wall = time.process_time(), time.perf_counter()
        for batch in run_mapping(spec, today=dt.date(2026, 11, 25), batch_size=args.batch_size):
            summary.add(batch)
        mapped = summary.read / (time.process_time() - start)
        wall_rate = summary.read / (time.perf_counter() - wall)
        print(f"CSV -> validated records:   {mapped:>12,.0f} rows/s "
              f"({wall_rate:,.0f} rows/s wall clock; "
              f"{summary.accepted:,} accepted, {summary.rejected:,} rejected)")  # fmt: skip
        assert summary.balanced, "read != accepted + rejected + skipped"
        assert summary.read == args.rows, "rows lost"

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak RSS: {peak_mib:,.0f} MiB (budget 200 MiB); goal >= 20,000 rows/s")
    print(f"BENCH adapters csv_to_records {mapped:.0f} rows/s python_csv_reader {raw:.0f}")
    print(f"BENCH adapters csv_source_rows {src:.0f} rows/s python_csv_reader {raw:.0f}")
    print(f"BENCH adapters peak_rss {peak_mib:.0f} MiB budget 200")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
