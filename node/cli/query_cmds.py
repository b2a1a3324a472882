"""`credex query` (ask a peer) and `credex grant issue|register|revoke|register-revocation|list`.

A query prints only what the peer released and this node verified; a denial prints the peer's
reason code and exits 1; an answer that fails verification exits 3. Identifiers typed here are
normalised, sealed to the peer and never printed: grants store only their digest, and every
message shows the masked form at most.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    err_console,
    print_json,
    refuse_existing_output,
    resolve_home,
    subject_value,
)
from node.durable import publish_new_file
from node.errors import InputError

if TYPE_CHECKING:
    from node.grants import GrantState
    from node.runtime import NodeRuntime

grant_app = typer.Typer(help="Subject authorisations (grants).", no_args_is_help=True)
app.add_typer(grant_app, name="grant")

SubjectOption = Annotated[str, typer.Option("--subject", help=f"The subject's {SUBJECT_HELP}.")]
KindOption = Annotated[
    str,
    typer.Option("--subject-kind", help="natural_person | organisation | individual_business."),
]


def _items(text: str) -> tuple[str, ...]:
    items = tuple(sorted({i.strip() for i in text.split(",") if i.strip()}))
    if not items:
        raise InputError("--items: name at least one catalogue item, comma separated")
    return items


def _fields(text: str | None) -> tuple[str, ...]:
    """The --fields list ("item.field", comma separated), checked before anything is sent."""
    from node.query import requested_fields

    if text is None:
        return ()
    names = tuple(sorted({n.strip() for n in text.split(",") if n.strip()}))
    requested_fields(names)  # refuses a name that is not ITEM.FIELD
    return names


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read the {what} ({error.strerror})") from None


def _write_new(target: Path, raw: bytes, what: str) -> None:
    """Write `raw` to the new file `target` (0600), whole or not at all; InputError naming the
    file when it exists: a grant or revocation never replaces a file (the consent form given
    as --evidence, an earlier grant written under the same name)."""
    try:
        publish_new_file(target, [raw])
    except FileExistsError:
        raise InputError(f"--output {target}: the file exists; choose a new name") from None
    except OSError as error:
        raise InputError(f"{target}: cannot write the {what} ({error.strerror})") from None


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8))).date()


@app.command("query")
def query_command(
    peer: Annotated[str, typer.Argument(help="Node id of the department to ask.")],
    *,
    subject: SubjectOption,
    subject_kind: KindOption,
    items: Annotated[str, typer.Option("--items", help="Item ids, comma separated.")],
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose code (Shandong Art. 22).")],
    legal_basis: Annotated[
        str, typer.Option("--legal-basis", help="The law or decision the query rests on.")
    ],
    grant: Annotated[
        str | None,
        typer.Option("--grant", help="A grant id registered at the peer, or a signed grant file."),
    ] = None,
    officer: Annotated[
        str, typer.Option("--officer", help="Your staff id (logged by the peer).")
    ] = "officer",
    fields: Annotated[
        str | None,
        typer.Option(
            "--fields",
            help="Ask only for these fields, ITEM.FIELD comma separated (minimisation).",
        ),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask a peer for a subject's records; prints the verified, minimised answer."""
    from node.query import QueryAsk, released_table, send_query
    from node.runtime import open_runtime

    grant_id: str | None = None
    grant_raw: bytes | None = None
    if grant is not None:
        path = Path(grant)
        if path.is_file():
            grant_raw = _read(path, "grant file")
        else:
            grant_id = grant
    ask = QueryAsk(
        peer=peer,
        subject=subject_value(subject),
        subject_kind=subject_kind,
        items=_items(items),
        purpose=purpose,
        legal_basis=legal_basis,
        officer=check_officer(officer),
        grant_id=grant_id,
        grant=grant_raw,
        fields=_fields(fields),
    )
    runtime = open_runtime(resolve_home(home))
    try:
        result = asyncio.run(send_query(runtime, ask))
    finally:
        runtime.close()
    if as_json:
        print_json(
            {
                "peer": result.peer,
                "request_id": result.request_id,
                "reason": result.reason,
                "log_index": result.log_index,
                "released_fields": list(result.released_fields),
                "records": [
                    {
                        "item": r.item_id,
                        "record_key": r.record_key,
                        "version": r.version,
                        "producer": r.producer,
                        "fields": dict(r.fields),
                        "objection": r.objection,
                        "verified": True,
                    }
                    for r in result.records
                ],
            }
        )
        return
    table = Table(
        title=f"{escape(peer)}: {len(result.records)} verified record(s) ({escape(result.reason)})"
    )
    for column in ("item", "record", "fields"):
        table.add_column(column)
    for row in released_table(result):
        # Values and "[objection pending]" are text, not markup.
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    console.print(
        f"logged by {escape(peer)} as entry {result.log_index} (request {result.request_id})"
    )


