"""`credex serve`: run a node's gRPC services and its background tasks until told to stop.

Each service module in `SERVICE_MODULES` exposes `make_services(runtime) -> list[Service]`
and may expose `background(runtime) -> list[BackgroundTask]`; this is the one list that
names them, so adding a service is one line here. Background tasks run beside the server
(access-log checkpoints, lifecycle scans, the platform's feed subscriptions) and are told to
stop once the server has stopped, so a SIGTERM finishes in-flight calls and streams, then the
tasks (the last access-log checkpoint covering every call served), before the process exits.

When the server is listening, `data/serve.json` names its address and process id (written
atomically), so scripts and tests can wait for readiness without polling ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from node.requests import purge_nonces
from node.runtime import NodeRuntime
from node.server import NodeServer, Service, build_server
from node.telemetry import Telemetry, noop_telemetry, telemetry_for, use_telemetry

BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

# Modules providing services (and optionally background tasks). Add one line per module.
SERVICE_MODULES: tuple[str, ...] = (
    "node.services.catalog_service",
    "node.services.query_service",
    "node.services.transparency_service",
    "node.services.exchange_service",
    "node.services.lifecycle_service",
)

SERVE_FILE = "serve.json"
# Seconds before a failed background task is started again (doubling up to 60 s).
TASK_RESTART_S = 5.0

log = logging.getLogger(__name__)


def serve_file(runtime: NodeRuntime) -> Path:
    """Where a running node announces its address and pid."""
    return runtime.config.data_dir / SERVE_FILE


def collect(runtime: NodeRuntime) -> tuple[list[Service], list[BackgroundTask]]:
    """Every service and background task of the modules in SERVICE_MODULES."""
    services: list[Service] = []
    tasks: list[BackgroundTask] = [runtime.log.run_checkpoints, _nonce_purge(runtime)]
    for name in SERVICE_MODULES:
        module: Any = importlib.import_module(name)
        services.extend(module.make_services(runtime))
        if hasattr(module, "background"):
            tasks.extend(module.background(runtime))
    return services, tasks


def _nonce_purge(runtime: NodeRuntime) -> BackgroundTask:
    """Deletes expired request nonces now and then, off the request path."""

    async def purge(stop: asyncio.Event) -> None:
        await purge_nonces(runtime.store, runtime.clock, stop)

    return purge


def _task_name(task: BackgroundTask) -> str:
    return str(getattr(task, "__qualname__", None) or type(task).__name__)


async def _supervised(task: BackgroundTask, stop: asyncio.Event) -> None:
    """Run `task` until `stop`, starting it again when it fails.

    A background task that ends with an error would otherwise stay dead, unnoticed, for the
    rest of the run (no more checkpoints, no more bundle reloads, revocations included). Each
    failure is logged at once with the task's name, the exception's type and its stack, never
    its text (a foreign error may quote data or paths); the task starts again after
    TASK_RESTART_S, doubling up to 60 s while it keeps failing.
    """
    name = _task_name(task)
    delay = TASK_RESTART_S
    while True:
        try:
            await task(stop)
            return
        except Exception as error:
            stack = "".join(traceback.format_tb(error.__traceback__))
            log.error(
                "background task %s failed (%s); starting it again in %.0f s\n%s",
                name,
                type(error).__name__,
                delay,
                stack,
            )
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return
        delay = min(delay * 2, 60.0)


def _announce(runtime: NodeRuntime, server: NodeServer) -> None:
    path = serve_file(runtime)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"target": server.target, "port": server.port, "pid": os.getpid()}),
        encoding="utf-8",
    )
    tmp.replace(path)


async def run_node(
    runtime: NodeRuntime,
    *,
    stop: asyncio.Event,
    listen: str | None = None,
    grace: float = 10.0,
    telemetry: Telemetry | None = None,
    on_ready: Callable[[NodeServer], None] | None = None,
) -> None:
    """Serve until `stop` is set, then stop gracefully (in-flight streams get `grace` s).

    `on_ready(server)` is called once the server listens (never when it could not start).
    `listen` overrides `[server] listen` (the command's --listen). Refuses (ConfigError naming
    --listen or `[server] listen`, and the address) an address it cannot listen on. `telemetry`
    is the process's telemetry while the node runs (pipeline stages record into it too) and
    is shut down (flushed) when the node stops or fails to start.
    """
    telemetry = telemetry if telemetry is not None else noop_telemetry()
    with use_telemetry(telemetry):
        try:
            await _serve(
                runtime,
                stop=stop,
                listen=listen,
                grace=grace,
                telemetry=telemetry,
                on_ready=on_ready,
            )
        finally:
            telemetry.shutdown()


async def _serve(
    runtime: NodeRuntime,
    *,
    stop: asyncio.Event,
    listen: str | None,
    grace: float,
    telemetry: Telemetry,
    on_ready: Callable[[NodeServer], None] | None,
) -> None:
    services, tasks = collect(runtime)
    server = build_server(
        listen=listen or runtime.config.server.listen,
        tls=runtime.server_tls(),
        services=services,
        telemetry=telemetry,
        listen_key="--listen" if listen else "[server] listen",
        max_calls_per_peer=runtime.config.server.max_calls_per_peer,
    )
    await server.start()
    _freeze_startup_objects()
    _announce(runtime, server)
    if on_ready is not None:
        on_ready(server)
    # The background tasks stop only once the server has: the calls let finish within the grace
    # period still log their accesses, and the access-log checkpoint signed when its task stops
    # must cover those entries (else they stay outside every checkpoint, unwitnessed, until the
    # node runs again).
    tasks_stop = asyncio.Event()
    running = [asyncio.create_task(_supervised(task, tasks_stop)) for task in tasks]
    try:
        await stop.wait()
    finally:
        runtime.stopping.set()  # follow-mode streams finish their batch and end cleanly
        with contextlib.suppress(FileNotFoundError):
            serve_file(runtime).unlink()
        try:
            await server.stop(grace)
        finally:
            tasks_stop.set()
        for task in running:
            try:
                await asyncio.wait_for(task, timeout=grace)
            except TimeoutError:
                task.cancel()
            except Exception:  # noqa: S112 - a failed task must not block shutdown
                continue


def _freeze_startup_objects() -> None:
    """Move everything alive once the node serves (modules, schema, catalogue, gRPC) out of
    the cyclic collector's reach.

    A full collection otherwise walks those ~130,000 long-lived objects again and again, a
    stall of about 70 ms on a small machine every ten seconds or so under load, felt by every
    call in flight. Reference counting still frees a frozen object whose last reference goes;
    only a reference cycle among them would now stay, and startup's garbage is collected
    first.
    """
    gc.collect()
    gc.freeze()


def node_telemetry(runtime: NodeRuntime) -> Telemetry:
    """The telemetry the node's config asks for (console, OTLP or none)."""
    return telemetry_for(runtime.config)
