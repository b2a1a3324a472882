"""The node end to end: ingest rate and feed rate, each beside the raw limit it is built on.

1. Ingest: `run_ingest` of ROWS administrative penalties (CSV -> durable, signed, encrypted
   rows; bench/node_ingest.py's source and raw-insert functions) beside the rate of a bare
   SQLite `executemany` of the very rows stored.
2. Feed: the platform pulls the department's whole feed from its `credex serve` process over
   mutual TLS on the loopback
   (Exchange.Subscribe sealed batches -> open -> verify every record signature -> re-validate
   and blind-index the subject -> store with the cursor -> signed Ack), records/s; beside a raw
   gRPC server stream (bench/_grpc_raw.py, same mTLS) of as many messages of the same size as
   the sealed batches, expressed in records/s.

Usage: python bench/node.py [--quick] [ROWS] (--quick: 2,000 rows; default 20,000). Prints
`BENCH node <name> <value> <unit> <limit-name> <limit-value>` lines last.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_OTHERS = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path[:] = [str(_HERE.parent), *_OTHERS, str(_HERE)]

from bench import _grpc_raw  # noqa: E402
from bench import node_ingest as ni  # noqa: E402
from node import feeds  # noqa: E402
from node._pb.credex.v1 import exchange_pb2, exchange_pb2_grpc  # noqa: E402
from node.cluster import LocalCluster  # noqa: E402
from node.config import load_config  # noqa: E402
from node.ingest import run_ingest  # noqa: E402

FEED_BATCH = 1000


async def _feed(cluster: LocalCluster) -> tuple[float, int, list[int]]:
    """Pull the whole feed as the platform from the department's real `credex serve` process
    (provider and subscriber in separate processes, as deployed); returns (seconds, records
    stored, sealed batch sizes)."""
    platform = cluster.runtime("platform")
    cluster.start("market")
    try:
        started = time.perf_counter()
        done = await feeds.pull(platform, "market", max_batch=FEED_BATCH)
        seconds = time.perf_counter() - started
        channel = platform.channel("market")
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        body = exchange_pb2.SubscribeBody(max_batch=FEED_BATCH, compact_records=True)
        body_bytes = body.SerializeToString()
        signed = platform.sign_request(feeds.SUBSCRIBE_METHOD, body_bytes)
        sizes = [
            len(b.sealed)
            async for b in stub.Subscribe(exchange_pb2.SubscribeRequest(signed=signed))
        ]
        await channel.close()
        return seconds, done.stored, sizes
    finally:
        cluster.stop("market")
        platform.close()


async def _raw_stream(batches: int, size: int) -> float:
    async with _grpc_raw.raw_server() as target:
        figures = await _grpc_raw.measure_stream(target, count=batches, size=size)
    rate: float = figures.messages_per_s
    return rate


def main(argv: list[str]) -> None:
    """Run both measurements and print their figures."""
    rows = ni.parse_rows(argv)
    with tempfile.TemporaryDirectory(prefix="credex-bench-node-") as tmp:
        root = Path(tmp)
        cluster = LocalCluster(
            root / "cluster",
            [("market", "department"), ("platform", "platform")],
            [{"provider": "market", "consumer": "platform", "items": ["admin_penalty"],
              "purposes": ["feed"], "kind": "feed"}],
        )  # fmt: skip
        cluster.init()
        source = root / "source"
        source.mkdir()
        mapping = ni.write_source(source, rows)
        config = load_config(cluster.home("market"))
        summary = run_ingest(config, mapping, today=dt.date(2026, 11, 25), batch_size=1000)
        assert summary.accepted == rows, summary.to_dict()
        ingest_rate = summary.accepted / summary.seconds
        db = sqlite3.connect(cluster.home("market") / "data" / "credex.db")
        stored = db.execute("SELECT * FROM records").fetchall()
        db.close()
        raw_insert = ni.raw_insert_rate(stored, len(stored[0]), root)
        seconds, received, sizes = asyncio.run(_feed(cluster))
        assert received == rows, received
    feed_rate = received / seconds
    per_batch = rows / len(sizes)
    raw_msgs = asyncio.run(_raw_stream(len(sizes), int(sum(sizes) / len(sizes))))
    raw_records = raw_msgs * per_batch
    print(
        f"ingest {rows} records in {summary.seconds:.2f} s; feed {received} records in "
        f"{seconds:.2f} s as {len(sizes)} sealed batches of {sum(sizes) / len(sizes):.0f} B "
        f"(ratio to raw: ingest {ingest_rate / raw_insert:.3f}, feed {feed_rate / raw_records:.3f})"
    )
    print(f"BENCH node ingest_records_per_s {ingest_rate:.0f} records/s sqlite_executemany "
          f"{raw_insert:.0f}")  # fmt: skip
    print(f"BENCH node ingest_goal_records_per_s {ingest_rate:.0f} records/s goal 15000")
    print(f"BENCH node feed_records_per_s {feed_rate:.0f} records/s raw_grpc_stream_records "
          f"{raw_records:.0f}")  # fmt: skip
    print(f"BENCH node feed_goal_records_per_s {feed_rate:.0f} records/s goal 50000")


if __name__ == "__main__":
    main(sys.argv[1:])