# --- grants -----------------------------------------------------------------------------------


def _platform(runtime: NodeRuntime) -> None:
    if runtime.config.node.role != "platform":
        raise InputError("only the platform node issues and revokes grants (role = platform)")


def _state_doc(state: GrantState) -> dict[str, object]:
    g = state.grant
    return {
        "grant_id": g.grant_id,
        "issuer": g.issuer,
        "grantee": g.grantee,
        "purpose": g.purpose,
        "items": sorted(g.items),
        "valid_from": g.valid_from.isoformat(),
        "valid_until": g.valid_until.isoformat(),
        "use_limit": g.use_limit,
        "uses": state.uses,
        "revoked_at": state.revoked_at.isoformat() if state.revoked_at else None,
        "revoked_reason": state.revoked_reason,
    }


@grant_app.command("issue")
def grant_issue_command(
    *,
    subject: SubjectOption,
    subject_kind: KindOption = "natural_person",
    grantee: Annotated[str, typer.Option("--grantee", help="Node id allowed to query.")],
    purpose: Annotated[str, typer.Option("--purpose", help="The one purpose consented to.")],
    items: Annotated[str, typer.Option("--items", help="Item ids, comma separated.")],
    evidence: Annotated[
        Path, typer.Option("--evidence", help="The signed consent form (its SHA-256 is kept).")
    ],
    valid_days: Annotated[int, typer.Option("--valid-days", min=1, max=3660)] = 90,
    use_limit: Annotated[int, typer.Option("--use-limit", min=1, max=1_000_000)] = 1,
    grant_id: Annotated[str | None, typer.Option("--id", help="Grant id (default random).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Where to write it.")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a subject's authorisation (platform only) and write the grant file."""
    import catalog
    from node.grants import Grant, issue_grant, subject_digest
    from node.policy import grant_items_without_agreement, grant_scope_problems
    from node.query import normalise_subject
    from node.runtime import open_runtime

    refuse_existing_output(output)
    runtime = open_runtime(resolve_home(home))
    try:
        _platform(runtime)
        now = runtime.clock()
        normalised = normalise_subject(subject_value(subject), subject_kind, today=_today())
        grant = Grant(
            grant_id=grant_id or f"g-{secrets.token_hex(8)}",
            issuer=runtime.node_id,
            subject_digest=subject_digest(normalised),
            grantee=grantee,
            purpose=purpose,
            items=frozenset(_items(items)),
            valid_from=now,
            valid_until=now + dt.timedelta(days=valid_days),
            use_limit=use_limit,
            evidence_sha256=hashlib.sha256(_read(evidence, "evidence file")).hexdigest(),
            issued_at=now,
        )
        bundle = runtime.bundle()
        problems = grant_scope_problems(
            grant,
            subject_kind=subject_kind,
            items=runtime.catalogue.items,
            members=(m.node_id for m in bundle.roster),
        )
        if problems:
            raise InputError(
                "grant issue: not signed, no query could use this grant:"
                + "".join(f"\n  - {problem}" for problem in problems)
            )
        unagreed = grant_items_without_agreement(grant, runtime.catalogue.items, bundle.agreements)
        raw = issue_grant(grant, runtime.node_keys.signing)
        target = output or Path(f"grant-{grant.grant_id}.json")
        _write_new(target, raw, "grant")
    finally:
        runtime.close()
    # Signed all the same: the platform may be about to publish the agreement in a new bundle.
    warnings = (
        [
            f"no query agreement in trust bundle v{bundle.version} lets {grantee} ask for "
            f"{', '.join(unagreed)} for {purpose}: the grant cannot be used for "
            f"{'them' if len(unagreed) > 1 else 'it'} until a bundle adds one"
        ]
        if unagreed
        else []
    )
    info = {
        "grant_id": grant.grant_id,
        "subject": catalog.mask_identifier(normalised),
        "grantee": grantee,
        "output": str(target),
        "warnings": warnings,
    }
    for warning in warnings:
        err_console.print(f"warning: {escape(warning)}")
    if as_json:
        print_json(info)
        return
    console.print(
        f"grant {grant.grant_id} for {info['subject']} to {escape(grantee)} ({escape(purpose)}, "
        f"{use_limit} use(s), {valid_days} days): {escape(str(target))}"
    )


@grant_app.command("register")
def grant_register_command(
    grant_file: Annotated[Path, typer.Argument(help="A signed grant from the platform.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a signed grant against the trust bundle and register it at this node."""
    from node.grants import verify_grant
    from node.runtime import open_runtime

    raw = _read(grant_file, "grant file")
    runtime = open_runtime(resolve_home(home))
    try:
        grant = verify_grant(raw, bundle=runtime.bundle(), now=runtime.clock())
        state = runtime.grants.register(grant, raw)
    finally:
        runtime.close()
    if as_json:
        print_json(_state_doc(state))
        return
    console.print(f"registered grant {grant.grant_id} ({state.uses}/{grant.use_limit} uses)")


@grant_app.command("revoke")
def grant_revoke_command(
    grant_id: Annotated[str, typer.Argument(help="The grant to revoke.")],
    reason: Annotated[
        str, typer.Option("--reason", help="snake_case reason code.")
    ] = "subject_withdrew_consent",
    output: Annotated[Path | None, typer.Option("--output", help="Where to write it.")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a revocation of a grant (platform only); departments register it, or the next
    trust bundle lists the grant in revoked_grants."""
    from node.grants import GrantRevocation, sign_revocation
    from node.runtime import open_runtime

    refuse_existing_output(output)
    runtime = open_runtime(resolve_home(home))
    try:
        _platform(runtime)
        revocation = GrantRevocation(
            grant_id=grant_id, issuer=runtime.node_id, revoked_at=runtime.clock(), reason=reason
        )
        raw = sign_revocation(revocation, runtime.node_keys.signing)
        target = output or Path(f"revocation-{grant_id}.json")
        _write_new(target, raw, "revocation")
    finally:
        runtime.close()
    if as_json:
        print_json({"grant_id": grant_id, "reason": reason, "output": str(target)})
        return
    console.print(f"revocation of {escape(grant_id)} ({escape(reason)}): {escape(str(target))}")


@grant_app.command("register-revocation")
def grant_register_revocation_command(
    revocation_file: Annotated[Path, typer.Argument(help="A signed revocation.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a signed revocation and record it; a grant not registered here yet is recorded
    as revoked too, so it starts revoked if it is ever presented."""
    from node.grants import verify_revocation
    from node.runtime import open_runtime

    raw = _read(revocation_file, "revocation file")
    runtime = open_runtime(resolve_home(home))
    try:
        revocation = verify_revocation(raw, bundle=runtime.bundle(), now=runtime.clock())
        state = runtime.grants.revoke(
            revocation.grant_id, revocation.revoked_at, revocation.reason, raw=raw
        )
    finally:
        runtime.close()
    if as_json:
        if state is None:
            print_json(
                {
                    "grant_id": revocation.grant_id,
                    "registered": False,
                    "revoked_at": revocation.revoked_at.isoformat(),
                    "revoked_reason": revocation.reason,
                }
            )
        else:
            print_json({**_state_doc(state), "registered": True})
        return
    if state is None:
        console.print(
            f"grant {revocation.grant_id} revoked ({revocation.reason}); not registered here "
            "yet, it will start revoked"
        )
        return
    console.print(f"grant {revocation.grant_id} revoked ({revocation.reason})")


@grant_app.command("list")
def grant_list_command(
    subject: Annotated[
        str | None, typer.Option("--subject", help=f"List this subject's grants ({SUBJECT_HELP}).")
    ] = None,
    subject_kind: KindOption = "natural_person",
    grant_id: Annotated[str | None, typer.Option("--id", help="Show one grant.")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the grants registered here with uses left: every active one, a subject's, or one
    by id."""
    from node.grants import subject_digest
    from node.query import normalise_subject
    from node.runtime import open_runtime

    if subject is not None and grant_id is not None:
        raise InputError("grant list: give at most one of --subject or --id")
    runtime = open_runtime(resolve_home(home))
    try:
        if subject is None and grant_id is None:
            states = runtime.grants.active(runtime.clock())
        elif subject is not None:
            normalised = normalise_subject(subject_value(subject), subject_kind, today=_today())
            states = runtime.grants.for_subject(subject_digest(normalised))
        else:
            assert grant_id is not None
            one = runtime.grants.get(grant_id)
            states = [one] if one is not None else []
    finally:
        runtime.close()
    docs = [_state_doc(s) for s in states]
    if as_json:
        print_json(docs)
        return
    table = Table(title=f"{len(docs)} grant(s)")
    for column in ("grant", "grantee", "purpose", "items", "uses", "valid until", "revoked"):
        table.add_column(column)
    for d in docs:
        table.add_row(
            str(d["grant_id"]),
            str(d["grantee"]),
            str(d["purpose"]),
            ",".join(d["items"]),  # type: ignore[arg-type]
            f"{d['uses']}/{d['use_limit']}",
            str(d["valid_until"]),
            str(d["revoked_reason"] or ""),
        )
    console.print(table)
