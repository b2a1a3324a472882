"""End-to-end ingest rate beside the raw SQLite insert rate of the same rows.

Builds a node in a temporary directory, writes a CSV export of ROWS administrative penalties,
and times `run_ingest` (read, map, validate, sign, encrypt, store with the resume state, WAL,
synchronous=FULL, one transaction per batch). The limit is the rate of `executemany` inserting
the very rows that ingest stored (same columns, same byte sizes) into a bare table on the same
disk with the same pragmas and batch commits: what SQLite alone costs for this data.

Usage: python bench/node_ingest.py [--quick] [ROWS] (--quick: 2,000 rows; default 20,000).
Prints `BENCH node <name> <value> <unit> <limit-name> <limit-value>` lines last.
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

# Other scripts here are named like the packages they measure (bench/adapters.py): drop this
# folder from sys.path so they cannot shadow the real packages.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]


from node.cli.init_cmds import init_node  # noqa: E402
from node.config import load_config  # noqa: E402
from node.demo_data import numbered_uscc  # noqa: E402
from node.ingest import run_ingest  # noqa: E402

ROWS = 20_000
QUICK_ROWS = 2_000
BATCH = 1000


MAPPING = f'''
item = "admin_penalty"

[source]
kind = "csv"
path = "penalties.csv"

[fields]
subject_name = "name"
subject_category = {{ const = "法人及非法人组织" }}
uscc = "uscc"
legal_rep_name = {{ const = "王某某" }}
decision_no = "decision_no"
violation_type = {{ const = "销售不合格产品" }}
violation_facts = "facts"
legal_basis = {{ const = "《中华人民共和国产品质量法》第四十九条" }}
penalty_types = {{ const = "罚款" }}
penalty_content = {{ const = "罚款" }}
fine_wan_yuan = "fine"
decision_date = "date"
penalty_valid_until = {{ const = "2099-12-31" }}
authority_name = {{ const = "淄博市张店区市场监督管理局" }}
authority_uscc = {{ const = "{numbered_uscc("11370303", 1)}" }}
severity = {{ const = "一般" }}
source_unit = {{ const = "淄博市张店区市场监督管理局" }}
source_unit_uscc = {{ const = "{numbered_uscc("11370303", 2)}" }}
'''


def parse_rows(argv: list[str]) -> int:
    """The row count asked for on the command line: `[--quick] [ROWS]`; exits 2 on bad input."""
    rows = QUICK_ROWS if "--quick" in argv else ROWS
    numbers = [a for a in argv if a != "--quick"]
    if len(numbers) > 1 or (numbers and not (numbers[0].isdigit() and int(numbers[0]) > 0)):
        print(f"usage: {Path(sys.argv[0]).name} [--quick] [ROWS]", file=sys.stderr)
        raise SystemExit(2)
    return int(numbers[0]) if numbers else rows


def write_source(directory: Path, rows: int) -> Path:
    """Write a CSV export of `rows` penalties and its mapping; return the mapping path."""
    with (directory / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "uscc", "decision_no", "fine", "date", "facts"])
        for i in range(rows):
            writer.writerow(
                [
                    f"淄博张店某某商贸有限公司{i}",
                    numbered_uscc("91370303", 10_000 + i),
                    f"张市监罚〔2026〕{i}号",
                    f"{1 + i % 50}.5",
                    "2026-05-11",
                    "经查，当事人销售的产品经抽检不合格，违反了产品质量法的规定。",
                ]
            )
    mapping = directory / "penalties.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return mapping


def raw_insert_rate(rows: list[tuple[object, ...]], columns: int, directory: Path) -> float:
    """Rows per second of executemany into a bare WAL/FULL table, committing per batch."""
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    names = ", ".join(f"c{i}" for i in range(columns))
    conn.execute(f"CREATE TABLE raw ({names})")
    marks = ", ".join("?" * columns)
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(f"INSERT INTO raw VALUES ({marks})", rows[start : start + BATCH])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return len(rows) / seconds


def main(argv: list[str]) -> None:
    """Run the benchmark and print its figures."""
    rows = parse_rows(argv)
    with tempfile.TemporaryDirectory(prefix="credex-bench-") as tmp:
        directory = Path(tmp)
        mapping = write_source(directory, rows)
        init_node(directory / "node", name="market", role="department")
        config = load_config(directory / "node")
        summary = run_ingest(config, mapping, today=dt.date(2026, 11, 25), batch_size=BATCH)
        assert summary.accepted == rows, summary.to_dict()
        rate = summary.accepted / summary.seconds
        db = sqlite3.connect(directory / "node" / "data" / "credex.db")
        stored = db.execute("SELECT * FROM records").fetchall()
        body_bytes = sum(len(r[7]) for r in stored) / len(stored)
        db.close()
        raw = raw_insert_rate(stored, len(stored[0]), directory)
    print(
        f"ingested {summary.accepted} records in {summary.seconds:.2f} s "
        f"({summary.batches} batches of {BATCH}); mean encrypted body {body_bytes:.0f} B"
    )
    print(f"BENCH node ingest_records_per_s {rate:.0f} records/s sqlite_executemany {raw:.0f}")
    print(f"BENCH node ingest_goal_records_per_s {rate:.0f} records/s goal 15000")


if __name__ == "__main__":
    main(sys.argv[1:])
