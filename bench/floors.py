"""Lower bounds under the speed goals: what the primitives alone cost on this machine.

The other benchmarks say how fast credex is. This one asks, per goal of issues 4, 6 and 7,
whether the goal is reachable at all here: it measures the work no implementation of the design
can skip (the libsodium calls every record or query needs, the SHA-256 digest of every field,
a bare gRPC call) and sets it against the CPU the goal leaves per unit of work on this
machine's cores. A floor above the budget means no code change reaches the goal on this
hardware; a floor below it says how much room is left for everything else.

Per goal:

- issue 4, record signing >= 60% of raw Ed25519 signing (30 fields): the budget per record is
  `sign / 0.6`; the floor is one signature plus 30 salted field digests, each made through
  the fastest interface CPython offers (C-level `map`, no Python bytecode per field);
- issue 6, feed >= 50,000 records/s delivered, verified and acknowledged, producer and
  subscriber on the same cores: the budget per record is `cores / 50,000` s; the floor is the
  subscriber's Ed25519 verification of the record (DESIGN.md: every record carries its
  producer's signature and is verified before it is stored) and the 20 field digests it
  checks, and four AEAD passes over the record (the producer decrypts it from its store and
  seals it into the batch; the subscriber opens the batch and encrypts it into its store);
- issue 6, ingest >= 15,000 records/s: the budget is `cores / 15,000` s per record; the floor
  is one record signature with its 20 field digests, one at-rest encryption and one raw SQLite
  insert of a row of the same size (WAL, synchronous=FULL, 1,000 rows per commit);
- issue 7, queries at 8 clients >= 50% of a bare unary call's rate: the budget per query is
  `cores / (rate / 2)` with the bare rate measured here (server in its own process, as
  bench/query.py runs it); the floor is the CPU of one bare call (both ends, measured from the
  two processes' CPU times) plus the libsodium calls of one query answering three records:
  the requester signs, the provider verifies, each side seals once and opens once (the
  subject to the provider, the answer to the requester), the provider decrypts three stored
  records and the requester verifies their three signatures.

Machine lines: `BENCH floors <goal> <floor-us> us budget <budget-us>`.
Run: `.venv/bin/python bench/floors.py [--quick]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_OTHERS = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path[:] = [str(_HERE.parent), *_OTHERS, str(_HERE)]

import nacl.bindings as sodium  # noqa: E402

from bench import _grpc_raw  # noqa: E402

PAYLOAD = 2_048  # bytes a 30-field record signature covers (bench/crypto.py: 2,057)
BODY = 2_600  # mean encrypted body of an ingested penalty (bench/node_ingest.py)
ANSWER = 3 * 900  # the sealed answer of three minimised records (bench/query.py)


@dataclass(frozen=True)
class Floor:
    """One goal: the unavoidable CPU per unit of work beside what the goal allows."""

    goal: str
    floor_us: float
    budget_us: float
    parts: str

    @property
    def verdict(self) -> str:
        """'unreachable here' when the floor alone exceeds the budget, else the room left."""
        if self.floor_us > self.budget_us:
            return "UNREACHABLE on this machine: the floor alone exceeds the budget"
        return f"not excluded: {self.budget_us - self.floor_us:.1f} us left for all other work"


def _best_us(fn: Callable[[], object], *, rounds: int, number: int) -> float:
    """The fastest of `rounds` timings of `number` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def _digests_us(fields: int, *, rounds: int) -> float:
    """Microseconds for `fields` salted SHA-256 field digests, the C-level way (no bytecode
    per field), with the salts already drawn and the values already UTF-8."""
    salts = [os.urandom(16) for _ in range(fields)]
    fids = [f"field_{i:02d}".encode() for i in range(fields)]
    values = [f"值 {i} value of a typical field".encode() for i in range(fields)]
    sha = hashlib.sha256
    digest = type(sha()).digest
    add = operator.add

    def run() -> list[bytes]:
        return list(map(digest, map(sha, map(add, map(add, salts, fids), values))))

    return _best_us(run, rounds=rounds, number=2_000)


