"""Windows stored by older releases, brought to the current rules (docs/decisions/0014).

Rows are written as those releases left them (their window columns set directly): ungraded
penalties without a severity or an end, minor ones without their empty window, red-list and
honour entries without the end their validity gives, a revoked entry still active. Migration
0006 fixes what the columns decide; `node.window_refresh` fixes the rest from the bodies; the
lifecycle scan then expires what is over, with its `expire` events.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

import catalog
import keys
from node import feeds, scheduler, window_refresh
from node import lifecycle as rules
from node._pb.credex.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc
from node.cli import app
from node.cli.init_cmds import init_node
from node.cluster import LocalCluster
from node.config import load_config
from node.demo_data import numbered_uscc
from node.ingest import run_ingest
from node.lifecycle_ops import decrypt_record as ops_decrypt
from node.runtime import NodeRuntime, open_runtime
from node.scheduler import scan
from node.store import NewRecord, StoredRecord, open_store
from node.store import lifecycle as ls
from node.store.engine import MIGRATIONS_DIR, make_engine
from node.store.store import RECORDS
from tests.node.exchange_support import serving
from tests.node.store_support import TEST_TAGGER, retag

INGESTED = dt.datetime(2026, 11, 26, 2, 0, tzinfo=dt.UTC)  # 10:00 in China
TODAY = dt.date(2026, 11, 26)
# what releases before 2026-11-26 stored for a record they gave no period
NO_PERIOD = "no disclosure period: not a dishonesty record"
OLD_MINOR = "令第36号: 轻微失信信息原则上不予公示 (minor: not disclosed)"

PENALTY_HEADER = ["名称", "代码", "文号", "日期", "失信程度"]
PENALTY_MAPPING = f'''
item = "admin_penalty"
[source]
kind = "csv"
path = "penalties.csv"
[fields]
subject_name = "名称"
subject_category = {{ const = "法人及非法人组织" }}
legal_rep_name = {{ const = "王某某" }}
uscc = "代码"
decision_no = "文号"
severity = "失信程度"
violation_type = {{ const = "销售不合格产品" }}
violation_facts = {{ const = "经查，当事人销售的产品经抽检不合格。" }}
legal_basis = {{ const = "《中华人民共和国产品质量法》第四十九条" }}
penalty_types = {{ const = "罚款" }}
penalty_content = {{ const = "罚款" }}
fine_wan_yuan = {{ const = "0.5" }}
authority_name = {{ const = "淄博市张店区市场监督管理局" }}
authority_uscc = {{ const = "{numbered_uscc("11370303", 1)}" }}
penalty_valid_until = {{ const = "2099-12-31" }}
source_unit = {{ const = "淄博市张店区市场监督管理局" }}
source_unit_uscc = {{ const = "{numbered_uscc("11370303", 2)}" }}
[fields.decision_date]
column = "日期"
transforms = ["date"]
'''
LIST_HEADER = ["名称", "代码", "日期", "有效期至", "状态"]
RED_LIST_MAPPING = f'''
item = "red_list"
[source]
kind = "csv"
path = "red.csv"
[fields]
subject_name = "名称"
subject_category = {{ const = "法人及非法人组织" }}
legal_rep_name = {{ const = "王某某" }}
uscc = "代码"
list_name = {{ const = "诚信企业" }}
recognition_basis = {{ const = "张店区诚信企业评选办法" }}
recognising_unit = {{ const = "张店区发展和改革局" }}
recognising_unit_uscc = {{ const = "{numbered_uscc("11370303", 1)}" }}
listed_date = "日期"
valid_until = "有效期至"
status = "状态"
incentive_measures = {{ const = "1" }}
source_unit = {{ const = "张店区发展和改革局" }}
source_unit_uscc = {{ const = "{numbered_uscc("11370303", 2)}" }}
'''
HONOUR_MAPPING = f'''
item = "honour"
[source]
kind = "csv"
path = "honours.csv"
[fields]
subject_name = "名称"
subject_category = {{ const = "法人及非法人组织" }}
legal_rep_name = {{ const = "王某某" }}
uscc = "代码"
honour_name = {{ const = "守合同重信用企业" }}
granting_authority = {{ const = "淄博市张店区人民政府" }}
granting_authority_uscc = {{ const = "{numbered_uscc("11370303", 3)}" }}
decision_no = {{ const = "张政字〔2022〕8号" }}
grant_date = "日期"
valid_until = "有效期至"
status = "状态"
source_unit = {{ const = "张店区发展和改革局" }}
source_unit_uscc = {{ const = "{numbered_uscc("11370303", 2)}" }}
'''

# name -> (item, subject number, date, grade or validity, status); each its own subject
ROWS: dict[str, tuple[str, int, str, str, str]] = {
    "ungraded_over": ("admin_penalty", 1, "2023-02-10", "", ""),
    "ungraded_running": ("admin_penalty", 2, "2025-06-30", "", ""),
    "general": ("admin_penalty", 3, "2026-05-11", "一般", ""),
    "minor": ("admin_penalty", 4, "2026-05-11", "轻微", ""),
    "red_running": ("red_list", 5, "2023-01-04", "2027-06-30", "有效"),
    "red_lapsed": ("red_list", 6, "2023-01-04", "2024-01-04", "有效"),
    "red_revoked": ("red_list", 7, "2023-01-04", "2099-12-31", "撤销"),
    "honour_lapsed": ("honour", 8, "2022-03-01", "2025-03-01", "有效"),
}
# how an older release stored each (severity, rule); the others were stored correctly
LEGACY = {
    "ungraded_over": (None, NO_PERIOD),
    "ungraded_running": (None, NO_PERIOD),
    "minor": ("minor", OLD_MINOR),
    "red_running": (None, NO_PERIOD),
    "red_lapsed": (None, NO_PERIOD),
    "red_revoked": (None, NO_PERIOD),
    "honour_lapsed": (None, NO_PERIOD),
}
# the window each gets from the current rules: (severity, min end, max end). The ends already
# past were shown by the older release until yesterday: they end then, not back-dated, so that
# retention starts when they stopped being shown (node.lifecycle.refreshed_window).
SHOWN_UNTIL = TODAY - dt.timedelta(days=1)
EXPECTED = {
    "ungraded_over": ("ungraded", dt.date(2023, 5, 10), SHOWN_UNTIL),  # lawful: 2026-02-10
    "ungraded_running": ("ungraded", dt.date(2025, 9, 30), dt.date(2028, 6, 30)),
    "general": ("general", dt.date(2026, 8, 11), dt.date(2027, 5, 11)),
    # stored without its window, a minor record was already withheld by the readers
    "minor": ("minor", dt.date(2026, 5, 11), dt.date(2026, 5, 11)),
    "red_running": (None, None, dt.date(2027, 6, 30)),
    "red_lapsed": (None, None, SHOWN_UNTIL),  # lawful: 2024-01-04
    "red_revoked": (None, dt.date(2023, 1, 4), SHOWN_UNTIL),  # lawful: withheld
    "honour_lapsed": (None, None, SHOWN_UNTIL),  # lawful: 2025-03-01
}
OVER = {"ungraded_over", "minor", "red_lapsed", "red_revoked", "honour_lapsed"}


def uscc(number: int) -> str:
    return numbered_uscc("91370303", 5000 + number)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def ingest_all(home: Path, rt: NodeRuntime) -> None:
    base = home.parent
    penalties: list[list[str]] = []
    red: list[list[str]] = []
    honours: list[list[str]] = []
    for item, n, day, grade_or_end, status in ROWS.values():
        subject = [f"淄博张店某某商贸有限公司{n}", uscc(n)]
        if item == "admin_penalty":
            penalties.append([*subject, f"张市监罚〔{day[:4]}〕{n}号", day, grade_or_end])
        else:
            (red if item == "red_list" else honours).append([*subject, day, grade_or_end, status])
    _write_csv(base / "penalties.csv", PENALTY_HEADER, penalties)
    _write_csv(base / "red.csv", LIST_HEADER, red)
    _write_csv(base / "honours.csv", LIST_HEADER, honours)
    for mapping, text in (
        ("penalties.toml", PENALTY_MAPPING),
        ("red.toml", RED_LIST_MAPPING),
        ("honours.toml", HONOUR_MAPPING),
    ):
        (base / mapping).write_text(text, encoding="utf-8")
        summary = run_ingest(
            load_config(home), base / mapping, today=TODAY, clock=rt.clock, store=rt.store
        )
        assert summary.rejected == 0, mapping


def stored(rt: NodeRuntime) -> dict[str, StoredRecord]:
    """The current version of each named row."""
    out = {}
    for name, (_, n, *_rest) in ROWS.items():
        (version,) = rt.store.records_by_subject(rt.blind.token(uscc(n)), states=None)
        out[name] = version
    return out


def make_legacy(rt: NodeRuntime, row_id: str, severity: str | None, rule: str) -> None:
    """Set a version's columns as a release before 2026-11-26 stored them: active, no end."""
    with rt.store.write("test: a row as an older release stored it") as conn:
        conn.execute(
            update(RECORDS)
            .where(RECORDS.c.row_id == row_id)
            .values(
                state="active",
                severity=severity,
                disclosure_min_end=None,
                disclosure_max_end=None,
                disclosure_rule=rule,
            )
        )
    retag(rt.store, row_id)  # what adoption makes of an older release's row


