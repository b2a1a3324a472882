"""A fork alarm's evidence stands on its own: the two notes the log signed and the consistency
proof it answered, checked again by anybody with the log's public key (`check_alarm`,
`credex log alarms`), without trusting the witness that recorded them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import keys
from node.accesslog import AccessLog, MemoryLogBackend
from node.cli import app
from node.cluster import LocalCluster
from node.errors import InputError
from node.witness import ALARMS_FILE, alarm_record, check_alarm
from tests.node.test_query_witness import LOG_KEY, WITNESS_KEY, entry, log

LOG_KEYS = [LOG_KEY.public_key]


def evidence(witnessed: str, shown: str, proof: list[bytes]) -> dict[str, object]:
    return alarm_record(
        time="2026-11-26T02:00:00Z", log="market", witnessed=witnessed, shown=shown,
        why="as the witness saw it", proof=proof,
    )  # fmt: skip


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), st.integers(1, 10), st.integers(0, 29))
def test_the_evidence_of_a_different_history_proves_the_fork(
    first: int, more: int, cut: int
) -> None:
    cut = min(cut, first - 1)
    witnessed = log(first).checkpoint()
    forked = log(cut)  # same prefix up to `cut`, then another history
    for n in range(cut, first + more):
        forked.append_sync(entry(n, "b"))
    record = evidence(witnessed, forked.checkpoint(), forked.consistency_proof(first, first + more))
    assert all(isinstance(h, str) for h in record["consistency_proof"])  # type: ignore[attr-defined]
    assert check_alarm(record, log_keys=LOG_KEYS) == (
        f"checkpoint {first + more} is not proven to extend the witnessed {first}"
    )


def test_same_size_and_rollback_need_no_proof() -> None:
    a, b = log(5, "a").checkpoint(), log(5, "b").checkpoint()
    assert check_alarm(evidence(a, b, []), log_keys=LOG_KEYS) == (
        "two checkpoints of size 5 disagree"
    )
    assert check_alarm(evidence(a, log(3).checkpoint(), []), log_keys=LOG_KEYS) == (
        "size 3 shown after the witnessed 5"
    )


def test_evidence_of_an_honest_extension_proves_nothing() -> None:
    # a witness (or whoever edits its file) cannot make an honest log look forked
    access = log(4)
    old = access.checkpoint()
    for n in range(4, 9):
        access.append_sync(entry(n))
    honest = evidence(old, access.checkpoint(), access.consistency_proof(4, 9))
    with pytest.raises(InputError, match="extends"):
        check_alarm(honest, log_keys=LOG_KEYS)
    with pytest.raises(InputError, match="same checkpoint"):
        check_alarm(evidence(old, old, []), log_keys=LOG_KEYS)


def test_a_note_the_log_did_not_sign_is_no_evidence() -> None:
    stranger = AccessLog(
        MemoryLogBackend(), origin="zhangdian.credex/market", signer=WITNESS_KEY,
        key_name="market",
    )  # fmt: skip
    for n in range(5):
        stranger.append_sync(entry(n, "x"))
    genuine = log(5).checkpoint()
    for witnessed, shown in ((genuine, stranger.checkpoint()), (stranger.checkpoint(), genuine)):
        with pytest.raises(keys.VerificationError):
            check_alarm(evidence(witnessed, shown, []), log_keys=LOG_KEYS)
    # nor one whose signed body was edited (another root spliced in)
    edited = genuine.replace(genuine.splitlines()[2], "A" * 43 + "=", 1)
    with pytest.raises(keys.VerificationError):
        check_alarm(evidence(genuine, edited, []), log_keys=LOG_KEYS)


# --- `credex log alarms` on the platform -------------------------------------------------------


def market_logs(cluster: LocalCluster) -> tuple[AccessLog, AccessLog]:
    """Two histories of market's log, both signed with market's real key: 5 entries, then 8
    entries of which the first 3 are the same."""
    market = cluster.runtime("market")
    try:
        signer, origin = market.node_keys.signing, market.config.log.origin
    finally:
        market.close()
    honest, forked = (
        AccessLog(MemoryLogBackend(), origin=origin, signer=signer, key_name="market")
        for _ in range(2)
    )
    for n in range(5):
        honest.append_sync(entry(n))
    for n in range(8):
        forked.append_sync(entry(n, "a" if n < 3 else "b"))
    return honest, forked


def alarms_cli(home: Path) -> tuple[int, dict[str, Any]]:
    done = CliRunner().invoke(app, ["log", "alarms", "--home", str(home), "--json"])
    return done.exit_code, json.loads(done.output)


def test_log_alarms_checks_each_recorded_fork_again(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=[("platform", "platform"), ("market", "department")])
    cluster.init()
    home = cluster.home("platform")
    assert alarms_cli(home) == (0, {"alarms": [], "proven": 0})
    honest, forked = market_logs(cluster)
    witnessed = honest.checkpoint()
    fork = evidence(witnessed, forked.checkpoint(), forked.consistency_proof(5, 8))
    for n in range(5, 8):
        honest.append_sync(entry(n))
    # an honest extension written into the file: its own proof clears the log
    framed = evidence(witnessed, honest.checkpoint(), honest.consistency_proof(5, 8))
    lines = [json.dumps(fork), json.dumps(framed), '{"log": "market", "witnessed": 1', ""]
    (home / "data" / ALARMS_FILE).write_text("\n".join(lines), encoding="utf-8")
    code, doc = alarms_cli(home)
    assert code == 3
    assert doc["proven"] == 1
    assert [(a["line"], a["log"], a["sizes"], a["proven"]) for a in doc["alarms"]] == [
        (1, "market", "5 -> 8", True),
        (2, "market", "5 -> 8", False),
        (3, "", "", False),
    ]
    findings = [a["finding"] for a in doc["alarms"]]
    assert findings[0] == "checkpoint 8 is not proven to extend the witnessed 5"
    assert "the proof shows checkpoint 8 extends 5" in findings[1]
    assert findings[2] == "unreadable evidence (JSONDecodeError)"
