"""kill -9 during a real ingest loses and duplicates nothing (DESIGN.md section 8).

A child process ingests a CSV in small batches and reports each committed batch on a pipe;
the parent kills it with SIGKILL after a random number of lines (so the kill lands anywhere in
the next batch: reading, signing, encrypting, inside the transaction or its fsync), a dozen
times, then lets a last run finish and checks that the store holds exactly one version of every
good row and nothing else.
"""

from __future__ import annotations

import csv
import datetime as dt
import multiprocessing
import os
import random
import signal
from multiprocessing.connection import Connection
from pathlib import Path

from node.cli.init_cmds import init_node
from node.config import load_config
from node.demo_data import numbered_uscc
from node.ingest import run_ingest
from node.store import open_store
from tests.forked import start_forked
from tests.node.ingest_support import penalty_mapping

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 11, 25)
ROWS = 1500
BAD_EVERY = 97  # every 97th row has an impossible date and must end in the reject report
KILLS = 12


MAPPING = penalty_mapping()


def _write_source(directory: Path) -> Path:
    with (directory / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "uscc", "decision_no", "fine", "date"])
        for i in range(ROWS):
            date = "2026-13-45" if i % BAD_EVERY == 0 else "2026-05-11"
            writer.writerow(
                [f"某某商贸有限公司{i}", numbered_uscc("91370303", 5000 + i),
                 f"张市监罚〔2026〕{i}号", "1.2", date]
            )  # fmt: skip
    mapping = directory / "penalties.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return mapping


def _child(conn: Connection, home: Path, mapping: Path, batch: int) -> None:
    """The ingest process: reports each committed batch on the pipe (forked, so it starts
    without re-importing anything and a dozen kills fit in a few seconds)."""

    def progress(_: object) -> None:
        conn.send("committed")

    summary = run_ingest(
        load_config(home), mapping, today=TODAY, progress=progress, batch_size=batch
    )
    conn.send(("done", summary.read))


def test_kill_9_at_random_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    home = tmp_path / "node"
    init_node(home, name="market", role="department", now=NOW)
    mapping = _write_source(tmp_path)
    context = multiprocessing.get_context("fork")

    for _ in range(KILLS):
        reader, writer = context.Pipe(duplex=False)
        child = start_forked(_child, (writer, home, mapping, rng.choice([5, 11, 23])), daemon=True)
        writer.close()
        for _ in range(rng.randint(0, 3)):
            message = reader.recv()  # a batch was committed; the kill lands in the next one
            assert message == "committed", f"seed {seed}: the run ended before the kill"
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join()
        reader.close()
        assert child.exitcode == -signal.SIGKILL, f"seed {seed}: exit {child.exitcode}"

    final = run_ingest(load_config(home), mapping, today=TODAY, batch_size=50)
    assert final.balanced

    bad = len(range(0, ROWS, BAD_EVERY))
    store = open_store(load_config(home).store.url)
    try:
        assert store.count_records() == ROWS - bad, f"seed {seed}"
        with store.read("check") as conn:
            rows = conn.exec_driver_sql(
                "SELECT record_key, COUNT(*), MAX(version), MIN(state) FROM records "
                "GROUP BY record_key"
            ).all()
        assert len(rows) == ROWS - bad, f"seed {seed}: a record is missing"
        assert all(r[1] == 1 and r[2] == 1 and r[3] == "active" for r in rows), f"seed {seed}"
    finally:
        store.close()
    # a re-run after all that finds every row already stored
    again = run_ingest(load_config(home), mapping, today=TODAY, batch_size=500)
    assert (again.read, again.accepted, again.rejected) == (ROWS, 0, bad), f"seed {seed}"
    assert again.skipped_unchanged == ROWS - bad
