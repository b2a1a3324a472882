"""Pure parts of the query and witness code: subject normalisation, the witness's extension
rule (cosign only a provable extension; every kind of fork refused), and the client's refusal
of answers that do not verify."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from node._pb.credex.v1 import query_pb2
from node.accesslog import AccessLog, ForkDetected, LogEntry, MemoryLogBackend
from node.errors import InputError
from node.query import QueryAsk, build_body, normalise_subject, open_answer, requested_fields
from node.witness import cosign_extension

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
LOG_KEY = keys.Signer(b"\x01" * 32)
WITNESS_KEY = keys.Signer(b"\x02" * 32)
PERSON = "11010519491231002X"


def entry(n: int, tag: str = "a") -> LogEntry:
    return LogEntry(
        time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax",
        officer=f"{tag}-{n}", purpose="administrative_licensing", legal_basis="x",
        decision="allow", reason="statutory_duty", request_id=f"{tag}{n}",
    )  # fmt: skip


def log(entries: int, tag: str = "a") -> AccessLog:
    access = AccessLog(
        MemoryLogBackend(), origin="zhangdian.credex/market", signer=LOG_KEY, key_name="market"
    )
    for n in range(entries):
        access.append_sync(entry(n, tag))
    return access


def cosign(previous: str | None, note: str, proof: list[bytes]) -> str:
    return cosign_extension(
        previous, note, proof, log_name="market", log_keys=[LOG_KEY.public_key],
        name="platform", signer=WITNESS_KEY,
    )  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(0, 40))
def test_an_extension_is_cosigned(first: int, more: int) -> None:
    access = log(first)
    old = access.checkpoint()
    for n in range(more):
        access.append_sync(entry(first + n))
    new = access.checkpoint()
    cosigned = cosign(old, new, access.consistency_proof(first, first + more))
    cp = keys.verify_checkpoint(
        cosigned, verifiers={"platform": WITNESS_KEY.public_key}, log_name="platform"
    )
    assert cp.size == first + more


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(1, 10), st.integers(0, 29))
def test_a_different_history_is_a_fork(first: int, more: int, cut: int) -> None:
    cut = min(cut, first - 1)
    honest = log(first)
    witnessed = honest.checkpoint()
    forked = log(cut)  # same prefix up to `cut`, then another history
    for n in range(cut, first + more):
        forked.append_sync(entry(n, "b"))
    note = forked.checkpoint()
    with pytest.raises(ForkDetected):
        cosign(witnessed, note, forked.consistency_proof(first, first + more))


def test_same_size_other_root_and_rollback_are_forks() -> None:
    a, b = log(5, "a"), log(5, "b")
    with pytest.raises(ForkDetected):
        cosign(a.checkpoint(), b.checkpoint(), [])
    with pytest.raises(ForkDetected):
        cosign(a.checkpoint(), log(3).checkpoint(), [])


def test_a_note_not_signed_by_the_log_is_refused() -> None:
    stranger = AccessLog(
        MemoryLogBackend(), origin="zhangdian.credex/market", signer=WITNESS_KEY,
        key_name="market",
    )  # fmt: skip
    stranger.append_sync(entry(0))
    with pytest.raises(keys.VerificationError):
        cosign(None, stranger.checkpoint(), [])


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("110105-19491231-002x", "natural_person", PERSON),
        ("\ufeff110105\u200b19491231\u2013002x", "natural_person", PERSON),  # pasted
        (" 91370303MA3C4X5Y6A ", "organisation", None),
    ],
)
def test_normalise_subject(value: str, kind: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(Exception, match=r"check|character|length|invalid|USCC|credit"):
            normalise_subject(value, kind, today=NOW.date())
        return
    assert normalise_subject(value, kind, today=NOW.date()) == expected


def test_unknown_subject_kind_is_input_error() -> None:
    with pytest.raises(InputError, match="subject kind"):
        normalise_subject(PERSON, "alien", today=NOW.date())


def test_a_refused_kind_or_field_name_never_echoes_an_id_number() -> None:
    # A peer's body is checked by the provider, whose refusal goes back as the gRPC details:
    # an ID number typed where a kind or ITEM.FIELD belongs must come back masked.
    with pytest.raises(InputError, match="subject kind") as kind:
        normalise_subject(PERSON, PERSON, today=NOW.date())
    with pytest.raises(InputError, match=r"ITEM\.FIELD") as field:
        requested_fields([f"ID{PERSON}"])
    for refused in (kind, field):
        assert "110105" in str(refused.value)
        assert PERSON[6:14] not in str(refused.value)


def _answer(
    payloads: list[bytes], *, sender: str = "market", count: int | None = None
) -> tuple[query_pb2.QueryAnswer, bytes]:
    private, public = keys.encryption_keypair()
    sealed = keys.seal_batch(
        payloads,
        header={"kind": "query_answer", "sender": sender, "purpose": "p", "request_id": "r1"},
        recipient_id="tax",
        recipient_public=public,
    )
    answer = query_pb2.QueryAnswer(
        sealed=sealed, result_count=len(payloads) if count is None else count, request_id="r1",
        released_fields=["admin_licence_person.status"],
    )  # fmt: skip
    return answer, private


def _ask() -> QueryAsk:
    return QueryAsk(
        peer="market", subject=PERSON, subject_kind="natural_person",
        items=("admin_licence_person",), purpose="p", legal_basis="x", officer="o",
        request_id="r1",
    )  # fmt: skip


def _record(signer: keys.Signer, fields: dict[str, str]) -> bytes:
    from node import wire  # noqa: PLC0415

    header = {"item": "admin_licence_person", "catalog_version": "2026.1", "record_key": "k",
              "version": 1, "producer": "market", "issued_at": "2026-11-25T02:00:00Z",
              "subject": "0" * 32}  # fmt: skip
    signed = keys.sign_record(header, fields, signer)
    return wire.record_to_pb(signed).SerializeToString()


def test_open_answer_accepts_a_minimised_verified_record() -> None:
    answer, private = _answer([_record(LOG_KEY, {"status": "有效"})])
    result = open_answer(
        answer, ask=_ask(), recipient_id="tax", private_key=private,
        trusted={LOG_KEY.keyid: LOG_KEY.public_key},
    )  # fmt: skip
    assert [dict(r.fields) for r in result.records] == [{"status": "有效"}]


@pytest.mark.parametrize("case", ["wrong_signer", "extra_field", "wrong_sender", "count_mismatch"])
def test_open_answer_refuses_what_does_not_verify(case: str) -> None:
    signer = WITNESS_KEY if case == "wrong_signer" else LOG_KEY
    fields = {"status": "有效", "decision_no": "1"} if case == "extra_field" else {"status": "有效"}
    answer, private = _answer(
        [_record(signer, fields)],
        sender="tax" if case == "wrong_sender" else "market",
        count=2 if case == "count_mismatch" else None,
    )
    with pytest.raises(keys.VerificationError):
        open_answer(
            answer, ask=_ask(), recipient_id="tax", private_key=private,
            trusted={LOG_KEY.keyid: LOG_KEY.public_key},
        )  # fmt: skip


def test_build_body_never_carries_the_identifier_in_clear() -> None:
    _private, public = keys.encryption_keypair()
    body = build_body(_ask(), requester="tax", provider_key=public, now=NOW)
    assert PERSON.encode() not in body.SerializeToString()
    with pytest.raises(InputError):
        build_body(
            QueryAsk(**{**_ask().__dict__, "items": ()}),
            requester="tax", provider_key=public, now=NOW,
        )  # fmt: skip
