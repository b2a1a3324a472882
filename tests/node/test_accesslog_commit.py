"""AccessLog writing: group commit order under asyncio, fail-closed errors, retries, checkpoints,
proofs (property), entries and leaves."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from node.accesslog import (
    RETENTION_MIN_DAYS,
    AccessLog,
    LeafBuilder,
    LogBackend,
    LogEntry,
    MemoryLogBackend,
    NonceClaim,
    Rebuild,
    ReplayedRequest,
    check_retention,
    decode_leaf,
    encode_leaf,
    mask_subject,
    utc_iso,
    verify_log,
)
from node.errors import AuthError, ConfigError, InputError, LogUnavailable

T0 = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)
LOG_KEY = keys.Signer(b"\x31" * 32)
ORIGIN = "credex.zd-market/accesslog"
VERIFIERS = {ORIGIN: LOG_KEY.public_key}


def entry(i: int, **changes: Any) -> LogEntry:
    values: dict[str, Any] = {
        "time": utc_iso(T0 + dt.timedelta(milliseconds=i)),
        "kind": "query",
        "requester": "zd-tax",
        "officer": "officer-1",
        "purpose": "administrative_penalty",
        "legal_basis": "《行政处罚法》",
        "decision": "allow",
        "reason": "statutory_duty",
        "request_id": f"req-{i}",
    }
    values.update(changes)
    return LogEntry(**values)


class RecordingBackend(MemoryLogBackend):
    """Counts backend appends and can be told to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail = False

    def append(
        self,
        entries: Sequence[tuple[bytes, bytes]],
        state: bytes,
        *,
        expected_size: int | None = None,
        rebuild: Rebuild | None = None,
    ) -> int:
        if self.fail:
            raise OSError("disk full")
        self.batches.append(len(entries))
        return super().append(entries, state, expected_size=expected_size, rebuild=rebuild)


def new_log(backend: LogBackend | None = None, **kwargs: Any) -> AccessLog:
    return AccessLog(
        backend if backend is not None else MemoryLogBackend(),
        origin=ORIGIN,
        signer=LOG_KEY,
        clock=lambda: T0,
        **kwargs,
    )


# --- entries -------------------------------------------------------------------------------------


def test_memory_backend_satisfies_the_protocol() -> None:
    assert isinstance(MemoryLogBackend(), LogBackend)


def test_leaf_is_canonical_json_chained_and_starts_with_the_chain() -> None:
    e = entry(1, subject_masked=mask_subject("370303200001010001"), items_asked=("b", "a"))
    leaf = encode_leaf(e, b"\x07" * 32)
    assert leaf.startswith(b'{"chain":"' + (b"07" * 32) + b'"')
    doc = json.loads(leaf)
    assert (
        leaf == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert b"370303200001010001" not in leaf
    assert doc["subject_masked"] == "370303********0001"
    assert decode_leaf(leaf) == (e, b"\x07" * 32)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject_masked": "370303200001010001"}, "subject_masked"),
        ({"kind": "Query!"}, "kind"),
        ({"decision": "maybe"}, "decision"),
        ({"reason": "Denied because"}, "reason"),
        ({"time": "2026-11-25T09:00:00"}, "time"),
        ({"time": "yesterday"}, "time"),
        ({"subject_index": "not-hex"}, "subject_index"),
        ({"result_count": -1}, "result_count"),
    ],
)
def test_entries_refuse_bad_fields(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match=field) as caught:
        entry(0, **changes)
    assert "370303200001010001" not in str(caught.value)


@pytest.mark.parametrize("leaf", [b"", b"[]", b'{"kind":"query"}', b'{"chain":"zz"}'])
def test_decode_leaf_refuses_non_leaves(leaf: bytes) -> None:
    with pytest.raises(InputError):
        decode_leaf(leaf)


def test_retention_is_never_below_180_days() -> None:
    assert check_retention(RETENTION_MIN_DAYS) == 180
    with pytest.raises(ConfigError, match="retention_days"):
        check_retention(179)


# --- group commit -------------------------------------------------------------------------------


def test_concurrent_appends_share_one_backend_append_in_call_order() -> None:
    backend = RecordingBackend()
    log = new_log(backend)

    async def run() -> list[int]:
        return list(await asyncio.gather(*(log.append(entry(i)) for i in range(200))))

    indexes = asyncio.run(run())
    assert indexes == list(range(200))
    assert backend.batches == [200]  # every waiter was queued before the flusher ran
    for index, leaf, _h in backend.leaves(0, 200):
        assert decode_leaf(leaf)[0].request_id == f"req-{index}"
    assert verify_log(backend, VERIFIERS).ok


