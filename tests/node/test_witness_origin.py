"""The witness pins each log's origin: `zhangdian.credex/<node id>`, the name every node's
access log signs its checkpoints under (`node.config.log_origin`), not whatever the first
note it is shown claims.

Without the pin, a department (or whoever holds its key) could have its first checkpoint
cosigned under another log's origin, e.g. another department's, and the witness would from
then on treat that origin as the department's own log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.accesslog import AccessLog, MemoryLogBackend
from node.cluster import LocalCluster
from node.config import log_origin
from node.errors import InputError
from node.runtime import NodeRuntime
from node.services import transparency_service
from node.witness import WitnessState, cosign_extension, witness_peer, witness_round
from tests.node.accesslog_support import query_entry
from tests.node.exchange_support import serving
from tests.node.test_witness_notes import LOG_KEY, WITNESS_KEY


def _note(origin: str) -> str:
    log = AccessLog(MemoryLogBackend(), origin=origin, signer=LOG_KEY, key_name="market")
    for i in range(3):
        log.append_sync(query_entry(i))
    return log.checkpoint()


def _cosign(note: str) -> str:
    return cosign_extension(
        None, note, [], log_name="market", log_keys=[LOG_KEY.public_key],
        name="platform", signer=WITNESS_KEY,
    )  # fmt: skip


def test_the_log_name_scheme() -> None:
    assert log_origin("market") == "zhangdian.credex/market"


@pytest.mark.parametrize(
    "origin",
    ["zhangdian.credex/tax", "zhangdian.credex/market/", "example.org/market", "zd-market"],
)
def test_a_first_note_of_another_origin_is_refused(origin: str) -> None:
    with pytest.raises(InputError, match="market") as refused:
        _cosign(_note(origin))
    assert origin not in str(refused.value)  # the log's text is not quoted back
    assert _cosign(_note("zhangdian.credex/market"))


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[dict[str, NodeRuntime]]:
    nodes = [("market", "department"), ("platform", "platform")]
    cluster = LocalCluster(tmp_path, nodes)
    cluster.init()
    made = {name: cluster.runtime(name) for name, _role in nodes}
    yield made
    for runtime in made.values():
        runtime.close()


def test_a_peer_serving_another_origin_on_first_contact(runtimes: dict[str, NodeRuntime]) -> None:
    market, platform = runtimes["market"], runtimes["platform"]
    market.log.origin = "zhangdian.credex/tax"  # signed with market's own key
    for i in range(3):
        market.log.append_sync(query_entry(i))
    market.log.checkpoint()
    state = WitnessState.load(platform.config.data_dir)

    async def scenario() -> None:
        async with serving(market, transparency_service.make_services):
            with pytest.raises(InputError, match="origin"):
                await witness_peer(platform, "market", state)
            outcomes = await witness_round(platform, state)
            assert [(o.peer, o.status) for o in outcomes] == [("market", "error")]

    asyncio.run(scenario())
    assert state.latest == {}
    assert WitnessState.load(platform.config.data_dir).latest == {}
    assert list(market.log.backend.witnesses()) == []
