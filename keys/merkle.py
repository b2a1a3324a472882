"""Merkle trees, inclusion and consistency proofs per RFC 9162 (section 2.1), and a compact range.

Leaf hash `SHA-256(0x00 ‖ data)`, node hash `SHA-256(0x01 ‖ left ‖ right)`, empty tree
`SHA-256("")`. Proof generation takes any `Sequence[bytes]` of leaf hashes (a list, or
`FetchedLeaves` over a store) and reads it in bounded slices, so the node never needs the whole
log in memory. The verifiers follow RFC 9162 2.1.3.2 and 2.1.4.2 and pass every case of the
transparency-dev test vectors (tests/keys/vectors/rfc6962); a consistency proof from the empty
tree is refused, as those vectors require (it proves nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import overload

from keys.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_CHUNK = 1 << 14  # leaves read per slice when hashing a large range
_MAGIC = b"CXM1"
_CACHE_MIN = 256  # smallest subtree worth caching: bounds a cache to size/256 entries

SubtreeCache = MutableMapping[tuple[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """`SHA-256(0x00 ‖ data)`."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """`SHA-256(0x01 ‖ left ‖ right)`."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _reduce(level: list[bytes]) -> bytes:
    # Pairing bottom-up and promoting an odd last node gives the RFC 9162 tree shape.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _mth(leaves: Sequence[bytes], lo: int, hi: int, cache: SubtreeCache | None = None) -> bytes:
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    # Perfect, aligned subtrees never change as the log grows: safe to cache across sizes.
    cacheable = cache is not None and n >= _CACHE_MIN and n & (n - 1) == 0 and lo % n == 0
    if cacheable and cache is not None and (lo, hi) in cache:
        return cache[(lo, hi)]
    if n <= _CHUNK:
        chunk = list(leaves[lo:hi])
        if len(chunk) != n:
            raise VerificationError("leaf source returned the wrong number of leaves")
        result = _reduce(chunk)
    else:
        k = _split(n)
        result = node_hash(_mth(leaves, lo, lo + k, cache), _mth(leaves, lo + k, hi, cache))
    if cacheable and cache is not None:
        cache[(lo, hi)] = result
    return result


def _size(leaves: Sequence[bytes], size: int | None) -> int:
    total = len(leaves)
    if size is None:
        return total
    if not 0 <= size <= total:
        raise ValueError(f"tree size {size} is outside 0..{total}")
    return size


def root_from_leaves(
    leaf_hashes: Sequence[bytes], *, size: int | None = None, cache: SubtreeCache | None = None
) -> bytes:
    """The RFC 9162 root of the first `size` (default: all) leaf hashes.

    `cache` (optional, for every function here) is a mapping the caller keeps between calls;
    it stores the roots of perfect aligned subtrees of 256+ leaves, which never change as the
    log grows, so repeated proofs over a large log hash only the young right edge.
    """
    return _mth(leaf_hashes, 0, _size(leaf_hashes, size), cache)


def inclusion_proof(
    index: int,
    leaf_hashes: Sequence[bytes],
    *,
    size: int | None = None,
    cache: SubtreeCache | None = None,
) -> list[bytes]:
    """The audit path of leaf `index` in the tree of the first `size` leaves (leaf upwards).

    Raises ValueError when `index` is not below the tree size.
    """
    n = _size(leaf_hashes, size)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of size {n}")
    path: list[bytes] = []
    lo, hi = 0, n
    siblings: list[bytes] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(_mth(leaf_hashes, lo + k, hi, cache))
            hi = lo + k
        else:
            siblings.append(_mth(leaf_hashes, lo, lo + k, cache))
            lo = lo + k
    path.extend(reversed(siblings))
    return path


def consistency_proof(
    size1: int,
    leaf_hashes: Sequence[bytes],
    *,
    size: int | None = None,
    cache: SubtreeCache | None = None,
) -> list[bytes]:
    """The RFC 9162 consistency proof from size1 to the tree of the first `size` leaves.

    Raises ValueError unless 0 < size1 <= size.
    """
    n = _size(leaf_hashes, size)
    if not 0 < size1 <= n:
        raise ValueError(f"old size {size1} must be in 1..{n}")
    out: list[bytes] = []
    lo, hi, m, complete = 0, n, size1, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append(_mth(leaf_hashes, lo + k, hi, cache))
            hi = lo + k
        else:
            out.append(_mth(leaf_hashes, lo, lo + k, cache))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        out.append(_mth(leaf_hashes, lo, hi, cache))
    out.reverse()
    return out