def test_batches_are_capped_and_stay_ordered() -> None:
    backend = RecordingBackend()
    log = new_log(backend, max_batch=64)

    async def run() -> list[int]:
        first = await asyncio.gather(*(log.append(entry(i)) for i in range(150)))
        second = await asyncio.gather(*(log.append(entry(150 + i)) for i in range(10)))
        return [*first, *second]

    assert asyncio.run(run()) == list(range(160))
    assert backend.batches == [64, 64, 22, 10]
    assert verify_log(backend, VERIFIERS).ok


def test_a_failed_backend_fails_every_waiter_and_the_log_recovers() -> None:
    backend = RecordingBackend()
    log = new_log(backend)

    async def run() -> tuple[list[Any], list[int]]:
        await log.append(entry(0))
        backend.fail = True
        failed = await asyncio.gather(
            *(log.append(entry(i)) for i in range(1, 6)), return_exceptions=True
        )
        backend.fail = False
        ok = await asyncio.gather(*(log.append(entry(i)) for i in range(6, 9)))
        return list(failed), list(ok)

    failed, ok = asyncio.run(run())
    assert all(isinstance(f, LogUnavailable) for f in failed)
    assert ok == [1, 2, 3]  # no gap, nothing half-written
    assert verify_log(backend, VERIFIERS).ok
    backend.fail = True
    with pytest.raises(LogUnavailable):
        log.append_sync(entry(9))


def claim(i: int, nonce: str, *, now: dt.datetime = T0, minutes: int = 5) -> NonceClaim:
    return NonceClaim(
        keyid="k1",
        nonce=nonce,
        expires_at=now + dt.timedelta(minutes=minutes),
        now=now,
        replayed=entry(i, decision="deny", reason="unauthenticated"),
    )


