"""`credex subscribe`, `credex feed export`, `credex status`, `credex doctor`.

- subscribe: pull a peer's feed now (or `--follow` it until Ctrl-C) and print what was applied;
- feed export: received records as standard DSSE JSON lines, for any DSSE verifier;
- status: the node at a glance: bundle, record counts by state, feeds out and in;
- doctor: checks keys, bundle, database and every roster peer; exit 1 when one fails.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import keys
from node import feeds, lifecycle, lifecycle_ops
from node.cli import app
from node.cli.common import HomeOption, JsonOption, console, print_json, resolve_home
from node.errors import ExitCode, InputError, NodeError, PeerUnavailable
from node.runtime import NodeRuntime, open_runtime
from node.store import RECORD_STATES, schema_revision
from node.store.received import received_records
from node.transport import ChannelIdentity, UnavailableCause, diagnose_unavailable

feed_app = typer.Typer(help="Received feed records.", no_args_is_help=True)
app.add_typer(feed_app, name="feed")

_BUNDLE_WARN = dt.timedelta(days=7)


def _with_runtime(home: Path | None, work: Callable[[NodeRuntime], Any]) -> Any:
    runtime = open_runtime(resolve_home(home))
    try:
        return work(runtime)
    finally:
        runtime.close()


# -- subscribe -------------------------------------------------------------------------------------


async def _subscribe(runtime: NodeRuntime, peer: str, follow: bool) -> feeds.PullResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        result = await feeds.pull(runtime, peer, follow=follow, stop=stop)
    except PeerUnavailable as error:
        # A refused handshake looks like "down" to gRPC: say which it is.
        tls = runtime.tls_roster().peer(peer)
        identity = ChannelIdentity(
            key_pem=runtime.node_keys.tls_key_pem, cert_pem=runtime.node_keys.tls_cert_pem
        )
        diagnosis = await diagnose_unavailable(
            runtime.peer_endpoint(peer), peer=tls, identity=identity
        )
        if diagnosis.cause == UnavailableCause.TLS_OK:
            raise
        raise PeerUnavailable(f"{error}; {diagnosis.message}") from None
    return result


@app.command("subscribe")
def subscribe_command(
    peer: Annotated[str, typer.Argument(help="Node id of the provider whose feed to pull.")],
    home: HomeOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep following new events until Ctrl-C.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Pull a provider's feed from the stored cursor: verify, store, acknowledge."""

    def work(runtime: NodeRuntime) -> feeds.PullResult:
        result: feeds.PullResult = asyncio.run(_subscribe(runtime, peer, follow))
        return result

    result: feeds.PullResult = _with_runtime(home, work)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(
        f"feed of {peer}: {result.batches} batches, {result.events} events; stored "
        f"{result.stored} record versions, applied {result.applied} lifecycle changes, "
        f"skipped {result.skipped}; cursor {result.cursor}"
    )


# -- feed export -----------------------------------------------------------------------------------


def dsse_line(signed: keys.SignedRecord) -> dict[str, Any]:
    """A record as a standard DSSE JSON envelope (payloadType, payload, signatures)."""
    env = signed.envelope
    return {
        "payloadType": env.payload_type,
        "payload": base64.b64encode(env.payload).decode("ascii"),
        "signatures": [
            {"keyid": kid, "sig": base64.b64encode(sig).decode("ascii")}
            for kid, sig in env.signatures
        ],
    }


