"""A background task of `credex serve` that fails is reported at once and started again.

The tasks beside the server (access-log checkpoints, the trust-bundle watcher, nonce purge,
lifecycle scans, the platform's feed subscriptions) were started and looked at only at
shutdown, where a failure was skipped without a word: one OSError (say a bundle file the node
may not read) ended the bundle watcher for the rest of the run, so no later bundle, and none
of its revocations, took effect until a restart, and nothing said so.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from node import serving
from node.runtime import NodeRuntime
from tests.node.test_server_call_trust import cluster, runtimes

__all__ = ["cluster", "runtimes"]  # the three-node cluster, shared with the call-trust tests


def test_a_failed_background_task_is_logged_and_runs_again(
    runtimes: dict[str, NodeRuntime],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = runtimes["market"]
    stop = asyncio.Event()
    runs: list[int] = []
    subject = "370303199001010001"
    real_collect = serving.collect

    async def flaky(task_stop: asyncio.Event) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            # a foreign error whose text quotes data: only its type may reach the log
            raise PermissionError(13, "Permission denied", f"/srv/credex/{subject}")
        stop.set()  # the second run: the node may stop now
        await task_stop.wait()

    def collect(runtime: NodeRuntime) -> tuple[list[Any], list[Any]]:
        services, tasks = real_collect(runtime)
        return services, [*tasks, flaky]

    monkeypatch.setattr(serving, "collect", collect)
    monkeypatch.setattr(serving, "TASK_RESTART_S", 0.01)

    async def scenario() -> None:
        await asyncio.wait_for(serving.run_node(market, stop=stop, grace=5), timeout=20)

    with caplog.at_level(logging.WARNING, logger="node.serving"):
        asyncio.run(scenario())
    assert runs == [0, 1]
    failures = [r for r in caplog.records if r.name == "node.serving"]
    assert len(failures) == 1
    message = failures[0].getMessage()
    assert "flaky" in message
    assert "PermissionError" in message
    assert subject not in caplog.text