class ClaimRecordingBackend(RecordingBackend):
    """Also records the nonces and clock of each claiming append."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[tuple[list[str], dt.datetime]] = []

    def append_claiming(
        self,
        nonces: Sequence[tuple[str, str, dt.datetime]],
        *,
        now: dt.datetime,
        build: LeafBuilder,
        rebuild: Rebuild | None = None,
    ) -> int:
        if self.fail:
            raise OSError("disk full")
        self.claims.append(([n for _k, n, _e in nonces], now))

        def counted(fresh: list[bool]) -> tuple[Sequence[tuple[bytes, bytes]], bytes, int]:
            rows, state, before = build(fresh)
            self.batches.append(len(rows))
            return rows, state, before

        return super().append_claiming(nonces, now=now, build=counted, rebuild=rebuild)


def test_a_claimed_nonce_is_recorded_in_the_same_append_as_its_entry() -> None:
    backend = ClaimRecordingBackend()
    log = new_log(backend)
    later = T0 + dt.timedelta(seconds=3)

    async def run() -> list[int | BaseException]:
        return list(
            await asyncio.gather(
                log.append(entry(0), claim=claim(0, "n0", now=later)),
                log.append(entry(1)),  # an entry without a claim rides along untouched
                log.append(entry(2), claim=claim(2, "n2")),
                return_exceptions=True,
            )
        )

    assert asyncio.run(run()) == [0, 1, 2]
    # one append for the group, nonces and entries together; the earliest clock of the group
    # judges expiry, as it would for each nonce alone
    assert backend.claims == [(["n0", "n2"], T0)]
    assert backend.batches == [3]
    assert [decode_leaf(leaf)[0].decision for _i, leaf, _h in backend.leaves(0, 3)] == ["allow"] * 3


def test_a_replayed_nonce_logs_its_denial_instead_and_is_refused() -> None:
    backend = ClaimRecordingBackend()
    log = new_log(backend)

    async def run() -> list[int | BaseException]:
        await log.append(entry(0), claim=claim(0, "once"))
        # a replay racing its twin in one group, and a replay of the first request
        return list(
            await asyncio.gather(
                log.append(entry(1), claim=claim(1, "twin")),
                log.append(entry(2), claim=claim(2, "twin")),
                log.append(entry(3), claim=claim(3, "once")),
                return_exceptions=True,
            )
        )

    first, second, third = asyncio.run(run())
    assert first == 1
    assert isinstance(second, ReplayedRequest)
    assert isinstance(third, ReplayedRequest)
    assert isinstance(second, AuthError)
    assert second.access_logged
    assert (second.index, third.index) == (2, 3)
    assert "replayed" in str(second)
    logged = [decode_leaf(leaf)[0] for _i, leaf, _h in backend.leaves(0, 4)]
    assert [(e.request_id, e.decision, e.reason) for e in logged] == [
        ("req-0", "allow", "statutory_duty"),
        ("req-1", "allow", "statutory_duty"),
        ("req-2", "deny", "unauthenticated"),
        ("req-3", "deny", "unauthenticated"),
    ]
    assert verify_log(backend, VERIFIERS).ok


def test_an_expired_nonce_may_be_used_again_but_not_sooner() -> None:
    log = new_log(ClaimRecordingBackend())
    expiry = T0 + dt.timedelta(minutes=5)

    async def run() -> list[int | BaseException]:
        await log.append(entry(0), claim=claim(0, "n", minutes=5))
        outcomes: list[int | BaseException] = []
        for moment in (expiry, expiry + dt.timedelta(seconds=1)):
            try:
                outcomes.append(await log.append(entry(1), claim=claim(1, "n", now=moment)))
            except ReplayedRequest as error:
                outcomes.append(error)
        return outcomes

    at_expiry, after = asyncio.run(run())
    assert isinstance(at_expiry, ReplayedRequest)  # still remembered at its expiry instant
    assert after == 2


def test_a_failing_claiming_append_fails_the_whole_group_and_records_no_nonce() -> None:
    backend = ClaimRecordingBackend()
    log = new_log(backend)
    backend.fail = True

    async def run() -> list[int | BaseException]:
        return list(
            await asyncio.gather(
                log.append(entry(0), claim=claim(0, "a")),
                log.append(entry(1)),
                return_exceptions=True,
            )
        )

    assert all(isinstance(o, LogUnavailable) for o in asyncio.run(run()))
    assert backend.size() == 0
    backend.fail = False
    assert asyncio.run(log.append(entry(2), claim=claim(2, "a"))) == 0  # "a" was not used up


def test_a_log_that_cannot_build_its_leaves_records_no_nonce() -> None:
    # all or nothing inside the backend: a failure after the nonces were looked at (here, in
    # building the leaves) leaves them unrecorded
    backend = MemoryLogBackend()

    def broken(fresh: list[bool]) -> tuple[Sequence[tuple[bytes, bytes]], bytes, int]:
        raise OSError("disk full")

    nonce = [("k1", "n", T0 + dt.timedelta(minutes=5))]
    with pytest.raises(OSError, match="disk full"):
        backend.append_claiming(nonce, now=T0, build=broken)
    seen: list[list[bool]] = []

    def record(fresh: list[bool]) -> tuple[Sequence[tuple[bytes, bytes]], bytes, int]:
        seen.append(fresh)
        return [], b"", 0

    backend.append_claiming(nonce, now=T0, build=record)
    backend.append_claiming(nonce, now=T0, build=record)
    assert seen == [[True], [False]]


class PlainBackend:
    """A LogBackend without nonces: MemoryLogBackend's methods but append_claiming."""

    def __init__(self) -> None:
        self._inner = MemoryLogBackend()

    def __getattr__(self, name: str) -> Any:
        if name == "append_claiming":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_claim_needs_a_backend_that_records_nonces() -> None:
    log = new_log(cast(LogBackend, PlainBackend()))
    with pytest.raises(ValueError, match="does not record nonces"):
        asyncio.run(log.append(entry(0), claim=claim(0, "n")))
    assert log.size() == 0


# The abandoned loop's never-run flusher is reported when collected: expected here.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_appends_still_commit_after_the_server_moves_to_a_new_event_loop() -> None:
    backend = RecordingBackend()
    log = new_log(backend)
    old_loop = asyncio.new_event_loop()

    async def abandon() -> asyncio.Future[int]:
        # The append and its flusher are scheduled, then the loop is closed under them.
        return asyncio.ensure_future(log.append(entry(0)))

    abandoned = old_loop.run_until_complete(abandon())
    assert not abandoned.done()
    old_loop.close()

    async def on_new_loop() -> int:
        return await asyncio.wait_for(log.append(entry(1)), timeout=10)

    assert asyncio.run(on_new_loop()) == 0
    assert backend.batches == [1]
    assert verify_log(backend, VERIFIERS).ok


def test_a_second_writer_is_detected_and_the_chain_continues() -> None:
    backend = MemoryLogBackend()
    first, second = new_log(backend), new_log(backend)
    assert first.append_sync(entry(0)) == 0
    assert second.append_sync(entry(1)) == 1
    assert first.append_sync(entry(2)) == 2  # stale view: refused, reloaded, retried
    assert second.append_sync(entry(3)) == 3
    assert verify_log(backend, VERIFIERS).ok


