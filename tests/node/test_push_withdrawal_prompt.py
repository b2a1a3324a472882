"""Joint-punishment withdrawals leave at the repair, not with the next lifecycle scan.

In-process (real runtimes, mTLS servers on loopback). market pushes severe-dishonesty entries
to hrss (a push agreement, no feed). A repair through market's Lifecycle service sends the
withdraw notice beside the call; a receiver that is down leaves it pending for the withdrawal
pass; a repair committed by another process (the CLI) is picked up by that pass. No test here
runs a scan: every withdrawal seen at hrss was sent by the paths under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from node import lifecycle_ops, push, scheduler
from node._pb.credex.v1 import exchange_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from node.cli import app
from node.cluster import LocalCluster
from node.config import parse_config
from node.errors import ConfigError
from node.runtime import NodeRuntime
from node.scheduler import run_withdrawal_pushes
from node.server import Service, build_server
from node.services import exchange_service, lifecycle_service
from node.services.lifecycle_service import LIFECYCLE_METHODS, LifecycleServicer
from node.store import lifecycle as ls
from tests.node.exchange_support import serving
from tests.node.push_support import (
    COMMITMENT,
    close,
    copy_state,
    key,
    push_cluster,
    push_entries,
    repair,
    seed_entry,
)

CONFIG_BASE = '[node]\nid = "market"\nrole = "department"\n'


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return push_cluster(tmp_path)


def withdrawals_logged(receiver: NodeRuntime) -> int:
    """How many withdraw notices `receiver` applied and logged (allowed `push` entries)."""
    return sum(1 for e in push_entries(receiver) if e.reason == "withdraw")


@asynccontextmanager
async def lifecycle_server(runtime: NodeRuntime) -> AsyncIterator[LifecycleServicer]:
    """`runtime`'s Lifecycle service on its address; yields the servicer."""
    services = lifecycle_service.make_services(runtime)
    server = build_server(
        listen=runtime.config.server.listen, tls=runtime.server_tls(), services=services
    )
    await server.start()
    try:
        servicer = services[0].servicer
        assert isinstance(servicer, LifecycleServicer)
        yield servicer
    finally:
        await server.stop(None)


async def call_lifecycle(client: NodeRuntime, name: str, body: Any) -> Any:
    signed = client.sign_request(LIFECYCLE_METHODS[name], body.SerializeToString())
    channel = client.channel("market")
    try:
        return await getattr(lifecycle_pb2_grpc.LifecycleStub(channel), name)(signed, timeout=10)
    finally:
        await channel.close()


def repair_body(n: int) -> lifecycle_pb2.RepairBody:
    return lifecycle_pb2.RepairBody(
        record_key=key(n),
        obligations_fulfilled=True,
        commitment_sha256=bytes.fromhex(COMMITMENT),
        decision_no="R1",
    )


async def until(condition: Callable[[], bool], *, within: float = 20.0) -> None:
    """Wait until `condition()` holds (polled; a test fails after `within` seconds)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout=within)


def fast_withdrawals(runtime: NodeRuntime) -> None:
    """Set `runtime`'s [lifecycle] withdrawal_push_interval_s to 50 ms."""
    lifecycle = dataclasses.replace(runtime.config.lifecycle, withdrawal_push_interval_s=0.05)
    runtime.config = dataclasses.replace(runtime.config, lifecycle=lifecycle)


# -- the gRPC service: the notice leaves with the repair ---------------------------------------


def test_a_repair_through_the_service_sends_the_withdrawal_at_once(cluster: LocalCluster) -> None:
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            (sent,) = await push.push_record(market, key(1))
            assert sent.receipt
            assert copy_state(hrss, 1) == "active"
            async with lifecycle_server(market) as servicer:
                receipt = await call_lifecycle(platform, "Repair", repair_body(1))
                assert receipt.state == "withdrawn"
                await servicer.withdrawals_sent()
            # no scan, no pass: the service's own send did it
            assert copy_state(hrss, 1) == "withdrawn"

    try:
        asyncio.run(scenario())
        report = lifecycle_ops.propagation_report(market, key(1))
        assert report["complete"] is True
        assert [(r["to_node"], r["kind"], r["acknowledged"]) for r in report["push_receivers"]] == [
            ("hrss", "withdraw", True)
        ]
        assert withdrawals_logged(hrss) == 1
    finally:
        close(market, hrss, platform)


