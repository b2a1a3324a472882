"""`credex log verify|search|report|export|checkpoint`: the security officer's tools.

- `verify` recomputes every leaf, the chain, the tree, every signed checkpoint and witness
  cosignature; it names the first bad entry and exits 3 on any tampering.
- `search` finds entries by subject, requester, kind or time. A typed identifier is normalised
  and blinded with this node's key to match `subject_index`; it is never stored, printed or
  logged. The search itself is logged first as an `admin_read` entry (without the identifier):
  when the log cannot be written, nothing is read.
- `report` is the risk review (volume spikes, off-hours use, denied ratios, queries without
  grants) plus every fork alarm.
- `export` writes evidence as JSON Lines (index, leaf, entry, inclusion proof to the latest
  checkpoint); the export is logged, and a fresh checkpoint is signed so every line has a proof.
- `checkpoint` prints the latest signed note (signing one when entries are newer).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from node.cli import app
from node.cli.common import (
    SUBJECT_HELP,
    HomeOption,
    JsonOption,
    check_officer,
    console,
    print_json,
    refuse_existing_output,
    resolve_home,
    subject_value,
    write_export,
)
from node.errors import ExitCode, InputError, NotFound, StaleBundle, TamperDetected

if TYPE_CHECKING:
    import keys
    from node.accesslog import LogEntry
    from node.runtime import NodeRuntime

log_app = typer.Typer(
    help="Verify, search, review and export the access log.", no_args_is_help=True
)
app.add_typer(log_app, name="log")

_CHINA = dt.timezone(dt.timedelta(hours=8))
OfficerOption = Annotated[
    str, typer.Option("--officer", help="Your staff id (recorded in the log).")
]


def witness_verifiers(runtime: NodeRuntime) -> keys.NoteVerifiers:
    """Signed-note keys of the roster's platform nodes (the witnesses), if a bundle is there:
    each one's current key and every previous key the roster lists for it, whatever its
    accepted_until (a cosignature made before the platform rotated its key stays valid), but
    no revoked key (node/trust.py)."""
    import keys
    from node.trust import historic_signing_keys

    try:
        bundle = runtime.bundle()
    except (StaleBundle, keys.BundleError):
        return {}
    return {
        e.node_id: historic_signing_keys(bundle, e.node_id)
        for e in bundle.roster
        if "platform" in e.roles
    }


def admin_entry(runtime: NodeRuntime, kind: str, officer: str, reason: str) -> LogEntry:
    """The access-log entry of an officer's own read or export (`kind`), logged before it runs;
    InputError when `officer` is not a staff id."""
    from node.accesslog import LogEntry, utc_iso

    return LogEntry(
        time=utc_iso(runtime.clock()),
        kind=kind,
        requester=runtime.node_id,
        officer=check_officer(officer),
        purpose="log_review",
        legal_basis="security officer review of the access log",
        decision="allow",
        reason=reason,
        request_id=secrets.token_hex(16),
    )


def _parse_time(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} {text!r}: use an ISO date or time, e.g. 2026-11-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_CHINA)  # officers type China time
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise InputError(f"{option} {text!r}: out of the range of dates a log can hold") from None


def _read_anchor(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"--anchor {path}: cannot read the signed note ({error})") from None


@log_app.command("verify")
def verify_command(
    *,
    anchor: Annotated[
        list[Path] | None,
        typer.Option(
            "--anchor",
            help="A checkpoint of this log kept elsewhere (`credex log witnessed NODE` on the "
            "platform): the log must still hold it. Repeatable.",
        ),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify the whole log; exit 3 naming the first bad entry when it was tampered with."""
    from node.accesslog import verify_log
    from node.runtime import open_runtime

    anchors = [_read_anchor(path) for path in anchor or []]
    runtime = open_runtime(resolve_home(home))
    try:
        report = verify_log(
            runtime.log.backend,
            runtime.log_verifiers(),
            origin=runtime.config.log.origin,
            log_name=runtime.node_id,
            witness_verifiers=witness_verifiers(runtime),
            anchors=anchors,
        )
    finally:
        runtime.close()
    doc = {
        "ok": report.ok,
        "size": report.size,
        "root": base64.b64encode(report.root).decode(),
        "checkpoints_checked": report.checkpoints_checked,
        "witnesses_checked": report.witnesses_checked,
        "anchors_checked": len(anchors),
        "signed_size": report.signed_size,
        "first_bad_index": report.first_bad_index,
        "problems": [
            {"code": p.code, "index": p.index, "index_end": p.index_end, "message": p.message}
            for p in report.problems
        ],
    }
    if as_json:
        print_json(doc)
        if not report.ok:
            raise typer.Exit(int(ExitCode.VERIFICATION))
        return
    if report.ok:
        console.print(
            f"access log OK: {report.size} entries, {report.checkpoints_checked} checkpoint(s), "
            f"{report.witnesses_checked} witness cosignature(s), {len(anchors)} anchor(s)",
            highlight=False,
        )
        if report.size > report.signed_size:
            console.print(
                f"{report.size - report.signed_size} entries after the newest signed checkpoint "
                f"(size {report.signed_size}); only a signed checkpoint, best one the platform "
                "witnessed (--anchor), shows that nothing was cut off the end",
                highlight=False,
            )
        elif not anchors:
            # Someone who can write the database can cut the log at a checkpoint and delete
            # the newer checkpoints and cosignatures: locally nothing is left to disagree.
            console.print(
                "no --anchor given: a cut at a checkpoint together with the newer checkpoints "
                "is not excluded; check against the platform's witnessed checkpoint "
                "(`credex log witnessed NODE` there, then --anchor FILE)",
                highlight=False,
            )
        return
    for problem in report.problems:
        if problem.index is None:
            where = "log"
        elif problem.index_end is not None:
            where = f"entries {problem.index}..{problem.index_end - 1}"
        else:
            where = f"entry {problem.index}"
        console.print(
            f"[red]{escape(problem.code)}[/] ({where}): {escape(problem.message)}",
            highlight=False,
        )
    report.raise_for_problems()


