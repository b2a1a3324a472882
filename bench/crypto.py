"""Crypto throughput of credex's keys package against the primitives it is built from.

Prints one human line per figure and then machine lines
`BENCH crypto <name> <value> <unit> <limit-name> <limit-value>`, where the limit is the rate of
the underlying primitive measured in the same run (goals: record signing >= 60% of raw Ed25519
signing; Merkle appends >= 100,000 leaves/s). Run: `.venv/bin/python bench/crypto.py [--quick]`.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable

import keys

FIELDS = 30


def _rate(fn: Callable[[], object], *, seconds: float) -> float:
    """Calls per second of `fn`, best of three runs of about `seconds / 3` each."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(50):
                fn()
            n += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def _paired(
    a: Callable[[], object], b: Callable[[], object], *, seconds: float
) -> tuple[float, float]:
    """Best rates of `a` and `b` measured in alternating rounds, so that load from other
    processes on the machine biases neither side of a ratio."""
    best_a = best_b = 0.0
    for _ in range(5):
        best_a = max(best_a, _rate(a, seconds=seconds / 5))
        best_b = max(best_b, _rate(b, seconds=seconds / 5))
    return best_a, best_b


def main(argv: list[str]) -> int:
    """Run every benchmark and print the figures."""
    span = 0.6 if "--quick" in argv else 3.0
    signer = keys.Signer.generate()
    header = {
        "item": "admin_penalty",
        "catalog_version": "2026.1",
        "record_key": "ab" * 32,
        "version": 1,
        "producer": "zd-market",
        "issued_at": "2026-11-25T00:00:00Z",
        "subject": "cd" * 16,
    }
    fields = {f"field_{i:02d}": f"值 {i} value of a typical field" for i in range(FIELDS)}
    record = keys.sign_record(header, fields, signer)
    payload = keys.pae(keys.RECORD_PAYLOAD_TYPE, record.envelope.payload)
    # The baseline is the bare libsodium Ed25519 signature (no PyNaCl wrapper objects) over the
    # exact bytes a record signature covers: a stricter limit than PyNaCl's SigningKey.sign.
    raw_sign, rec_sign = _paired(
        lambda: signer.sign(payload),
        lambda: keys.sign_record(header, fields, signer),
        seconds=2 * span,
    )
    trusted = {signer.keyid: signer.public_key}
    sig = signer.sign(payload)
    public = signer.public_key
    raw_verify, rec_verify = _paired(
        lambda: keys.verify_signature(public, payload, sig),
        lambda: keys.verify_record(record, trusted=trusted),
        seconds=2 * span,
    )

    _, recipient_public = keys.encryption_keypair()
    batch = [os.urandom(1024) for _ in range(500)]
    seal_rate = 500 * _rate(
        lambda: keys.seal_batch(
            batch,
            header={"sender": "zd-market", "sequence": 1},
            recipient_id="zd-tax",
            recipient_public=recipient_public,
        ),
        seconds=span,
    )
    cipher = keys.StorageCipher(os.urandom(32))
    body = os.urandom(1024)
    at_rest = _rate(lambda: cipher.encrypt("row-1", body), seconds=span)

    leaves = [keys.leaf_hash(i.to_bytes(8, "big")) for i in range(200_000)]
    start = time.perf_counter()
    cr = keys.CompactRange()
    for h in leaves:
        cr.append(h)
    appends = len(leaves) / (time.perf_counter() - start)
    root = cr.root()
    start = time.perf_counter()
    checked = 200
    cache: dict[tuple[int, int], bytes] = {}
    for i in range(0, len(leaves), len(leaves) // checked):
        proof = keys.inclusion_proof(i, leaves, cache=cache)
        keys.verify_inclusion(i, len(leaves), leaves[i], proof, root)
    incl = checked / (time.perf_counter() - start)

    figures = [
        ("ed25519_sign_raw", raw_sign, "sig/s", "ed25519_sign", raw_sign),
        ("record_sign_30_fields", rec_sign, "rec/s", "ed25519_sign", raw_sign),
        ("record_verify_30_fields", rec_verify, "rec/s", "ed25519_verify", raw_verify),
        ("seal_batch_1KiB_x500", seal_rate, "rec/s", "none", 0.0),
        ("at_rest_encrypt_1KiB", at_rest, "rows/s", "none", 0.0),
        ("merkle_append", appends, "leaves/s", "goal", 100_000.0),
        ("inclusion_prove_verify_200k_cached", incl, "proofs/s", "none", 0.0),
    ]
    for name, value, unit, limit, limit_value in figures:
        ratio = f" ({value / limit_value:.0%} of {limit})" if limit_value else ""
        print(f"{name:32s} {value:>14,.0f} {unit}{ratio}")
    print(f"record signing / raw sign ratio: {rec_sign / raw_sign:.2f} (goal >= 0.60)")
    print(f"stamp: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    for name, value, unit, limit, limit_value in figures:
        print(f"BENCH crypto {name} {value:.0f} {unit} {limit} {limit_value:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
