"""Ingest with sealer workers: the same result as one process, and just as crash-safe.

Two homes with the same keys (one copied from the other before any ingest) ingest the same
source, one in-process and one with forked workers; what they store (decrypted and verified),
the feed events and the reject reports must be the same. Then kill -9 of a run with workers at
random points, with a check that no worker outlives the killed process.
"""

from __future__ import annotations

import datetime as dt
import gc
import multiprocessing
import os
import pickle
import random
import shutil
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

import keys
from node.cli.init_cmds import init_node
from node.config import load_config
from node.ingest import IngestSummary, run_ingest
from node.sealer import Sealer
from node.store import Store, open_store
from tests.forked import start_forked
from tests.node.test_ingest_pipeline import penalty_row, write_source

TODAY = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
_CTX = multiprocessing.get_context("fork")


def _rows() -> list[dict[str, str]]:
    """60 rows: 3 bad ones, a key repeated in the next batch with a new fine (a correction of a
    version not committed yet when that batch is planned), and an exact repeat (unchanged)."""
    rows = [penalty_row(i, bad=i % 13 == 0) for i in range(1, 51)]
    rows.append(penalty_row(4, fine=7000))  # same key as row 4, later batch: version 2
    rows.append(penalty_row(5))  # same key and content as row 5: unchanged
    rows.append(penalty_row(4, fine=8000))  # and again: version 3
    rows += [penalty_row(i) for i in range(51, 58)]
    return rows


def _ingest(home: Path, mapping: Path, **kwargs: Any) -> IngestSummary:
    return run_ingest(load_config(home), mapping, today=TODAY, clock=lambda: NOW, **kwargs)