def test_a_revocation_through_the_service_sends_the_withdrawal_at_once(
    cluster: LocalCluster,
) -> None:
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))
            async with lifecycle_server(market) as servicer:
                body = lifecycle_pb2.RevokeBody(record_key=key(1), reason_code="复议决定书")
                await call_lifecycle(platform, "Revoke", body)
                await servicer.withdrawals_sent()
            assert copy_state(hrss, 1) == "withdrawn"

    try:
        asyncio.run(scenario())
    finally:
        close(market, hrss, platform)


def test_a_receiver_down_does_not_fail_the_repair_and_is_retried(cluster: LocalCluster) -> None:
    market, hrss, platform = (cluster.runtime(n) for n in ("market", "hrss", "platform"))
    seed_entry(market, 1)
    fast_withdrawals(market)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))
        # hrss is down: the repair still commits and answers, the notice stays pending
        async with lifecycle_server(market) as servicer:
            receipt = await call_lifecycle(platform, "Repair", repair_body(1))
            assert receipt.state == "withdrawn"
            await servicer.withdrawals_sent()
        (row,) = lifecycle_ops.propagation_report(market, key(1))["push_receivers"]
        assert (row["to_node"], row["acknowledged"]) == ("hrss", False)
        assert row["sent_at"] is not None  # it was tried
        assert copy_state(hrss, 1) == "active"
        # hrss is back: the withdrawal pass of the serving node retries it
        stop = asyncio.Event()
        async with serving(hrss):
            loop = asyncio.ensure_future(run_withdrawal_pushes(market, stop))
            try:
                await until(lambda: copy_state(hrss, 1) == "withdrawn")
            finally:
                stop.set()
                await asyncio.wait_for(loop, timeout=10)

    try:
        asyncio.run(scenario())
        assert lifecycle_ops.propagation_report(market, key(1))["complete"] is True
        assert withdrawals_logged(hrss) == 1
    finally:
        close(market, hrss, platform)


# -- the CLI in another process: the serving node's withdrawal pass picks it up ----------------


def test_a_repair_by_another_process_is_sent_by_the_withdrawal_pass(
    cluster: LocalCluster,
) -> None:
    serving_market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(serving_market, 1)
    fast_withdrawals(serving_market)

    async def scenario() -> None:
        stop = asyncio.Event()
        async with serving(hrss):
            await push.push_record(serving_market, key(1))
            loop = asyncio.ensure_future(run_withdrawal_pushes(serving_market, stop))
            try:
                # the CLI: its own runtime on the same store, commits and exits
                cli = cluster.runtime("market")
                try:
                    result = await asyncio.to_thread(repair, cli, 1)
                finally:
                    cli.close()
                assert [r["to_node"] for r in result.extra["push_receivers"]] == ["hrss"]
                await until(lambda: copy_state(hrss, 1) == "withdrawn")
            finally:
                stop.set()
                await asyncio.wait_for(loop, timeout=10)

    try:
        asyncio.run(scenario())
        assert lifecycle_ops.propagation_report(serving_market, key(1))["complete"] is True
    finally:
        close(serving_market, hrss)


def test_the_cli_repair_sends_nothing_and_says_who_is_due(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)
    seed_entry(market, 2)
    commitment = tmp_path / "commitment.pdf"
    commitment.write_bytes(b"credit commitment")
    home = str(cluster.home("market"))

    async def push_entries() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))
            await push.push_record(market, key(2))

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, ["lifecycle", *args, "--home", home])

    try:
        asyncio.run(push_entries())
        flags = ("--obligations-fulfilled", "--commitment-file", str(commitment))
        shown = cli("repair", key(1), *flags)
        assert shown.exit_code == 0, shown.output
        text = " ".join(shown.output.split())  # the console wraps long lines
        assert "withdraw notice due to hrss" in text
        assert f"credex lifecycle push {key(1)}" in text
        out = cli("repair", key(2), *flags, "--json")
        assert out.exit_code == 0, out.output
        (row,) = json.loads(out.output)["push_receivers"]
        assert (row["to_node"], row["kind"], row["acknowledged"]) == ("hrss", "withdraw", False)
        assert copy_state(hrss, 1) == copy_state(hrss, 2) == "active"  # nothing sent yet
    finally:
        close(market, hrss)


