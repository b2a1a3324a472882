"""Re-ingest respects the lifecycle (docs/lifecycle.md, "Re-ingest and the lifecycle"): an
unchanged export never undoes a correction, a withdrawn, expired or purged record never comes
back, and an open objection's flag carries over to a new version from the source."""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from node import lifecycle as rules
from node import lifecycle_ops as ops
from node.config import load_config
from node.ingest import IngestSummary, run_ingest
from node.runtime import NodeRuntime
from node.scheduler import scan
from node.store import NewRecord, StoreConflictError, open_store
from node.store import lifecycle as ls
from node.store.engine import MIGRATIONS_DIR, make_engine
from tests.node import test_lifecycle_ops as base
from tests.node.test_lifecycle_ops import COMMITMENT, HEADER, INGESTED, Clock, keys_of, kinds, row

# the node with four ingested penalties, and its hand-moved clock
runtime = base.runtime
clock = base.clock

EXPORT = [row(1), row(2), row(3, "严重"), row(4, "轻微")]


def reingest(rt: NodeRuntime, tmp_path: Path, rows: list[dict[str, str]]) -> IngestSummary:
    with (tmp_path / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return run_ingest(
        load_config(tmp_path / "market"),
        tmp_path / "penalties.toml",
        today=rt.clock().date(),
        clock=rt.clock,
        store=rt.store,
    )


def edited(i: int) -> dict[str, str]:
    changed = row(i)
    changed["事实"] += "（补充）"
    return changed


def states(rt: NodeRuntime, key: str) -> list[tuple[int, str, bool]]:
    return [(v.version, v.state, v.objection) for v in rt.store.record_versions("market", key)]


def fine(rt: NodeRuntime, key: str) -> str:
    newest = rt.store.record_versions("market", key)[-1]
    return ops.decrypt_record(rt, newest).fields["fine_wan_yuan"]


def test_ingested_versions_are_marked_from_the_source(runtime: NodeRuntime) -> None:
    key = keys_of(runtime)[0]
    assert [v.from_source for v in runtime.store.record_versions("market", key)] == [True]


def test_an_unchanged_export_does_not_undo_a_correction(
    runtime: NodeRuntime, clock: Clock, tmp_path: Path
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    ops.correct_record(runtime, key, {"fine_wan_yuan": "0.8"}, reason="更正决定")
    events = len(kinds(runtime, "platform"))
    clock.day(dt.date(2026, 6, 2))
    summary = reingest(runtime, tmp_path, EXPORT)
    assert (summary.accepted, summary.skipped_unchanged, summary.skipped_lifecycle) == (0, 4, 0)
    assert summary.warnings == ()
    assert summary.balanced
    assert states(runtime, key) == [(1, "superseded", False), (2, "active", False)]
    assert fine(runtime, key) == "0.8"
    assert len(kinds(runtime, "platform")) == events
    versions = runtime.store.record_versions("market", key)
    assert [v.from_source for v in versions] == [True, False]


def test_a_source_row_equal_to_the_correction_adds_no_version(
    runtime: NodeRuntime, clock: Clock, tmp_path: Path
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    ops.correct_record(runtime, key, {"fine_wan_yuan": "0.8"}, reason="更正决定")
    fixed = row(1)
    fixed["罚款"] = "8000"  # the department applied the correction in its own system
    clock.day(dt.date(2026, 6, 2))
    for _ in range(2):
        summary = reingest(runtime, tmp_path, [fixed, row(2), row(3, "严重")])
        assert (summary.accepted, summary.skipped_unchanged) == (0, 3)
    assert states(runtime, key) == [(1, "superseded", False), (2, "active", False)]


def test_a_changed_source_row_after_a_correction_is_a_new_version(
    runtime: NodeRuntime, clock: Clock, tmp_path: Path
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 6, 1))
    ops.correct_record(runtime, key, {"fine_wan_yuan": "0.8"}, reason="更正决定")
    clock.day(dt.date(2026, 6, 2))
    summary = reingest(runtime, tmp_path, [edited(1), row(2), row(3, "严重")])
    assert (summary.accepted, summary.corrected, summary.skipped_unchanged) == (1, 1, 2)
    assert states(runtime, key) == [
        (1, "superseded", False),
        (2, "superseded", False),
        (3, "active", False),
    ]
    assert fine(runtime, key) == "0.5"  # the department's data wins; docs/lifecycle.md
    assert kinds(runtime, "platform")[-1] == "correct"
    assert reingest(runtime, tmp_path, [edited(1)]).skipped_unchanged == 1  # stable


@pytest.mark.parametrize("how", ["repair", "revocation"])
def test_a_withdrawn_record_is_kept_withdrawn(
    runtime: NodeRuntime, clock: Clock, tmp_path: Path, how: str
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 8, 12))
    if how == "repair":
        ops.repair_record(runtime, key, rules.RepairApplication(True, COMMITMENT))
    else:
        ops.revoke_record(runtime, key, reason="处罚决定撤销")
    events = kinds(runtime, "platform")
    subject = runtime.store.record_versions("market", key)[0].subject_index
    clock.day(dt.date(2026, 8, 13))
    unchanged = reingest(runtime, tmp_path, EXPORT)
    assert (unchanged.accepted, unchanged.skipped_unchanged) == (0, 4)
    summary = reingest(runtime, tmp_path, [edited(1), row(2), row(3, "严重")])
    assert (summary.accepted, summary.skipped_unchanged, summary.skipped_lifecycle) == (0, 2, 1)
    assert summary.rejected == 0  # not bad data
    assert summary.balanced
    assert any("kept withdrawn by lifecycle" in w for w in summary.warnings)
    assert summary.to_dict()["skipped_lifecycle"] == 1
    assert states(runtime, key) == [(1, "withdrawn", False)]
    assert runtime.store.records_by_subject(subject) == []
    assert kinds(runtime, "platform") == events


def test_an_expired_record_is_not_brought_back(
    runtime: NodeRuntime, clock: Clock, tmp_path: Path
) -> None:
    general = keys_of(runtime)[0]
    clock.day(dt.date(2027, 5, 12))
    assert scan(runtime).expired >= 1
    assert states(runtime, general) == [(1, "expired", False)]
    summary = reingest(runtime, tmp_path, [edited(1)])
    assert (summary.accepted, summary.skipped_lifecycle) == (0, 1)
    assert states(runtime, general) == [(1, "expired", False)]


def test_an_open_objection_carries_over_to_a_new_version(
    runtime: NodeRuntime, clock: Clock, tmp_path: Path
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 9, 30))
    objection = ops.object_record(runtime, key, reason="disputed")
    assert objection.task_id is not None
    summary = reingest(runtime, tmp_path, [edited(1)])
    assert summary.corrected == 1
    assert states(runtime, key) == [(1, "superseded", True), (2, "active", True)]
    newest = runtime.store.record_versions("market", key)[-1]
    info = ls.get_objection(runtime.store, objection.task_id)
    assert (info.closed_at, info.record_row_id) == (None, newest.row_id)
    # confirming it clears the flag of the version now current
    ops.resolve_objection(runtime, objection.task_id, outcome="confirm")
    assert states(runtime, key)[-1] == (2, "active", False)
    assert kinds(runtime, "platform")[-1] == "objection_cleared"


