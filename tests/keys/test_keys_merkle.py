"""Merkle proofs and the compact range: properties over random sizes, store-backed leaves."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keys
from keys import CompactRange, VerificationError

LEAVES = [keys.leaf_hash(str(i).encode()) for i in range(300)]


def _naive_root(leaves: list[bytes]) -> bytes:
    # RFC 9162 section 2.1.1, written as the recursive definition.
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return keys.node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def test_hash_domain_separation() -> None:
    assert keys.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert keys.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert keys.root_from_leaves([]) == keys.EMPTY_ROOT == hashlib.sha256(b"").digest()


@given(st.integers(min_value=0, max_value=300))
def test_roots_match_the_recursive_definition(n: int) -> None:
    assert keys.root_from_leaves(LEAVES[:n]) == _naive_root(LEAVES[:n])
    assert keys.root_from_leaves(LEAVES, size=n) == _naive_root(LEAVES[:n])


@given(st.data())
def test_inclusion_proofs_verify(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=300))
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    root = keys.root_from_leaves(LEAVES[:n])
    proof = keys.inclusion_proof(i, LEAVES, size=n)
    keys.verify_inclusion(i, n, LEAVES[i], proof, root)
    with pytest.raises(VerificationError):
        keys.verify_inclusion(i, n, keys.leaf_hash(b"other"), proof, root)
    if n > 1:
        with pytest.raises(VerificationError):
            keys.verify_inclusion((i + 1) % n, n, LEAVES[i], proof, root)


@given(st.data())
def test_consistency_proofs_verify(data: st.DataObject) -> None:
    n2 = data.draw(st.integers(min_value=1, max_value=300))
    n1 = data.draw(st.integers(min_value=1, max_value=n2))
    r1, r2 = keys.root_from_leaves(LEAVES[:n1]), keys.root_from_leaves(LEAVES[:n2])
    proof = keys.consistency_proof(n1, LEAVES, size=n2)
    keys.verify_consistency(n1, n2, r1, r2, proof)
    if n1 < n2:
        with pytest.raises(VerificationError):
            keys.verify_consistency(n1, n2, keys.leaf_hash(b"forked"), r2, proof)
        with pytest.raises(VerificationError):
            keys.verify_consistency(n1, n2, r1, keys.leaf_hash(b"forked"), proof)
        with pytest.raises(VerificationError):
            keys.verify_consistency(n1, n2, r1, r2, proof[:-1])


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=8), max_size=200), st.integers(min_value=0, max_value=200))
def test_compact_range_root_equals_root_from_leaves(data: list[bytes], cut: int) -> None:
    hashes = [keys.leaf_hash(d) for d in data]
    cr = CompactRange()
    for i, h in enumerate(hashes):
        if i == cut:  # a save and restore in the middle changes nothing
            cr = CompactRange.from_bytes(cr.to_bytes())
        cr.append(h)
    assert cr.size == len(hashes)
    assert cr.root() == keys.root_from_leaves(hashes)
    assert len(cr.hashes()) == bin(len(hashes)).count("1")


@settings(max_examples=50)
@given(st.integers(min_value=0, max_value=300), st.lists(st.integers(0, 300), max_size=6))
def test_extend_equals_appending_one_by_one(n: int, cuts: list[int]) -> None:
    one_by_one, in_pieces = CompactRange(), CompactRange()
    for h in LEAVES[:n]:
        one_by_one.append(h)
    bounds = sorted({0, n, *(c for c in cuts if c <= n)})
    for start, end in itertools.pairwise(bounds):
        in_pieces.extend(LEAVES[start:end])
    assert (in_pieces.size, in_pieces.hashes()) == (one_by_one.size, one_by_one.hashes())
    assert in_pieces.root() == keys.root_from_leaves(LEAVES[:n])


def test_extend_is_all_or_nothing() -> None:
    cr = CompactRange()
    cr.extend(LEAVES[:3])
    with pytest.raises(ValueError, match="32 bytes"):
        cr.extend([LEAVES[3], b"short"])
    assert (cr.size, cr.root()) == (3, keys.root_from_leaves(LEAVES[:3]))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"CXM1",
        b"XXXX" + bytes(8),
        b"CXM1" + (3).to_bytes(8, "big") + bytes(32),
        b"CXM1" + (1).to_bytes(8, "big") + bytes(31),
    ],
)
def test_bad_compact_range_state_is_refused(raw: bytes) -> None:
    with pytest.raises(VerificationError):
        CompactRange.from_bytes(raw)


def test_compact_range_refuses_bad_leaf() -> None:
    with pytest.raises(ValueError):
        CompactRange().append(b"short")


def test_fetched_leaves_give_the_same_proofs_in_bounded_reads() -> None:
    calls: list[tuple[int, int]] = []

    def fetch(start: int, stop: int) -> list[bytes]:
        calls.append((start, stop))
        return LEAVES[start:stop]

    source = keys.FetchedLeaves(len(LEAVES), fetch)
    assert len(source) == 300
    assert source[5] == LEAVES[5]
    assert list(source) == LEAVES
    assert keys.root_from_leaves(source) == keys.root_from_leaves(LEAVES)
    assert keys.inclusion_proof(77, source) == keys.inclusion_proof(77, LEAVES)
    assert keys.consistency_proof(100, source) == keys.consistency_proof(100, LEAVES)
    assert all(stop - start <= 1 << 14 for start, stop in calls)


def test_proof_arguments_out_of_range() -> None:
    with pytest.raises(ValueError):
        keys.inclusion_proof(3, LEAVES[:3])
    with pytest.raises(ValueError):
        keys.consistency_proof(0, LEAVES)
    with pytest.raises(ValueError):
        keys.consistency_proof(5, LEAVES, size=4)
    with pytest.raises(ValueError):
        keys.root_from_leaves(LEAVES, size=301)


def test_subtree_cache_gives_the_same_answers_with_fewer_reads() -> None:
    big = [keys.leaf_hash(i.to_bytes(4, "big")) for i in range(40_000)]
    reads = [0]

    def fetch(start: int, stop: int) -> list[bytes]:
        reads[0] += stop - start
        return big[start:stop]

    cache: dict[tuple[int, int], bytes] = {}
    for size in (33_000, 40_000):
        source = keys.FetchedLeaves(size, fetch)
        for index in (0, 17_000, size - 1):
            assert keys.inclusion_proof(index, source, cache=cache) == keys.inclusion_proof(
                index, big, size=size
            )
        assert keys.consistency_proof(20_001, source, cache=cache) == keys.consistency_proof(
            20_001, big, size=size
        )
        assert keys.root_from_leaves(source, cache=cache) == keys.root_from_leaves(big, size=size)
    assert cache
    assert all(hi - lo >= 256 and (hi - lo) & (hi - lo - 1) == 0 for lo, hi in cache)
    reads[0] = 0
    keys.inclusion_proof(5, keys.FetchedLeaves(40_000, fetch), cache=cache)
    assert reads[0] < 40_000 // 2