def test_cli_push_of_a_repaired_entry_sends_its_withdrawal_now(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)
    home = str(cluster.home("market"))

    def cli_push() -> Any:
        return CliRunner().invoke(app, ["lifecycle", "push", key(1), "--home", home, "--json"])

    async def scenario() -> Any:
        async with serving(hrss):
            await push.push_record(market, key(1))
            repair(market, 1)
            # the CLI runs its own event loop: off this one, which serves hrss
            return await asyncio.to_thread(cli_push)

    try:
        done = asyncio.run(scenario())
        assert done.exit_code == 0, done.output
        (row,) = json.loads(done.output)["pushes"]
        assert (row["to_node"], row["receipt"], row["error"]) == ("hrss", True, None)
        assert push.is_withdrawal_push(row["push_id"])
        assert copy_state(hrss, 1) == "withdrawn"
    finally:
        close(market, hrss)


def test_a_withdrawal_survives_the_death_of_the_process_that_repaired(
    cluster: LocalCluster,
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def push_entry() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))

    asyncio.run(push_entry())
    repair(market, 1)
    market.close()  # dies after the commit, before any send: nothing held in memory
    restarted = cluster.runtime("market")

    async def after_restart() -> list[push.PushOutcome]:
        async with serving(hrss):
            return await push.push_pending_withdrawals(restarted)

    try:
        (sent,) = asyncio.run(after_restart())
        assert (sent.to_node, sent.receipt) == ("hrss", True)
        assert copy_state(hrss, 1) == "withdrawn"
        assert asyncio.run(push.push_pending_withdrawals(restarted)) == []  # nothing left due
    finally:
        close(restarted, hrss)


def test_the_withdrawal_pass_finds_nothing_when_nothing_is_due(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)
    seed_entry(market, 2)

    async def scenario() -> list[push.PushOutcome]:
        async with serving(hrss):
            await push.push_record(market, key(1))
            await push.push_record(market, key(2))
            return await push.push_pending_withdrawals(market)  # both still active

    try:
        assert asyncio.run(scenario()) == []
    finally:
        close(market, hrss)


# -- sent once: the paths that may run at the same time ----------------------------------------


def test_concurrent_sends_of_one_withdrawal_reach_the_receiver_once(
    cluster: LocalCluster,
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))
            repair(market, 1)
            # the service's immediate send, the withdrawal pass and a scan's push_pending
            sends: list[Awaitable[list[push.PushOutcome]]] = [
                push.push_withdrawal(market, key(1)),
                push.push_pending_withdrawals(market),
                push.push_pending(market),
            ]
            results = await asyncio.gather(*sends)
            assert all(o.receipt for outcomes in results for o in outcomes)

    try:
        asyncio.run(scenario())
        assert copy_state(hrss, 1) == "withdrawn"
        assert withdrawals_logged(hrss) == 1
    finally:
        close(market, hrss)


def test_an_unreachable_receiver_is_tried_once_per_pass(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    for n in (1, 2):
        seed_entry(market, n)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))
            await push.push_record(market, key(2))
        repair(market, 1)
        repair(market, 2)
        first, second = await push.push_pending_withdrawals(market)
        assert (first.receipt, first.error) == (False, "UNAVAILABLE")
        assert (second.receipt, second.error) == (False, push._NOT_TRIED)
        async with serving(hrss):
            assert [o.receipt for o in await push.push_pending_withdrawals(market)] == [True, True]

    try:
        asyncio.run(scenario())
        assert (copy_state(hrss, 1), copy_state(hrss, 2)) == ("withdrawn", "withdrawn")
    finally:
        close(market, hrss)


