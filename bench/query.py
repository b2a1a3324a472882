"""Authorised queries end to end, against the raw gRPC floor.

One provider (`market`) serves Query over mutual TLS with its real SQLite store and durable
access log (synchronous=FULL, one fsync per group commit); the requester (`tax`) signs, seals,
calls, opens and verifies each answer exactly as `credex query` does. By default the provider
is its own `credex serve` process, as in production, and the raw server it is compared with
runs in its own process too; `--in-process` runs both servers inside the benchmark's process
and event loop instead (the client then competes with them for one GIL). Figures:

- queries/s and p50/p99 latency at 1 and 8 concurrent clients, beside a bare unary gRPC call
  of the same answer size over the same mTLS (`_grpc_raw`);
- p99 latency at a paced 500 queries/s (open loop: calls start on schedule, not after the
  previous answer), over 10 s (5,000 calls; 2 s with --quick), so that the p99 is not the 15th
  slowest of a handful;
- access-log appends/s (SQLite backend) and full-log verification entries/s (`bench/accesslog`).

The benchmark process is the load generator: before measuring it freezes the objects it set
up (`gc.freeze`, as `credex serve` does at start), so that a full collection of its own heap
(about 50 ms here, stalling every call in flight) is not reported as query latency.

Machine lines: `BENCH query <name> <value> <unit> <limit-name> <limit-value>`.
Run: `.venv/bin/python bench/query.py [--quick] [--in-process]`.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_OTHERS = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path[:] = [str(_HERE.parent), *_OTHERS, str(_HERE)]

import keys  # noqa: E402
from bench import _grpc_raw  # noqa: E402
from bench import accesslog as log_bench  # noqa: E402
from node.accesslog import MemoryLogBackend  # noqa: E402
from node.cluster import LocalCluster  # noqa: E402
from node.query import QueryAsk, send_query  # noqa: E402
from node.runtime import NodeRuntime  # noqa: E402
from node.server import build_server  # noqa: E402
from node.services import query_service  # noqa: E402
from node.store import NewRecord  # noqa: E402
from node.transport import ChannelIdentity, client_channel  # noqa: E402

SUBJECT = "11010519491231002X"


def _seed(rt: NodeRuntime, n: int) -> None:
    now = rt.clock()
    token = rt.blind.token(SUBJECT)
    rows = []
    for i in range(n):
        key = uuid.uuid4().hex
        header = {"item": "admin_licence_person", "catalog_version": rt.catalogue.version,
                  "record_key": key, "version": 1, "producer": rt.node_id,
                  "issued_at": "2026-11-25T00:00:00Z", "subject": token}  # fmt: skip
        fields = {"decision_no": f"许〔2026〕{i}号", "license_category": "普通",
                  "content": "预包装食品销售", "decision_date": "2026-03-01",
                  "status": "有效", "authority_name": "淄博市张店区市场监督管理局"}  # fmt: skip
        signed = keys.sign_record(header, fields, rt.node_keys.signing)
        row_id = str(uuid.uuid4())
        rows.append(
            NewRecord(
                row_id=row_id,
                producer=rt.node_id,
                record_key=key,
                version=1,
                item_id="admin_licence_person",
                catalog_version=rt.catalogue.version,
                subject_index=token,
                body=rt.cipher.encrypt(row_id, signed.to_bytes()),
                content_hash=key,
                severity=None,
                decided_on=None,
                disclosure_min_end=None,
                disclosure_max_end=None,
                disclosure_rule="bench",
                created_at=now,
            )
        )
    rt.store.store_batch(rows, now=now)


def _ask() -> QueryAsk:
    return QueryAsk(
        peer="market", subject=SUBJECT, subject_kind="natural_person",
        items=("admin_licence_person",), purpose="administrative_licensing",
        legal_basis="行政许可法", officer="bench",
    )  # fmt: skip


async def _measure_in_process(
    market: NodeRuntime, tax: NodeRuntime, seconds: float, paced_seconds: float
) -> tuple[list[str], list[str]]:
    server = build_server(
        listen="127.0.0.1:0",
        tls=market.server_tls(),
        services=query_service.make_services(market),
    )
    await server.start()
    try:
        return await _measure(tax, server.target, seconds, paced_seconds, separate_process=False)
    finally:
        await server.stop(None)


async def _measure(
    tax: NodeRuntime, target: str, seconds: float, paced_seconds: float, *, separate_process: bool
) -> tuple[list[str], list[str]]:
    channel = client_channel(
        target,
        peer=tax.tls_roster().peer("market"),
        identity=ChannelIdentity(
            key_pem=tax.node_keys.tls_key_pem, cert_pem=tax.node_keys.tls_cert_pem
        ),
    )
    human: list[str] = []
    machine: list[str] = []
    try:
        for _ in range(10):
            await send_query(tax, _ask(), channel=channel)
        gc.collect()
        gc.freeze()  # see the module docstring: the load generator's own pauses are not latency
        answer_size = 0

        async def one() -> float:
            start = time.perf_counter()
            await send_query(tax, _ask(), channel=channel)
            return time.perf_counter() - start

        async with _grpc_raw.raw_server(separate_process=separate_process) as raw:
            # the answer of 3 sealed, minimised records is about this size
            answer_size = 3 * 900
            for concurrency in (1, 8):
                latencies: list[float] = []
                deadline = time.perf_counter() + seconds

                async def client(lat: list[float] = latencies, end: float = deadline) -> None:
                    while time.perf_counter() < end:
                        lat.append(await one())

                started = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(concurrency)))
                elapsed = time.perf_counter() - started
                ordered = sorted(latencies)
                rate = len(ordered) / elapsed
                p50 = statistics.median(ordered) * 1000
                p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
                base = await _grpc_raw.measure_unary(
                    raw, size=answer_size, concurrency=concurrency, seconds=seconds
                )
                human.append(
                    f"queries, {concurrency} client(s): {rate:,.0f}/s p50 {p50:.1f} ms "
                    f"p99 {p99:.1f} ms (raw unary {base.calls_per_s:,.0f}/s "
                    f"p50 {base.p50_ms:.2f} ms p99 {base.p99_ms:.2f} ms)"
                )
                machine += [
                    f"BENCH query queries_c{concurrency} {rate:.0f} queries/s "
                    f"raw_unary_c{concurrency} {base.calls_per_s:.0f}",
                    f"BENCH query p50_c{concurrency} {p50:.2f} ms raw_p50 {base.p50_ms:.2f}",
                    f"BENCH query p99_c{concurrency} {p99:.2f} ms raw_p99 {base.p99_ms:.2f}",
                ]
        # paced at 500/s, open loop
        rate_target = 500
        count = int(rate_target * paced_seconds)
        t0 = time.perf_counter()
        tasks = []
        for i in range(count):
            delay = t0 + i / rate_target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not synchronising a test
            tasks.append(asyncio.ensure_future(one()))
        # An overloaded provider may shed calls (CANCELLED / DEADLINE_EXCEEDED): count them as
        # failures of the run instead of stopping it.
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        paced = sorted(o for o in outcomes if isinstance(o, float))
        failed = len(outcomes) - len(paced)
        achieved = len(paced) / (time.perf_counter() - t0)
        p99 = paced[min(len(paced) - 1, int(len(paced) * 0.99))] * 1000 if paced else 0.0
        human.append(
            f"paced {rate_target}/s: p99 {p99:.1f} ms (achieved {achieved:,.0f}/s, "
            f"{failed} of {count} calls failed)"
        )
        machine.append(f"BENCH query paced500_p99 {p99:.2f} ms achieved_rate {achieved:.0f}")
        machine.append(f"BENCH query paced500_failed {failed} calls offered {count}")
    finally:
        await channel.close()
    return human, machine


def main(argv: list[str]) -> int:
    """Run the benchmark and print human lines, then `BENCH query ...` lines."""
    quick = "--quick" in argv
    in_process = "--in-process" in argv
    seconds = 1.0 if quick else 3.0
    paced_seconds = 2.0 if quick else 10.0
    with tempfile.TemporaryDirectory(prefix="credex-bench-query-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            nodes=[("platform", "platform"), ("market", "department"), ("tax", "department")],
            agreements=[{"provider": "market", "consumer": "tax",
                         "items": ["admin_licence_person"],
                         "purposes": ["administrative_licensing"], "kind": "query"}],
        )  # fmt: skip
        cluster.init()
        market, tax = cluster.runtime("market"), cluster.runtime("tax")
        try:
            _seed(market, 3)
            if in_process:
                human, machine = asyncio.run(
                    _measure_in_process(market, tax, seconds, paced_seconds)
                )
            else:
                market.close()
                node = cluster.start("market")
                try:
                    human, machine = asyncio.run(
                        _measure(tax, node.endpoint, seconds, paced_seconds, separate_process=True)
                    )
                finally:
                    cluster.stop("market")
                market = cluster.runtime("market")
            logged = market.log.backend.size()
        finally:
            market.close()
            tax.close()
    where = "in one process" if in_process else "provider and raw server in their own processes"
    human.insert(0, f"({where})")
    n = 5_000 if quick else 20_000
    entries = log_bench.make_entries(n)
    # Best of three, as bench/accesslog.py measures them (the machine is shared).
    append = max(log_bench.sqlite_append_rate(entries, 1000) for _ in range(3))
    backend = MemoryLogBackend()
    log_bench.append_rate(backend, entries, 1000)
    runs = [log_bench.verify_rates(backend) for _ in range(3)]
    verify, fold = max(r[0] for r in runs), max(r[1] for r in runs)
    human.append(f"log appends (sqlite, group commit): {append:,.0f}/s; logged {logged} queries")
    human.append(f"log verification: {verify:,.0f} entries/s (hash + fold alone {fold:,.0f}/s)")
    machine.append(f"BENCH query log_append_sqlite {append:.0f} entries/s - 0")
    machine.append(f"BENCH query log_verify {verify:.0f} entries/s sha256_fold {fold:.0f}")
    for line in (*human, *machine):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