def _entry_row(index: int, e: LogEntry) -> tuple[str, ...]:
    # Escaped: officer ids, purposes and items come from peers' requests, and must not be
    # read as rich markup on the officer's terminal.
    cells = (
        str(index),
        e.time[:19],
        e.kind,
        e.requester,
        e.officer,
        e.purpose,
        e.decision,
        e.reason,
        ",".join(e.items_asked),
        str(e.result_count),
        e.subject_masked or "",
    )
    return tuple(escape(cell) for cell in cells)


def _normalised(subject: str, kind: str | None, today: dt.date) -> str:
    """The canonical identifier to blind: by `kind` when given, else as an ID number if it is
    a valid one, else as a credit code (both blind to the same token for the same text)."""
    import catalog
    from node.query import normalise_subject

    if kind is not None:
        return normalise_subject(subject, kind, today=today)
    try:
        return normalise_subject(subject, "natural_person", today=today)
    except catalog.InvalidIdentifier as as_person:
        try:
            return normalise_subject(subject, "organisation", today=today)
        except catalog.InvalidIdentifier as as_code:
            raise InputError(
                f"--subject: neither a valid ID number ({as_person}) nor a valid unified "
                f"social credit code ({as_code})"
            ) from None


@log_app.command("search")
def search_command(
    *,
    subject: Annotated[str | None, typer.Option("--subject", help=SUBJECT_HELP)] = None,
    subject_kind: Annotated[
        str | None,
        typer.Option(
            "--subject-kind",
            help="natural_person | organisation | ... (default: told by the identifier's shape)",
        ),
    ] = None,
    requester: Annotated[str | None, typer.Option("--requester", help="Node id.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="From (ISO, China time).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before (ISO, China time).")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="query, export, alarm ...")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    officer: OfficerOption = "officer",
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Who looked at this subject (or what this requester did), when and why."""
    from node.accesslog import search
    from node.runtime import open_runtime

    subject = None if subject is None else subject_value(subject)
    if subject is None and requester is None and since is None and until is None and kind is None:
        raise InputError("log search: give --subject, --requester, --kind, --since or --until")
    runtime = open_runtime(resolve_home(home))
    try:
        token = None
        if subject is not None:
            today = runtime.clock().astimezone(_CHINA).date()
            token = runtime.blind.token(_normalised(subject, subject_kind, today))
        start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
        # The search is an access too: logged (without the identifier) before anything is read.
        runtime.log.append_sync(admin_entry(runtime, "admin_read", officer, "log_search"))
        found = search(
            runtime.log.backend,
            subject_index=token,
            requester=requester,
            since=start,
            until=end,
            kind=kind,
            limit=limit,
        )
    finally:
        runtime.close()
    if as_json:
        print_json([{"index": i, **e.to_dict()} for i, e in found])
        return
    table = Table(title=f"{len(found)} access-log entr{'y' if len(found) == 1 else 'ies'}")
    columns = ("#", "time (UTC)", "kind", "requester", "officer", "purpose", "decision",
               "reason", "items", "n", "subject")  # fmt: skip
    for column in columns:
        table.add_column(column)
    for index, entry in found:
        table.add_row(*_entry_row(index, entry))
    console.print(table)


@log_app.command("report")
def report_command(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Review window.")] = 1,
    officer: OfficerOption = "officer",
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Risk review of the last --days: spikes, off-hours use, denials, queries about natural
    persons without grants (judged with this node's catalogue), and fork alarms raised by the
    witness. The review is itself logged (admin_read) first."""
    from node.accesslog import risk_report, search
    from node.lifecycle import china_day
    from node.lifecycle_ops import overdue_summary
    from node.runtime import open_runtime

    runtime = open_runtime(resolve_home(home))
    try:
        runtime.log.append_sync(admin_entry(runtime, "admin_read", officer, "log_report"))
        now = runtime.clock()
        report = risk_report(
            runtime.log.backend,
            now,
            window=dt.timedelta(days=days),
            grants=runtime.grants.active(now),
            catalogue=runtime.catalogue,
        )
        alarms = search(runtime.log.backend, kind="alarm")
        overdue = overdue_summary(runtime.store, china_day(now))
    finally:
        runtime.close()
    doc: dict[str, Any] = {
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "requesters": [
            {
                "requester": s.requester,
                "accesses": s.window_count,
                "baseline_daily": round(s.baseline_daily, 2),
                "off_hours": s.off_hours,
                "denied": s.denied,
                "without_grant": s.without_grant,
            }
            for s in report.requesters
        ],
        "findings": [
            {"code": f.code, "subject": f.subject, "value": f.value, "message": f.message}
            for f in report.findings
        ],
        "alarms": [
            {"index": i, "time": e.time, "log": e.requester, "reason": e.reason} for i, e in alarms
        ],
        "overdue_lifecycle": overdue,
    }
    if as_json:
        print_json(doc)
        return
    table = Table(title=f"accesses {doc['since'][:16]} .. {doc['until'][:16]} (UTC)")
    for column in ("requester", "accesses", "usual/day", "off hours", "denied", "no grant"):
        table.add_column(column)
    for r in doc["requesters"]:
        table.add_row(
            escape(r["requester"]), str(r["accesses"]), f"{r['baseline_daily']:.1f}",
            str(r["off_hours"]), str(r["denied"]), str(r["without_grant"]),
        )  # fmt: skip
    console.print(table)
    findings = Table(title=f"{len(report.findings)} finding(s)")
    for column in ("signal", "who", "value", "why"):
        findings.add_column(column)
    for f in report.findings:
        findings.add_row(escape(f.code), escape(f.subject), f"{f.value:g}", escape(f.message))
    console.print(findings)
    for a in doc["alarms"]:
        console.print(
            f"[bold red]ALARM[/] entry {a['index']} at {escape(a['time'])}: "
            f"{escape(a['reason'])} (log of {escape(a['log'])})",
            highlight=False,
        )
    for t in overdue:
        console.print(
            f"[bold yellow]OVERDUE[/] {escape(t['kind'])} review of record "
            f"{escape(t['record_key'][:12])}... was due {escape(str(t['due_on']))}",
            highlight=False,
        )


@log_app.command("export")
def export_command(
    *,
    fmt: Annotated[str, typer.Option("--format", help="Only jsonl.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", help="File (default stdout).")] = None,
    start: Annotated[int, typer.Option("--start", min=0)] = 0,
    end: Annotated[int | None, typer.Option("--end", min=0)] = None,
    officer: OfficerOption = "officer",
    home: HomeOption = None,
) -> None:
    """Export entries with inclusion proofs to a freshly signed checkpoint (JSON Lines)."""
    from node.runtime import open_runtime

    if fmt != "jsonl":
        raise InputError(f"--format {fmt!r}: only 'jsonl' is supported")
    refuse_existing_output(output)  # before the export is logged: nothing logged for nothing
    from node.accesslog import export_lines

    runtime = open_runtime(resolve_home(home))
    try:
        runtime.log.append_sync(admin_entry(runtime, "export", officer, "log_export"))
        runtime.log.checkpoint()
        # Up to that checkpoint only: entries a serving node appends meanwhile would carry no
        # proof, and every line of an export is evidence on its own.
        latest = runtime.log.backend.latest_checkpoint()
        signed = latest[0] if latest is not None else 0
        lines = export_lines(
            runtime.log.backend, start=start, end=signed if end is None else min(end, signed)
        )
        count = write_export(output, (line + "\n" for line in lines))
        if output is not None:
            console.print(
                f"exported {count} entries with proofs: {output}", markup=False, highlight=False
            )
    finally:
        runtime.close()


@log_app.command("verify-export")
def verify_export_command(
    file: Annotated[Path, typer.Argument(help="A file written by `credex log export`.")],
    *,
    node: Annotated[
        str | None,
        typer.Option("--node", help="Whose log it is (a roster node id; default: this node)."),
    ] = None,
    allow_unproven: Annotated[
        bool,
        typer.Option(
            "--allow-unproven",
            help="Accept lines newer than the export's checkpoint (they carry no proof).",
        ),
    ] = False,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="Accept an export of a range (`log export --start/--end`), not the whole log "
            "up to its checkpoint.",
        ),
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every line of an export on its own: the signed checkpoint and the inclusion proof
    of the leaf, and that the indexes run without a gap or a repeat; exit 3 naming the first
    line that does not verify. `credex log export` signs a checkpoint first, so a line without
    a proof is refused unless --allow-unproven. Unless --partial, the lines must be every entry
    of the log up to the checkpoint they prove against: entry 0 to its size - 1, so that lines
    cut from the start or the end are found too."""
    import keys
    from node.accesslog import verify_export_record
    from node.runtime import open_runtime
    from node.trust import historic_signing_keys

    runtime = open_runtime(resolve_home(home))
    try:
        log_name = node or runtime.node_id
        if log_name == runtime.node_id:
            verifiers, origin = runtime.log_verifiers(), runtime.config.log.origin
        else:
            bundle = runtime.bundle()
            if bundle.member(log_name) is None:
                raise InputError(f"--node {log_name}: not in the roster of the trust bundle")
            # current and retired keys: checkpoints signed before a rotation still verify
            verifiers, origin = {log_name: historic_signing_keys(bundle, log_name)}, None
    finally:
        runtime.close()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{file}: cannot read the export ({error})") from None
    checked = unproven = signed_size = 0
    last_proven = -1
    indexes: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise InputError(f"{file}, line {number}: not a JSON document") from None
        if not isinstance(record, dict) or not isinstance(record.get("index"), int):
            raise InputError(f"{file}, line {number}: not an exported log entry")
        index = record["index"]
        if indexes and index != indexes[-1] + 1:
            what = "repeats an entry" if index <= indexes[-1] else "skips entries"
            raise TamperDetected(
                f"{file}, line {number}: entry {index} after entry {indexes[-1]}: the export {what}"
            )
        indexes.append(index)
        if record.get("proof") is None:
            if not allow_unproven:
                raise TamperDetected(
                    f"{file}, line {number} (entry {index}): carries no inclusion proof; "
                    "`credex log export` proves every line it writes (--allow-unproven to "
                    "accept lines newer than the checkpoint)"
                )
            unproven += 1
            continue
        try:
            verify_export_record(record, verifiers, log_name=log_name, origin=origin)
            signed_size = max(signed_size, keys.read_checkpoint(record["checkpoint"]).size)
        except InputError as error:
            raise InputError(f"{file}, line {number}: {error}") from None
        except keys.KeysError as error:
            raise TamperDetected(
                f"{file}, line {number} (entry {index}): does not verify: {error}"
            ) from None
        checked += 1
        last_proven = index
    span = f"{indexes[0]}..{indexes[-1]}" if indexes else "none"
    complete = bool(indexes) and indexes[0] == 0 and last_proven == signed_size - 1
    if not complete and not partial:
        held = f"entries {span}" if checked else "no entry with a proof"
        raise TamperDetected(
            f"{file}: holds {held}, but the log's signed checkpoint has {signed_size} "
            f"entries (0..{signed_size - 1}): entries were cut from the export (--partial "
            "accepts an export of a range)"
            if signed_size
            else f"{file}: holds no entry with a proof; `credex log export` proves every line "
            "(--partial to accept it anyway)"
        )
    if as_json:
        print_json(
            {
                "file": str(file),
                "log": log_name,
                "entries": span,
                "verified": checked,
                "unproven": unproven,
                "checkpoint_size": signed_size,
                "complete": complete,
            }
        )
        return
    console.print(
        f"entries {span}: {checked} line(s) verify against the signed checkpoint of {log_name} "
        f"(size {signed_size}{'' if complete else '; a partial export'})"
        + (f"; {unproven} newer than it carry no proof" if unproven else ""),
        highlight=False,
        markup=False,
    )


@log_app.command("witnessed")
def witnessed_command(
    node: Annotated[str, typer.Argument(help="The department whose log to show.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """On the platform: the latest checkpoint of NODE's log this witness cosigned, as a signed
    note to hand to NODE's officer (`credex log verify --anchor FILE`)."""
    import keys
    from node.runtime import open_runtime
    from node.witness import WitnessState, cosign_once

    runtime = open_runtime(resolve_home(home))
    try:
        state = WitnessState.load(runtime.config.data_dir)
        witnessed = state.latest.get(node)
        if witnessed is None:
            raise NotFound(f"this node has not witnessed a checkpoint of {node}'s log")
        # The state keeps the note as the log showed it; the cosignature this witness gave
        # it is made again (Ed25519 is deterministic: the same line the log received), or,
        # when the log showed it cosigned already, checked.
        note = cosign_once(witnessed, name=runtime.node_id, signer=runtime.node_keys.signing)
        own_key = {runtime.node_id: runtime.node_keys.signing.public_key}
    finally:
        runtime.close()
    if as_json:
        # the body as the signed-note code reads it, through our own cosignature
        cp = keys.parse_checkpoint(keys.verify_note(note, verifiers=own_key)[0])
        print_json({"log": node, "origin": cp.origin, "size": cp.size, "note": note})
        return
    sys.stdout.write(note)
    sys.stdout.flush()


@log_app.command("alarms")
def alarms_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """On the platform: every fork the witness recorded (data/witness-alarms.jsonl), each
    checked again from its evidence alone: both notes signed by the log (its current or a
    previous roster key) and not both true. Exit 3 when at least one fork is proven."""
    from node.runtime import open_runtime
    from node.witness import ALARMS_FILE

    runtime = open_runtime(resolve_home(home))
    try:
        path = runtime.config.data_dir / ALARMS_FILE
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        bundle = runtime.bundle()
        rows = [_checked_alarm(bundle, n, line) for n, line in enumerate(lines, 1) if line]
    finally:
        runtime.close()
    proven = sum(1 for r in rows if r["proven"])
    if as_json:
        print_json({"alarms": rows, "proven": proven})
    elif not rows:
        console.print("no fork alarms")
    else:
        table = Table(title=f"{len(rows)} fork alarm(s), {proven} proven by their evidence")
        for column in ("line", "time", "log", "sizes", "evidence"):
            table.add_column(column)
        for r in rows:
            verdict = ("[bold red]fork: " if r["proven"] else "[yellow]not proven: ") + escape(
                r["finding"]
            )
            table.add_row(
                str(r["line"]), escape(r["time"]), escape(r["log"]), escape(r["sizes"]), verdict
            )
        console.print(table)
    if proven:
        raise typer.Exit(int(ExitCode.VERIFICATION))


def _checked_alarm(bundle: keys.TrustBundle, line_no: int, line: str) -> dict[str, Any]:
    """One alarms-file line and what checking its evidence again found."""
    import keys
    from node.trust import historic_signing_keys
    from node.witness import check_alarm

    row: dict[str, Any] = {"line": line_no, "time": "", "log": "", "sizes": "", "proven": False}
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("not an object")
        row["time"], row["log"] = str(record.get("time", "")), str(record.get("log", ""))
        sizes = [keys.read_checkpoint(str(record[k])).size for k in ("witnessed", "shown")]
        row["sizes"] = f"{sizes[0]} -> {sizes[1]}"
        row["finding"] = check_alarm(record, log_keys=historic_signing_keys(bundle, row["log"]))
        row["proven"] = True
    except keys.VerificationError:
        row["finding"] = "a note is not signed by the log's roster keys"
    except InputError as error:
        row["finding"] = str(error)
    except (ValueError, KeyError, TypeError, keys.KeysError) as error:
        row["finding"] = f"unreadable evidence ({type(error).__name__})"
    return row


def _cosigned_by(runtime: NodeRuntime, cp: keys.Checkpoint) -> list[str]:
    """The witnesses whose stored cosignature of exactly `cp` verifies with any of their keys
    (current or previous: `witness_verifiers`), sorted: a witness row is only a claim, which
    anyone with the database can write."""
    import keys
    from node.accesslog import verify_cosignature

    log_keys, witness_keys = runtime.log_verifiers(), witness_verifiers(runtime)
    names: set[str] = set()
    for size, name, note in runtime.log.backend.witnesses():
        if size != cp.size:
            continue
        try:
            cosigned = verify_cosignature(
                note, log_keys, witness_keys, witness=name, log_name=runtime.node_id
            )
        except keys.KeysError:
            continue  # `credex log verify` reports it
        if cosigned == cp:
            names.add(name)
    return sorted(names)


@log_app.command("checkpoint")
def checkpoint_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Print the latest signed checkpoint (C2SP signed note) of this node's log."""
    import keys
    from node.runtime import open_runtime

    runtime = open_runtime(resolve_home(home))
    try:
        backend = runtime.log.backend
        latest = backend.latest_checkpoint()
        if latest is None or latest[0] < backend.size():
            note = runtime.log.checkpoint()
        else:
            note = latest[1]
        cp = keys.verify_checkpoint(
            note, verifiers=runtime.log_verifiers(), log_name=runtime.node_id
        )
        witnesses = _cosigned_by(runtime, cp)
    finally:
        runtime.close()
    if as_json:
        print_json(
            {
                "origin": cp.origin,
                "size": cp.size,
                "root": base64.b64encode(cp.root).decode(),
                "note": note,
                "witnessed_by": witnesses,
            }
        )
        return
    sys.stdout.write(note)
    sys.stdout.flush()
