"""`credex store verify`: check every stored record row against its integrity tag.

Each `records` row carries a keyed tag over its columns (docs/decisions/0018); a row edited
in the database by someone without the node's storage key no longer matches it. The command
names each such row by its row id (never a value of the row) and exits 3, as `credex log
verify` does for the access log. It also reports the adoption marker, which must be
`adopted`: opening the store here adopts an older release's rows first, so `missing` (its row
deleted) or `pending` (reset after an adoption the access log records) is itself tampering.
"""

from __future__ import annotations

from typing import Annotated

import typer

from node.cli import app
from node.cli.common import HomeOption, JsonOption, console, print_json, resolve_home
from node.errors import ExitCode

store_app = typer.Typer(help="Check the node's database.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("verify")
def verify_command(
    *,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Name at most this many bad rows.")
    ] = 1000,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every record row's integrity tag; exit 3 naming the rows edited outside credex."""
    from node.runtime import open_runtime
    from node.store.integrity import check_record_tags

    runtime = open_runtime(resolve_home(home))
    try:
        report = check_record_tags(runtime.store, limit=limit)
    finally:
        runtime.close()
    ok = not report.bad and report.marker == "adopted"
    if as_json:
        print_json(
            {
                "ok": ok,
                "checked": report.checked,
                "bad_rows": list(report.bad),
                "more_bad_rows": report.more_bad,
                "adoption": report.marker,
            }
        )
    elif ok:
        console.print(
            f"record rows OK: {report.checked} checked against their integrity tags "
            "(every row is tagged: adoption marker in place)",
            highlight=False,
        )
    else:
        if report.marker != "adopted":
            console.print(
                f"[red]TAMPERED:[/] the record-tag marker (maintenance row record_tags) is "
                f"{report.marker}: it was deleted or reset outside credex, and untagged rows "
                "were not adopted (the node log says why)",
                highlight=False,
            )
        for row_id in report.bad:
            console.print(
                f"[red]TAMPERED:[/] record row {row_id} fails its integrity tag", highlight=False
            )
        more = " (and more: raise --limit)" if report.more_bad else ""
        console.print(
            f"{len(report.bad)} of {report.checked} record row(s) fail their tag{more}; "
            "restore them from a backup (docs/operator-guide.md, 'Record integrity tags')",
            highlight=False,
        )
    if not ok:
        raise typer.Exit(int(ExitCode.VERIFICATION))