def test_a_log_reopens_from_its_stored_state() -> None:
    backend = MemoryLogBackend()
    new_log(backend).append_sync(entry(0))
    reopened = new_log(backend)
    assert reopened.append_sync(entry(1)) == 1
    assert verify_log(backend, VERIFIERS).ok


# --- checkpoints ----------------------------------------------------------------------------------


def test_maybe_checkpoint_signs_only_when_due() -> None:
    backend = MemoryLogBackend()
    log = new_log(backend)
    assert log.maybe_checkpoint(T0) is None  # empty
    log.append_sync(entry(0))
    note = log.maybe_checkpoint(T0)
    assert note is not None
    cp = keys.verify_checkpoint(note, verifiers=VERIFIERS)
    assert (cp.origin, cp.size) == (ORIGIN, 1)
    assert log.maybe_checkpoint(T0 + dt.timedelta(seconds=5)) is None  # nothing new
    log.append_sync(entry(1))
    assert log.maybe_checkpoint(T0 + dt.timedelta(milliseconds=500)) is None  # too soon
    assert log.maybe_checkpoint(T0 + dt.timedelta(seconds=1)) is not None
    assert [s for s, _ in backend.checkpoints()] == [1, 2]


def test_run_checkpoints_checkpoints_on_stop() -> None:
    backend = MemoryLogBackend()
    log = new_log(backend, checkpoint_interval=dt.timedelta(hours=1))

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(log.run_checkpoints(stop))
        await log.append(entry(0))
        await log.append(entry(1))
        stop.set()
        await task

    asyncio.run(run())
    latest = backend.latest_checkpoint()
    assert latest is not None
    assert latest[0] == 2


def test_origin_must_be_one_line() -> None:
    with pytest.raises(ConfigError):
        AccessLog(MemoryLogBackend(), origin="a\nb", signer=LOG_KEY)


# --- proofs (property) ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 70))
def test_inclusion_and_consistency_proofs_verify(data: st.DataObject, n: int) -> None:
    backend = MemoryLogBackend()
    log = new_log(backend)
    for i in range(n):
        log.append_sync(entry(i))
    size1 = data.draw(st.integers(1, n), label="size1")
    root1 = keys.root_from_leaves(backend.leaf_hashes(0, size1))
    note = log.checkpoint()
    cp = keys.verify_checkpoint(note, verifiers=VERIFIERS)
    index = data.draw(st.integers(0, n - 1), label="index")
    leaf = backend.leaves(index, index + 1)[0][1]
    keys.verify_inclusion(index, n, keys.leaf_hash(leaf), log.inclusion_proof(index, n), cp.root)
    keys.verify_consistency(size1, n, root1, cp.root, log.consistency_proof(size1, n))
    with pytest.raises(InputError):
        log.inclusion_proof(n, n)


@pytest.mark.parametrize(("size1", "size2"), [(0, 0), (0, 5), (6, 5), (1, 9), (-1, 5)])
def test_a_consistency_proof_outside_the_log_is_an_input_error(size1: int, size2: int) -> None:
    # RFC 9162 has no proof from the empty tree; an InputError is INVALID_ARGUMENT on the wire,
    # where anything else would be an INTERNAL error of the node
    log = new_log(MemoryLogBackend())
    for i in range(8):
        log.append_sync(entry(i))
    with pytest.raises(InputError, match=f"sizes {size1}..{size2} are not in the log"):
        log.consistency_proof(size1, size2)


def test_a_writer_whose_view_is_stale_chains_onto_the_other_writers_leaves() -> None:
    """Two writers on one backend (two processes on one store): each append of the one whose
    cached tree another writer has overtaken is re-chained inside the backend's transaction,
    for plain appends and for appends that claim nonces alike; nothing is refused."""
    backend = ClaimRecordingBackend()
    first, second = new_log(backend), new_log(backend)
    assert first.append_sync(entry(0)) == 0
    assert second.append_sync(entry(1)) == 1  # `first` now believes the log has one leaf
    assert first.append_sync(entry(2)) == 2

    async def claiming() -> int:
        return await first.append(entry(4), claim=claim(4, "n-4"))

    assert second.append_sync(entry(3)) == 3
    assert asyncio.run(claiming()) == 4
    assert first.append_sync(entry(5)) == 5  # its view was brought up to date by the rebuild
    assert backend.batches == [1] * 6  # one backend call per append: no refusal, no retry
    first.checkpoint()
    report = verify_log(backend, VERIFIERS)
    assert report.ok, report.problems
    assert [decode_leaf(leaf)[0].request_id for _i, leaf, _h in backend.leaves(0, 6)] == [
        entry(i).request_id for i in range(6)
    ]
