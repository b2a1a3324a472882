"""A graceful stop checkpoints the access log AFTER the calls it let finish.

`credex serve` lets in-flight calls finish within the grace period, and each of them commits
its access-log entry on the way. The checkpoint task signs one last checkpoint when it is told
to stop; told together with the server, it signed that checkpoint before those calls had
logged, so their entries stayed outside every checkpoint (and unwitnessed) until the node ran
again, however long that was: more than the "one checkpoint interval" of unwitnessed tail
the security model promises.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from node.accesslog import LogEntry, NonceClaim
from node.runtime import NodeRuntime
from node.serving import run_node
from tests.node.test_server_call_trust import _query, cluster, outcome, runtimes

__all__ = ["cluster", "runtimes"]  # the three-node cluster, shared with the call-trust tests


def test_the_last_checkpoint_covers_the_calls_finished_during_the_grace_period(
    runtimes: dict[str, NodeRuntime],
) -> None:
    market, hrss = runtimes["market"], runtimes["hrss"]
    log = market.log
    seen: dict[str, Any] = {}
    stop = asyncio.Event()
    told_to_stop: list[asyncio.Event] = []

    real_checkpoints = log.run_checkpoints

    async def run_checkpoints(event: asyncio.Event) -> None:
        told_to_stop.append(event)
        await real_checkpoints(event)

    real_append = log.append

    async def append(entry: LogEntry, *, claim: NonceClaim | None = None) -> int:
        if "in flight" not in seen:
            # The node is told to stop while this call is being served.
            stop.set()
            await market.stopping.wait()  # the server is stopping now
            seen["in flight"] = True
            seen["checkpoints stopped meanwhile"] = told_to_stop[0].is_set()
        return await real_append(entry, claim=claim)

    log.run_checkpoints = run_checkpoints  # type: ignore[method-assign, assignment]
    log.append = append  # type: ignore[method-assign]

    async def scenario() -> tuple[grpc.StatusCode, str]:
        ready = asyncio.Event()
        node = asyncio.create_task(
            run_node(market, stop=stop, grace=10, on_ready=lambda _server: ready.set())
        )
        await asyncio.wait_for(ready.wait(), timeout=30)
        async with hrss.channel("market") as channel:
            result = await outcome(_query(hrss, channel))
        await asyncio.wait_for(node, timeout=60)
        return result

    code, _details = asyncio.run(scenario())
    assert seen["in flight"]
    assert code != grpc.StatusCode.CANCELLED  # the call was let finish
    assert seen["checkpoints stopped meanwhile"] is False
    latest = log.backend.latest_checkpoint()
    assert latest is not None
    assert latest[0] == log.size()