def test_a_lifecycle_correction_still_clears_the_objection_it_answers(
    runtime: NodeRuntime, clock: Clock
) -> None:
    key = keys_of(runtime)[0]
    clock.day(dt.date(2026, 9, 30))
    objection = ops.object_record(runtime, key, reason="disputed")
    assert objection.task_id is not None
    ops.resolve_objection(
        runtime, objection.task_id, outcome="correct", changes={"fine_wan_yuan": "0.8"}
    )
    assert states(runtime, key)[-1] == (2, "active", False)


def _version(rt: NodeRuntime, key: str, version: int) -> NewRecord:
    old = rt.store.record_versions("market", key)[-1]
    row_id = str(uuid.uuid4())
    return NewRecord(
        row_id=row_id,
        producer="market",
        record_key=key,
        version=version,
        item_id=old.item_id,
        catalog_version=old.catalog_version,
        subject_index=old.subject_index,
        body=rt.cipher.encrypt(row_id, b"{}"),
        content_hash="9" * 64,
        severity=old.severity,
        decided_on=old.decided_on,
        disclosure_min_end=old.disclosure_min_end,
        disclosure_max_end=old.disclosure_max_end,
        disclosure_rule=old.disclosure_rule,
        created_at=rt.clock(),
    )


def test_a_withdrawal_racing_an_ingest_batch_wins(runtime: NodeRuntime, clock: Clock) -> None:
    """Ingest planned version 2 while the record was active; a repair committed first."""
    key = keys_of(runtime)[0]
    planned = _version(runtime, key, 2)
    clock.day(dt.date(2026, 8, 12))
    ops.repair_record(runtime, key, rules.RepairApplication(True, COMMITMENT))
    before = runtime.store.load_ingest_state("src")
    with pytest.raises(StoreConflictError, match="run the ingest again"):
        runtime.store.store_batch(
            [planned], now=clock(), ingest_state=("src", {"at": 1}), from_source=True
        )
    assert states(runtime, key) == [(1, "withdrawn", False)]
    assert runtime.store.load_ingest_state("src") == before  # nothing of the batch committed


def test_migration_0005_marks_earlier_versions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credex.db'}"
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    stamp = INGESTED.replace(tzinfo=None)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
        for version, origin, row_id in (
            (1, "local", "r1"),
            (2, "local", "r2"),
            (1, "received", "r3"),
        ):
            conn.exec_driver_sql(
                "INSERT INTO records (row_id, producer, record_key, version, item_id, "
                "catalog_version, subject_index, body, content_hash, state, disclosure_rule, "
                "objection, created_at, origin) VALUES (?, 'p', ?, ?, 'i', '1', 's', x'00', "
                "'h', 'active', 'x', 0, ?, ?)",
                (row_id, "k" if origin == "local" else "q", version, stamp, origin),
            )
        conn.exec_driver_sql(
            "INSERT INTO lifecycle_tasks (task_id, kind, record_key, opened_at, due_on, "
            "approximate_due, closed_at, outcome) VALUES ('cor-1', 'correction', 'k', ?, "
            "'2026-05-20', 0, ?, 'version 2: 更正决定')",
            (stamp, stamp),
        )
    engine.dispose()
    store = open_store(url)  # read only: no tagger, so no check of the untagged rows
    try:
        marks = [(r.row_id, r.from_source) for r in store.record_versions("p", "k")]
        assert marks == [("r1", True), ("r2", False)]
        assert [r.from_source for r in store.record_versions("p", "q")] == [False]
    finally:
        store.close()
