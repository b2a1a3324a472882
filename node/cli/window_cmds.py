"""`credex lifecycle windows`: recompute stored disclosure windows with this release's rules.

The lifecycle scan does this itself once per rules change (docs/decisions/0014); this command
runs it now, or again with `--force`, and then one lifecycle pass, so that a version whose
recomputed window is already over is expired at once (an `expire` event to every subscriber).
A separate module: `node/cli/lifecycle_cmds.py` owns the other lifecycle verbs.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from node.cli.common import HomeOption, JsonOption, console, print_json, resolve_home
from node.cli.lifecycle_cmds import lifecycle_app


@lifecycle_app.command("windows")
def windows_command(
    home: HomeOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Check every active record again, even when this release's rules were "
            "already applied (changes nothing where the stored windows agree).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Recompute stored disclosure windows with this release's rules, then run one scan."""
    from node.runtime import open_runtime
    from node.scheduler import scan
    from node.telemetry import telemetry_of
    from node.window_refresh import refresh_windows

    runtime = open_runtime(resolve_home(home))
    try:
        with telemetry_of(runtime.config):
            report = refresh_windows(runtime, force=force)
            scanned = scan(runtime)
    finally:
        runtime.close()
    if as_json:
        print_json({"windows": report.to_dict(), "scan": scanned.to_dict()})
        return
    if not report.ran:
        console.print(f"windows already follow these rules ({report.fingerprint}); use --force")
    else:
        console.print(
            f"{report.checked} active record(s) checked, {report.updated} window(s) updated, "
            f"{report.ended} of them already over"
        )
    if report.unreadable or report.invalid:
        console.print(
            f"[yellow]warning:[/] {report.unreadable} record(s) did not decrypt or verify "
            f"(windows kept), {report.invalid} no longer validate (bounded from the fields "
            "that decide them); for a clerk to correct, revoke or re-ingest:"
        )
        for record_key in report.unresolved:
            console.print(f"  {escape(record_key)}")
    console.print(
        f"{scanned.today}: {scanned.expired} expired, {scanned.capped} past the 5-year cap, "
        f"{scanned.purged} purged"
    )
