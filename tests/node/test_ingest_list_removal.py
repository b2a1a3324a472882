"""A severe-dishonesty entry removed from its list (名单状态 = 移出) stops being disclosed, shared
and pushed (令第36号 Art. 3: 终止公示, 停止共享和使用, 惩戒 lifted; 山东 Art. 40).

The nightly export that says 移出 is a new version of the entry: ingest stores it `expired`
(its window ends the day before the 移出日期), which supersedes the listed version, sends the
feed event subscribers end their copies with, and makes the push receivers' expire notice due.
An entry an older release stored as removed but still active is ended by the first scan
after the upgrade (docs/decisions/0014).
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
from node.ingest import IngestSummary, run_ingest
from node.runtime import NodeRuntime, open_runtime
from node.scheduler import scan
from node.store import StoredRecord
from node.store import lifecycle as ls
from tests.catalog.catalog_testdata import make_ric
from tests.node.window_support import store_as_previous_release

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)  # 10:00 in China
TODAY = dt.date(2026, 11, 25)
LISTED = "2026-05-01"
REMOVED = dt.date(2026, 9, 1)
COLUMNS = ["name", "uscc", "listed_date", "status", "removal_date", "removal_reason"]
COMPANY = numbered_uscc("91370303", 4001)
MAPPING = f'''
item = "severe_dishonesty_list"
[source]
kind = "csv"
path = "severe.csv"
[fields]
subject_name = "name"
subject_category = {{ const = "法人及非法人组织" }}
uscc = "uscc"
legal_rep_name = {{ const = "王某某" }}
legal_rep_id_type = {{ const = "身份证" }}
legal_rep_id_number = {{ const = "{make_ric("370303", "19700505", "011")}" }}
list_name = {{ const = "重大税收违法失信主体" }}
dishonest_conduct = {{ const = "偷税" }}
recognition_basis = {{ const = "重大税收违法失信主体信息公布管理办法" }}
recognising_unit = {{ const = "张店区税务局" }}
recognising_unit_uscc = {{ const = "{numbered_uscc("11370303", 1)}" }}
decision_no = {{ const = "张税认〔2026〕1号" }}
listed_date = "listed_date"
status = "status"
removal_date = "removal_date"
removal_reason = "removal_reason"
source_unit = {{ const = "张店区税务局" }}
source_unit_uscc = {{ const = "{numbered_uscc("11370303", 2)}" }}
'''


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[NodeRuntime]:
    home = tmp_path / "tax"
    init_node(home, name="tax", role="department", now=NOW)
    (tmp_path / "severe.toml").write_text(MAPPING, encoding="utf-8")
    rt = open_runtime(home, clock=lambda: NOW)
    rt.store.ensure_subscription("platform", ["severe_dishonesty_list"], now=NOW)
    try:
        yield rt
    finally:
        rt.close()


def export(rt: NodeRuntime, status: str, removal_date: str = "", reason: str = "") -> IngestSummary:
    """The department's nightly export: the one entry, as its system now states it."""
    base = rt.config.home.parent
    with (base / "severe.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow(
            {
                "name": "淄博某某商贸有限公司",
                "uscc": COMPANY,
                "listed_date": LISTED,
                "status": status,
                "removal_date": removal_date,
                "removal_reason": reason,
            }
        )
    summary = run_ingest(
        load_config(rt.config.home),
        base / "severe.toml",
        today=TODAY,
        clock=lambda: NOW,
        store=rt.store,
    )
    assert summary.rejected == 0
    return summary


def versions(rt: NodeRuntime) -> list[StoredRecord]:
    return sorted(
        rt.store.records_by_subject(rt.blind.token(COMPANY), states=None), key=lambda r: r.version
    )


def shown(record: StoredRecord, today: dt.date = TODAY) -> bool:
    return rules.visible(
        state=record.state,
        severity=record.severity,
        decided_on=record.decided_on,
        disclosure_max_end=record.disclosure_max_end,
        today=today,
    )


