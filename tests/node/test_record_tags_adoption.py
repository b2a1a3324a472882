"""Adoption of the rows an older release wrote without a tag (node.record_tags, decision
0018), on SQLite and PostgreSQL: once, recorded in the store and the access log, and never
again, whatever an insider does to the marker afterwards."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, select, update

import keys
from node.accesslog import AccessLog
from node.record_tags import ADOPTION_REASON, ensure_adopted
from node.store import SqlLogBackend, Store, make_engine, open_store
from node.store.engine import MIGRATIONS_DIR
from node.store.errors import RecordTampered
from node.store.integrity import TAGS_TASK, check_record_tags, marker_state
from node.store.lifecycle import MAINTENANCE
from node.store.store import RECORDS
from tests.node.store_support import TEST_TAGGER

NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
NODE = "node-a"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, unmigrated store database (PostgreSQL: the module's throwaway one, emptied
    of its schema by the previous test's downgrade)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'credex.db'}"
    url: str = request.getfixturevalue("throwaway_postgres")
    return url


def _alembic(url: str, target: str, *, down: bool = False) -> None:
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, target)
    engine.dispose()


def _legacy_row(row_id: str, **over: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "row_id": row_id, "producer": NODE, "record_key": row_id * 4, "version": 1,
        "item_id": "admin_penalty", "catalog_version": "2026.1", "subject_index": "s" * 32,
        "body": b"\x01" + row_id.encode(), "content_hash": "h", "state": "active",
        "severity": "general", "decided_on": dt.date(2026, 5, 1),
        "disclosure_min_end": dt.date(2026, 8, 1), "disclosure_max_end": dt.date(2027, 5, 1),
        "disclosure_rule": "rule", "objection": False,
        "created_at": NOW.replace(tzinfo=None), "origin": "local", "from_source": True,
    }  # fmt: skip
    values.update(over)
    return values


@pytest.fixture
def upgraded(fresh_url: str) -> Iterator[Store]:
    """A store an older release (schema 0007) filled with three rows, upgraded to this one,
    opened with the node's tagger: adoption pending."""
    _alembic(fresh_url, "0007")
    engine = make_engine(fresh_url)
    with engine.begin() as conn:
        for row_id in ("u1", "u2", "u3"):
            conn.execute(
                RECORDS.insert().values(
                    **{k: v for k, v in _legacy_row(row_id).items() if k != "tag"}
                )
            )
    engine.dispose()
    store = open_store(fresh_url, tagger=TEST_TAGGER)
    try:
        yield store
    finally:
        store.close()
        if fresh_url.startswith("postgresql"):
            _alembic(fresh_url, "base", down=True)  # the next test starts from nothing


def _log(store: Store) -> AccessLog:
    return AccessLog(
        SqlLogBackend(store, clock=lambda: NOW),
        origin="credex.test/node-a",
        signer=keys.Signer(bytes(range(32))),
        key_name=NODE,
        clock=lambda: NOW,
    )


def _adopt(store: Store) -> str:
    return ensure_adopted(store, lambda: _log(store), node_id=NODE, now=NOW)


def _entries(store: Store) -> list[dict[str, Any]]:
    backend = SqlLogBackend(store)
    return [json.loads(leaf) for _index, leaf, _hash in backend.leaves(0, backend.size())]


def test_a_new_store_has_nothing_to_adopt(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'credex.db'}", tagger=TEST_TAGGER)
    try:
        assert marker_state(store) == "adopted"
        assert _adopt(store) == "done"
        assert _entries(store) == []
    finally:
        store.close()


def test_rows_of_an_older_release_are_adopted_once_and_logged(upgraded: Store) -> None:
    assert marker_state(upgraded) == "pending"
    with pytest.raises(RecordTampered, match="u1"):  # not adopted yet: nothing decides on it
        upgraded.get_record("u1")
    assert _adopt(upgraded) == "adopted"
    assert marker_state(upgraded) == "adopted"
    report = check_record_tags(upgraded)
    assert (report.checked, report.bad, report.marker) == (3, (), "adopted")
    assert upgraded.get_record("u1").state == "active"
    (entry,) = _entries(upgraded)
    assert (entry["kind"], entry["reason"], entry["result_count"]) == (
        "admin_read",
        ADOPTION_REASON,
        3,
    )
    assert _adopt(upgraded) == "done"  # once
    assert len(_entries(upgraded)) == 1


def _edit(store: Store, row_id: str, **values: Any) -> None:
    with store.write("test: an insider's edit") as conn:
        conn.execute(update(RECORDS).where(RECORDS.c.row_id == row_id).values(**values))


def test_a_tag_nulled_after_adoption_is_tampering_not_a_new_adoption(upgraded: Store) -> None:
    _adopt(upgraded)
    _edit(upgraded, "u2", state="active", objection=False, tag=None)
    assert _adopt(upgraded) == "done"
    assert check_record_tags(upgraded).bad == ("u2",)
    with pytest.raises(RecordTampered, match="u2"):
        upgraded.get_record("u2")


def test_a_marker_reset_to_pending_gets_nothing_adopted(
    upgraded: Store, caplog: pytest.LogCaptureFixture
) -> None:
    _adopt(upgraded)
    _edit(upgraded, "u2", disclosure_max_end=dt.date(2040, 1, 1), tag=None)
    with upgraded.write("test: reset the marker") as conn:
        conn.execute(
            update(MAINTENANCE).where(MAINTENANCE.c.task == TAGS_TASK).values(finished_at=None)
        )
    assert _adopt(upgraded) == "refused"
    assert "already records one" in caplog.text
    assert check_record_tags(upgraded).bad == ("u2",)
    assert len(_entries(upgraded)) == 1  # no second adoption entry


def test_a_deleted_marker_gets_nothing_adopted(upgraded: Store) -> None:
    _adopt(upgraded)
    _edit(upgraded, "u3", state="active", tag=None)
    with upgraded.write("test: delete the marker") as conn:
        conn.execute(delete(MAINTENANCE).where(MAINTENANCE.c.task == TAGS_TASK))
    assert _adopt(upgraded) == "refused"
    report = check_record_tags(upgraded)
    assert (report.bad, report.marker) == (("u3",), "missing")


def test_a_marker_deleted_before_adoption_adopts_nothing(upgraded: Store) -> None:
    with upgraded.write("test: delete the marker") as conn:
        conn.execute(delete(MAINTENANCE).where(MAINTENANCE.c.task == TAGS_TASK))
    assert _adopt(upgraded) == "refused"
    assert check_record_tags(upgraded).bad == ("u1", "u2", "u3")


def test_an_adoption_that_cannot_be_logged_tags_nothing(
    upgraded: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.errors import LogUnavailable  # noqa: PLC0415

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise LogUnavailable("test: the log is down")

    monkeypatch.setattr(AccessLog, "append_with", broken)
    with pytest.raises(LogUnavailable):
        _adopt(upgraded)
    assert marker_state(upgraded) == "pending"
    with upgraded.read("test: tags") as conn:
        assert conn.execute(select(RECORDS.c.tag)).scalars().all() == [None, None, None]
