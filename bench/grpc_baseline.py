"""The raw gRPC limits that credex's RPC benchmarks are compared with.

Bare unary calls over mutual TLS on the loopback (calls/s, p50/p99 latency at 1 and 8
concurrent clients) and a raw server stream (messages/s), using `_grpc_raw` with no credex code
in the call path. Prints human lines, then machine lines
`BENCH grpc <name> <value> <unit> - 0` (these figures ARE the limits, so they have none).
Run: `.venv/bin/python bench/grpc_baseline.py [--quick]`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path, and its scripts named like the
# packages (adapters.py, catalog.py) would shadow them: the repository root goes first and this
# folder last, where only names no package uses (`_grpc_raw`) are found.
_HERE = Path(__file__).resolve().parent
_OTHERS = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path[:] = [str(_HERE.parent), *_OTHERS, str(_HERE)]

from bench import _grpc_raw  # noqa: E402

UNARY_SIZES = (256, 16_384)
CONCURRENCY = (1, 8)
STREAM_SIZES = (1_024, 16_384)


async def run(quick: bool) -> list[str]:
    """Measure everything; return the BENCH lines."""
    seconds = 0.5 if quick else 2.0
    count = 2_000 if quick else 20_000
    lines: list[str] = []
    async with _grpc_raw.raw_server() as target:
        for size in UNARY_SIZES:
            for concurrency in CONCURRENCY:
                u = await _grpc_raw.measure_unary(
                    target, size=size, concurrency=concurrency, seconds=seconds
                )
                print(
                    f"unary {size:>6} B x{concurrency}: {u.calls_per_s:9.0f} calls/s  "
                    f"p50 {u.p50_ms:6.2f} ms  p99 {u.p99_ms:6.2f} ms"
                )
                name = f"unary_{size}B_c{concurrency}"
                lines.append(f"BENCH grpc {name}_rate {u.calls_per_s:.1f} calls/s - 0")
                lines.append(f"BENCH grpc {name}_p50 {u.p50_ms:.3f} ms - 0")
                lines.append(f"BENCH grpc {name}_p99 {u.p99_ms:.3f} ms - 0")
        for size in STREAM_SIZES:
            s = await _grpc_raw.measure_stream(target, count=count, size=size)
            print(
                f"stream {size:>6} B x{count}: {s.messages_per_s:9.0f} msg/s  "
                f"{s.mb_per_s:7.1f} MB/s"
            )
            lines.append(f"BENCH grpc stream_{size}B_rate {s.messages_per_s:.1f} msg/s - 0")
    return lines


def main(argv: list[str]) -> int:
    """Run the baseline and print the figures."""
    lines = asyncio.run(run(quick="--quick" in argv))
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
