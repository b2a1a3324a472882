"""`credex serve`: run the node until SIGINT/SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.markup import escape

from node.cli import app
from node.cli.common import HomeOption, check_listen, console, err_console, resolve_home
from node.errors import StaleBundle


@app.command("serve")
def serve_command(
    home: HomeOption = None,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="HOST:PORT to bind (default: \\[server] listen)."),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds in-flight streams get at shutdown.")
    ] = 10.0,
) -> None:
    """Serve the node's gRPC services on mutual TLS until interrupted."""
    from node.runtime import open_runtime, roster_identity
    from node.serving import node_telemetry, run_node

    if listen is not None:
        check_listen(listen, ephemeral=True)  # the error names --listen, not credex.toml
    runtime = open_runtime(resolve_home(home))
    try:
        # refuse to start without a valid trust bundle (its own message), or with keys that
        # its roster does not list for this node
        identity = roster_identity(runtime.node_keys, runtime.bundle())
        if identity is not None and identity.status == "mismatch":
            raise StaleBundle(f"serve: {identity.detail}")
    except BaseException:
        runtime.close()
        raise
    if identity is not None and identity.status == "rotated":
        err_console.print(f"[yellow]warning:[/] {escape(identity.detail)}", highlight=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        telemetry = node_telemetry(runtime)
        await run_node(
            runtime,
            stop=stop,
            listen=listen,
            grace=grace,
            telemetry=telemetry,
            # Only once the port is bound: a node that cannot listen never claims to serve.
            on_ready=lambda server: console.print(
                f"credex node {runtime.node_id} serving on {server.target} (Ctrl-C to stop)"
            ),
        )

    try:
        asyncio.run(main())
    finally:
        runtime.close()
    console.print(f"credex node {runtime.node_id} stopped")
