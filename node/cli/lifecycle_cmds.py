"""`credex lifecycle object|resolve|correct|revoke|repair|push|status|scan`.

The clerk's side of a record's life after ingest (docs/lifecycle.md): objections and their
review clock, corrections (a new signed version), withdrawal when the underlying decision is
revoked, credit repair with its admissibility check and propagation report, joint-punishment
pushes, and the scan that expires and purges records. Output never shows personal data: record
keys, versions, states and dates only.

`repair` and `revoke` commit the withdrawal and send nothing themselves: the serving node
sends the joint-punishment withdraw notices within `[lifecycle] withdrawal_push_interval_s`
(one sender that owns retries, and a clerk's command never hangs on a receiver that is down);
`push` on a withdrawn or expired entry sends them at once, e.g. while the node is not serving.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from node.cli import app
from node.cli.common import HomeOption, JsonOption, console, print_json, resolve_home
from node.errors import ExitCode, InputError

if TYPE_CHECKING:
    from node import lifecycle_ops as ops
    from node.push import PushOutcome
    from node.runtime import NodeRuntime

lifecycle_app = typer.Typer(
    help="Objections, corrections, revocation, credit repair, pushes and expiry.",
    no_args_is_help=True,
)
app.add_typer(lifecycle_app, name="lifecycle")

RecordKey = Annotated[str, typer.Argument(help="The record key (64 hex characters).")]
ReasonOption = Annotated[
    str, typer.Option("--reason", help="Short reason or document number (no personal data).")
]
SetOption = Annotated[
    list[str],
    typer.Option("--set", help="field=value to change (repeatable); empty value clears."),
]


def _runtime(home: Path | None) -> NodeRuntime:
    from node.runtime import open_runtime

    return open_runtime(resolve_home(home))


def _check_key(record_key: str) -> str:
    key = record_key.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise InputError("RECORD_KEY: expected the 64 hex characters of a record key")
    return key


def _show(result: ops.LifecycleResult, as_json: bool) -> None:
    data = result.to_dict()
    if as_json:
        print_json(data)
        return
    console.print(
        f"{result.op}: record {result.record_key[:16]}... v{result.version} -> {result.state}; "
        f"{result.events} feed event(s); task {result.task_id}"
    )
    if result.deadline is not None:
        mark = " (approximate)" if result.deadline.approximate else ""
        console.print(f"due {result.deadline.due_on}{mark}: {escape(result.deadline.rule)}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(str(warning))}")
    if "propagation" in data:
        _propagation_table(data["propagation"])
    waiting = [r["to_node"] for r in data.get("push_receivers", []) if not r["acknowledged"]]
    if waiting:
        # this process sends nothing: the serving node is the one sender (docs/lifecycle.md)
        console.print(
            f"joint punishment: withdraw notice due to {', '.join(waiting)}; the serving node "
            "sends it within \\[lifecycle] withdrawal_push_interval_s "
            f"(now: credex lifecycle push {result.record_key})"
        )


def _propagation_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="withdraw propagation")
    for column in ("subscriber", "event seq", "acknowledged", "acked at", "pending (s)"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["subscriber"],
            str(row["event_seq"]),
            "yes" if row["acknowledged"] else "[red]no[/]",
            # the subscriber's last ack is this event's only once it reached the event
            (row["acked_at"] or "-") if row["acknowledged"] else "-",
            "-" if row["pending_seconds"] is None else str(row["pending_seconds"]),
        )
    console.print(table)


@lifecycle_app.command("object")
def object_command(
    record_key: RecordKey,
    reason: ReasonOption,
    home: HomeOption = None,
    needs_other_unit: Annotated[
        bool,
        typer.Option(
            "--needs-other-unit", help="Another unit must help verify (7 working days, not 3)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """File an objection (异议): flag the record and start the Art. 39 review clock."""
    from node import lifecycle_ops as ops

    runtime = _runtime(home)
    try:
        result = ops.object_record(
            runtime, _check_key(record_key), reason=reason, needs_other_unit=needs_other_unit
        )
    finally:
        runtime.close()
    _show(result, as_json)


@lifecycle_app.command("resolve")
def resolve_command(
    objection_id: Annotated[str, typer.Argument(help="The objection id (obj-...).")],
    outcome: Annotated[str, typer.Option("--outcome", help="confirm (record stands) or correct.")],
    home: HomeOption = None,
    changes: SetOption = [],  # noqa: B006 - typer reads the default, never mutates it
    as_json: JsonOption = False,
) -> None:
    """Resolve an objection: confirm the record (flag cleared) or correct it."""
    from node import lifecycle as rules
    from node import lifecycle_ops as ops

    parsed = rules.parse_assignments(changes) if changes else None
    runtime = _runtime(home)
    try:
        result = ops.resolve_objection(runtime, objection_id, outcome=outcome, changes=parsed)
    finally:
        runtime.close()
    _show(result, as_json)


@lifecycle_app.command("correct")
def correct_command(
    record_key: RecordKey,
    changes: SetOption,
    home: HomeOption = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (document number).")] = "更正",
    as_json: JsonOption = False,
) -> None:
    """Correct a record (更正): a new validated, signed version supersedes the current one."""
    from node import lifecycle as rules
    from node import lifecycle_ops as ops

    parsed = rules.parse_assignments(changes)
    runtime = _runtime(home)
    try:
        result = ops.correct_record(runtime, _check_key(record_key), parsed, reason=reason)
    finally:
        runtime.close()
    _show(result, as_json)


def _parse_day(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option} {value!r}: expected a date YYYY-MM-DD") from None


@lifecycle_app.command("revoke")
def revoke_command(
    record_key: RecordKey,
    reason: ReasonOption,
    home: HomeOption = None,
    known_on: Annotated[
        str | None,
        typer.Option("--known-on", help="Day the revocation became known (default today)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Withdraw a record whose decision was revoked or changed (Art. 40: 3 working days)."""
    from node import lifecycle_ops as ops

    day = _parse_day(known_on, "--known-on")
    runtime = _runtime(home)
    try:
        result = ops.revoke_record(runtime, _check_key(record_key), reason=reason, known_on=day)
    finally:
        runtime.close()
    _show(result, as_json)


