"""The witness's memory must be durable before its word leaves it (c2sp.org/tlog-witness: a
witness persists a checkpoint before it returns the cosignature).

If the platform handed a department its cosignature of size N and crashed before
`data/witness.json` said N, it would come back remembering only N-1, and would then cosign a
fork of N that extends N-1: two cosigned checkpoints of one log that cannot both be true. The
witness therefore writes its state first, and sends the cosignature only once it is on disk;
a cosignature whose sending failed after the state was written is sent again on the next
visit, not forgotten as "unchanged".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from node._pb.credex.v1 import transparency_pb2_grpc
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.services import transparency_service
from node.witness import WitnessOutcome, WitnessState, witness_peer
from tests.node.accesslog_support import query_entry
from tests.node.exchange_support import serving


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[dict[str, NodeRuntime]]:
    nodes = [("market", "department"), ("platform", "platform")]
    cluster = LocalCluster(tmp_path, nodes)
    cluster.init()
    made = {name: cluster.runtime(name) for name, _role in nodes}
    yield made
    for runtime in made.values():
        runtime.close()


def _grow(market: NodeRuntime, n: int) -> None:
    for i in range(n):
        market.log.append_sync(query_entry(i))
    market.log.checkpoint()


def _visit(market: NodeRuntime, platform: NodeRuntime, state: WitnessState) -> WitnessOutcome:
    async def scenario() -> WitnessOutcome:
        async with serving(market, transparency_service.make_services):
            return await witness_peer(platform, "market", state)

    return asyncio.run(scenario())


def test_no_cosignature_leaves_before_the_state_is_on_disk(
    runtimes: dict[str, NodeRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    market, platform = runtimes["market"], runtimes["platform"]
    state = WitnessState.load(platform.config.data_dir)
    _grow(market, 3)
    assert _visit(market, platform, state).status == "cosigned"
    _grow(market, 2)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("the platform lost power before witness.json was written")

    monkeypatch.setattr(WitnessState, "save", crash)
    with pytest.raises(OSError, match="lost power"):
        _visit(market, platform, state)
    # The department holds no cosignature of size 5: the witness that forgot it cannot
    # contradict it, and remembers (in memory too) only what reached its disk.
    assert [size for size, _w, _note in market.log.backend.witnesses()] == [3]
    assert state.latest == WitnessState.load(platform.config.data_dir).latest
    monkeypatch.undo()
    assert _visit(market, platform, state).status == "cosigned"
    assert [size for size, _w, _note in market.log.backend.witnesses()] == [3, 5]


def test_a_cosignature_that_did_not_arrive_is_sent_again(
    runtimes: dict[str, NodeRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    market, platform = runtimes["market"], runtimes["platform"]
    state = WitnessState.load(platform.config.data_dir)
    _grow(market, 4)
    real = transparency_pb2_grpc.TransparencyStub
    failures = [1]

    class FlakyStub(real):  # type: ignore[misc,valid-type]
        def __init__(self, channel: grpc.aio.Channel) -> None:
            super().__init__(channel)
            cosign: Any = self.__dict__["Cosign"]  # set by the generated __init__

            async def once_lost(*args: Any, **kwargs: Any) -> Any:
                if failures:
                    failures.pop()
                    raise OSError("connection reset while sending the cosignature")
                return await cosign(*args, **kwargs)

            self.Cosign = once_lost

    monkeypatch.setattr(transparency_pb2_grpc, "TransparencyStub", FlakyStub)
    with pytest.raises(OSError, match="connection reset"):
        _visit(market, platform, state)
    assert market.log.backend.witnesses() == []
    assert _visit(market, platform, state).status == "cosigned"  # not "unchanged"
    assert [size for size, _w, _note in market.log.backend.witnesses()] == [4]
    assert _visit(market, platform, state).status == "unchanged"
