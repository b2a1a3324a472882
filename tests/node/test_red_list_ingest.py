"""Red-list validity at ingest: 有效期至 is stored as the version's max end; an entry past it or
revoked (状态=撤销) is stored `expired`, and as a new version it ends the earlier valid one."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from node.cli.init_cmds import init_node
from node.config import load_config
from node.demo_data import numbered_uscc
from node.ingest import IngestSummary, run_ingest
from node.lifecycle import visible
from node.store import StoredRecord, open_store
from node.store.store import RECORDS

TODAY = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
COLUMNS = ["name", "uscc", "list_name", "listed_date", "valid_until", "status"]
MAPPING = f'''
item = "red_list"

[source]
kind = "csv"
path = "red.csv"

[fields]
subject_name = "name"
subject_category = {{ const = "法人及非法人组织" }}
legal_rep_name = {{ const = "王某某" }}
uscc = "uscc"
list_name = "list_name"
recognition_basis = {{ const = "张店区诚信企业评选办法" }}
recognising_unit = {{ const = "张店区发展和改革局" }}
recognising_unit_uscc = {{ const = "{numbered_uscc("11370303", 1)}" }}
listed_date = "listed_date"
valid_until = "valid_until"
status = "status"
incentive_measures = {{ const = "1" }}
source_unit = {{ const = "张店区发展和改革局" }}
source_unit_uscc = {{ const = "{numbered_uscc("11370303", 2)}" }}
'''


def row(i: int, valid_until: str, status: str = "有效") -> dict[str, str]:
    return {
        "name": f"淄博张店某某商贸有限公司{i}",
        "uscc": numbered_uscc("91370303", 3000 + i),
        "list_name": "诚信企业",
        "listed_date": "2023-01-04",
        "valid_until": valid_until,
        "status": status,
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    init_node(tmp_path / "node", name="ndrc", role="department", now=NOW)
    return tmp_path / "node"


def ingest(home: Path, rows: list[dict[str, str]]) -> IngestSummary:
    with (home.parent / "red.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    mapping = home.parent / "red.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return run_ingest(load_config(home), mapping, today=TODAY, clock=lambda: NOW)


def stored(home: Path) -> list[StoredRecord]:
    store = open_store(load_config(home).store.url)
    try:
        with store.read("test") as conn:
            row_ids = [r.row_id for r in conn.execute(RECORDS.select()).all()]
        return sorted((store.get_record(r) for r in row_ids), key=lambda r: r.created_at)
    finally:
        store.close()


def shown(record: StoredRecord) -> bool:
    return visible(
        state=record.state,
        severity=record.severity,
        decided_on=record.decided_on,
        disclosure_max_end=record.disclosure_max_end,
        today=TODAY,
    )


def test_red_list_entries_end_with_their_validity(home: Path) -> None:
    summary = ingest(
        home, [row(1, "2027-06-30"), row(2, "2024-01-04"), row(3, "2099-12-31", "撤销")]
    )
    assert (summary.accepted, summary.rejected) == (3, 0)
    by_end = {r.disclosure_max_end: r for r in stored(home)}
    valid = by_end[dt.date(2027, 6, 30)]
    assert (valid.state, shown(valid)) == ("active", True)
    past = by_end[dt.date(2024, 1, 4)]
    assert (past.state, shown(past)) == ("expired", False)
    revoked = by_end[dt.date(2023, 1, 4)]  # the empty window: never disclosed
    assert (revoked.state, shown(revoked)) == ("expired", False)

    # the department revokes entry 1: the new version supersedes the valid one, nothing shows
    again = ingest(
        home, [row(1, "2027-06-30", "撤销"), row(2, "2024-01-04"), row(3, "2099-12-31", "撤销")]
    )
    assert (again.accepted, again.corrected) == (1, 1)
    assert not any(shown(r) for r in stored(home))