@feed_app.command("export")
def export_command(
    home: HomeOption = None,
    fmt: Annotated[str, typer.Option("--format", help='Output format: "dsse".')] = "dsse",
    peer: Annotated[
        str | None, typer.Option("--peer", help="Only records received from this node.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write received records as DSSE JSON lines (the producer's signature, payload as signed).

    The payload carries salted digests only, never field values: the export is safe to hand
    to an auditor who checks signatures with any DSSE tool."""
    if fmt != "dsse":
        raise InputError(f'--format {fmt!r}: only "dsse" is supported')

    def work(runtime: NodeRuntime) -> int:
        rows = received_records(runtime.store, producer=peer)
        handle = sys.stdout if output is None else output.open("w", encoding="utf-8")
        try:
            for row in rows:
                if not row.body:
                    continue  # purged
                signed = keys.SignedRecord.from_bytes(runtime.cipher.decrypt(row.row_id, row.body))
                handle.write(json.dumps(dsse_line(signed), sort_keys=True) + "\n")
        finally:
            if output is not None:
                handle.close()
        return len(rows)

    count: int = _with_runtime(home, work)
    if output is not None:
        console.print(f"exported {count} received records to {output}")


# -- status ----------------------------------------------------------------------------------------


def node_status(runtime: NodeRuntime) -> dict[str, Any]:
    """The node at a glance (no personal data): bundle, record counts, feeds out and in."""
    info: dict[str, Any] = {
        "node": runtime.node_id,
        "role": runtime.config.node.role,
        "store": runtime.store.url,
    }
    providers: dict[str, frozenset[str]] = {}
    try:
        bundle = runtime.bundle()
        info["bundle"] = {
            "version": bundle.version,
            "expires_at": bundle.expires_at.isoformat(),
            "roster": len(bundle.roster),
        }
        providers = feeds.feed_providers(bundle, runtime.node_id)
    except (NodeError, keys.KeysError) as error:
        info["bundle"] = {"error": str(error)}
    info["records"] = {
        state: runtime.store.count_records(state=state) for state in sorted(RECORD_STATES)
    }
    info["feeds"] = [
        {
            "subscriber": sub.subscriber,
            "items": sorted(sub.items),
            "last_seq": sub.last_seq,
            "acked_seq": sub.acked_seq,
            "lag": sub.last_seq - sub.acked_seq,
            "acked_at": None if sub.acked_at is None else sub.acked_at.isoformat(),
        }
        for sub in runtime.store.subscriptions()
    ]
    info["upstream"] = [
        {
            "provider": provider,
            "items": sorted(items),
            "cursor": runtime.store.upstream_cursor(provider),
            "received": runtime.store.count_records(producer=provider),
        }
        for provider, items in sorted(providers.items())
    ]
    info["lifecycle"] = {
        "overdue": lifecycle_ops.overdue_summary(
            runtime.store, lifecycle.china_day(runtime.clock())
        ),
        "withdrawals_pending": lifecycle_ops.pending_withdrawals(runtime),
    }
    return info


@app.command("status")
def status_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Node, role, bundle, record counts by state, feed cursors and lag."""
    info: dict[str, Any] = _with_runtime(home, node_status)
    if as_json:
        print_json(info)
        return
    bundle = info["bundle"]
    head = (
        f"bundle v{bundle['version']} until {bundle['expires_at']}"
        if "version" in bundle
        else f"bundle: {bundle['error']}"
    )
    console.print(f"credex node {info['node']} ({info['role']}); {head}")
    counts = ", ".join(f"{k} {v}" for k, v in info["records"].items() if v)
    console.print(f"records: {counts or 'none'}")
    if info["feeds"]:
        table = Table(title="feeds served")
        for col in ("subscriber", "last seq", "acked", "lag", "acked at"):
            table.add_column(col)
        for f in info["feeds"]:
            table.add_row(
                f["subscriber"],
                str(f["last_seq"]),
                str(f["acked_seq"]),
                str(f["lag"]),
                f["acked_at"] or "-",
            )
        console.print(table)
    if info["upstream"]:
        table = Table(title="feeds received")
        for col in ("provider", "cursor", "record versions"):
            table.add_column(col)
        for u in info["upstream"]:
            table.add_row(u["provider"], str(u["cursor"]), str(u["received"]))
        console.print(table)
    _print_lifecycle(info["lifecycle"])


def _print_lifecycle(life: dict[str, Any]) -> None:
    if life["overdue"]:
        table = Table(title="overdue lifecycle deadlines (Shandong Arts. 39-40)")
        for col in ("task", "kind", "record", "due"):
            table.add_column(col)
        for t in life["overdue"]:
            due = t["due_on"] + (" (approximate)" if t["approximate_due"] else "")
            table.add_row(t["task_id"], t["kind"], t["record_key"][:12], due)
        console.print(table)
    for report in life["withdrawals_pending"]:
        waiting = [s for s in report["subscribers"] if not s.get("acknowledged")]
        console.print(
            f"withdrawal of {report['record_key'][:12]}... ({report['state']}) not yet "
            f"acknowledged by: {', '.join(str(s.get('subscriber')) for s in waiting)}"
        )


# -- doctor ----------------------------------------------------------------------------------------


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail}


async def _peer_checks(runtime: NodeRuntime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    bundle = runtime.bundle()
    roster = runtime.tls_roster()
    identity = ChannelIdentity(
        key_pem=runtime.node_keys.tls_key_pem, cert_pem=runtime.node_keys.tls_cert_pem
    )
    for entry in bundle.roster:
        if entry.node_id == runtime.node_id:
            continue
        name = f"peer {entry.node_id}"
        try:
            peer = roster.peer(entry.node_id)
            diagnosis = await diagnose_unavailable(
                runtime.peer_endpoint(entry.node_id), peer=peer, identity=identity, timeout=3.0
            )
        except NodeError as error:
            out.append(_check(name, False, str(error)))
            continue
        ok = diagnosis.cause == UnavailableCause.TLS_OK
        out.append(_check(name, ok, diagnosis.message))
    return out


def doctor_checks(runtime: NodeRuntime, *, peers: bool = True) -> list[dict[str, Any]]:
    """Every doctor check as {check, ok, detail}; messages never carry key material."""
    checks: list[dict[str, Any]] = []
    try:
        loaded = keys.load_key_dir(runtime.config.keys_dir)
        checks.append(
            _check("keys", True, f"{runtime.config.keys_dir}: keyid {loaded.signing.keyid}")
        )
    except keys.KeysError as error:
        checks.append(_check("keys", False, str(error)))
    bundle_ok = False
    try:
        bundle = runtime.reload_bundle()
        left = bundle.expires_at - runtime.clock()
        near = left < _BUNDLE_WARN
        detail = f"v{bundle.version}, expires {bundle.expires_at.isoformat()}"
        if near:
            detail += f" (in {left.days} days: ask the platform for a new bundle)"
        if bundle.member(runtime.node_id) is None:
            detail += "; this node is NOT in its roster"
            near = True
        checks.append(_check("bundle", not near, detail))
        bundle_ok = True
    except (NodeError, keys.KeysError) as error:
        checks.append(_check("bundle", False, str(error)))
    try:
        revision = schema_revision(runtime.store.engine)
        count = runtime.store.count_records()
        checks.append(
            _check("database", True, f"{runtime.store.url}: schema {revision}, {count} records")
        )
    except NodeError as error:
        checks.append(_check("database", False, str(error)))
    if peers and bundle_ok:
        checks.extend(asyncio.run(_peer_checks(runtime)))
    return checks


@app.command("doctor")
def doctor_command(
    home: HomeOption = None,
    no_peers: Annotated[
        bool, typer.Option("--no-peers", help="Skip the reachability checks of roster peers.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check keys, trust bundle, database and peers; exit 1 when any check fails."""
    checks: list[dict[str, Any]] = _with_runtime(
        home, lambda runtime: doctor_checks(runtime, peers=not no_peers)
    )
    failed = [c for c in checks if not c["ok"]]
    if as_json:
        print_json({"ok": not failed, "checks": checks})
    else:
        for c in checks:
            mark = "[green]ok[/]" if c["ok"] else "[bold red]FAIL[/]"
            console.print(f"{mark} {c['check']}: {c['detail']}", highlight=False)
    if failed:
        raise typer.Exit(int(ExitCode.FAILURE))
