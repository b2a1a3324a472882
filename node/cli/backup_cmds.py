"""`credex backup` and `credex restore`: encrypted snapshots of a (running) node.

The passphrase comes from `--passphrase-file` (first line), else `$CREDEX_BACKUP_PASSPHRASE_FILE`,
else an interactive prompt; it is never an argument (it would land in shell history and `ps`).
After a restore that includes keys, the access log is verified in place, so the operator knows
at once that the restored node holds an intact log.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from node.cli import app
from node.cli.common import HomeOption, JsonOption, console, err_console, print_json, resolve_home
from node.cli.init_cmds import read_passphrase
from node.cli.log_cmds import witness_verifiers
from node.errors import InputError

if TYPE_CHECKING:
    from node.backup import BackupManifest

PASSPHRASE_ENV = "CREDEX_BACKUP_PASSPHRASE_FILE"  # noqa: S105 - an env var name, not a secret

BackupPassphraseOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"File whose first line is the backup passphrase (else ${PASSPHRASE_ENV}, "
        "else a prompt).",
        show_default=False,
    ),
]


def _passphrase(path: Path | None, *, confirm: bool) -> bytes:
    """The backup passphrase from the option, the environment, or a hidden prompt."""
    if path is None and os.environ.get(PASSPHRASE_ENV):
        path = Path(os.environ[PASSPHRASE_ENV])
    from_file = read_passphrase(path)
    if from_file is not None:
        return from_file
    if not os.isatty(0):
        raise InputError(
            f"no backup passphrase: give --passphrase-file FILE or set ${PASSPHRASE_ENV}"
        )
    text: str = typer.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm)
    if not text:
        raise InputError("the backup passphrase is empty")
    return text.encode("utf-8")


def _manifest_table(title: str, manifest: BackupManifest) -> Table:
    table = Table(title=title, show_header=False)
    table.add_row("node", f"{manifest.node_id} ({manifest.role})")
    table.add_row("taken at", manifest.created_at)
    table.add_row("database", escape(manifest.database))
    table.add_row("records", str(manifest.records))
    table.add_row("access-log entries", str(manifest.log_size))
    table.add_row("keys included", "yes" if manifest.includes_keys else "no")
    table.add_row("files", str(len(manifest.files)))
    return table


def _manifest_json(manifest: BackupManifest) -> dict[str, Any]:
    return {
        "node_id": manifest.node_id,
        "role": manifest.role,
        "created_at": manifest.created_at,
        "database": manifest.database,
        "records": manifest.records,
        "log_size": manifest.log_size,
        "includes_keys": manifest.includes_keys,
        "files": sorted(manifest.files),
    }


@app.command("backup")
def backup_command(
    out: Annotated[Path, typer.Argument(help="New backup file (written 0600).")],
    *,
    include_keys: Annotated[
        bool,
        typer.Option("--include-keys", help="Also back up keys/ (and a platform's root key)."),
    ] = False,
    skip_database: Annotated[
        bool,
        typer.Option(
            "--skip-database",
            help="Back up config, trust and keys only (PostgreSQL: dump it with pg_dump).",
        ),
    ] = False,
    passphrase_file: BackupPassphraseOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write an encrypted, consistent snapshot of the node (safe while it is serving)."""
    from node.backup import create_backup

    passphrase = _passphrase(passphrase_file, confirm=True)
    manifest = create_backup(
        resolve_home(home),
        out,
        passphrase=passphrase,
        now=dt.datetime.now(dt.UTC),
        include_keys=include_keys,
        skip_database=skip_database,
    )
    if as_json:
        print_json({"backup": str(out), **_manifest_json(manifest)})
        return
    console.print(_manifest_table(f"backup written to {escape(str(out))}", manifest))
    if not include_keys:
        console.print(
            "keys were NOT included: keep the node's keys/ in your key escrow, "
            "the backup is useless without them."
        )


@app.command("restore")
def restore_command(
    backup: Annotated[Path, typer.Argument(help="A file written by `credex backup`.")],
    directory: Annotated[Path, typer.Argument(help="New node directory (absent or empty).")],
    *,
    passphrase_file: BackupPassphraseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into a new node directory and verify its access log there."""
    from node.backup import restore_backup

    passphrase = _passphrase(passphrase_file, confirm=False)
    result = restore_backup(backup, directory.absolute(), passphrase=passphrase)
    verified: dict[str, Any] = {"checked": False}
    if result.manifest.includes_keys and result.manifest.database != "none":
        verified = _verify_restored(result.home)
    if as_json:
        print_json(
            {
                "home": str(result.home),
                **_manifest_json(result.manifest),
                "log": verified,
                "warnings": list(result.warnings),
            }
        )
        return
    console.print(_manifest_table(f"restored into {escape(str(result.home))}", result.manifest))
    if verified["checked"]:
        console.print(
            f"access log verified: {verified['size']} entries, "
            f"{verified['checkpoints']} signed checkpoints, no problems"
        )
    elif result.manifest.database == "none":
        console.print(
            "access log not verified here: the backup holds no database; restore it "
            "(PostgreSQL: pg_restore) and run `credex log verify`"
        )
    else:
        console.print(
            "access log not verified here: run `credex log verify` once keys are in place"
        )
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)


def _verify_restored(home: Path) -> dict[str, Any]:
    """Verify the restored access log with the node's own key; TamperDetected when it fails."""
    import keys
    from node.accesslog import verify_log
    from node.runtime import open_runtime
    from node.store import SqlLogBackend

    try:
        runtime = open_runtime(home)
    except keys.KeyFileError:
        # Passphrase-protected keys without $CREDEX_PASSPHRASE_FILE: leave it to `log verify`.
        return {"checked": False}
    try:
        # The platform's cosignatures are checked with its roster keys, as `log verify` does.
        report = verify_log(
            SqlLogBackend(runtime.store),
            runtime.log_verifiers(),
            origin=runtime.config.log.origin,
            log_name=runtime.node_id,
            witness_verifiers=witness_verifiers(runtime),
        )
        report.raise_for_problems()
        return {
            "checked": True,
            "size": report.size,
            "checkpoints": report.checkpoints_checked,
        }
    finally:
        runtime.close()