def _sqlite_insert_us(directory: Path, rows: int) -> float:
    """Microseconds per row of executemany into a bare WAL/FULL table, 1,000 rows a commit."""
    conn = sqlite3.connect(directory / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body BLOB)")
    data = [(f"row-{i:08d}", os.urandom(BODY)) for i in range(rows)]
    start = time.perf_counter()
    for first in range(0, rows, 1_000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t VALUES (?, ?)", data[first : first + 1_000])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return seconds / rows * 1e6


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
    """Pids of this process's living children (the raw server is one of them)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == me:
                found.append(int(entry.name))
    return found


async def _bare_call(seconds: float) -> tuple[float, float]:
    """(calls/s at 8 clients, CPU microseconds per call of both ends) of a bare mTLS call."""
    async with _grpc_raw.raw_server(separate_process=True) as raw:
        await _grpc_raw.measure_unary(raw, size=ANSWER, concurrency=8, seconds=0.3)
        pids = [os.getpid(), *_children()]
        before = sum(_cpu_seconds(p) for p in pids)
        figures = await _grpc_raw.measure_unary(raw, size=ANSWER, concurrency=8, seconds=seconds)
        used = sum(_cpu_seconds(p) for p in pids) - before
    calls = figures.calls_per_s * seconds
    return figures.calls_per_s, used / calls * 1e6


def measure(quick: bool) -> list[Floor]:
    """Measure the primitives and return the floor of each goal."""
    rounds = 3 if quick else 7
    cores = len(os.sched_getaffinity(0))
    public, secret = sodium.crypto_sign_keypair()
    message = os.urandom(PAYLOAD)
    signed = sodium.crypto_sign(message, secret)
    box_public, box_secret = sodium.crypto_box_keypair()
    data_key = os.urandom(32)
    wrapped = sodium.crypto_box_seal(data_key, box_public)
    nonce, body = os.urandom(24), os.urandom(BODY)
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, b"row", nonce, data_key)

    sign = _best_us(lambda: sodium.crypto_sign(message, secret), rounds=rounds, number=500)
    verify = _best_us(lambda: sodium.crypto_sign_open(signed, public), rounds=rounds, number=300)
    seal = _best_us(lambda: sodium.crypto_box_seal(data_key, box_public), rounds=rounds, number=300)
    unseal = _best_us(
        lambda: sodium.crypto_box_seal_open(wrapped, box_public, box_secret),
        rounds=rounds,
        number=300,
    )
    aead_enc = _best_us(
        lambda: sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, b"row", nonce, data_key),
        rounds=rounds,
        number=2_000,
    )
    aead_dec = _best_us(
        lambda: sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, b"row", nonce, data_key
        ),
        rounds=rounds,
        number=2_000,
    )
    digests_30 = _digests_us(30, rounds=rounds)
    digests_20 = _digests_us(20, rounds=rounds)
    inserts = []
    for _ in range(3):
        with tempfile.TemporaryDirectory(prefix="credex-bench-floors-") as tmp:
            inserts.append(_sqlite_insert_us(Path(tmp), 5_000))
    insert = min(inserts)
    bare_rate, bare_cpu = asyncio.run(_bare_call(1.0 if quick else 3.0))

    query_crypto = sign + 4 * verify + 2 * seal + 2 * unseal + 3 * aead_dec
    return [
        Floor(
            "issue4_record_sign_60pct",
            sign + digests_30,
            sign / 0.6,
            f"sign {sign:.1f} + 30 field digests {digests_30:.1f}",
        ),
        Floor(
            "issue6_feed_50k",
            verify + digests_20 + 2 * (aead_dec + aead_enc),
            cores / 50_000 * 1e6,
            f"verify {verify:.1f} + 20 field digests {digests_20:.1f} + 2 x AEAD decrypt "
            f"{aead_dec:.1f} + 2 x AEAD encrypt {aead_enc:.1f}, on {cores} cores",
        ),
        Floor(
            "issue6_ingest_15k",
            sign + digests_20 + aead_enc + insert,
            cores / 15_000 * 1e6,
            f"sign {sign:.1f} + 20 field digests {digests_20:.1f} + at-rest AEAD "
            f"{aead_enc:.1f} + raw SQLite insert {insert:.1f}, on {cores} cores",
        ),
        Floor(
            "issue7_queries_c8_50pct",
            bare_cpu + query_crypto,
            cores / (bare_rate / 2) * 1e6,
            f"bare call {bare_cpu:.1f} (both ends; bare rate {bare_rate:,.0f}/s) + crypto "
            f"{query_crypto:.1f} (sign {sign:.1f}, 4 x verify {verify:.1f}, 2 x seal "
            f"{seal:.1f}, 2 x open {unseal:.1f}, 3 x AEAD {aead_dec:.1f}), on {cores} cores",
        ),
    ]


def main(argv: list[str]) -> int:
    """Print each goal's floor, budget and verdict, then the machine lines."""
    floors = measure("--quick" in argv)
    for f in floors:
        print(f"{f.goal}: floor {f.floor_us:.1f} us, budget {f.budget_us:.1f} us ({f.parts})")
        print(f"  {f.verdict}")
    for f in floors:
        print(f"BENCH floors {f.goal} {f.floor_us:.1f} us budget {f.budget_us:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
