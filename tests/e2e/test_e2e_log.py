"""The access log seen by its officers and its witness, between real nodes over mutual TLS.

- `credex log verify` passes on an honest log (with the platform's cosignatures) and exits 3
  naming the first bad entry when a row is edited, deleted, reordered or the log truncated;
- `log search --subject` finds the subject's accesses and is itself logged (without the id);
- `log export` lines verify on their own (checkpoint signature + inclusion proof);
- the platform witness cosigns a growing log and raises the alarm when the log forks (a
  department restored an old database and wrote a different history after it).
The witness rounds run in-process against the real serving department, so the test decides
when they happen instead of waiting for the background loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import keys
from node.accesslog import verify_export_record
from node.cluster import LocalCluster
from node.query import QueryAsk, send_query
from node.witness import WitnessOutcome, WitnessState, background, witness_round

pytestmark = pytest.mark.slow

SUBJECT = "11010519491231002X"


def ask(officer: str) -> QueryAsk:
    return QueryAsk(
        peer="market", subject=SUBJECT, subject_kind="natural_person",
        items=("admin_licence_person",), purpose="administrative_licensing",
        legal_basis="行政许可法", officer=officer,
    )  # fmt: skip


def run_queries(cluster: LocalCluster, n: int, tag: str) -> None:
    rt = cluster.runtime("tax")
    try:

        async def many() -> None:
            for i in range(n):
                await send_query(rt, ask(f"{tag}-{i}"))

        asyncio.run(many())
    finally:
        rt.close()


def witness(cluster: LocalCluster, state: WitnessState) -> WitnessOutcome:
    rt = cluster.runtime("platform")
    try:
        outcomes = asyncio.run(witness_round(rt, state))
    finally:
        rt.close()
    (market,) = [o for o in outcomes if o.peer == "market"]
    return market


def db_files(home: Path) -> list[Path]:
    return sorted((home / "data").glob("credex.db*"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("district")
    c = LocalCluster(
        root,
        nodes=[("platform", "platform"), ("market", "department"), ("tax", "department")],
        agreements=[
            {
                "provider": "market",
                "consumer": "tax",
                "items": ["admin_licence_person"],
                "purposes": ["administrative_licensing"],
                "kind": "query",
            },
        ],
    )
    c.init()
    c.start("market")
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def witnessed(cluster: LocalCluster) -> WitnessState:
    """Queries, then a checkpoint witnessed by the platform."""
    run_queries(cluster, 4, "a")
    cluster.cli("market", "log", "checkpoint", check=True)
    state = WitnessState(cluster.home("platform") / "data" / "witness.json")
    outcome = witness(cluster, state)
    assert outcome.status == "cosigned", outcome
    return state


def test_honest_log_verifies_with_the_witness_cosignature(
    cluster: LocalCluster, witnessed: WitnessState
) -> None:
    report = cluster.cli_json("market", "log", "verify")
    assert report["ok"] is True
    assert report["size"] >= 4
    assert report["witnesses_checked"] >= 1
    note = cluster.cli_json("market", "log", "checkpoint")
    assert note["witnessed_by"] == ["platform"] or note["size"] > witnessed_size(witnessed)


def witnessed_size(state: WitnessState) -> int:
    return int(state.latest["market"].split("\n")[1])


def test_search_by_subject_finds_its_accesses_and_is_logged(
    cluster: LocalCluster, witnessed: WitnessState
) -> None:
    del witnessed
    done = cluster.cli("market", "log", "search", "--subject", SUBJECT, "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert len(found) >= 4
    assert {e["requester"] for e in found} == {"tax"}
    assert SUBJECT not in done.stdout
    assert SUBJECT not in done.stderr
    reads = cluster.cli_json("market", "log", "search", "--kind", "admin_read")
    assert reads
    assert all(e["subject_index"] is None for e in reads)
    assert all(SUBJECT not in json.dumps(e) for e in reads)
    # `--subject -` reads the identifier from standard input, out of `ps` and shell history
    piped = subprocess.run(
        [sys.executable, "-m", "node.cli", "log", "search", "--subject", "-", "--json"],
        input=SUBJECT + "\n", env=cluster.env("market"), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == found  # the same accesses as when typed on the line
    empty = subprocess.run(
        [sys.executable, "-m", "node.cli", "log", "search", "--subject", "-"],
        input="\n", env=cluster.env("market"), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert empty.returncode == 2
    assert "no identifier on standard input" in empty.stderr


def test_export_lines_verify_on_their_own(cluster: LocalCluster, tmp_path: Path) -> None:
    out = tmp_path / "evidence.jsonl"
    cluster.cli("market", "log", "export", "--output", str(out), check=True)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    rt = cluster.runtime("market")
    try:
        verifiers, origin = rt.log_verifiers(), rt.config.log.origin
    finally:
        rt.close()
    checked = [
        verify_export_record(r, verifiers, log_name="market", origin=origin).to_dict()
        for r in lines
        if r["proof"] is not None
    ]
    assert len(checked) >= 4
    assert checked == [r["entry"] for r in lines]
    assert lines[-1]["entry"]["kind"] in ("export", "admin_read", "query")
    assert any(r["entry"]["kind"] == "export" for r in lines)
    # The platform checks market's export with market's key from the roster.
    done = cluster.cli_json("platform", "log", "verify-export", str(out), "--node", "market")
    assert done["verified"] == len(checked)
    # A line whose leaf was swapped for another's fails, named by its line number.
    proven = [i for i, r in enumerate(lines) if r["proof"] is not None]
    forged = [dict(r) for r in lines]
    forged[proven[2]]["leaf"] = lines[proven[1]]["leaf"]
    bad = tmp_path / "forged.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in forged), encoding="utf-8")
    failed = cluster.cli("market", "log", "verify-export", str(bad))
    assert failed.returncode == 3, failed.stderr
    assert f"line {proven[2] + 1}" in failed.stderr
    # Another node's key does not verify market's checkpoint.
    other = cluster.cli("market", "log", "verify-export", str(out), "--node", "tax")
    assert other.returncode == 3, other.stderr
    # Every line of a fresh export carries its proof; a line without one, a repeated line or
    # a dropped one is refused (made-up lines cannot hide behind "newer than the checkpoint").
    assert all(r["proof"] is not None for r in lines)
    made_up = dict(lines[-1], index=lines[-1]["index"] + 1, proof=None)
    for name, changed, words in (
        ("unproven", [*lines, made_up], "carries no inclusion proof"),
        ("repeated", [*lines, lines[-1]], "repeats an entry"),
        ("dropped", [lines[0], *lines[2:]], "skips entries"),
        ("tail cut", lines[:-2], "were cut from the export"),
        ("head cut", lines[2:], "were cut from the export"),
        ("empty", [], "holds no entry with a proof"),
    ):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in changed), encoding="utf-8")
        refused = cluster.cli("market", "log", "verify-export", str(path))
        assert refused.returncode == 3, (name, refused.stderr)
        assert words in " ".join(refused.stderr.split()), (name, refused.stderr)
    allowed = tmp_path / "unproven.jsonl"
    done = cluster.cli_json("market", "log", "verify-export", str(allowed), "--allow-unproven")
    assert (done["verified"], done["unproven"]) == (len(lines), 1)
    assert (done["checkpoint_size"], done["complete"]) == (len(lines), True)
    # An export of a range is accepted when the officer says so, and reported as partial.
    ranged = tmp_path / "range.jsonl"
    cluster.cli("market", "log", "export", "--output", str(ranged), "--start", "1", "--end", "3",
                check=True)  # fmt: skip
    assert cluster.cli("market", "log", "verify-export", str(ranged)).returncode == 3
    done = cluster.cli_json("market", "log", "verify-export", str(ranged), "--partial")
    assert (done["entries"], done["verified"], done["complete"]) == ("1..2", 2, False)


def test_export_never_replaces_a_file_and_writes_all_or_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    out = tmp_path / "kept.jsonl"
    out.write_text("the officer's earlier evidence\n", encoding="utf-8")
    refused = cluster.cli("market", "log", "export", "--output", str(out))
    assert refused.returncode == 2, refused.stderr
    assert "exists" in refused.stderr
    assert out.read_text(encoding="utf-8") == "the officer's earlier evidence\n"
    missing = cluster.cli("market", "log", "export", "--output", str(tmp_path / "no" / "x.jsonl"))
    assert missing.returncode == 2, missing.stderr
    assert "cannot write the export" in " ".join(missing.stderr.split())
    assert "Traceback" not in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.jsonl"]  # no temporary left


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE access_log SET leaf = CAST(replace(leaf, 'a-1', 'x-1') AS BLOB) WHERE idx = 1;",
        "DELETE FROM access_log WHERE idx = 2;",
    ],
    ids=["edited", "deleted"],
)
def test_export_of_a_tampered_log_exits_3_and_writes_nothing(
    cluster: LocalCluster, tmp_path: Path, sql: str
) -> None:
    home = _tampered_copy(cluster, tmp_path, sql)
    env = cluster.env("market")
    env["CREDEX_HOME"] = str(home)
    out = tmp_path / "evidence.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "log", "export", "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    said = " ".join(result.stderr.split())
    assert "credex log verify" in said or "the stored log was altered" in said, said
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".evidence")]


def test_report_lists_requesters(cluster: LocalCluster) -> None:
    report = cluster.cli_json("market", "log", "report", "--officer", "m-001")
    assert "tax" in {r["requester"] for r in report["requesters"]}
    # the review is an administrative read of the log: it is logged too
    reads = cluster.cli_json("market", "log", "search", "--kind", "admin_read")
    assert ("m-001", "log_report") in {(e["officer"], e["reason"]) for e in reads}


def _tampered_copy(cluster: LocalCluster, tmp_path: Path, sql: str) -> Path:
    """A copy of the market node whose access log was changed by `sql`."""
    home = tmp_path / "copy"
    cluster.cli("market", "log", "checkpoint", check=True)
    shutil.copytree(cluster.home("market"), home)
    (home / "data" / "serve.json").unlink(missing_ok=True)
    with sqlite3.connect(home / "data" / "credex.db") as db:
        db.executescript(sql)
    return home


@pytest.mark.parametrize(
    ("name", "sql", "bad"),
    [
        (
            "edit",
            "UPDATE access_log SET leaf = CAST(replace(leaf, 'a-1', 'x-1') AS BLOB) WHERE idx = 1;",
            1,
        ),
        ("delete", "DELETE FROM access_log WHERE idx = 2;", 2),
        (
            "reorder",
            "UPDATE access_log SET idx = -1 WHERE idx = 1;"
            "UPDATE access_log SET idx = 1 WHERE idx = 2;"
            "UPDATE access_log SET idx = 2 WHERE idx = -1;",
            1,
        ),
        ("truncate", "DELETE FROM access_log WHERE idx >= 3;", 3),
    ],
)
def test_tampering_makes_verify_exit_3_naming_the_entry(
    cluster: LocalCluster, witnessed: WitnessState, tmp_path: Path, name: str, sql: str, bad: int
) -> None:
    del witnessed, name
    home = _tampered_copy(cluster, tmp_path, sql)
    env = cluster.env("market")
    env["CREDEX_HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "log", "verify", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["first_bad_index"] == bad


def test_a_witnessed_log_restores_from_backup_and_verifies(
    cluster: LocalCluster, witnessed: WitnessState, tmp_path: Path
) -> None:
    del witnessed  # market's log carries the platform's cosignatures
    passfile = tmp_path / "backup-pass.txt"
    passfile.write_text("correct horse battery\n", encoding="utf-8")
    out = tmp_path / "market.credex"
    cluster.cli(
        "market", "backup", str(out), "--include-keys", "--passphrase-file", str(passfile),
        check=True,
    )  # fmt: skip
    done = cluster.cli(
        "market", "restore", str(out), str(tmp_path / "restored"), "--passphrase-file",
        str(passfile), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = json.loads(done.stdout)["log"]
    assert log["checked"] is True


def _cut_tail_and_hide_it(home: Path, keep: int) -> None:
    """What an administrator with the database could do: drop every entry from `keep` on, every
    checkpoint and witness row, and recompute the stored tree state, so that nothing local
    remembers the lost tail."""
    with sqlite3.connect(home / "data" / "credex.db") as db:
        db.execute("DELETE FROM access_log WHERE idx >= ?", (keep,))
        db.execute("DELETE FROM checkpoints")
        db.execute("DELETE FROM witness")
        hashes = [bytes(h) for (h,) in db.execute("SELECT leaf_hash FROM access_log ORDER BY idx")]
        tree = keys.CompactRange()
        for h in hashes:
            tree.append(h)
        db.execute("UPDATE log_state SET size = ?, state = ?", (len(hashes), tree.to_bytes()))


def test_a_cut_tail_hidden_locally_shows_against_the_witnessed_anchor(
    cluster: LocalCluster, witnessed: WitnessState, tmp_path: Path
) -> None:
    del witnessed
    anchor = tmp_path / "market.note"
    done = cluster.cli("platform", "log", "witnessed", "market", check=True)
    anchor.write_text(done.stdout, encoding="utf-8")
    size = cluster.cli_json("platform", "log", "witnessed", "market")["size"]
    assert size >= 4
    honest = cluster.cli_json("market", "log", "verify", "--anchor", str(anchor))
    assert honest["ok"] is True
    assert honest["anchors_checked"] == 1
    home = _tampered_copy(cluster, tmp_path, "")
    _cut_tail_and_hide_it(home, keep=2)
    env = cluster.env("market")
    env["CREDEX_HOME"] = str(home)

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "node.cli", "log", "verify", "--json", *extra],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    # Locally nothing is left to tell (the limit of a log its administrator can rewrite) ...
    alone = verify()
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["signed_size"] == 0
    # ... but the checkpoint the platform witnessed is the evidence that entries were cut.
    anchored = verify("--anchor", str(anchor))
    assert anchored.returncode == 3, anchored.stderr
    report = json.loads(anchored.stdout)
    assert report["first_bad_index"] == 2
    assert [p["code"] for p in report["problems"]] == ["truncated"]
    # An anchor that is not this log's checkpoint is refused, not trusted.
    forged = tmp_path / "forged.note"
    forged.write_text(done.stdout.replace("\n\n", "\nextra\n\n", 1), encoding="utf-8")
    refused = verify("--anchor", str(forged))
    assert refused.returncode == 3
    assert "anchor_signature" in [p["code"] for p in json.loads(refused.stdout)["problems"]]


def test_the_platform_has_no_witnessed_note_of_an_unwitnessed_log(cluster: LocalCluster) -> None:
    done = cluster.cli("platform", "log", "witnessed", "tax")
    assert done.returncode == 2
    assert "has not witnessed" in done.stderr


def test_witness_detects_a_fork(cluster: LocalCluster, witnessed: WitnessState) -> None:
    market = cluster.home("market")
    snapshot = market.parent / "market-snapshot"
    snapshot.mkdir()
    cluster.stop("market")
    for f in db_files(market):
        shutil.copy2(f, snapshot / f.name)
    cluster.start("market")
    run_queries(cluster, 2, "b")
    cluster.cli("market", "log", "checkpoint", check=True)
    assert witness(cluster, witnessed).status == "cosigned"
    # The department goes back to the old database and writes another history.
    cluster.stop("market")
    for f in db_files(market):
        f.unlink()
    for f in snapshot.iterdir():
        shutil.copy2(f, market / "data" / f.name)
    cluster.start("market")
    run_queries(cluster, 3, "c")
    cluster.cli("market", "log", "checkpoint", check=True)
    outcome = witness(cluster, witnessed)
    assert outcome.status == "fork", outcome
    report = cluster.cli_json("platform", "log", "report")
    assert [a["log"] for a in report["alarms"]] == ["market"]
    assert (cluster.home("platform") / "data" / "witness-alarms.jsonl").exists()
    # the witness did not move on to the forked history, and a fork that persists is
    # recorded once, not on every visit, though the forked log keeps growing and signing
    # new checkpoints between visits
    run_queries(cluster, 1, "d")
    cluster.cli("market", "log", "checkpoint", check=True)
    assert witness(cluster, witnessed).status == "fork"
    assert witness(cluster, witnessed).status == "fork"
    alarms = (cluster.home("platform") / "data" / "witness-alarms.jsonl").read_text()
    assert len(alarms.splitlines()) == 1
    assert len(cluster.cli_json("platform", "log", "report")["alarms"]) == 1
    # the evidence proves the fork on its own: both notes signed by market, and the
    # consistency proof market answered between them fails
    checked = cluster.cli("platform", "log", "alarms", "--json")
    assert checked.returncode == 3, checked.stderr
    (alarm,) = json.loads(checked.stdout)["alarms"]
    assert (alarm["log"], alarm["proven"]) == ("market", True)
    assert "is not proven to extend the witnessed" in alarm["finding"]
    assert json.loads(alarms)["consistency_proof"]


def test_the_witness_loop_runs_only_on_the_platform(cluster: LocalCluster) -> None:
    for name, expected in (("platform", 1), ("market", 0)):
        rt = cluster.runtime(name)
        try:
            assert len(background(rt)) == expected
        finally:
            rt.close()
