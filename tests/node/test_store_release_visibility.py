"""Release candidates carry what `node.lifecycle.visible` judges on, so the query path holds
back a record past its disclosure end (or the Shandong cap) before the scan marks it expired."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.lifecycle import visible
from node.store import NewRecord, ReleaseCandidate, Store, open_store
from tests.node.store_support import TEST_TAGGER

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
TODAY = dt.date(2026, 11, 25)
SUBJECT = "s" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'credex.db'}", tagger=TEST_TAGGER)
    yield opened
    opened.close()


def rec(
    key: str, *, severity: str | None, decided_on: dt.date | None, max_end: dt.date | None
) -> NewRecord:
    return NewRecord(
        row_id=str(uuid.uuid4()),
        producer="market",
        record_key=key,
        version=1,
        item_id="admin_penalty",
        catalog_version="2026.1",
        subject_index=SUBJECT,
        body=b"\x00ciphertext" + key.encode(),
        content_hash=key,
        severity=severity,
        decided_on=decided_on,
        disclosure_min_end=None,
        disclosure_max_end=max_end,
        disclosure_rule="test",
        created_at=NOW,
    )


def _visible(candidate: ReleaseCandidate, today: dt.date) -> bool:
    return visible(
        state=candidate.state,
        severity=candidate.severity,
        decided_on=candidate.decided_on,
        disclosure_max_end=candidate.disclosure_max_end,
        today=today,
    )


def test_candidates_carry_the_dates_visibility_needs(store: Store) -> None:
    records = [
        rec("last-day", severity="general", decided_on=dt.date(2026, 5, 11), max_end=TODAY),
        rec(
            "ended",
            severity="general",
            decided_on=dt.date(2026, 5, 11),
            max_end=TODAY - dt.timedelta(days=1),
        ),
        # imported with no period, but a dishonesty record decided over five years ago
        rec("past-cap", severity="serious", decided_on=dt.date(2021, 11, 24), max_end=None),
        rec("no-period", severity=None, decided_on=None, max_end=None),
    ]
    store.store_batch(records, now=NOW)
    candidates = store.release_candidates(SUBJECT, producer="market", states=("active",))
    got = {c.record_key: c for c in candidates}
    assert {k: c.state for k, c in got.items()} == dict.fromkeys(got, "active")
    ended = got["ended"]
    assert (ended.severity, ended.decided_on, ended.disclosure_max_end) == (
        "general",
        dt.date(2026, 5, 11),
        TODAY - dt.timedelta(days=1),
    )
    assert got["no-period"].decided_on is None
    assert {k: _visible(c, TODAY) for k, c in got.items()} == {
        "last-day": True,
        "ended": False,
        "past-cap": False,
        "no-period": True,
    }