@lifecycle_app.command("repair")
def repair_command(
    record_key: RecordKey,
    *,
    home: HomeOption = None,
    obligations_fulfilled: Annotated[
        bool,
        typer.Option("--obligations-fulfilled", help="The obligations are fulfilled (fine paid)."),
    ] = False,
    commitment_file: Annotated[
        Path | None,
        typer.Option("--commitment-file", help="The signed credit commitment (信用承诺书)."),
    ] = None,
    decision_no: Annotated[
        str, typer.Option("--decision-no", help="The repair decision's document number.")
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Credit repair (信用修复): check admissibility, then stop disclosure AND sharing."""
    from node import lifecycle as rules
    from node import lifecycle_ops as ops

    digest: str | None = None
    if commitment_file is not None:
        try:
            data = commitment_file.read_bytes()
        except OSError as error:
            raise InputError(
                f"--commitment-file {commitment_file}: cannot be read ({error.strerror})"
            ) from None
        digest = ops.commitment_digest(data)
    application = rules.RepairApplication(
        obligations_fulfilled=obligations_fulfilled, commitment_sha256=digest
    )
    runtime = _runtime(home)
    try:
        result = ops.repair_record(
            runtime, _check_key(record_key), application, decision_no=decision_no
        )
    finally:
        runtime.close()
    _show(result, as_json)


@lifecycle_app.command("push")
def push_command(
    record_key: RecordKey,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Push a severe-dishonesty list entry to the departments named by "push" agreements; for
    an entry since repaired, revoked or expired, send its withdraw/expire notice now to every
    department it was pushed to (else the serving node does within
    `\\[lifecycle] withdrawal_push_interval_s`, or at its start)."""
    runtime = _runtime(home)
    try:
        outcomes = asyncio.run(_push_or_withdraw(runtime, _check_key(record_key)))
    finally:
        runtime.close()
    rows = [o.to_dict() for o in outcomes]
    if as_json:
        print_json({"record_key": record_key, "pushes": rows})
        return
    if not rows:
        console.print(f"{record_key[:16]}... was pushed to no department: nothing to send")
        return
    table = Table(title=f"pushes of {record_key[:16]}...")
    for column in ("to", "push id", "receipt", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["to_node"],
            row["push_id"],
            "yes" if row["receipt"] else "no",
            escape(row["error"] or ""),
        )
    console.print(table)


async def _push_or_withdraw(runtime: NodeRuntime, record_key: str) -> list[PushOutcome]:
    from node.push import push_record, push_withdrawal

    versions = runtime.store.record_versions(runtime.node_id, record_key)
    if versions and versions[-1].state != "active":
        return await push_withdrawal(runtime, record_key)
    return await push_record(runtime, record_key)


@lifecycle_app.command("status")
def status_command(
    home: HomeOption = None,
    record: Annotated[
        str | None, typer.Option("--record", help="Show one record's history and propagation.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Open and overdue lifecycle tasks; with --record, its propagation report and pushes."""
    from node import lifecycle_ops as ops

    runtime = _runtime(home)
    try:
        data = ops.lifecycle_status(runtime, None if record is None else _check_key(record))
    finally:
        runtime.close()
    if as_json:
        print_json(data)
        return
    table = Table(title=f"open lifecycle tasks ({data['today']})")
    for column in ("task", "kind", "record", "due", "state"):
        table.add_column(column)
    late = set(data["overdue"])
    for task in data["open_tasks"]:
        due = task["due_on"] + (" ~" if task["approximate_due"] else "")
        table.add_row(
            task["task_id"],
            task["kind"],
            task["record_key"][:16] + "...",
            due,
            "[red]OVERDUE[/]" if task["task_id"] in late else "open",
        )
    console.print(table)
    if "record" in data:
        info = data["record"]
        for v in info["versions"]:
            flag = " (objection)" if v["objection"] else ""
            console.print(f"version {v['version']}: {v['state']}{flag}")
        _propagation_table(info["propagation"]["subscribers"])
        for p in info["pushes"]:
            console.print(f"push {p['push_id']} to {p['to_node']}: receipt {p['receipt_at']}")


@lifecycle_app.command("scan")
def scan_command(
    home: HomeOption = None,
    retention_months: Annotated[
        int | None,
        typer.Option(
            "--retention-months",
            min=1,
            help="Months kept encrypted after disclosure ends, for this run only "
            "(default: \\[lifecycle] retention_months of the node's config).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run one lifecycle pass now: expire, cap, purge, close reported revocations.

    The retention is the node's `\\[lifecycle] retention_months` unless `--retention-months`
    overrides it for this run; a purge erases bodies irreversibly, so the CLI never falls back
    to a built-in default that could be shorter than the configured one. A record row that
    fails its integrity tag is left as it is and named; the rest of the pass still runs, and
    the command exits 3.
    """
    from node.scheduler import scan
    from node.telemetry import telemetry_of

    runtime = _runtime(home)
    try:
        keep = (
            runtime.config.lifecycle.retention_months
            if retention_months is None
            else retention_months
        )
        with telemetry_of(runtime.config):  # the scan's stage span goes where [telemetry] says
            report = scan(runtime, retention_months=keep)
    finally:
        runtime.close()
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(
            f"{report.today}: {report.expired} expired, {report.capped} past the 5-year cap, "
            f"{report.purged} purged, {report.revocations_reported} revocation(s) reported, "
            f"{report.overdue} overdue task(s)"
        )
        for row_id in report.tampered:
            console.print(
                f"[bold red]record row {row_id} fails its integrity tag[/]: left as it is; "
                "run `credex store verify` and restore it from a backup",
                highlight=False,
            )
    if report.tampered:
        raise typer.Exit(int(ExitCode.VERIFICATION))
