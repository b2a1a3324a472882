"""The background tasks `credex serve` runs beside its services."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import func, select

from node.cluster import LocalCluster
from node.serving import collect
from node.store.store import NONCES


def test_serving_purges_expired_nonces_off_the_request_path(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path, nodes=[("platform", "platform"), ("market", "department")], agreements=[]
    )
    cluster.init()
    runtime = cluster.runtime("market")
    try:
        now = runtime.clock()
        expired = [("k", f"old-{i}", now - dt.timedelta(seconds=1)) for i in range(5)]
        current = [("k", "current", now + dt.timedelta(minutes=5))]
        runtime.store.remember_nonces(expired + current, now=now - dt.timedelta(minutes=5))

        def left() -> int:
            with runtime.store.read("count nonces") as conn:
                return int(conn.execute(select(func.count()).select_from(NONCES)).scalar_one())

        _services, tasks = collect(runtime)
        (purge,) = [t for t in tasks if "nonce_purge" in t.__qualname__]

        async def serve_briefly() -> None:
            stop = asyncio.Event()
            task = asyncio.ensure_future(purge(stop))
            while left() > 1:
                await asyncio.sleep(0.01)  # the first round runs at once (nothing timed here)
            stop.set()
            await asyncio.wait_for(task, timeout=10)

        asyncio.run(serve_briefly())
        assert left() == 1  # only the nonce that has not expired
    finally:
        runtime.close()