def _fail() -> VerificationError:
    return VerificationError("Merkle proof does not verify")


def _check_hashes(*items: bytes) -> None:
    for item in items:
        if len(item) != HASH_SIZE:
            raise _fail()


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` with `root` (RFC 9162
    2.1.3.2). Raises VerificationError otherwise, including for malformed hashes."""
    if not 0 <= index < size:
        raise _fail()
    _check_hashes(leaf_hash, root, *proof)
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise _fail()
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not hmac.compare_digest(r, root):
        raise _fail()


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (size1, root1) is a prefix of (size2, root2) (RFC 9162 2.1.4.2).

    Equal sizes need an empty proof and equal roots. Raises VerificationError otherwise, for
    size1 > size2 and for size1 == 0 (a proof from the empty tree proves nothing).
    """
    if size1 < 1 or size2 < size1:
        raise _fail()
    if size1 == size2:
        if proof or not hmac.compare_digest(root1, root2):
            raise _fail()
        return
    if not proof:
        raise _fail()
    _check_hashes(root1, root2, *proof)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise _fail()
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not (hmac.compare_digest(fr, root1) and hmac.compare_digest(sr, root2)):
        raise _fail()


class FetchedLeaves(Sequence[bytes]):
    """A read-only Sequence of leaf hashes backed by `fetch(start, stop) -> list of hashes`.

    Lets proof generation read a store in slices (`SELECT leaf_hash ... WHERE seq >= ? AND seq <
    ?`) instead of loading the whole log. `fetch` must return exactly `stop - start` hashes.
    """

    def __init__(self, size: int, fetch: Callable[[int, int], Sequence[bytes]]) -> None:
        if size < 0:
            raise ValueError("size must not be negative")
        self._size = size
        self._fetch = fetch

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._size)
            if step != 1:
                raise ValueError("FetchedLeaves supports contiguous slices only")
            return list(self._fetch(start, stop)) if start < stop else []
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError("leaf index out of range")
        got = self._fetch(index, index + 1)
        if len(got) != 1:
            raise VerificationError("leaf source returned the wrong number of leaves")
        return got[0]

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, self._size, _CHUNK):
            yield from self._fetch(start, min(start + _CHUNK, self._size))


class CompactRange:
    """The right edge of a Merkle tree: O(log n) state that supports appends and the root.

    Holds one hash per set bit of `size` (the roots of the perfect subtrees, left to right).
    `to_bytes` is `"CXM1" ‖ u64 size ‖ hashes`, for the store.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """An empty range, or the state `(size, hashes)` of a previous one (checked)."""
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise VerificationError("compact range state is inconsistent")
        _check_hashes(*hashes)
        self.size = size
        self._hashes = list(hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash (32 bytes) at the right edge."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        hashes = self._hashes
        hashes.append(leaf_hash)
        self.size += 1
        s = self.size
        while not s & 1:
            right = hashes.pop()
            hashes[-1] = hashlib.sha256(b"\x01" + hashes[-1] + right).digest()
            s >>= 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append many leaf hashes (32 bytes each), as `append` one by one would; all or none
        (ValueError when one has another length)."""
        if any(len(h) != HASH_SIZE for h in leaf_hashes):
            raise ValueError("a leaf hash is 32 bytes")
        # `append` inlined with locals: verifying a whole log folds every leaf through here.
        hashes, size, sha = self._hashes, self.size, hashlib.sha256
        for leaf_hash in leaf_hashes:
            hashes.append(leaf_hash)
            size += 1
            s = size
            while not s & 1:
                right = hashes.pop()
                hashes[-1] = sha(b"\x01" + hashes[-1] + right).digest()
                s >>= 1
        self.size = size

    def root(self) -> bytes:
        """The RFC 9162 root of all leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h

    def hashes(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots, left to right."""
        return tuple(self._hashes)

    def to_bytes(self) -> bytes:
        """Serialised state for the store."""
        return _MAGIC + struct.pack(">Q", self.size) + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, b: bytes) -> CompactRange:
        """Parse `to_bytes` output; raises VerificationError when it is malformed."""
        if len(b) < 12 or b[:4] != _MAGIC:
            raise VerificationError("compact range state is malformed")
        (size,) = struct.unpack(">Q", b[4:12])
        body = b[12:]
        if len(body) % HASH_SIZE:
            raise VerificationError("compact range state is malformed")
        hashes = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return cls(int(size), hashes)
