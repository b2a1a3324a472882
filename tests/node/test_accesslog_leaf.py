"""encode_leaf: its hand-spelled fast path gives exactly the canonical JSON of the entry."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from node.accesslog import LogEntry, decode_leaf, encode_leaf, kept_form
from node.officers import NOT_AN_OFFICER_ID


def canonical(entry: LogEntry, previous: bytes) -> bytes:
    """The definition of a leaf: to_dict() plus the chain, sorted keys, compact, UTF-8."""
    doc = entry.to_dict()
    doc["chain"] = previous.hex()
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Any text the JSON encoder can write as UTF-8: quotes, backslashes, control characters, CJK.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
snake = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
entries = st.builds(
    LogEntry,
    time=st.sampled_from(["2026-11-25T01:00:00Z", "2026-11-25T01:00:00.123456Z"]),
    kind=snake,
    requester=text,
    officer=text,
    purpose=text,
    legal_basis=text,
    decision=st.sampled_from(["allow", "deny"]),
    reason=st.one_of(st.just(""), snake),
    request_id=text,
    grant_id=st.one_of(st.none(), text),
    subject_index=st.one_of(st.none(), st.from_regex(r"[0-9a-f]{16,64}", fullmatch=True)),
    subject_masked=st.one_of(st.none(), text.map(lambda t: t + "*")),
    items_asked=st.lists(text, max_size=4).map(tuple),
    items_released=st.lists(text, max_size=4).map(tuple),
    result_count=st.integers(min_value=0, max_value=2**63),
    trace_id=st.one_of(st.none(), text),
)


@given(entries, st.binary(min_size=32, max_size=32))
def test_fast_leaf_is_the_canonical_json(entry: LogEntry, previous: bytes) -> None:
    leaf = encode_leaf(entry, previous)
    kept = kept_form(entry)  # what the log keeps (masked identifiers, staff-id officer)
    assert leaf == canonical(kept, previous)
    assert decode_leaf(leaf) == (kept, previous)


def test_unexpected_value_types_take_the_generic_encoder() -> None:
    values: dict[str, Any] = {
        "time": "2026-11-25T01:00:00Z",
        "kind": "query",
        "requester": "zd-tax",
        "officer": "o-1",
        "purpose": "tax",
        "legal_basis": "law",
        "decision": "allow",
        "reason": "granted",
        "request_id": "r-1",
    }
    # A float count (as a JSON decoder may hand back) and a number where text belongs are
    # spelled by the generic encoder, byte for byte as the definition says.
    for odd in ({"result_count": 3.0}, {"officer": 7}, {"items_asked": ("a", 1)}):
        entry = LogEntry(**(values | odd))
        assert encode_leaf(entry, b"\x00" * 32) == canonical(entry, b"\x00" * 32)


def test_an_id_number_in_requester_supplied_text_is_never_stored() -> None:
    # the requesting node controls officer, purpose, legal basis and request id: an ID number
    # typed there (by mistake or on purpose) is masked before the entry is hashed and kept
    ric = "11010519491231002X"
    entry = LogEntry(
        time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax",
        officer=f"clerk {ric.lower()}", purpose=ric, legal_basis=f"行政许可法 subject {ric}",
        decision="deny", reason="purpose_not_allowed", request_id=f"r-{ric}", grant_id=ric,
    )  # fmt: skip
    leaf = encode_leaf(entry, b"\0" * 32)
    assert ric.encode() not in leaf
    assert ric.lower().encode() not in leaf
    decoded, _previous = decode_leaf(leaf)
    assert decoded == kept_form(entry)
    assert decoded.purpose == "110105********002X"
    assert decoded.legal_basis == "行政许可法 subject 110105********002X"
    assert decoded.officer == NOT_AN_OFFICER_ID  # "clerk <id>" is no staff id
    # reading back changes nothing: a leaf kept before this rule decodes as it was written
    assert kept_form(decoded) == decoded


def test_a_leaf_written_before_masking_is_read_back_exactly() -> None:
    old = LogEntry(
        time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax", officer="Zhang San",
        purpose="administrative_licensing", legal_basis="（行政许可审查），经办第二十二条规定",
        decision="allow", reason="ok", request_id="r1",
    )  # fmt: skip
    leaf = canonical(old, b"\0" * 32)  # the bytes an earlier release wrote
    decoded, _previous = decode_leaf(leaf)
    assert decoded == old
    assert decoded.to_dict() == old.to_dict()


def test_an_officer_that_is_not_a_staff_id_is_not_kept() -> None:
    def make(officer: str) -> LogEntry:
        return LogEntry(
            time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax", officer=officer,
            purpose="administrative_licensing", legal_basis="x", decision="deny",
            reason="officer_invalid", request_id="r1",
        )  # fmt: skip

    leaf = encode_leaf(make("张三"), b"\0" * 32)
    assert "张三".encode() not in leaf
    assert decode_leaf(leaf)[0].officer == NOT_AN_OFFICER_ID
    for staff_id in ("m-001", "hr.zhang", "sec-li@zd-market", ""):
        assert decode_leaf(encode_leaf(make(staff_id), b"\0" * 32))[0].officer == staff_id


def test_an_id_number_spelt_to_slip_past_the_check_is_not_kept_either() -> None:
    ric = "11010519491231002X"
    entry = LogEntry(
        time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax",
        officer=f"u{ric}", purpose="staff_recruitment",
        legal_basis=f"申请人 {ric[:6]}-{ric[6:14]}-{ric[14:]} 依据张三ID{ric}",
        decision="deny", reason="item_unknown", request_id="r1",
        items_asked=("admin_penalty", ric), items_released=(),
    )  # fmt: skip
    leaf = encode_leaf(entry, b"\0" * 32)
    assert b"19491231" not in leaf  # no spelling of the number survives, in any field
    kept, _previous = decode_leaf(leaf)
    assert kept.officer == NOT_AN_OFFICER_ID  # a staff id holds no ID number
    assert kept.items_asked == ("admin_penalty", "110105********002X")


def test_a_huge_free_text_field_is_cut_in_the_log() -> None:
    entry = LogEntry(
        time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax", officer="m-001",
        purpose="staff_recruitment", legal_basis="x" * 5_000_000, decision="deny",
        reason="officer_invalid", request_id="r1",
    )  # fmt: skip
    kept, _previous = decode_leaf(encode_leaf(entry, b"\0" * 32))
    assert len(kept.legal_basis) < 1100
    assert kept.legal_basis.endswith("…(cut)")


def test_a_huge_free_text_field_of_short_words_is_kept_in_bounded_time() -> None:
    # Encoded inside the log's write transaction, every other append waiting: a refused peer's
    # 4 MB legal basis of one- and two-letter words (what a split credit code looks like to
    # the scan) must cost what its kept 1,024 characters cost, not seconds.
    for spelling in ("a " * 2_000_000, "ab-" * 1_300_000):
        entry = LogEntry(
            time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax", officer="m-001",
            purpose="staff_recruitment", legal_basis=spelling, decision="deny",
            reason="officer_invalid", request_id="r1",
        )  # fmt: skip
        started = time.perf_counter()
        kept, _previous = decode_leaf(encode_leaf(entry, b"\0" * 32))
        assert time.perf_counter() - started < 1.0
        assert kept.legal_basis == spelling[:1024] + "…(cut)"


def test_an_identifier_across_the_cut_of_a_huge_field_is_masked() -> None:
    code = "91310115MA1K3BTP2B"
    split = "-".join(code[i : i + 3] for i in range(0, 18, 3))
    for at in (1000, 1015, 1023):
        entry = LogEntry(
            time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax", officer="m-001",
            purpose="staff_recruitment", legal_basis="x" * at + " " + split + " y" * 100_000,
            decision="deny", reason="officer_invalid", request_id="r1",
        )  # fmt: skip
        kept, _previous = decode_leaf(encode_leaf(entry, b"\0" * 32))
        assert kept.legal_basis.endswith("…(cut)")
        assert code[:8] not in kept.legal_basis.replace("-", "")
