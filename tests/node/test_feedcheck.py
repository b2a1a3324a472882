"""Checking received feed records (node.feedcheck), in-process and in spawned workers.

The outcomes must not depend on where they were computed, a bad record must be an outcome in
its place (never an exception that hides which one), and the workers must neither outlive the
node process nor turn a crash into lost or unchecked records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import adapters
import catalog
import keys
from node import feedcheck
from node.demo_data import numbered_uscc
from node.feedcheck import CheckedRecord, RecordChecker, Refused, check_records
from tests.catalog.catalog_testdata import COMPANY_USCC, TODAY, penalty_org

CATALOGUE = catalog.default_catalog()
PRODUCER = keys.Signer.generate()
TRUSTED = {PRODUCER.keyid: PRODUCER.public_key}


def _header(i: int) -> dict[str, object]:
    return {
        "item": "admin_penalty",
        "catalog_version": CATALOGUE.version,
        "record_key": f"{i:064x}",
        "version": 1,
        "producer": "market",
        "issued_at": "2026-11-25T00:00:00Z",
        "subject": f"{i:032x}",
    }


def _signed(i: int, **changes: str | None) -> keys.SignedRecord:
    header = _header(i)
    row = penalty_org(decision_no=f"张市监罚〔2026〕{i}号", **changes)
    fields = {k: v for k, v in row.items() if v is not None}
    return keys.sign_record(header, fields, PRODUCER)


def _red_list_entry(i: int, valid_until: str) -> keys.SignedRecord:
    """A red-list entry: re-validation gives it a `disclosure_end` (its 有效期至)."""
    header = {**_header(i), "item": "red_list"}
    fields = {
        "subject_name": f"淄博张店某某商贸有限公司{i}",
        "subject_category": "法人及非法人组织",
        "legal_rep_name": "王某某",
        "uscc": numbered_uscc("91370303", 3000 + i),
        "list_name": "诚信企业",
        "recognition_basis": "张店区诚信企业评选办法",
        "recognising_unit": "张店区发展和改革局",
        "recognising_unit_uscc": numbered_uscc("11370303", 1),
        "listed_date": "2023-01-04",
        "valid_until": valid_until,
        "status": "有效",
        "incentive_measures": "1",
        "source_unit": "张店区发展和改革局",
        "source_unit_uscc": numbered_uscc("11370303", 2),
    }
    return keys.sign_record(header, fields, PRODUCER)


def _tampered(i: int) -> bytes:
    signed = _signed(i)
    changed = dict(signed.disclosures)
    salt, _ = changed["fine_wan_yuan"]
    changed["fine_wan_yuan"] = (salt, "0.1")
    return keys.SignedRecord(signed.envelope, changed).to_bytes()


def _mixed() -> list[bytes]:
    """Good records with every kind of refusal among them, at known places."""
    bodies = [_signed(i).to_bytes() for i in range(12)]
    bodies[3] = _tampered(3)
    bodies[5] = b"CXR1 not a record"
    # signed with a key the subscriber does not trust
    bodies[8] = keys.sign_record(
        _header(8), {"decision_no": "x"}, keys.Signer.generate()
    ).to_bytes()
    bodies[10] = _signed(10).minimise(["decision_no", "uscc"]).to_bytes()
    bodies[11] = _signed(11, uscc="91350100M000100Y44").to_bytes()  # bad check character
    return bodies


def test_each_record_gets_its_outcome_in_its_place() -> None:
    bodies = _mixed()
    outcomes = check_records(bodies, trusted=TRUSTED, today=TODAY, catalogue=CATALOGUE)
    assert len(outcomes) == len(bodies)
    assert outcomes[3] == Refused("verification", "record disclosure does not verify")
    assert outcomes[5] == Refused(
        "input", "credex.v1.Record: signed_record is not a compact record"
    )
    assert isinstance(outcomes[8], Refused)
    assert outcomes[8].kind == "verification"
    good = outcomes[0]
    assert isinstance(good, CheckedRecord)
    verified = keys.verify_record(keys.SignedRecord.from_bytes(bodies[0]), trusted=TRUSTED)
    assert good.header == verified.header
    assert good.signer_keyid == PRODUCER.keyid
    assert good.content_hash == adapters.content_hash(dict(verified.fields))
    assert good.subject_id == COMPANY_USCC
    assert good.severity is not None
    assert good.decided_on is not None
    assert good.decided_on.isoformat() == "2026-05-11"
    # verified, but not re-validated here: a minimised copy, and fields our catalogue refuses
    for i in (10, 11):
        outcome = outcomes[i]
        assert isinstance(outcome, CheckedRecord)
        assert (outcome.subject_id, outcome.linked_subject_ids) == (None, ())
        assert (outcome.severity, outcome.decided_on) == (None, None)


def test_workers_give_the_outcomes_checked_in_process() -> None:
    bodies = _mixed() * 30  # several tasks per worker
    checker = RecordChecker(CATALOGUE, workers=2, min_pool_batch=1)
    try:
        pooled = checker.check(bodies, trusted=TRUSTED, today=TODAY)
        assert len(multiprocessing.active_children()) == 2
    finally:
        checker.close()
    assert pooled == check_records(bodies, trusted=TRUSTED, today=TODAY, catalogue=CATALOGUE)
    assert multiprocessing.active_children() == []


def test_workers_keep_every_field_of_a_checked_record() -> None:
    # The conduct end (Shandong 5-year cap) and a red-list validity end decide how long a
    # received copy is shown: a worker must hand them back like every other field.
    bodies = [_signed(i, conduct_end_date="2022-01-10").to_bytes() for i in range(3)]
    bodies += [_red_list_entry(i, "2027-12-31").to_bytes() for i in range(3, 6)]
    in_process = check_records(bodies, trusted=TRUSTED, today=TODAY, catalogue=CATALOGUE)
    checker = RecordChecker(CATALOGUE, workers=2, min_pool_batch=1)
    try:
        pooled = checker.check(bodies, trusted=TRUSTED, today=TODAY)
    finally:
        checker.close()
    assert pooled == in_process
    conduct, red = in_process[0], in_process[3]
    assert isinstance(conduct, CheckedRecord)
    assert isinstance(red, CheckedRecord)
    assert conduct.conduct_ended_on == dt.date(2022, 1, 10)
    assert red.disclosure_end == dt.date(2027, 12, 31)


def test_the_worker_wire_form_carries_every_field() -> None:
    # Not one field may fall back to its default on the way back from a worker, including
    # fields added to CheckedRecord later: give each a value no default has, and compare.
    values: dict[str, object] = {}
    for i, field in enumerate(dataclasses.fields(CheckedRecord)):
        values[field.name] = f"value-{i}"
    values["header"] = {"item": "admin_penalty"}
    values["linked_subject_ids"] = ("a", "b")
    values["decided_on"] = dt.date(2026, 1, 2)
    outcome = CheckedRecord(**values)  # type: ignore[arg-type]
    back = feedcheck._from_wire(feedcheck._to_wire(outcome))
    assert back == outcome
    assert all(getattr(back, name) == value for name, value in values.items())


def test_small_batches_and_one_worker_stay_in_process() -> None:
    bodies = _mixed()
    for checker in (
        RecordChecker(CATALOGUE, workers=2, min_pool_batch=len(bodies) + 1),
        RecordChecker(CATALOGUE, workers=1, min_pool_batch=1),
    ):
        try:
            outcomes = checker.check(bodies, trusted=TRUSTED, today=TODAY)
            assert multiprocessing.active_children() == []
        finally:
            checker.close()
        assert outcomes == check_records(bodies, trusted=TRUSTED, today=TODAY, catalogue=CATALOGUE)
    with pytest.raises(ValueError, match="workers"):
        RecordChecker(CATALOGUE, workers=0)


def test_a_killed_worker_costs_speed_not_records(caplog: pytest.LogCaptureFixture) -> None:
    bodies = _mixed() * 10
    expected = check_records(bodies, trusted=TRUSTED, today=TODAY, catalogue=CATALOGUE)
    checker = RecordChecker(CATALOGUE, workers=2, min_pool_batch=1)
    try:
        assert checker.check(bodies, trusted=TRUSTED, today=TODAY) == expected
        victim = multiprocessing.active_children()[0]
        os.kill(victim.pid or 0, signal.SIGKILL)
        victim.join(10)
        with caplog.at_level(logging.WARNING, logger="node.feedcheck"):
            assert checker.check(bodies, trusted=TRUSTED, today=TODAY) == expected
            assert checker.check(bodies, trusted=TRUSTED, today=TODAY) == expected
        warnings = [r for r in caplog.records if "feed-check workers" in r.getMessage()]
        assert len(warnings) == 1  # once, then checked in-process without respawning
    finally:
        checker.close()
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []


_PARENT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    sys.path.insert(0, sys.argv[1])
    import catalog
    from node.feedcheck import RecordChecker

    if __name__ == "__main__":
        checker = RecordChecker(catalog.default_catalog(), workers=2, min_pool_batch=1)
        checker.check([b"x"] * 4, trusted={}, today=__import__("datetime").date(2026, 11, 25))
        print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
        time.sleep(120)
    """
)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to see the workers")
def test_workers_leave_when_the_node_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT, encoding="utf-8")
    root = str(Path(__file__).resolve().parents[2])
    with subprocess.Popen(
        [sys.executable, str(script), root],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            pids = [int(p) for p in parent.stdout.readline().split()]
            assert len(pids) == 2
            assert all(_running(p) for p in pids)
        finally:
            parent.kill()
            parent.wait(10)
    deadline = time.monotonic() + 15
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in pids), "feed-check workers outlived their parent"


def test_a_batch_checked_while_the_pool_closes_is_still_checked() -> None:
    bodies = _mixed() * 40
    expected = check_records(bodies, trusted=TRUSTED, today=TODAY, catalogue=CATALOGUE)
    checker = RecordChecker(CATALOGUE, workers=2, min_pool_batch=1)
    checker.check(bodies[:2], trusted=TRUSTED, today=TODAY)  # the workers are up
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.append(checker.check(bodies, trusted=TRUSTED, today=TODAY))
    )
    worker.start()
    checker.close()  # cancels what the workers have not started
    worker.join(60)
    assert results == [expected]
    assert checker.check(bodies[:3], trusted=TRUSTED, today=TODAY) == expected[:3]  # in-process