def _contents(home: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every stored version (verified and decrypted, row ids and salts left out) in insertion
    order, and every feed event of the subscriber (with its record's key and version)."""
    config = load_config(home)
    node_keys = keys.load_key_dir(config.keys_dir)
    cipher = keys.StorageCipher(node_keys.storage_key)
    trusted = {node_keys.signing.keyid: node_keys.signing.public_key}
    store = open_store(config.store.url)
    try:
        with store.read("check") as conn:
            rows = conn.exec_driver_sql(
                "SELECT row_id, body, record_key, version, state, subject_index, content_hash, "
                "disclosure_min_end, disclosure_max_end, disclosure_rule FROM records "
                "ORDER BY rowid"
            ).all()
        records = []
        for row_id, body, *rest in rows:
            signed = keys.SignedRecord.from_bytes(cipher.decrypt(row_id, body))
            verified = keys.verify_record(signed, trusted=trusted)
            records.append((dict(verified.header), dict(verified.fields), *rest))
        events = [
            (e.seq, e.kind, e.record_key, e.version)
            for e in store.events_after("platform", 0, limit=10_000)
        ]
        return records, events
    finally:
        store.close()


def _subscribe(home: Path) -> None:
    store = open_store(load_config(home).store.url)
    try:
        store.ensure_subscription("platform", ["admin_penalty"], now=NOW)
    finally:
        store.close()


def test_workers_store_exactly_what_one_process_stores(tmp_path: Path) -> None:
    one = tmp_path / "one"
    init_node(one, name="market", role="department", now=NOW)
    many = tmp_path / "many"
    shutil.copytree(one, many)  # same keys, so blind indexes and signer match
    for home in (one, many):
        _subscribe(home)
    mapping = write_source(tmp_path, _rows())

    alone = _ingest(one, mapping, batch_size=7, workers=1)
    pooled = _ingest(many, mapping, batch_size=7, workers=3)

    def totals(s: IngestSummary) -> tuple[Any, ...]:
        return (s.read, s.accepted, s.rejected, s.skipped_unchanged, s.corrected, s.batches)

    assert totals(alone) == totals(pooled) == (60, 56, 3, 1, 2, 9)
    assert alone.events == pooled.events == 56
    assert alone.top_reasons == pooled.top_reasons
    assert _contents(one) == _contents(many)
    for mine, theirs in zip(alone.reject_files, pooled.reject_files, strict=True):
        assert mine.read_bytes() == theirs.read_bytes()

    records, _ = _contents(many)
    assert sorted(h["version"] for h, *_ in records).count(3) == 1  # row 4's third version
    # a re-run compares each row with the newest version: row 4's three rows make 4, 5 and 6
    again = _ingest(many, mapping, batch_size=7, workers=3)
    assert (again.accepted, again.corrected, again.skipped_unchanged) == (3, 3, 54)


def test_workers_on_postgresql(tmp_path: Path, throwaway_postgres: str) -> None:
    home = tmp_path / "node"
    init_node(home, name="market", role="department", now=NOW)
    config_file = home / "credex.toml"
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(
        text.replace("[store]\n", f'[store]\nurl = "{throwaway_postgres}"\n', 1), encoding="utf-8"
    )
    mapping = write_source(tmp_path, _rows())
    summary = _ingest(home, mapping, batch_size=7, workers=2)
    assert (summary.accepted, summary.corrected, summary.skipped_unchanged) == (56, 2, 1)
    store: Store = open_store(load_config(home).store.url)
    try:
        assert store.dialect == "postgresql"
        assert store.count_records() == 56
        assert store.count_records(state="superseded") == 2
    finally:
        store.close()
    again = _ingest(home, mapping, batch_size=7, workers=2)
    assert (again.accepted, again.skipped_unchanged) == (3, 54)


def _ingest_child(conn: Connection, home: Path, mapping: Path, batch: int) -> None:
    """A non-daemonic child (daemonic ones may not fork workers) reporting each commit."""
    run_ingest(
        load_config(home), mapping, today=TODAY, batch_size=batch, workers=2,
        progress=lambda _b: conn.send("batch"), clock=lambda: NOW,
    )  # fmt: skip
    conn.send("done")


def _end_of_file(reader: Connection) -> bool:
    """Read what is left until end of file; False if a minute passes without a byte or it.

    The workers inherited the write end of the child's pipe, so end of file means that none of
    them is left; one that outlived its killed parent would keep the pipe open.
    """
    while reader.poll(60):
        try:
            reader.recv()
        except EOFError:
            return True
    return False


def test_kill_9_with_workers_loses_doubles_and_leaves_nothing(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    home = tmp_path / "node"
    init_node(home, name="market", role="department", now=NOW)
    rows = [penalty_row(i, bad=i % 13 == 0) for i in range(1, 301)]
    mapping = write_source(tmp_path, rows)

    for _ in range(8):
        reader, writer = _CTX.Pipe(duplex=False)
        child = start_forked(
            _ingest_child, (writer, home, mapping, rng.choice([5, 11, 23])), daemon=False
        )
        writer.close()
        try:
            for _ in range(rng.randint(1, 6)):
                if reader.recv() == "done":
                    break
        finally:
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join()
        assert _end_of_file(reader), f"seed {seed}: a worker outlived the killed ingest process"
        reader.close()

    final = _ingest(home, mapping, batch_size=17, workers=2)
    assert final.balanced, f"seed {seed}"
    good = len([i for i in range(1, 301) if i % 13])
    store = open_store(load_config(home).store.url)
    try:
        with store.read("check") as conn:
            per_key = conn.exec_driver_sql(
                "SELECT record_key, COUNT(*), MAX(version) FROM records GROUP BY record_key"
            ).all()
        assert len(per_key) == good, f"seed {seed}: a record is missing"
        assert all(r[1] == 1 and r[2] == 1 for r in per_key), f"seed {seed}: a record doubled"
    finally:
        store.close()
    again = _ingest(home, mapping, batch_size=50, workers=2)
    assert (again.accepted, again.skipped_unchanged) == (0, good), f"seed {seed}"


def test_the_keys_are_never_pickled(tmp_path: Path) -> None:
    init_node(tmp_path / "node", name="market", role="department", now=NOW)
    node_keys = keys.load_key_dir(load_config(tmp_path / "node").keys_dir)
    with Sealer(node_keys, "market", workers=2) as sealer:
        with pytest.raises(TypeError, match="never pickled"):
            pickle.dumps(sealer._crypto)
        with pytest.raises(ValueError, match="workers"):
            Sealer(node_keys, "market", workers=0)


_COLLECT = gc.collect  # the real one, also after a test replaced gc.collect


class _Finalised:
    """Garbage in a reference cycle that says, on a pipe, in which process it was freed."""

    def __init__(self, pipe: int) -> None:
        self.pipe = pipe
        self.cycle = self

    def __del__(self) -> None:
        os.write(self.pipe, f"{os.getpid()}\n".encode())


def _collect_in_worker() -> tuple[int, bool]:
    _COLLECT()
    return os.getpid(), gc.isenabled()


def test_workers_never_collect_what_they_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker that freed an object inherited from the ingest process (a gRPC channel of an
    # earlier call in the same process) crashed; workers set everything inherited aside.
    init_node(tmp_path / "node", name="market", role="department", now=NOW)
    node_keys = keys.load_key_dir(load_config(tmp_path / "node").keys_dir)
    read_end, write_end = os.pipe()
    collecting = gc.isenabled()
    gc.disable()  # the garbage must still exist when the workers fork ...
    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)  # ... also past Sealer._start
    try:
        _Finalised(write_end)
        with Sealer(node_keys, "market", workers=2) as sealer:
            pid, enabled = sealer._start().submit(_collect_in_worker).result()
            assert pid != os.getpid()
            assert enabled  # workers do collect what they make themselves
        _COLLECT()
        os.close(write_end)
        freed_in = os.read(read_end, 4096).decode().split()
    finally:
        if collecting:
            gc.enable()
        os.close(read_end)
    assert freed_in == [str(os.getpid())]  # freed once, by the ingest process itself