def schedule_window_pass(rt: NodeRuntime) -> None:
    """What migration 0006 does to a store holding records of an older release: the pass is
    pending (an empty fingerprint matches no rules)."""
    with rt.store.write("test: the upgrade schedules the window pass") as conn:
        conn.execute(
            insert(ls.MAINTENANCE).values(
                task=ls.WINDOWS_TASK, fingerprint="", updated_at=INGESTED.replace(tzinfo=None)
            )
        )


def snapshot(rt: NodeRuntime) -> list[tuple[Any, ...]]:
    with rt.store.read("test: every record row") as conn:
        return [tuple(r) for r in conn.execute(select(RECORDS).order_by(RECORDS.c.row_id))]


def window(record: StoredRecord) -> tuple[str | None, dt.date | None, dt.date | None]:
    return (record.severity, record.disclosure_min_end, record.disclosure_max_end)


def shown(record: StoredRecord, today: dt.date = TODAY) -> bool:
    return rules.visible(
        state=record.state,
        severity=record.severity,
        decided_on=record.decided_on,
        disclosure_max_end=record.disclosure_max_end,
        today=today,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    node = tmp_path / "market"
    init_node(node, name="market", role="department", now=INGESTED)
    return node


@pytest.fixture
def runtime(home: Path) -> Iterator[NodeRuntime]:
    """A node upgraded in place: every named row stored, the legacy ones as older releases
    left them, and the pass of this release not run yet."""
    rt = open_runtime(home, clock=lambda: INGESTED)
    try:
        rt.store.ensure_subscription(
            "platform", ["admin_penalty", "red_list", "honour"], now=INGESTED
        )
        ingest_all(home, rt)
        for name, record in stored(rt).items():
            if name in LEGACY:
                make_legacy(rt, record.row_id, *LEGACY[name])
        schedule_window_pass(rt)
        yield rt
    finally:
        rt.close()


# ---------------------------------------------------------------- the pure rules


def test_refreshed_window_ignores_a_rule_text_that_only_reads_differently() -> None:
    decided = dt.date(2026, 5, 11)
    period = catalog.record_period("general", decided)
    stored = rules.StoredWindow("general", period.min_end, period.max_end, "older wording")
    refresh = functools.partial(
        rules.refreshed_window, severity="general", period=period, decided_on=decided, today=TODAY
    )
    assert refresh(stored) is None
    legacy = rules.StoredWindow(None, None, None, NO_PERIOD)
    assert refresh(legacy) == (
        rules.StoredWindow("general", period.min_end, period.max_end, period.rule)
    )


def test_refreshed_window_never_lengthens_disclosure() -> None:
    decided = dt.date(2026, 5, 11)
    period = catalog.record_period("general", decided)  # ends 2027-05-11
    refresh = functools.partial(
        rules.refreshed_window, severity="general", period=period, decided_on=decided, today=TODAY
    )
    shorter = rules.StoredWindow("general", period.min_end, dt.date(2027, 1, 1), "capped")
    assert refresh(shorter) is None
    # no period under the current rules while one is stored: "never ends" is longer still
    none = catalog.record_period(None, decided)
    assert none.max_end is None
    ends = rules.StoredWindow(None, None, dt.date(2027, 1, 1), "valid until")
    assert (
        rules.refreshed_window(ends, severity=None, period=none, decided_on=decided, today=TODAY)
        is None
    )


def test_an_end_already_past_is_the_day_the_version_stopped_being_shown() -> None:
    decided = dt.date(2023, 2, 10)
    period = catalog.record_period(catalog.periods.UNGRADED, decided)  # ends 2026-02-10
    legacy = rules.StoredWindow(None, None, None, NO_PERIOD)
    new = rules.refreshed_window(
        legacy, severity="ungraded", period=period, decided_on=decided, today=TODAY
    )
    assert new is not None
    assert (new.min_end, new.max_end) == (period.min_end, SHOWN_UNTIL)
    assert new.rule == f"{period.rule}; shown until {SHOWN_UNTIL} by an earlier release"
    # a stored window that had already ended keeps the lawful end: nothing was shown since
    ended = rules.StoredWindow(None, None, dt.date(2025, 1, 1), "older wording")
    new = rules.refreshed_window(
        ended, severity="ungraded", period=period, decided_on=decided, today=TODAY
    )
    assert new is None  # 2026-02-10 would lengthen it
    minor_decided = dt.date(2026, 5, 11)
    minor = catalog.record_period("minor", minor_decided)
    stored_minor = rules.StoredWindow("minor", None, None, OLD_MINOR)  # withheld by readers
    new = rules.refreshed_window(
        stored_minor, severity="minor", period=minor, decided_on=minor_decided, today=TODAY
    )
    assert new == rules.StoredWindow("minor", minor.min_end, minor.max_end, minor.rule)


def test_the_fingerprint_follows_the_catalogue_attributes_that_decide_windows() -> None:
    cat = catalog.default_catalog()
    assert rules.window_rules_fingerprint(cat) == rules.window_rules_fingerprint(cat)
    assert rules.window_rules_fingerprint(cat).startswith(f"{rules.WINDOW_RULES_REVISION}:")
    honour = cat.items["honour"]
    # the catalogue as it was before honours ended at their validity (commit fac9edf)
    before = dataclasses.replace(
        cat,
        items={**cat.items, "honour": dataclasses.replace(honour, valid_until_field=None)},
    )
    assert rules.window_rules_fingerprint(before) != rules.window_rules_fingerprint(cat)
    # a change that decides no window (an item's provider) leaves it alone
    renamed = dataclasses.replace(
        cat, items={**cat.items, "honour": dataclasses.replace(honour, provider="another")}
    )
    assert rules.window_rules_fingerprint(renamed) == rules.window_rules_fingerprint(cat)


# ------------------------------------------------------------ the recomputation


def test_legacy_rows_are_legacy_before_the_pass(runtime: NodeRuntime) -> None:
    records = stored(runtime)
    # the gap this pass closes: lapsed or revoked entries and old penalties still shown
    assert all(shown(records[n]) for n in ("ungraded_over", "red_lapsed", "red_revoked"))
    assert all(window(records[n]) == (LEGACY[n][0], None, None) for n in LEGACY)


def test_the_pass_stores_the_current_windows(runtime: NodeRuntime) -> None:
    before = stored(runtime)
    report = window_refresh.refresh_windows(runtime)
    assert report.ran
    assert (report.checked, report.updated, report.ended) == (len(ROWS), len(LEGACY), len(OVER))
    assert (report.unreadable, report.invalid, report.unresolved) == (0, 0, ())
    after = stored(runtime)
    assert {n: window(r) for n, r in after.items()} == EXPECTED
    for name in LEGACY:
        record = after[name]
        assert record.state == "active"  # no state change here: the scan expires
        assert shown(record) == (name not in OVER)  # but readers hold it back at once
        assert record.disclosure_rule != LEGACY[name][1]
    # the row stored correctly is left exactly as it was, rule text included
    assert after["general"] == before["general"]
    # no feed event either: a window is not part of the signed record
    assert [e.kind for e in runtime.store.events_after("platform", 0)] == ["upsert"] * len(ROWS)


def test_running_it_again_changes_nothing(runtime: NodeRuntime) -> None:
    window_refresh.refresh_windows(runtime)
    rows = snapshot(runtime)
    again = window_refresh.refresh_windows(runtime)
    assert not again.ran
    assert again.checked == 0
    forced = window_refresh.refresh_windows(runtime, force=True)
    assert forced.ran
    assert (forced.checked, forced.updated) == (len(ROWS), 0)
    assert snapshot(runtime) == rows
    state = ls.maintenance_state(runtime.store, ls.WINDOWS_TASK)
    assert state is not None
    assert state.finished_at is not None
    assert state.resume_after is None
    assert state.fingerprint == rules.window_rules_fingerprint(runtime.catalogue)


def test_the_scan_then_expires_what_is_over_with_expire_events(runtime: NodeRuntime) -> None:
    window_refresh.refresh_windows(runtime)
    report = scan(runtime)
    assert report.expired == len(OVER)
    after = stored(runtime)
    assert {n for n, r in after.items() if r.state == "expired"} == OVER
    expired = [e for e in runtime.store.events_after("platform", 0) if e.kind == "expire"]
    assert sorted(e.record_row_id for e in expired) == sorted(after[n].row_id for n in OVER)
    # nothing is answered any more: the query reads these candidates and judges `visible`
    for name, (_, n, *_rest) in ROWS.items():
        candidates = runtime.store.release_candidates(
            runtime.blind.token(uscc(n)), producer=runtime.node_id, states=("active", "expired")
        )
        answered = [
            c
            for c in candidates
            if rules.visible(
                state=c.state,
                severity=c.severity,
                decided_on=c.decided_on,
                disclosure_max_end=c.disclosure_max_end,
                today=TODAY,
            )
        ]
        assert bool(answered) == (name not in OVER), name
    # the running entries end on their own day: shown on it, expired the day after
    assert shown(after["red_running"], dt.date(2027, 6, 30))
    assert not shown(after["red_running"], dt.date(2027, 7, 1))


def test_a_pass_killed_half_way_resumes_after_its_last_batch(
    runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ls.store_windows
    calls: list[int] = []

    def dies_on_the_third_batch(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(ls, "store_windows", dies_on_the_third_batch)
    with pytest.raises(RuntimeError, match="killed"):
        window_refresh.refresh_windows(runtime, batch=2)
    state = ls.maintenance_state(runtime.store, ls.WINDOWS_TASK)
    assert state is not None
    assert state.finished_at is None
    assert state.resume_after is not None
    monkeypatch.setattr(ls, "store_windows", real)
    report = window_refresh.refresh_windows(runtime, batch=2)
    assert report.checked == len(ROWS) - 4  # the two committed batches are not read again
    assert {n: window(r) for n, r in stored(runtime).items()} == EXPECTED


def test_unreadable_and_invalid_versions_keep_their_window_and_are_named(
    runtime: NodeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    records = stored(runtime)
    revoked = records["red_revoked"]
    # signed and sealed by this node, but no longer a valid red-list entry (fields missing)
    header = {
        "item": "red_list",
        "catalog_version": runtime.catalogue.version,
        "record_key": revoked.record_key,
        "version": revoked.version,
        "producer": runtime.node_id,
        "issued_at": "2026-11-20T00:00:00Z",
        "subject": revoked.subject_index,
    }
    signed = keys.sign_record(header, {"listed_date": "2023-01-04"}, runtime.node_keys.signing)
    with runtime.store.write("test: tamper with three bodies") as conn:
        for name, body in (
            ("red_lapsed", b"\x01" + bytes(60)),
            # a body of another row: it decrypts under its own row id only
            ("honour_lapsed", records["general"].body),
            ("red_revoked", runtime.cipher.encrypt(revoked.row_id, signed.to_bytes())),
        ):
            conn.execute(
                update(RECORDS).where(RECORDS.c.row_id == records[name].row_id).values(body=body)
            )
    retag(runtime.store)  # stored so by an older release, then adopted
    with caplog.at_level(logging.INFO, logger="node.window_refresh"):
        report = window_refresh.refresh_windows(runtime)
    assert (report.unreadable, report.invalid) == (2, 1)
    kept = ("red_lapsed", "honour_lapsed", "red_revoked")
    assert sorted(report.unresolved) == sorted(records[n].record_key for n in kept)
    after = stored(runtime)
    assert all(window(after[n]) == (None, None, None) for n in kept)
    assert window(after["red_running"]) == EXPECTED["red_running"]  # the others go on
    assert report.updated == len(LEGACY) - len(kept)
    text = caplog.text
    assert "did not decrypt or verify" in text
    for n in range(1, 9):  # no identifier, name or record key in a log line
        assert uscc(n) not in text
        assert f"公司{n}" not in text
    assert all(k not in text for k in report.unresolved)


def test_an_entry_that_no_longer_validates_is_still_bounded(runtime: NodeRuntime) -> None:
    """An older release accepted a red-list entry whose validity ended on its listing day
    (date_order since): it no longer validates, but the fields that decide its window still
    end it (catalog.period_facts), and a clerk is told."""
    records = stored(runtime)
    lapsed = records["red_lapsed"]
    verified = ops_decrypt(runtime, lapsed)
    fields = dict(verified.fields, valid_until=verified.fields["listed_date"])
    assert catalog.validate_record(
        "red_list", fields, today=TODAY, catalog=runtime.catalogue
    ).errors
    header = {k: v for k, v in verified.header.items() if k not in ("v", "digests")}
    signed = keys.sign_record(header, fields, runtime.node_keys.signing)
    with runtime.store.write("test: a body an older release accepted") as conn:
        conn.execute(
            update(RECORDS)
            .where(RECORDS.c.row_id == lapsed.row_id)
            .values(body=runtime.cipher.encrypt(lapsed.row_id, signed.to_bytes()))
        )
    retag(runtime.store, lapsed.row_id)
    report = window_refresh.refresh_windows(runtime)
    assert report.invalid == 1
    assert report.unresolved == (lapsed.record_key,)
    after = stored(runtime)["red_lapsed"]
    assert after.disclosure_max_end == SHOWN_UNTIL
    assert not shown(after)
    assert scan(runtime).expired == len(OVER)
    assert stored(runtime)["red_lapsed"].state == "expired"


def test_a_back_dated_end_is_not_purged_by_the_scan_that_expires_it(
    runtime: NodeRuntime,
) -> None:
    """With a 12-month retention the lapsed red-list entry's lawful end (2024-01-04) is long
    past the purge cutoff, but it was shown until yesterday: it is expired, body kept."""
    report = scan(runtime, retention_months=12)
    assert (report.expired, report.purged) == (len(OVER), 0)
    lapsed = stored(runtime)["red_lapsed"]
    assert lapsed.state == "expired"
    assert keys.SignedRecord.from_bytes(runtime.cipher.decrypt(lapsed.row_id, lapsed.body))


def test_a_store_created_by_this_release_needs_no_pass(home: Path) -> None:
    """No pass is scheduled in a new store: its windows are all stored by the current rules,
    and the first scan only records them (a full pass over a fresh node's records at its
    first start would compete with everything it serves)."""
    rt = open_runtime(home, clock=lambda: INGESTED)
    try:
        assert ls.maintenance_state(rt.store, ls.WINDOWS_TASK) is None
        ingest_all(home, rt)
        report = window_refresh.refresh_windows(rt)
        assert (report.ran, report.checked) == (False, 0)
        state = ls.maintenance_state(rt.store, ls.WINDOWS_TASK)
        assert state is not None
        assert state.fingerprint == rules.window_rules_fingerprint(rt.catalogue)
        assert state.finished_at is not None
        # a forced pass agrees: ingest stored every window as the rules give it
        assert window_refresh.refresh_windows(rt, force=True).updated == 0
    finally:
        rt.close()


def test_a_newer_release_s_pass_is_left_to_it(runtime: NodeRuntime) -> None:
    newer = f"{rules.WINDOW_RULES_REVISION + 1}:rules-of-a-newer-release"
    ls.finish_maintenance(runtime.store, ls.WINDOWS_TASK, fingerprint=newer, now=INGESTED)
    rows = snapshot(runtime)
    report = window_refresh.refresh_windows(runtime)
    assert (report.ran, report.fingerprint) == (False, newer)
    assert snapshot(runtime) == rows


def test_a_failing_window_pass_does_not_hold_up_the_scan(
    runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(_runtime: NodeRuntime) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(scheduler, "refresh_windows", fails)
    with caplog.at_level(logging.ERROR, logger="node.scheduler"):
        report = scan(runtime)
    assert "disclosure window pass failed: RuntimeError" in caplog.text
    assert "locked" not in caplog.text
    # what the stored windows already decide is still expired: the minor record
    assert report.expired == 1
    assert stored(runtime)["minor"].state == "expired"


def test_credex_lifecycle_windows_recomputes_and_expires(home: Path, runtime: NodeRuntime) -> None:
    result = CliRunner().invoke(app, ["lifecycle", "windows", "--home", str(home), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    out = json.loads(result.stdout)
    assert out["windows"]["updated"] == len(LEGACY)
    assert out["scan"]["expired"] == len(OVER)
    again = CliRunner().invoke(app, ["lifecycle", "windows", "--home", str(home), "--json"])
    assert json.loads(again.stdout)["windows"]["ran"] is False


def test_the_first_scan_after_an_upgrade_recomputes_by_itself(runtime: NodeRuntime) -> None:
    report = scan(runtime)
    assert report.expired == len(OVER)


# ------------------------------------------------- the real feed, end to end


def _legacy_red_list_entry(market: NodeRuntime) -> NewRecord:
    """A red-list entry that lapsed on 2024-01-04, signed by market and stored as releases
    before 2026-11-26 did: active, with no end."""
    raw = {
        "subject_name": "淄博张店某某商贸有限公司9", "subject_category": "法人及非法人组织",
        "legal_rep_name": "王某某", "uscc": uscc(9), "list_name": "诚信企业",
        "recognition_basis": "张店区诚信企业评选办法", "recognising_unit": "张店区发展和改革局",
        "recognising_unit_uscc": numbered_uscc("11370303", 1), "listed_date": "2023-01-04",
        "valid_until": "2024-01-04", "status": "有效", "incentive_measures": "1",
        "source_unit": "张店区发展和改革局", "source_unit_uscc": numbered_uscc("11370303", 2),
    }  # fmt: skip
    today = rules.china_day(market.clock())
    record = catalog.validate_record("red_list", raw, today=today, catalog=market.catalogue).record
    assert record is not None
    header = {
        "item": "red_list",
        "catalog_version": market.catalogue.version,
        "record_key": "9" * 64,
        "version": 1,
        "producer": market.node_id,
        "issued_at": "2026-11-20T00:00:00Z",
        "subject": market.blind.token(record.subject_id),
    }
    signed = keys.sign_record(header, dict(record.fields), market.node_keys.signing)
    return NewRecord(
        row_id="row-red-9",
        producer=market.node_id,
        record_key="9" * 64,
        version=1,
        item_id="red_list",
        catalog_version=market.catalogue.version,
        subject_index=market.blind.token(record.subject_id),
        body=market.cipher.encrypt("row-red-9", signed.to_bytes()),
        content_hash="9" * 64,
        severity=None,
        decided_on=record.decided_on,
        disclosure_min_end=None,
        disclosure_max_end=None,
        disclosure_rule=NO_PERIOD,
        created_at=market.clock(),
    )


async def _delivered(client: NodeRuntime) -> list[tuple[str, bool, str]]:
    """(kind, carries its record, reason) of every event market's Subscribe sends `client`."""
    channel = client.channel("market")
    try:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        body = exchange_pb2.SubscribeBody(cursor=0, compact_records=True)
        signed = client.sign_request(feeds.SUBSCRIBE_METHOD, body.SerializeToString())
        call = stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed), timeout=10)
        out = []
        async for batch in call:
            _, payloads = keys.open_batch(
                batch.sealed,
                recipient_id=client.node_id,
                private_key=client.node_keys.encryption_private,
            )
            for payload in payloads:
                event = common_pb2.FeedEvent.FromString(payload)
                kind = common_pb2.EventKind.Name(event.kind)
                out.append((kind, event.HasField("record"), event.reason))
        return out
    finally:
        await channel.close()


def test_a_lapsed_entry_stops_being_fed_and_the_subscribers_copy_ends(tmp_path: Path) -> None:
    agreements = [
        {"provider": "market", "consumer": "platform", "items": ["red_list"],
         "purposes": ["feed"], "kind": "feed"},
    ]  # fmt: skip
    cluster = LocalCluster(
        tmp_path, [("market", "department"), ("platform", "platform")], agreements
    )
    cluster.init()
    market, platform = cluster.runtime("market"), cluster.runtime("platform")
    try:
        market.store.ensure_subscription("platform", ["red_list"], now=market.clock())
        market.store.store_batch([_legacy_red_list_entry(market)], now=market.clock())
        schedule_window_pass(market)  # as migration 0006 does for a store with such rows

        async def scenario() -> dict[str, Any]:
            async with serving(market):
                seen: dict[str, Any] = {"before": await _delivered(platform)}
                seen["first"] = await feeds.pull(platform, "market")
                seen["windows"] = window_refresh.refresh_windows(market)
                seen["after"] = await _delivered(platform)
                seen["scan"] = scheduler.scan(market)
                seen["second"] = await feeds.pull(platform, "market")
                return seen

        seen = asyncio.run(scenario())
        kinds = [e.kind for e in market.store.events_after("platform", 0)]
        copies = platform.store.record_versions("market", "9" * 64)
    finally:
        market.close()
        platform.close()
    upsert = "EVENT_KIND_UPSERT"
    assert seen["before"] == [(upsert, True, "")]  # the gap: a lapsed entry still fed
    assert seen["first"].stored == 1
    assert (seen["windows"].updated, seen["windows"].ended) == (1, 1)
    assert seen["after"] == [(upsert, False, "expired")]  # held back from the fix on
    assert seen["scan"].expired == 1
    # the expire event reaches the platform; its copy (this release computes the receiver's
    # own window) is expired whether the event or its own window ended it
    assert seen["second"].events == 1
    assert kinds == ["upsert", "expire"]
    assert [(r.version, r.state) for r in copies] == [(1, "expired")]


# ---------------------------------------------------------------- migration 0006


def _insert(conn: Any, row_id: str, **columns: Any) -> None:
    values = {
        "row_id": row_id, "producer": "p", "record_key": row_id * 8, "version": 1,
        "item_id": "admin_penalty", "catalog_version": "2026.1", "subject_index": "s",
        "body": b"\x00", "content_hash": "h", "state": "active", "severity": None,
        "decided_on": None, "disclosure_min_end": None, "disclosure_max_end": None,
        "disclosure_rule": NO_PERIOD, "objection": False,
        "created_at": INGESTED.replace(tzinfo=None), "origin": "local", "from_source": True,
    }  # fmt: skip
    values.update(columns)
    conn.execute(RECORDS.insert().values(**values))


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store database: SQLite, and PostgreSQL (skipped without a server, except in
    CI) so the data migration's SQL runs on both dialects the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'credex.db'}"
    url: str = request.getfixturevalue("throwaway_postgres")
    return url


def test_migration_0006_stores_the_windows_the_columns_decide(fresh_store_url: str) -> None:
    url = fresh_store_url
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    general = catalog.record_period("general", dt.date(2026, 5, 11))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        _insert(conn, "u1", decided_on=dt.date(2023, 2, 10))
        _insert(conn, "u2", decided_on=dt.date(2023, 11, 30), item_id="admin_penalty_person")
        _insert(conn, "u3", decided_on=dt.date(2024, 1, 5), origin="received")
        # left alone: not active (retention counts from the day it left), another item,
        # graded already, decided under 令第36号 without a grade (no lawful window)
        _insert(conn, "k1", decided_on=dt.date(2023, 2, 10), state="expired")
        _insert(conn, "k2", decided_on=dt.date(2023, 2, 10), item_id="red_list")
        _insert(
            conn, "k3", decided_on=dt.date(2026, 5, 11), severity="general",
            disclosure_min_end=general.min_end, disclosure_max_end=general.max_end,
            disclosure_rule=general.rule,
        )  # fmt: skip
        _insert(conn, "k4", decided_on=dt.date(2026, 5, 11))
        _insert(conn, "m1", decided_on=dt.date(2026, 5, 11), severity="minor")
        _insert(conn, "m2", decided_on=dt.date(2026, 5, 11), severity="minor", state="superseded")
    engine.dispose()
    shown_until = rules.china_day(dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)
    store = open_store(url, tagger=TEST_TAGGER)  # migrates to the newest revision
    try:
        with store.read("test") as conn:
            rows = {r.row_id: r for r in conn.execute(select(RECORDS))}
        for row_id, decided in (
            ("u1", (2023, 2, 10)),
            ("u2", (2023, 11, 30)),
            ("u3", (2024, 1, 5)),
        ):
            period = catalog.record_period("ungraded", dt.date(*decided))
            assert period.max_end is not None
            row = rows[row_id]
            # shown by the older release until the upgrade: an end already past is the day
            # before it (retention counts from the day it stopped being shown)
            max_end = max(period.max_end, shown_until)
            min_end = min(period.min_end, max_end) if period.min_end else None
            assert (row.severity, row.disclosure_min_end, row.disclosure_max_end) == (
                "ungraded", min_end, max_end,
            ), row_id  # fmt: skip
            assert row.disclosure_rule.startswith("令第58号")
            past = period.max_end < shown_until
            assert (
                row.disclosure_rule.endswith(f"shown until {shown_until} by an earlier release")
                == past
            )
        # Art. 202: a month without the day ends on its last day
        assert rows["u2"].disclosure_min_end == dt.date(2024, 2, 29)
        minor = rows["m1"]
        assert (minor.disclosure_min_end, minor.disclosure_max_end) == (dt.date(2026, 5, 11),) * 2
        assert catalog.never_disclosed(minor.decided_on, minor.disclosure_max_end)
        for row_id in ("k1", "k2", "k4", "m2"):
            assert rows[row_id].disclosure_max_end is None, row_id
            assert rows[row_id].severity in (None, "minor"), row_id
        assert rows["k3"].disclosure_rule == general.rule
        # the pass that needs the bodies is pending: the first scan runs it
        state = ls.maintenance_state(store, ls.WINDOWS_TASK)
        assert state is not None
        assert state.fingerprint == ""
        assert state.finished_at is None
    finally:
        store.close()
