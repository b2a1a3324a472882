"""`credex subscribe`, `credex feed export`, `credex status`, `credex doctor`.

- subscribe: pull a peer's feed now (or `--follow` it until Ctrl-C) and print what was applied;
- feed export: received records as standard DSSE JSON lines, for any DSSE verifier;
- status: the node at a glance: bundle, record counts by state, feeds out and in;
- doctor: checks config, file permissions, keys, bundle, database and every roster peer,
  each on its own (a broken key directory does not hide a broken database); exit 1 when one
  fails.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from node.cli import app
from node.cli.common import (
    HomeOption,
    JsonOption,
    console,
    print_json,
    refuse_existing_output,
    resolve_home,
    write_export,
)
from node.cli.init_cmds import PassphraseFileOption, node_passphrase
from node.cli.log_cmds import admin_entry
from node.errors import ExitCode, InputError, NodeError, PeerUnavailable

if TYPE_CHECKING:
    import keys
    from node import feeds
    from node.config import NodeConfig
    from node.runtime import NodeRuntime

feed_app = typer.Typer(help="Received feed records.", no_args_is_help=True)
app.add_typer(feed_app, name="feed")

_BUNDLE_WARN = dt.timedelta(days=7)


def _with_runtime(home: Path | None, work: Callable[[NodeRuntime], Any]) -> Any:
    from node.runtime import open_runtime

    runtime = open_runtime(resolve_home(home))
    try:
        return work(runtime)
    finally:
        runtime.close()


# -- subscribe -------------------------------------------------------------------------------------


async def _subscribe(runtime: NodeRuntime, peer: str, follow: bool) -> feeds.PullResult:
    from node import feeds
    from node.transport import ChannelIdentity, UnavailableCause, diagnose_unavailable

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
    from node.telemetry import telemetry_of

    def work(runtime: NodeRuntime) -> feeds.PullResult:
        # the pull's stages (open, verify, store, ack) go where [telemetry] says
        with telemetry_of(runtime.config):
            result: feeds.PullResult = asyncio.run(_subscribe(runtime, peer, follow))
        return result

    result: feeds.PullResult = _with_runtime(home, work)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(
        f"feed of {escape(peer)}: {result.batches} batches, {result.events} events; stored "
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
    officer: Annotated[
        str, typer.Option("--officer", help="Your staff id (recorded in the access log).")
    ] = "officer",
) -> None:
    """Write received records as DSSE JSON lines (the producer's signature, payload as signed).

    The payload carries salted digests only, never field values: the export is safe to hand
    to an auditor who checks signatures with any DSSE tool. The export is logged (kind
    `export`, reason `feed_export`, with its record count) before anything is written."""
    import keys
    from node.store.received import received_records

    if fmt != "dsse":
        raise InputError(f'--format {fmt!r}: only "dsse" is supported')

    refuse_existing_output(output)

    def work(runtime: NodeRuntime) -> int:
        rows = [row for row in received_records(runtime.store, producer=peer) if row.body]
        logged = admin_entry(runtime, "export", officer, "feed_export")
        runtime.log.append_sync(
            dataclasses.replace(
                logged,
                purpose="feed_export",
                legal_basis="export of received signed records for audit",
                result_count=len(rows),  # purged copies have no body and are not exported
            )
        )

        def lines() -> Iterator[str]:
            for row in rows:
                signed = keys.SignedRecord.from_bytes(runtime.cipher.decrypt(row.row_id, row.body))
                yield json.dumps(dsse_line(signed), sort_keys=True) + "\n"

        return write_export(output, lines())

    count: int = _with_runtime(home, work)
    if output is not None:
        console.print(f"exported {count} received records to {escape(str(output))}")


# -- status ----------------------------------------------------------------------------------------


def node_status(runtime: NodeRuntime) -> dict[str, Any]:
    """The node at a glance (no personal data): bundle, record counts, feeds out and in."""
    import keys
    from node import feeds, lifecycle, lifecycle_ops
    from node.store import RECORD_STATES

    info: dict[str, Any] = {
        "node": runtime.node_id,
        "role": runtime.config.node.role,
        "store": runtime.store.url,
    }
    providers: dict[str, frozenset[str]] = {}
    unfollowed: list[str] = []
    unlisted: set[str] = set()
    try:
        bundle = runtime.bundle()
        info["bundle"] = {
            "version": bundle.version,
            "expires_at": bundle.expires_at.isoformat(),
            "roster": len(bundle.roster),
        }
        providers = feeds.feed_providers(bundle, runtime.node_id)
        unlisted = {p for p in providers if bundle.member(p) is None}
        if runtime.config.node.role == "platform":
            # The platform follows only agreed feeds: make the departments it does not follow
            # visible instead of silently absent.
            unfollowed = sorted(
                e.node_id
                for e in bundle.roster
                if "department" in e.roles
                and e.node_id != runtime.node_id
                and e.node_id not in providers
            )
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
    now = runtime.clock()
    info["upstream"] = [
        _upstream(
            runtime, provider, items, now, note="not in roster" if provider in unlisted else ""
        )
        for provider, items in sorted(providers.items())
    ] + [
        _upstream(runtime, provider, frozenset(), now, note="no feed agreement")
        for provider in unfollowed
    ]
    info["lifecycle"] = {
        "overdue": lifecycle_ops.overdue_summary(
            runtime.store, lifecycle.china_day(runtime.clock())
        ),
        "withdrawals_pending": lifecycle_ops.pending_withdrawals(runtime),
    }
    return info


def _upstream(
    runtime: NodeRuntime, provider: str, items: frozenset[str], now: dt.datetime, *, note: str
) -> dict[str, Any]:
    """One received feed: cursor, the provider's head as its last batch reported it, the lag
    between them, and the time and age of that batch (None where not known yet)."""
    feed = runtime.store.upstream_feed(provider)
    last = None if feed is None else feed.last_batch_at
    return {
        "provider": provider,
        "agreement": note != "no feed agreement",
        "note": note,
        "items": sorted(items),
        "cursor": 0 if feed is None else feed.cursor,
        "head": None if feed is None else feed.head,
        "lag": None if feed is None else feed.lag,
        "last_batch_at": None if last is None else last.isoformat(),
        "last_batch_age_s": None if last is None else max(int((now - last).total_seconds()), 0),
        "received": runtime.store.count_records(producer=provider),
    }


def _age(seconds: int | None) -> str:
    """A batch age as a person reads it ("-" before the first batch)."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


@app.command("status")
def status_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Node, role, bundle, record counts by state, feed cursors and lag (both directions)."""
    info: dict[str, Any] = _with_runtime(home, node_status)
    if as_json:
        print_json(info)
        return
    bundle = info["bundle"]
    head = (
        f"bundle v{bundle['version']} until {bundle['expires_at']}"
        if "version" in bundle
        else f"bundle: {escape(bundle['error'])}"
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
        for col in ("provider", "cursor", "head", "lag", "last batch", "record versions", "note"):
            table.add_column(col)
        for u in info["upstream"]:
            table.add_row(
                escape(u["provider"]),
                str(u["cursor"]),
                "-" if u["head"] is None else str(u["head"]),
                "-" if u["lag"] is None else str(u["lag"]),
                _age(u["last_batch_age_s"]),
                str(u["received"]),
                u["note"],
            )
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

# Whoever else can write these can swap the configuration, the database or the keys.
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_PEER_TIMEOUT_S = 3.0


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail}


def _failure(error: Exception) -> str:
    """The reason a check failed, as a person reads it; unknown errors by type only (their
    text could carry a database password or data)."""
    import keys

    if isinstance(error, NodeError | keys.KeysError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or type(error).__name__}"
    return f"the check stopped on an unexpected {type(error).__name__}"


def _permissions_check(config: NodeConfig) -> dict[str, Any]:
    """Flags node files and directories that the group or others can write."""
    from node.config import CONFIG_FILE

    paths = [config.home, config.home / CONFIG_FILE, config.keys_dir, config.home / "trust"]
    database = config.store.sqlite_file
    if database is not None:
        paths.append(database)
    problems: list[str] = []
    for path in paths:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue  # a missing file is the failure of the check that needs it
        except OSError as error:
            problems.append(f"{path}: cannot inspect ({error.strerror})")
            continue
        if mode & _WRITABLE_BY_OTHERS:
            who = " and ".join(
                name
                for bit, name in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "world"))
                if mode & bit
            )
            problems.append(f"{path} is {who}-writable (chmod go-w {path})")
    if problems:
        return _check("permissions", False, "; ".join(problems))
    return _check("permissions", True, "node directory, credex.toml, keys/, trust/ and the "
                  "SQLite database are writable by their owner only")  # fmt: skip


def _keys_check(
    config: NodeConfig, passphrase_file: Path | None
) -> tuple[dict[str, Any], keys.NodeKeys | None]:
    """Loads the key directory as `credex serve` would (0700 directory, 0600 files)."""
    import keys

    try:
        loaded = keys.load_key_dir(config.keys_dir, passphrase=node_passphrase(passphrase_file))
    except Exception as error:  # every failure is this check's result
        return _check("keys", False, _failure(error)), None
    detail = f"{config.keys_dir}: keyid {loaded.signing.keyid}, private files owner-only"
    return _check("keys", True, detail), loaded


def _bundle_check(
    config: NodeConfig, now: dt.datetime
) -> tuple[dict[str, Any], keys.TrustBundle | None]:
    """Verifies the installed bundle; fails when it expires within 7 days or omits this node."""
    from node.runtime import load_bundle

    try:
        bundle = load_bundle(config.home / "trust", now=now)
    except Exception as error:  # every failure is this check's result
        return _check("bundle", False, _failure(error)), None
    left = bundle.expires_at - now
    ok = left >= _BUNDLE_WARN
    detail = f"v{bundle.version}, expires {bundle.expires_at.isoformat()}"
    if not ok:
        detail += f" (in {left.days} days: ask the platform for a new bundle)"
    if bundle.member(config.node.id) is None:
        detail += "; this node is NOT in its roster"
        ok = False
    return _check("bundle", ok, detail), bundle


def _database_check(config: NodeConfig) -> dict[str, Any]:
    """Opens the store without migrating it (doctor changes nothing), reads its schema and
    takes the write lock once: a database the node could only read fails here, as it would
    fail the node's first write."""
    from node.runtime import open_node_store
    from node.store import known_revisions, schema_revision

    database = config.store.sqlite_file
    if database is not None and not database.is_file():
        return _check("database", False, f"{database}: no database file (restore a backup)")
    try:
        store = open_node_store(config, migrate_schema=False)
        try:
            revision = schema_revision(store.engine)
            if revision is None:
                return _check(
                    "database", False,
                    f"{store.url}: no credex schema (`credex serve` migrates it at start)",
                )  # fmt: skip
            known, head = known_revisions()
            if revision not in known:
                return _check(
                    "database", False,
                    f"{store.url}: schema {revision} is not one this release knows (newest "
                    f"{head}): a newer credex wrote it; run that release or restore a backup",
                )  # fmt: skip
            count = store.count_records()
            with store.write("check the database is writable"):
                pass  # BEGIN IMMEDIATE, then an empty commit: nothing is changed
            return _check(
                "database", True,
                f"{store.url}: schema {revision}"
                + ("" if revision == head else f" (this release migrates it to {head} at start)")
                + f", {count} records, writable",
            )  # fmt: skip
        finally:
            store.close()
    except Exception as error:  # every failure is this check's result
        return _check("database", False, _failure(error))


async def _peer_checks(
    config: NodeConfig, node_keys: keys.NodeKeys, bundle: keys.TrustBundle, now: dt.datetime
) -> list[dict[str, Any]]:
    """Probes every other roster member at once: TCP, then mutual TLS with our certificate."""
    from node.runtime import PEERS_DIR
    from node.transport import (
        ChannelIdentity,
        UnavailableCause,
        diagnose_unavailable,
        load_peer_certs,
        roster_from_bundle,
    )

    roster = roster_from_bundle(bundle, load_peer_certs(config.home / "trust" / PEERS_DIR), now=now)
    identity = ChannelIdentity(key_pem=node_keys.tls_key_pem, cert_pem=node_keys.tls_cert_pem)

    async def probe(node_id: str, endpoint: str) -> dict[str, Any]:
        name = f"peer {node_id}"
        try:
            diagnosis = await diagnose_unavailable(
                endpoint, peer=roster.peer(node_id), identity=identity, timeout=_PEER_TIMEOUT_S
            )
        except NodeError as error:
            return _check(name, False, str(error))
        if diagnosis.cause == UnavailableCause.TLS_OK:
            return _check(name, True, f"{endpoint}: up, and accepts our certificate (mutual TLS)")
        return _check(name, False, diagnosis.message)

    return list(
        await asyncio.gather(
            *(
                probe(entry.node_id, config.peer_endpoint(entry.node_id) or entry.endpoint)
                for entry in bundle.roster
                if entry.node_id != config.node.id
            )
        )
    )


def doctor_checks(
    home: Path,
    *,
    peers: bool = True,
    passphrase_file: Path | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> list[dict[str, Any]]:
    """Every doctor check as {check, ok, detail}, each run on its own from credex.toml.

    Checks config, permissions, keys, bundle, database and (with `peers`) every roster peer;
    a failing check never stops the others (peers need the keys and the bundle, and say so
    when those failed). Never raises for what it checks; details never carry key material,
    passwords or personal data.
    """
    from node.config import CONFIG_FILE, load_config
    from node.runtime import roster_identity, utc_now

    try:
        config = load_config(home)
    except NodeError as error:
        return [_check("config", False, str(error))]
    now = (clock or utc_now)()
    where = f"{config.home / CONFIG_FILE}: node {config.node.id} ({config.node.role})"
    checks = [_check("config", True, where), _permissions_check(config)]
    keys_check, node_keys = _keys_check(config, passphrase_file)
    bundle_check, bundle = _bundle_check(config, now)
    checks += [keys_check, bundle_check]
    if node_keys is not None and bundle is not None:
        identity = roster_identity(node_keys, bundle)
        if identity is not None:
            ok = identity.status != "mismatch"
            prefix = "warning: " if identity.status == "rotated" else ""
            checks.append(_check("identity", ok, prefix + identity.detail))
    checks.append(_database_check(config))
    if not peers:
        return checks
    if node_keys is None or bundle is None:
        checks.append(_check("peers", False, "not checked: needs the keys and a trust bundle"))
        return checks
    try:
        checks += asyncio.run(_peer_checks(config, node_keys, bundle, now))
    except Exception as error:  # every failure is this check's result
        checks.append(_check("peers", False, _failure(error)))
    return checks


@app.command("doctor")
def doctor_command(
    home: HomeOption = None,
    no_peers: Annotated[
        bool, typer.Option("--no-peers", help="Skip the reachability checks of roster peers.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check config, file permissions, keys, trust bundle, database and peers; each check runs
    on its own and reports ok or FAIL with its reason; exit 1 when any fails."""
    checks = doctor_checks(resolve_home(home), peers=not no_peers, passphrase_file=passphrase_file)
    failed = [c for c in checks if not c["ok"]]
    if as_json:
        print_json({"ok": not failed, "checks": checks})
    else:
        table = Table(title="credex doctor")
        for column in ("check", "result", "detail"):
            table.add_column(column)
        for c in checks:
            mark = "[green]ok[/]" if c["ok"] else "[bold red]FAIL[/]"
            table.add_row(escape(c["check"]), mark, escape(c["detail"]))
        console.print(table)
    if failed:
        raise typer.Exit(int(ExitCode.FAILURE))