def test_a_removed_entry_is_stored_expired_and_its_end_goes_out(runtime: NodeRuntime) -> None:
    export(runtime, "列入")
    (listed,) = versions(runtime)
    assert listed.state == "active"
    assert shown(listed)
    # it was pushed for joint punishment (a receiver with its receipt pending or not)
    ls.record_push(
        runtime.store,
        push_id="push-1",
        to_node="hrss",
        record_key=listed.record_key,
        sent_at=NOW,
    )

    summary = export(runtime, "移出", REMOVED.isoformat(), "信用修复")
    assert (summary.accepted, summary.corrected) == (1, 1)
    first, second = versions(runtime)
    assert (first.state, second.state) == ("superseded", "expired")
    last_day = REMOVED - dt.timedelta(days=1)
    assert (second.disclosure_min_end, second.disclosure_max_end) == (last_day, last_day)
    assert not shown(second)
    assert not rules.disclosure_ended(
        severity=second.severity,
        decided_on=second.decided_on,
        disclosure_max_end=second.disclosure_max_end,
        today=last_day,
    )
    # feeds: subscribers get the new version, which travels without its body (over), and
    # their copy of version 1 ends with it
    events = runtime.store.events_after("platform", 0)
    assert [(e.kind, e.version) for e in events] == [("upsert", 1), ("correct", 2)]
    assert rules.disclosure_ended(
        severity=second.severity,
        decided_on=second.decided_on,
        disclosure_max_end=second.disclosure_max_end,
        today=TODAY,
    )
    # pushes: the receiver is due its expire notice (惩戒 lifted)
    assert ls.pushed_keys_untold(
        runtime.store,
        runtime.node_id,
        notice_prefix="pushw-",
        states=["expired", "purged", "withdrawn"],
    ) == [listed.record_key]
    # nothing is left for the scan: no second event
    assert runtime.store.records_due_for_expiry(TODAY) == []
    # and the next nightly export of the same removed row changes nothing
    again = export(runtime, "移出", REMOVED.isoformat(), "信用修复")
    assert again.accepted == 0
    assert len(versions(runtime)) == 2


def test_a_removal_stored_active_by_an_older_release_ends_at_the_first_scan(
    runtime: NodeRuntime,
) -> None:
    export(runtime, "列入")
    export(runtime, "移出", REMOVED.isoformat(), "决定撤销")
    removed = versions(runtime)[-1]
    # as the release before this one stored it: active, with the severe window, and that
    # release had run its window pass under its own rules
    severe = (dt.date(2027, 5, 1), dt.date(2029, 5, 1), "令第36号: 严重失信 1年-3年")
    store_as_previous_release(runtime, {removed.row_id: severe}, now=NOW)
    assert shown(versions(runtime)[-1])  # the defect: still disclosed and shared

    report = scan(runtime)
    assert report.expired == 1
    after = versions(runtime)[-1]
    assert after.state == "expired"
    assert not shown(after)
    # shown until yesterday by the older release: its end is not back-dated (retention)
    assert after.disclosure_max_end == TODAY - dt.timedelta(days=1)
    kinds = [(e.kind, e.version) for e in runtime.store.events_after("platform", 0)]
    assert kinds[-1] == ("expire", 2)
    state = ls.maintenance_state(runtime.store, ls.WINDOWS_TASK)
    assert state is not None
    assert state.fingerprint == rules.window_rules_fingerprint(runtime.catalogue)


def test_the_rules_fingerprint_sees_the_end_rules() -> None:
    """Stored windows are recomputed once the rules that end list entries change."""
    cat = catalog.default_catalog()
    assert rules.WINDOW_RULES_REVISION >= 2  # record_period bounds dishonesty windows
    item = cat.items["severe_dishonesty_list"]
    before = dataclasses.replace(
        cat,
        items={
            **cat.items,
            item.id: dataclasses.replace(item, ended_when=None, ended_on_field=None),
        },
    )
    assert rules.window_rules_fingerprint(before) != rules.window_rules_fingerprint(cat)
