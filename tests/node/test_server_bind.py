"""Binding the node's port: one server per port, and a bind that fails is a clear config error.

gRPC sets SO_REUSEPORT by default, so a second server on a taken port used to bind silently
and share the calls with the first; a port in use or an address that is not this machine's made
grpcio raise a bare RuntimeError after `credex serve` had already printed "serving".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import keys
from node.cluster import LocalCluster
from node.errors import ConfigError
from node.server import NodeServer, build_server
from node.serving import run_node
from node.transport import ServerTls, TlsRoster


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    base = tmp_path_factory.mktemp("keys")
    made = [keys.create_key_dir(base / n, node_id=n) for n in ("dept-a", "platform")]
    roster = TlsRoster.of((k.node_id, k.tls_fingerprint, k.tls_cert_pem) for k in made)
    return ServerTls(key_pem=made[0].tls_key_pem, cert_pem=made[0].tls_cert_pem, roster=roster)


def test_a_second_server_on_a_taken_port_is_refused(tls: ServerTls) -> None:
    async def scenario() -> str:
        first = build_server(listen="127.0.0.1:0", tls=tls, services=[])
        await first.start()
        try:
            with pytest.raises(ConfigError) as refused:
                build_server(listen=f"127.0.0.1:{first.port}", tls=tls, services=[])
            return str(refused.value)
        finally:
            await first.stop(None)

    message = asyncio.run(scenario())
    assert "[server] listen" in message
    assert "127.0.0.1:" in message
    assert "in use" in message


def test_an_address_of_another_machine_is_refused(tls: ServerTls) -> None:
    async def scenario() -> None:
        build_server(listen="203.0.113.5:7443", tls=tls, services=[])

    with pytest.raises(ConfigError, match=r"\[server\] listen = '203\.0\.113\.5:7443'"):
        asyncio.run(scenario())


def test_a_malformed_listen_address_is_a_config_error(tls: ServerTls) -> None:
    async def scenario() -> None:
        build_server(listen="localhost", tls=tls, services=[])

    with pytest.raises(ConfigError, match=r"\[server\] listen = 'localhost': expected HOST:PORT"):
        asyncio.run(scenario())


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    c = LocalCluster(tmp_path, [("market", "department"), ("platform", "platform")], [])
    c.init()
    return c


def test_run_node_never_reports_ready_when_it_cannot_listen(
    cluster: LocalCluster, tls: ServerTls
) -> None:
    runtime = cluster.runtime("market")
    ready: list[NodeServer] = []

    async def scenario() -> None:
        holder = build_server(listen="127.0.0.1:0", tls=tls, services=[])
        await holder.start()
        try:
            await run_node(
                runtime,
                stop=asyncio.Event(),
                listen=f"127.0.0.1:{holder.port}",
                on_ready=ready.append,
            )
        finally:
            await holder.stop(None)

    try:
        with pytest.raises(ConfigError, match=r"^--listen = '127\.0\.0\.1:\d+': cannot listen"):
            asyncio.run(scenario())
    finally:
        runtime.close()
    assert ready == []
    assert not (cluster.home("market") / "data" / "serve.json").exists()


def test_credex_serve_on_a_taken_port_says_so_without_a_traceback(cluster: LocalCluster) -> None:
    try:
        cluster.start("market")
        info: dict[str, Any] = json.loads(
            (cluster.home("market") / "data" / "serve.json").read_text(encoding="utf-8")
        )
        second = cluster.cli("market", "serve", timeout=60)  # the same [server] listen
        assert second.returncode == 2, second.stderr
        assert "serving" not in second.stdout
        assert "Traceback" not in second.stderr
        assert "RuntimeError" not in second.stderr
        assert "add_port" not in second.stderr  # gRPC's own log line said it first
        assert f"[server] listen = '{info['target']}'" in second.stderr
        assert cluster.running("market")  # the first node keeps its port
    finally:
        cluster.stop_all()
