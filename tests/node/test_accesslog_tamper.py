"""verify_log: a clean log verifies; every tampering is found, naming the first bad entry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import keys
from node import accesslog
from node.accesslog import (
    AccessLog,
    LogEntry,
    MemoryLogBackend,
    encode_leaf,
    utc_iso,
    verify_log,
    witness_checkpoint,
)
from node.errors import ExitCode, TamperDetected

T0 = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)
LOG_KEY = keys.Signer(b"\x21" * 32)
OTHER_KEY = keys.Signer(b"\x22" * 32)
WITNESS_KEY = keys.Signer(b"\x23" * 32)
ORIGIN = "credex.zd-market/accesslog"
VERIFIERS = {ORIGIN: LOG_KEY.public_key}


def entry(i: int, **changes: Any) -> LogEntry:
    values: dict[str, Any] = {
        "time": utc_iso(T0 + dt.timedelta(seconds=i)),
        "kind": "query",
        "requester": f"zd-dept-{i % 3}",
        "officer": f"officer-{i % 5}",
        "purpose": "administrative_licensing",
        "legal_basis": "《行政许可法》",
        "decision": "allow" if i % 4 else "deny",
        "reason": "statutory_duty" if i % 4 else "grant_required",
        "request_id": f"req-{i:06d}",
        "subject_index": f"{i:032x}",
        "subject_masked": "370303********0001",
        "items_asked": ("admin_penalty",),
        "items_released": ("admin_penalty",) if i % 4 else (),
        "result_count": i % 4,
    }
    values.update(changes)
    return LogEntry(**values)


def build(n: int = 40, checkpoint_every: int = 10) -> tuple[AccessLog, MemoryLogBackend]:
    backend = MemoryLogBackend()
    log = AccessLog(backend, origin=ORIGIN, signer=LOG_KEY, clock=lambda: T0)
    for i in range(n):
        log.append_sync(entry(i))
        if (i + 1) % checkpoint_every == 0:
            log.checkpoint()
    return log, backend


def renumber(backend: MemoryLogBackend) -> None:
    for position, row in enumerate(backend.rows):
        row[0] = position


def test_a_clean_log_verifies() -> None:
    _log, backend = build()
    report = verify_log(backend, VERIFIERS, origin=ORIGIN)
    assert report.ok, report.problems
    assert report.size == 40
    assert report.checkpoints_checked == 4
    assert report.first_bad_index is None
    assert report.root == keys.root_from_leaves(backend.leaf_hashes(0, 40))
    report.raise_for_problems()


def test_an_empty_log_verifies() -> None:
    report = verify_log(MemoryLogBackend(), VERIFIERS)
    assert report.ok
    assert report.size == 0


def test_edited_leaf_is_named_exactly() -> None:
    _log, backend = build()
    backend.rows[17][1] = backend.rows[17][1].replace(b"officer-2", b"officer-9")
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 17
    assert report.problems[0].code == "leaf_hash_mismatch"
    with pytest.raises(TamperDetected, match="first bad entry 17") as caught:
        report.raise_for_problems()
    assert caught.value.exit_code == ExitCode.VERIFICATION


def rehash(backend: MemoryLogBackend, index: int) -> None:
    """Edit entry `index` and store the hash of the edited leaf: only entry `index + 1`'s chain
    link (and the signed roots) still remember the original."""
    leaf = backend.rows[index][1].replace(b'"officer":"officer-', b'"officer":"nobody-')
    assert leaf != backend.rows[index][1]
    backend.rows[index][1:] = [leaf, keys.leaf_hash(leaf)]


def test_edited_leaf_with_recomputed_hash_is_named_exactly() -> None:
    _log, backend = build()
    rehash(backend, 17)
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 17
    first = report.problems[0]
    assert (first.code, first.index, first.index_end) == ("chain_broken", 17, None)
    assert "entry 17 was edited" in first.message
    assert any(p.code == "checkpoint_root_mismatch" for p in report.problems)
    with pytest.raises(TamperDetected, match=r"\(first bad entry 17\)"):
        report.raise_for_problems()


@pytest.mark.parametrize("edited", [0, 9, 17, 38])
def test_a_recomputed_hash_is_named_wherever_a_checkpoint_covers_it(edited: int) -> None:
    # 9: the checkpoint at 10 covers the entry but not the next one, whose link breaks
    _log, backend = build()
    rehash(backend, edited)
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == edited
    assert report.problems[0].index_end is None


def test_edited_leaf_with_recomputed_hash_after_the_last_checkpoint_blames_the_pair() -> None:
    _log, backend = build(n=45)  # checkpoints up to 40: nothing signed covers 42
    rehash(backend, 42)
    report = verify_log(backend, VERIFIERS)
    first = report.problems[0]
    assert (first.code, first.index, first.index_end) == ("chain_broken", 42, 44)
    assert "entry 42 was edited" in first.message
    with pytest.raises(TamperDetected, match="first bad entry between 42 and 43"):
        report.raise_for_problems()


def test_a_rewritten_chain_link_is_blamed_on_its_own_entry() -> None:
    _log, backend = build()
    leaf = backend.rows[18][1].replace(backend.rows[17][2].hex().encode(), b"ab" * 32)
    backend.rows[18][1:] = [leaf, keys.leaf_hash(leaf)]
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 18
    assert report.problems[0].code == "chain_broken"


def test_deleted_row_is_a_gap_at_its_index() -> None:
    _log, backend = build()
    del backend.rows[23]
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 23
    assert report.problems[0].code == "index_gap"


def test_deleted_and_renumbered_row_breaks_the_chain_there() -> None:
    _log, backend = build()
    del backend.rows[23]
    renumber(backend)
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 23
    assert report.problems[0].code == "chain_broken"
    assert any(p.code == "truncated" for p in report.problems)


def test_reordered_rows_are_named_at_the_first_moved_one() -> None:
    _log, backend = build()
    backend.rows[12], backend.rows[31] = backend.rows[31], backend.rows[12]
    renumber(backend)
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 12
    assert report.problems[0].code == "chain_broken"


def test_inserted_row_is_named() -> None:
    _log, backend = build()
    fake = encode_leaf(entry(99), backend.rows[4][2])
    backend.rows.insert(6, [6, fake, keys.leaf_hash(fake)])
    renumber(backend)
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 6


@pytest.mark.parametrize("keep", [0, 25, 39])
def test_truncated_log_is_named_at_its_first_missing_index(keep: int) -> None:
    _log, backend = build()
    del backend.rows[keep:]
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == keep
    assert any(p.code == "truncated" for p in report.problems)


def test_truncation_after_the_last_checkpoint_is_found_from_the_tree_state() -> None:
    _log, backend = build(n=45)
    del backend.rows[42:]
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 42


def rewrite_suffix(backend: MemoryLogBackend, start: int) -> None:
    """What an attacker with write access does: rewrite entries `start`.. and recompute every
    hash, chain link and the stored tree state, so that only signed checkpoints can tell."""
    previous = backend.rows[start - 1][2]
    tree = keys.CompactRange()
    for row in backend.rows[:start]:
        tree.append(row[2])
    for i in range(start, len(backend.rows)):
        leaf = encode_leaf(entry(i, officer="nobody"), previous)
        previous = keys.leaf_hash(leaf)
        backend.rows[i][1:] = [leaf, previous]
        tree.append(previous)
    backend._state = tree.to_bytes()


def test_a_consistently_rewritten_suffix_is_caught_by_the_checkpoints() -> None:
    _log, backend = build()
    rewrite_suffix(backend, 25)
    report = verify_log(backend, VERIFIERS)
    assert not report.ok
    assert report.problems[0].code == "checkpoint_root_mismatch"
    assert report.first_bad_index == 20  # the last checkpoint that still matches


def test_a_rewrite_before_the_first_checkpoint_is_blamed_on_a_range() -> None:
    _log, backend = build()
    rewrite_suffix(backend, 3)  # every entry from 3 on rewritten, chain and state recomputed
    report = verify_log(backend, VERIFIERS)
    first = report.problems[0]
    assert (first.code, first.index, first.index_end) == ("checkpoint_root_mismatch", 0, 10)
    assert "an entry in 0..9 was rewritten" in first.message
    with pytest.raises(TamperDetected, match="first bad entry between 0 and 9"):
        report.raise_for_problems()


def hide_everything_after(backend: MemoryLogBackend, keep: int) -> None:
    """Cut the log at `keep` and drop every checkpoint, cosignature and the tree state's memory
    of the lost tail: nothing local is left to tell."""
    del backend.rows[keep:]
    backend._checkpoints.clear()
    backend._witnesses.clear()
    tree = keys.CompactRange()
    for row in backend.rows:
        tree.append(row[2])
    backend._state = tree.to_bytes()


WITNESSES = {"zd-platform": WITNESS_KEY.public_key}


def witnessed(log: AccessLog) -> str:
    """A fresh checkpoint of `log`, cosigned by the platform witness: what an anchor is."""
    return witness_checkpoint(
        None, log.checkpoint(), [], log_verifiers=VERIFIERS, name="zd-platform", signer=WITNESS_KEY
    )


def test_an_anchor_kept_elsewhere_shows_a_hidden_truncation() -> None:
    log, backend = build()
    anchor = witnessed(log)  # the note the platform witnessed, size 40
    hide_everything_after(backend, 25)
    alone = verify_log(backend, VERIFIERS, witness_verifiers=WITNESSES)
    assert alone.ok  # the limit of a log whose administrator can rewrite everything local
    assert alone.signed_size == 0
    report = verify_log(backend, VERIFIERS, witness_verifiers=WITNESSES, anchors=[anchor])
    assert [p.code for p in report.problems] == ["truncated"]
    assert report.first_bad_index == 25


def test_an_anchor_shows_a_rewrite_hidden_with_the_checkpoints() -> None:
    log, backend = build()
    anchor = witnessed(log)
    rewrite_suffix(backend, 33)
    backend._checkpoints.clear()
    assert verify_log(backend, VERIFIERS).ok
    report = verify_log(backend, VERIFIERS, witness_verifiers=WITNESSES, anchors=[anchor])
    assert [p.code for p in report.problems] == ["checkpoint_root_mismatch"]
    assert report.signed_size == 40


def test_a_checkpoint_signed_again_after_a_rewrite_does_not_override_the_anchor() -> None:
    # The node's administrators hold the log key: they can rewrite, then sign a new
    # checkpoint at the anchor's size. Only the witness's cosignature decides.
    log, backend = build()
    anchor = witnessed(log)
    rewrite_suffix(backend, 33)
    backend._checkpoints.clear()
    # the same size, the rewritten root, a valid log signature
    AccessLog(backend, origin=ORIGIN, signer=LOG_KEY, clock=lambda: T0).checkpoint()
    assert verify_log(backend, VERIFIERS).ok  # without the anchor, nothing tells
    report = verify_log(backend, VERIFIERS, witness_verifiers=WITNESSES, anchors=[anchor])
    assert not report.ok
    assert "fork_detected" in [p.code for p in report.problems]
    assert "checkpoint_root_mismatch" in [p.code for p in report.problems]


def test_anchors_must_be_signed_by_the_log_and_cosigned_by_a_witness() -> None:
    log, backend = build()
    honest = witnessed(log)
    assert verify_log(backend, VERIFIERS, witness_verifiers=WITNESSES, anchors=[honest]).ok
    unwitnessed = log.checkpoint()  # signed by the log alone: its administrators could
    cp = keys.Checkpoint(origin=ORIGIN, size=40, root=b"\x00" * 32)
    forged = keys.sign_checkpoint(cp, name=ORIGIN, signer=OTHER_KEY)
    report = verify_log(
        backend,
        VERIFIERS,
        origin=ORIGIN,
        witness_verifiers=WITNESSES,
        anchors=[unwitnessed, forged],
    )
    codes = [(p.code, p.message.split(":")[0]) for p in report.problems]
    assert codes == [("anchor_signature", "anchor 1"), ("anchor_signature", "anchor 2")]
    # without any witness key, no anchor can be trusted
    alone = verify_log(backend, VERIFIERS, anchors=[honest])
    assert [p.code for p in alone.problems] == ["anchor_signature"]


def test_every_checkpoint_is_compared_after_one_of_the_empty_log() -> None:
    backend = MemoryLogBackend()
    log = AccessLog(backend, origin=ORIGIN, signer=LOG_KEY, clock=lambda: T0)
    log.checkpoint()  # size 0: nothing to compare, and it must not stop the later comparisons
    for i in range(12):
        log.append_sync(entry(i))
    log.checkpoint()
    assert verify_log(backend, VERIFIERS).checkpoints_checked == 2
    rewrite_suffix(backend, 5)
    report = verify_log(backend, VERIFIERS)
    assert [p.code for p in report.problems] == ["checkpoint_root_mismatch"]


def test_forged_or_foreign_checkpoints_are_reported() -> None:
    _log, backend = build()
    cp = keys.Checkpoint(
        origin=ORIGIN, size=40, root=keys.root_from_leaves(backend.leaf_hashes(0, 40))
    )
    backend._checkpoints[40] = keys.sign_checkpoint(cp, name=ORIGIN, signer=OTHER_KEY)
    report = verify_log(backend, VERIFIERS)
    assert [p.code for p in report.problems] == ["checkpoint_signature"]
    other = keys.Checkpoint(origin="credex.elsewhere", size=40, root=cp.root)
    backend._checkpoints[40] = keys.sign_checkpoint(other, name=ORIGIN, signer=LOG_KEY)
    report = verify_log(backend, VERIFIERS, origin=ORIGIN)
    assert [p.code for p in report.problems] == ["checkpoint_mismatch"]


def test_witness_cosignatures_are_checked() -> None:
    log, backend = build(n=20, checkpoint_every=10)
    (s1, n1), (s2, n2) = backend.checkpoints()
    cosigned = witness_checkpoint(
        n1,
        n2,
        log.consistency_proof(s1, s2),
        log_verifiers=VERIFIERS,
        name="zd-platform",
        signer=WITNESS_KEY,
    )
    backend.save_witness(s2, "zd-platform", cosigned)
    report = verify_log(
        backend, VERIFIERS, witness_verifiers={"zd-platform": WITNESS_KEY.public_key}
    )
    assert report.ok, report.problems
    assert report.witnesses_checked == 1
    backend.save_witness(s2, "zd-other", cosigned)  # nobody we know: unverifiable
    report = verify_log(
        backend, VERIFIERS, witness_verifiers={"zd-platform": WITNESS_KEY.public_key}
    )
    assert [p.code for p in report.problems] == ["witness_signature"]


@pytest.mark.parametrize(
    "witness_keys",
    [
        WITNESSES,
        # a platform node verifying its own log finds itself among the witnesses
        {**WITNESSES, ORIGIN: LOG_KEY.public_key},
        # the log's key under another name is still the log's key
        {**WITNESSES, "zd-twin": LOG_KEY.public_key},
    ],
)
def test_the_logs_own_signature_is_never_a_witness_cosignature(
    witness_keys: dict[str, bytes],
) -> None:
    log, backend = build(n=20, checkpoint_every=10)
    size, own_note = backend.latest_checkpoint() or (0, "")
    for name in (ORIGIN, "zd-twin"):
        backend.save_witness(size, name, own_note)  # signed by the log alone
    report = verify_log(backend, VERIFIERS, witness_verifiers=witness_keys)
    assert report.witnesses_checked == 0
    assert [p.code for p in report.problems] == ["witness_signature"] * 2
    assert "the log's own key is no witness" in report.problems[0].message
    # ... while a real cosignature of the same note still counts
    backend.save_witness(size, "zd-platform", witnessed(log))
    assert verify_log(backend, VERIFIERS, witness_verifiers=witness_keys).witnesses_checked == 1


def test_verify_names_a_gap_when_the_backend_refuses_the_range() -> None:
    class GapCheckingBackend(MemoryLogBackend):
        """Like the SQL backend: reading across a missing row raises TamperDetected."""

        def leaves(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
            rows = super().leaves(start, end)
            if [r[0] for r in rows] != list(range(start, start + len(rows))):
                raise TamperDetected("leaves missing")
            return rows

        def size(self) -> int:
            return self.rows[-1][0] + 1 if self.rows else 0

    backend = GapCheckingBackend()
    log = AccessLog(backend, origin=ORIGIN, signer=LOG_KEY)
    for i in range(30):
        log.append_sync(entry(i))
    log.checkpoint()
    del backend.rows[11]
    report = verify_log(backend, VERIFIERS)
    assert report.first_bad_index == 11
    assert report.problems[0].code == "index_gap"


def _tampered_logs() -> list[MemoryLogBackend]:
    """A clean log and one log per kind of tampering, each 40 entries checkpointed every 10."""
    clean = build()[1]
    edited = build()[1]
    edited.rows[17][1] = edited.rows[17][1].replace(b"officer-2", b"officer-9")
    rehashed = build()[1]
    rehash(rehashed, 17)
    rewritten = build()[1]
    rewrite_suffix(rewritten, 25)
    gap = build()[1]
    del gap.rows[23]
    # a consistent rewrite caught by checkpoint 30, and a crude edit after that checkpoint
    both = build()[1]
    rewrite_suffix(both, 25)
    both.rows[33][1] = both.rows[33][1].replace(b"nobody", b"nobodx")
    return [clean, edited, rehashed, rewritten, gap, both]


@pytest.mark.parametrize("chunk", [1, 3, 10, 11, 64])
def test_the_report_does_not_depend_on_the_read_chunk(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify_log reads and folds whole chunks; checkpoints fall inside, at the edge of, and
    # across chunks, and every report must be the one of a single chunk.
    expected = [verify_log(backend, VERIFIERS) for backend in _tampered_logs()]
    monkeypatch.setattr(accesslog, "_VERIFY_CHUNK", chunk)
    assert [verify_log(backend, VERIFIERS) for backend in _tampered_logs()] == expected
    assert [r.first_bad_index for r in expected] == [None, 17, 17, 20, 23, 20]
