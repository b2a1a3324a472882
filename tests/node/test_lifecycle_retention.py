"""Retention and purge: the configured retention, records stored without an end date, withheld
minor records without a window, and the holiday file checked at config load."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli import app
from node.cli.init_cmds import init_node
from node.config import CONFIG_FILE, load_config
from node.errors import ConfigError
from node.runtime import NodeRuntime, open_runtime
from node.scheduler import scan
from node.store import NewRecord
from node.store import lifecycle as ls

INIT = dt.datetime(2026, 5, 20, 2, 0, tzinfo=dt.UTC)
# 2026-11-26 10:00 in China
NOW = dt.datetime(2026, 11, 26, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    node = tmp_path / "market"
    init_node(node, name="market", role="department", now=INIT)
    return node


def _set_retention(home: Path, months: int) -> None:
    path = home / CONFIG_FILE
    text = path.read_text(encoding="utf-8")
    assert "retention_months = 60\n" in text
    path.write_text(
        text.replace("retention_months = 60\n", f"retention_months = {months}\n"),
        encoding="utf-8",
    )


def _runtime(home: Path, now: dt.datetime = NOW) -> NodeRuntime:
    return open_runtime(home, clock=lambda: now)


@pytest.fixture
def runtime(home: Path) -> Iterator[NodeRuntime]:
    rt = _runtime(home)
    try:
        yield rt
    finally:
        rt.close()


def put(
    rt: NodeRuntime,
    *,
    key: str,
    severity: str | None,
    decided_on: dt.date,
    max_end: dt.date | None,
    version: int = 1,
    created_at: dt.datetime = INIT,
) -> str:
    row_id = str(uuid.uuid4())
    rt.store.store_batch(
        [
            NewRecord(
                row_id=row_id, producer="market", record_key=key, version=version,
                item_id="admin_penalty", catalog_version="2026.1", subject_index="cd" * 16,
                body=rt.cipher.encrypt(row_id, b"sealed"), content_hash=f"{version:064d}",
                severity=severity, decided_on=decided_on, disclosure_min_end=None,
                disclosure_max_end=max_end, disclosure_rule="legacy", created_at=created_at,
            )
        ],
        now=created_at,
    )  # fmt: skip
    return row_id


def state(home: Path, row_id: str) -> str:
    rt = _runtime(home)
    try:
        return rt.store.get_record(row_id).state
    finally:
        rt.close()


# ------------------------------------------------------------ 1. configured retention


def _scan_cli(home: Path, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["lifecycle", "scan", "--home", str(home), "--json", *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_cli_scan_keeps_records_for_the_configured_retention(home: Path) -> None:
    _set_retention(home, 120)
    rt = _runtime(home)
    try:
        row = put(
            rt, key="d" * 64, severity="general", decided_on=dt.date(2018, 1, 2),
            max_end=dt.date(2019, 1, 2),
        )  # fmt: skip
    finally:
        rt.close()
    # kept until 2029-01-02 with 120 months: the CLI must not fall back to 60
    assert _scan_cli(home)["purged"] == 0
    assert state(home, row) == "expired"
    # the option overrides the configuration for one run
    assert _scan_cli(home, "--retention-months", "60")["purged"] == 1
    assert state(home, row) == "purged"


def test_scan_without_a_retention_reads_the_config(home: Path) -> None:
    _set_retention(home, 120)
    rt = _runtime(home)
    try:
        assert rt.config.lifecycle.retention_months == 120
        row = put(
            rt, key="d" * 64, severity="general", decided_on=dt.date(2018, 1, 2),
            max_end=dt.date(2019, 1, 2),
        )  # fmt: skip
        assert scan(rt).purged == 0  # what `credex serve` (run_scans) calls
        assert rt.store.get_record(row).state == "expired"
    finally:
        rt.close()
    later = _runtime(home, dt.datetime(2029, 1, 3, 2, 0, tzinfo=dt.UTC))
    try:
        assert scan(later).purged == 1  # from the day after 2029-01-02
    finally:
        later.close()


# ------------------------------------------------------------ 2. no stored end date


def test_a_capped_legacy_record_without_an_end_is_purged_after_retention(home: Path) -> None:
    rt = _runtime(home)
    try:
        rt.store.ensure_subscription("platform", ["admin_penalty"], now=INIT)
        row = put(
            rt, key="e" * 64, severity="severe", decided_on=dt.date(2018, 1, 10), max_end=None
        )
        report = scan(rt)
        assert (report.capped, report.purged) == (1, 0)
        assert rt.store.get_record(row).state == "expired"
    finally:
        rt.close()
    # expired (expire event) on 2026-11-26: kept 60 months, to 2031-11-26 inclusive
    on_last_day = _runtime(home, dt.datetime(2031, 11, 26, 2, 0, tzinfo=dt.UTC))
    try:
        assert scan(on_last_day).purged == 0
    finally:
        on_last_day.close()
    after = _runtime(home, dt.datetime(2031, 11, 27, 2, 0, tzinfo=dt.UTC))
    try:
        assert scan(after).purged == 1
        assert after.store.get_record(row).body == b""
    finally:
        after.close()


def test_without_any_event_the_cap_end_starts_the_retention(runtime: NodeRuntime) -> None:
    # no subscriber, so no expire event: disclosure ended at decided_on + 5 years at the latest
    old = put(
        runtime, key="1" * 64, severity="severe", decided_on=dt.date(2015, 1, 10), max_end=None
    )
    recent = put(
        runtime, key="2" * 64, severity="severe", decided_on=dt.date(2017, 1, 10), max_end=None
    )
    for row in (old, recent):
        runtime.store.set_record_state(row, "expired", event_kind=None, now=INIT)
    # 2015-01-10 + 5 y = 2020-01-10, + 60 months = 2025-01-10 < today; 2017 -> 2027-01-10
    assert [r.row_id for r in ls.records_due_for_purge(runtime.store, dt.date(2021, 11, 26))] == [
        old
    ]
    assert scan(runtime).purged == 1
    assert runtime.store.get_record(old).state == "purged"
    assert runtime.store.get_record(recent).state == "expired"


def test_a_withdrawn_record_without_an_end_is_purged_after_retention(home: Path) -> None:
    rt = _runtime(home)
    try:
        row = put(rt, key="f" * 64, severity=None, decided_on=dt.date(2025, 3, 1), max_end=None)
        record = rt.store.get_record(row)
        # no subscriber: the withdrawal leaves only its task, opened 2026-11-26
        assert ls.withdraw_record(
            rt.store, record, task_id="rev-1", kind="revocation", now=NOW,
            due_on=dt.date(2026, 12, 1), approximate=False, outcome="x", close=True,
        ) == 0  # fmt: skip
        assert scan(rt).purged == 0
    finally:
        rt.close()
    on_last_day = _runtime(home, dt.datetime(2031, 11, 26, 2, 0, tzinfo=dt.UTC))
    try:
        assert scan(on_last_day).purged == 0
    finally:
        on_last_day.close()
    after = _runtime(home, dt.datetime(2031, 11, 27, 2, 0, tzinfo=dt.UTC))
    try:
        assert scan(after).purged == 1
        assert after.store.get_record(row).state == "purged"
    finally:
        after.close()


def test_a_superseded_version_without_an_end_follows_its_purged_record(
    runtime: NodeRuntime,
) -> None:
    key = "3" * 64
    decided = dt.date(2015, 1, 10)
    v1 = put(runtime, key=key, severity="severe", decided_on=decided, max_end=None)
    v2 = put(runtime, key=key, severity="severe", decided_on=decided, max_end=None, version=2)
    assert runtime.store.get_record(v1).state == "superseded"
    runtime.store.set_record_state(v2, "expired", event_kind=None, now=INIT)
    assert scan(runtime).purged == 2
    assert {runtime.store.get_record(r).state for r in (v1, v2)} == {"purged"}


def test_a_record_without_an_end_and_any_date_of_leaving_is_kept(runtime: NodeRuntime) -> None:
    row = put(runtime, key="4" * 64, severity=None, decided_on=dt.date(2010, 1, 1), max_end=None)
    runtime.store.set_record_state(row, "withdrawn", event_kind=None, now=INIT)
    assert scan(runtime).purged == 0


# ------------------------------------------------------------ 3. withheld minor, no window


def test_a_minor_record_stored_without_a_window_is_expired_by_the_scan(
    runtime: NodeRuntime,
) -> None:
    runtime.store.ensure_subscription("platform", ["admin_penalty"], now=INIT)
    withheld = put(
        runtime, key="5" * 64, severity="minor", decided_on=dt.date(2026, 5, 11), max_end=None
    )
    before_36 = put(
        runtime, key="6" * 64, severity="minor", decided_on=dt.date(2026, 3, 11), max_end=None
    )
    report = scan(runtime)
    assert report.expired == 1
    assert runtime.store.get_record(withheld).state == "expired"
    assert runtime.store.get_record(before_36).state == "active"  # 令第58号: not withheld
    kinds = [(e.kind, e.record_row_id) for e in runtime.store.events_after("platform", 0)]
    assert ("expire", withheld) in kinds
    assert scan(runtime).expired == 0  # idempotent


# ------------------------------------------------------------ 4. holiday file at load


def _set_holiday_file(home: Path, name: str) -> None:
    path = home / CONFIG_FILE
    text = path.read_text(encoding="utf-8")
    assert '# holiday_file = "holidays.toml"' in text  # the template asks for TOML
    path.write_text(
        text.replace('# holiday_file = "holidays.toml"', f'holiday_file = "{name}"'),
        encoding="utf-8",
    )


def test_a_json_holiday_file_is_refused_at_config_load(home: Path) -> None:
    (home / "holidays.json").write_text(
        json.dumps({"2027": {"holidays": ["2027-01-01"], "workdays": []}}), encoding="utf-8"
    )
    _set_holiday_file(home, "holidays.json")
    with pytest.raises(ConfigError) as info:
        load_config(home)
    assert "[lifecycle] holiday_file" in str(info.value)
    assert "holidays.json" in str(info.value)


def test_a_toml_holiday_file_loads(home: Path) -> None:
    (home / "holidays.toml").write_text(
        '["2027"]\nholidays = [2027-01-01]\nworkdays = []\n', encoding="utf-8"
    )
    _set_holiday_file(home, "holidays.toml")
    assert load_config(home).lifecycle.holiday_file == (home / "holidays.toml").resolve()


def test_a_missing_holiday_file_is_refused_at_config_load(home: Path) -> None:
    _set_holiday_file(home, "nowhere.toml")
    with pytest.raises(ConfigError, match=r"holiday_file.*nowhere\.toml"):
        load_config(home)