def test_a_purged_entry_is_not_told_again_in_another_way(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def scenario() -> None:
        async with serving(hrss):
            await push.push_record(market, key(1))
            now = market.clock()
            market.store.set_record_state("row-1", "expired", event_kind="expire", now=now)
            (expired,) = await push.push_pending_withdrawals(market)
            assert expired.receipt
            market.store.set_record_state("row-1", "purged", event_kind=None, now=now)
            assert await push.push_pending_withdrawals(market) == []
            (again,) = await push.push_withdrawal(market, key(1))
            assert (again.push_id, again.receipt) == (expired.push_id, True)

    try:
        asyncio.run(scenario())
        assert copy_state(hrss, 1) == "expired"  # not re-labelled withdrawn
        (row,) = lifecycle_ops.propagation_report(market, key(1))["push_receivers"]
        assert (row["kind"], row["acknowledged"]) == ("expire", True)
    finally:
        close(market, hrss)


class _HeldReceiver(exchange_service.ExchangeServicer):
    """hrss's Exchange, where something happens before the first notice is handled."""

    def __init__(self, runtime: NodeRuntime, before_first: Callable[[], Awaitable[None]]) -> None:
        super().__init__(runtime)
        self._before_first: Callable[[], Awaitable[None]] | None = before_first

    async def Push(self, request: Any, context: Any) -> Any:
        hook, self._before_first = self._before_first, None
        if hook is not None:
            await hook()
        return await super().Push(request, context)


async def _push_entry_held(
    market: NodeRuntime, hrss: NodeRuntime, before_first: Callable[[], Awaitable[None]]
) -> list[push.PushOutcome]:
    """market pushes entry 1 to hrss, whose Exchange runs `before_first` before it handles
    the first notice; returns the push outcomes."""
    service = Service(
        name="credex.v1.Exchange",
        servicer=_HeldReceiver(hrss, before_first),
        add=exchange_pb2_grpc.add_ExchangeServicer_to_server,
    )
    server = build_server(
        listen=hrss.config.server.listen, tls=hrss.server_tls(), services=[service]
    )
    await server.start()
    try:
        return await push.push_record(market, key(1))
    finally:
        await server.stop(None)


def test_an_entry_overtaken_by_its_withdrawal_is_not_kept_and_withdrawn_again(
    cluster: LocalCluster,
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)
    other = cluster.runtime("market")  # another process of market (the CLI, a replica)

    async def meanwhile() -> None:
        # while the entry is on its way, the other process repairs and sends the withdrawal,
        # which reaches hrss first and finds no copy to end
        await asyncio.to_thread(repair, other, 1)
        (first,) = await push.push_withdrawal(other, key(1))
        assert first.receipt
        assert hrss.store.record_versions("market", key(1)) == []

    try:
        entry, withdrawal = asyncio.run(_push_entry_held(market, hrss, meanwhile))
        assert (entry.receipt, push.is_withdrawal_push(entry.push_id)) == (True, False)
        assert (withdrawal.receipt, push.is_withdrawal_push(withdrawal.push_id)) == (True, True)
        # the withdrawal that came first left a tombstone: the entry is not stored at all
        assert hrss.store.record_versions("market", key(1)) == []
        # ... and is logged once, releasing nothing, in the transaction that decided so (before,
        # an entry said stored and a second one corrected it if the withdrawal came in between)
        assert [(e.reason, e.result_count, e.items_released) for e in push_entries(hrss)] == [
            ("withdraw", 0, ()),  # the other process's notice, which found no copy
            ("withdraw", 0, ()),  # the entry, not kept
            ("withdraw", 0, ()),  # market's own notice after the entry: nothing left to end
        ]
    finally:
        close(market, hrss, other)


def test_the_serving_node_runs_the_withdrawal_pass(cluster: LocalCluster) -> None:
    market = cluster.runtime("market")
    try:
        tasks = lifecycle_service.background(market)
        assert [t.__name__ for t in tasks] == ["scans", "withdrawals"]
        assert market.config.lifecycle.withdrawal_push_interval_s == 10.0
    finally:
        market.close()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", '"10"'])
def test_the_withdrawal_interval_must_be_a_finite_number_above_zero(
    tmp_path: Path, value: str
) -> None:
    text = f"{CONFIG_BASE}[lifecycle]\nwithdrawal_push_interval_s = {value}\n"
    with pytest.raises(ConfigError, match=r"\[lifecycle\] withdrawal_push_interval_s"):
        parse_config(text, home=tmp_path)


def test_the_withdrawal_interval_is_configurable(tmp_path: Path) -> None:
    text = f"{CONFIG_BASE}[lifecycle]\nwithdrawal_push_interval_s = 2.5\n"
    assert parse_config(text, home=tmp_path).lifecycle.withdrawal_push_interval_s == 2.5
    assert parse_config(CONFIG_BASE, home=tmp_path).lifecycle.withdrawal_push_interval_s == 10.0


# -- load: receivers that refuse, the cost of a pass, bursts of repairs -----------------------


def denied_pushes(receiver: NodeRuntime) -> int:
    """How many pushes `receiver` refused (denied `push` entries in its access log)."""
    return sum(1 for e in push_entries(receiver) if e.decision != "allow")


def test_a_refusing_receiver_is_tried_once_per_pass_and_backed_off_across_passes(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    for n in range(1, 6):
        seed_entry(market, n)
    fast_withdrawals(market)  # 50 ms stands for 10 s
    caplog.set_level(logging.INFO, logger="node.scheduler")
    passes = 0
    pending = push.push_pending_withdrawals

    async def counted(runtime: NodeRuntime, *, resting: Any = ()) -> list[push.PushOutcome]:
        nonlocal passes
        try:
            return await pending(runtime, resting=resting)
        finally:
            passes += 1

    monkeypatch.setattr(scheduler, "push_pending_withdrawals", counted)
    agreed = exchange_service._agreed_items

    async def scenario() -> int:
        async with serving(hrss):
            for n in range(1, 6):
                await push.push_record(market, key(n))
            for n in range(1, 6):
                repair(market, n)
            # hrss's push agreement ends (its bundle narrowed): it refuses PERMISSION_DENIED
            monkeypatch.setattr(exchange_service, "_agreed_items", lambda *a: set())
            stop = asyncio.Event()
            loop = asyncio.ensure_future(run_withdrawal_pushes(market, stop))
            try:
                await until(lambda: passes >= 12)
                refused = denied_pushes(hrss)
                # the agreement is back: the backed-off receiver gets every notice soon after
                monkeypatch.setattr(exchange_service, "_agreed_items", agreed)
                await until(lambda: all(copy_state(hrss, n) == "withdrawn" for n in range(1, 6)))
            finally:
                stop.set()
                await asyncio.wait_for(loop, timeout=10)
            return refused

    try:
        refused = asyncio.run(scenario())
        # one notice per attempt, and attempts in passes 1, 2, 4, 8 or so: not 5 in each of 12
        assert 1 <= refused <= 6, refused
        logged = [r.getMessage() for r in caplog.records if r.name == "node.scheduler"]
        assert len([m for m in logged if "hrss failed a withdrawal pass: backed off" in m]) == 1
        assert len([m for m in logged if "hrss is no longer backed off" in m]) == 1
    finally:
        close(market, hrss)


def test_a_refusal_skips_the_receiver_for_the_rest_of_the_pass(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    for n in (1, 2, 3):
        seed_entry(market, n)

    async def scenario() -> list[push.PushOutcome]:
        async with serving(hrss):
            for n in (1, 2, 3):
                await push.push_record(market, key(n))
                repair(market, n)
            monkeypatch.setattr(exchange_service, "_agreed_items", lambda *a: set())
            return await push.push_pending_withdrawals(market)

    try:
        outcomes = asyncio.run(scenario())
        assert [o.error for o in outcomes] == [
            "PERMISSION_DENIED",
            push._NOT_TRIED,
            push._NOT_TRIED,
        ]
        assert push.failed_receivers(outcomes) == {"hrss"}
        assert denied_pushes(hrss) == 1
    finally:
        close(market, hrss)


@pytest.mark.parametrize(
    ("error", "receivers_fault"),
    [
        ("UNAVAILABLE", True),
        ("DEADLINE_EXCEEDED", True),
        ("PERMISSION_DENIED", True),
        ("UNAUTHENTICATED", True),
        ("INTERNAL", True),
        ("auth", True),
        ("receipt not signed by the receiver", True),
        ("receipt does not match the notice", True),
        ("INVALID_ARGUMENT", False),  # that notice only
        ("receiver not in the roster", False),  # nothing was sent
        (push._NOT_TRIED, False),
        (push._RESTING, False),
    ],
)
def test_which_failures_are_the_receivers(error: str, receivers_fault: bool) -> None:
    failed = push.PushOutcome("pushw-x", "hrss", False, error)
    done = push.PushOutcome("pushw-y", "cdb", True, None)
    assert push.failed_receivers([failed, done]) == ({"hrss"} if receivers_fault else set())


def test_a_resting_receiver_is_not_tried(cluster: LocalCluster) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    seed_entry(market, 1)

    async def scenario() -> list[push.PushOutcome]:
        async with serving(hrss):
            await push.push_record(market, key(1))
            repair(market, 1)
            return await push.push_pending_withdrawals(market, resting={"hrss"})

    try:
        (rested,) = asyncio.run(scenario())
        assert (rested.receipt, rested.error) == (False, push._RESTING)
        assert push.failed_receivers([rested]) == set()
        assert copy_state(hrss, 1) == "active"  # nothing was sent: still due
        assert withdrawals_logged(hrss) == 0
        (row,) = lifecycle_ops.propagation_report(market, key(1))["push_receivers"]
        assert (row["acknowledged"], row["sent_at"]) == (False, None)
    finally:
        close(market, hrss)


def test_the_backoff_doubles_per_failing_pass_up_to_an_hour_and_ends_on_success() -> None:
    backoff = scheduler._Backoff(10.0)
    now = 0.0
    rests: list[float] = []
    for _ in range(12):
        assert "hrss" not in backoff.resting(now)  # its rest is over: tried
        began = backoff.failed("hrss", now)
        assert began == (not rests)  # logged once, when the backoff begins
        rested_until = now
        while "hrss" in backoff.resting(rested_until):
            rested_until += 1.0
        rests.append(rested_until - now)
        now = rested_until
    assert rests[:5] == [10.0, 20.0, 40.0, 80.0, 160.0]
    assert rests[-1] == scheduler.BACKOFF_CAP_S == 3600.0
    assert backoff.recovered(frozenset({"hrss"}), failing=set()) == ["hrss"]
    assert backoff.backed_off() == frozenset()
    assert backoff.failed("hrss", now)  # a new backoff starts from the interval again
    assert "hrss" not in backoff.resting(now + 10.0)


def test_the_withdrawal_pass_reads_no_receipt_and_leaves_the_event_loop_free(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, hrss = cluster.runtime("market"), cluster.runtime("hrss")
    for n in (1, 2):
        seed_entry(market, n)
    on_loop: list[str] = []
    loop_thread: list[int] = []

    def watched(name: str) -> None:
        real = getattr(ls, name)

        def call(store: Any, *args: Any, **kwargs: Any) -> Any:
            if store is market.store and threading.get_ident() in loop_thread:
                on_loop.append(name)
            return real(store, *args, **kwargs)

        monkeypatch.setattr(ls, name, call)

    for name in ("current_record", "push_states", "record_push", "push_receipt"):
        watched(name)

    def no_receipts(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the withdrawal pass read the receipts")

    async def scenario() -> list[push.PushOutcome]:
        loop_thread.append(threading.get_ident())
        async with serving(hrss):
            for n in (1, 2):
                await push.push_record(market, key(n))
                await asyncio.to_thread(repair, market, n)  # the test's own: not on the loop
            monkeypatch.setattr(ls, "list_pushes", no_receipts)
            return await push.push_pending_withdrawals(market)

    try:
        outcomes = asyncio.run(scenario())
        assert [o.receipt for o in outcomes] == [True, True]
        assert on_loop == []  # every store access of the sends ran in a worker thread
        assert (copy_state(hrss, 1), copy_state(hrss, 2)) == ("withdrawn", "withdrawn")
    finally:
        close(market, hrss)


def test_a_burst_of_repairs_sends_a_few_withdrawals_at_a_time(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = cluster.runtime("market")
    running = 0
    most = 0
    started: list[str] = []

    async def scenario() -> None:
        nonlocal running, most
        gate = asyncio.Event()

        async def held_send(runtime: NodeRuntime, record_key: str) -> list[push.PushOutcome]:
            nonlocal running, most
            running += 1
            most = max(most, running)
            started.append(record_key)
            try:
                await gate.wait()
                return []
            finally:
                running -= 1

        monkeypatch.setattr(push, "push_withdrawal", held_send)
        servicer = LifecycleServicer(market)
        for n in range(10):
            servicer._withdraw_soon(key(n))
        await until(lambda: len(started) >= lifecycle_service.WITHDRAWAL_SENDS)
        for _ in range(20):  # let every waiting send run as far as it can
            await asyncio.sleep(0)
        assert running == len(started) == lifecycle_service.WITHDRAWAL_SENDS
        gate.set()
        await servicer.withdrawals_sent()

    try:
        asyncio.run(scenario())
        assert most == lifecycle_service.WITHDRAWAL_SENDS == 4
        assert sorted(started) == [key(n) for n in range(10)]
    finally:
        market.close()
