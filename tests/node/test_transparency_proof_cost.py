"""A proof costs the young right edge of the tree, not the whole log.

The witness asks every department for a consistency proof on each visit (every 3 s while the
log grows), and any roster member may ask for inclusion proofs: built from scratch, each one
read and hashed every leaf hash of the log (about half a second of CPU per million entries),
so a large log spent its node's CPU on proofs. Perfect aligned subtrees never change as the
log grows; the access log keeps their roots (keys.SubtreeCache) between proofs.
"""

from __future__ import annotations

import keys
from node.accesslog import AccessLog, MemoryLogBackend
from tests.node.accesslog_support import fixed_query_entry

LOG_KEY = keys.Signer(b"\x01" * 32)
SIZE = 4096


class CountingBackend(MemoryLogBackend):
    """Counts the leaf hashes proofs read."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        self.read += end - start
        return super().leaf_hashes(start, end)


def test_proofs_after_the_first_read_only_the_young_edge() -> None:
    backend = CountingBackend()
    log = AccessLog(backend, origin="zhangdian.credex/market", signer=LOG_KEY, key_name="market")
    for i in range(SIZE):
        log.append_sync(fixed_query_entry(i))
    old = keys.read_checkpoint(log.checkpoint())
    log.consistency_proof(1000, SIZE)  # the first proofs read the log once
    log.inclusion_proof(17, SIZE)
    for i in range(SIZE, SIZE + 3):
        log.append_sync(fixed_query_entry(i))
    new = keys.read_checkpoint(log.checkpoint())
    backend.read = 0
    proof = log.consistency_proof(SIZE, SIZE + 3)
    path = log.inclusion_proof(17, SIZE + 3)
    assert backend.read < 600, backend.read  # not 2 x 4099
    keys.verify_consistency(SIZE, SIZE + 3, old.root, new.root, proof)
    keys.verify_inclusion(17, SIZE + 3, backend.leaf_hashes(17, 18)[0], path, new.root)
