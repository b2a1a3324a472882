"""Stored windows follow the item's 有效期限 (`max_disclosure_months`, Shandong Art. 10).

Utility arrears declare 12 months. Ingest stores a row recognised before 2026-04-01 with
12 months, not 令第58号's 3 years, and a row an older release stored with 3 years gets its
12-month window at the first scan after the upgrade (docs/decisions/0014), or is expired by
it when those 12 months are over.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

import catalog
from node import lifecycle as rules
from node.cli.init_cmds import init_node
from node.config import load_config
from node.demo_data import numbered_uscc
from node.ingest import run_ingest
from node.runtime import NodeRuntime, open_runtime
from node.scheduler import scan
from node.store import StoredRecord
from tests.node.window_support import store_as_previous_release

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)  # 10:00 in China
TODAY = dt.date(2026, 11, 25)
COLUMNS = ["name", "uscc", "from", "recognised"]
MAPPING = f'''
item = "utility_arrears"
[source]
kind = "csv"
path = "arrears.csv"
[fields]
subject_name = "name"
subject_category = {{ const = "法人及非法人组织" }}
uscc = "uscc"
legal_rep_name = {{ const = "王某某" }}
utility_type = {{ const = "自来水" }}
arrears_amount_yuan = {{ const = "1234.50" }}
arrears_from = "from"
arrears_to = {{ const = "2025-12-31" }}
recognition_date = "recognised"
settled = {{ const = "否" }}
provider_name = {{ const = "张店区自来水公司" }}
provider_uscc = {{ const = "{numbered_uscc("91370303", 1)}" }}
'''
# name -> (subject number, recognised); both recognised under 令第58号 (3 years alone)
ROWS = {"running": (1, "2026-02-01"), "over": (2, "2025-06-01")}


def uscc(n: int) -> str:
    return numbered_uscc("91370303", 7000 + n)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[NodeRuntime]:
    home = tmp_path / "water"
    init_node(home, name="water", role="department", now=NOW)
    with (tmp_path / "arrears.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for n, day in ROWS.values():
            writer.writerow([f"淄博某某公司{n}", uscc(n), "2025-01-01", day])
    (tmp_path / "arrears.toml").write_text(MAPPING, encoding="utf-8")
    rt = open_runtime(home, clock=lambda: NOW)
    rt.store.ensure_subscription("platform", ["utility_arrears"], now=NOW)
    summary = run_ingest(
        load_config(home), tmp_path / "arrears.toml", today=TODAY, clock=lambda: NOW, store=rt.store
    )
    assert (summary.accepted, summary.rejected) == (2, 0)
    try:
        yield rt
    finally:
        rt.close()


def stored(rt: NodeRuntime) -> dict[str, StoredRecord]:
    out = {}
    for name, (n, _) in ROWS.items():
        (version,) = rt.store.records_by_subject(rt.blind.token(uscc(n)), states=None)
        out[name] = version
    return out


def test_ingest_stores_the_items_twelve_months(runtime: NodeRuntime) -> None:
    records = stored(runtime)
    running, over = records["running"], records["over"]
    assert (running.state, running.disclosure_max_end) == ("active", dt.date(2027, 2, 1))
    # 2025-06-01 + 12 months = 2026-06-01: over at ingest, stored expired, never published
    assert (over.state, over.disclosure_max_end) == ("expired", dt.date(2026, 6, 1))


def test_windows_stored_by_an_older_release_are_bounded_at_the_first_scan(
    runtime: NodeRuntime,
) -> None:
    rule = "令第58号 (decided before 2026-04-01): 3个月-3年"
    windows = {}
    for record in stored(runtime).values():
        decided = record.decided_on
        assert decided is not None
        windows[record.row_id] = (
            catalog.add_months(decided, 3),
            catalog.add_months(decided, 36),
            rule,
        )
    store_as_previous_release(runtime, windows, now=NOW)
    report = scan(runtime)
    assert report.expired == 1
    after = stored(runtime)
    assert (after["running"].state, after["running"].disclosure_max_end) == (
        "active",
        dt.date(2027, 2, 1),
    )
    # over since 2026-06-01 but shown until yesterday by the older release: ends yesterday
    assert (after["over"].state, after["over"].disclosure_max_end) == (
        "expired",
        TODAY - dt.timedelta(days=1),
    )
    expired = [e for e in runtime.store.events_after("platform", 0) if e.kind == "expire"]
    assert [e.record_row_id for e in expired] == [after["over"].row_id]


def test_the_rules_fingerprint_sees_the_items_validity() -> None:
    cat = catalog.default_catalog()
    assert rules.WINDOW_RULES_REVISION >= 3  # the 有效期限 bounds every window
    item = cat.items["utility_arrears"]
    longer = dataclasses.replace(
        cat, items={**cat.items, item.id: dataclasses.replace(item, max_disclosure_months=24)}
    )
    assert rules.window_rules_fingerprint(longer) != rules.window_rules_fingerprint(cat)
