"""`credex init`, `credex keys show` and `credex ingest`.

`init` builds the whole node in a temporary sibling directory and renames it into place at the
end, so a failure (bad passphrase file, full disk) never leaves a half-made node behind, and an
existing node is never touched. Nothing printed here contains key material or row content.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from node.cli import app
from node.cli.common import (
    HomeOption,
    JsonOption,
    check_listen,
    check_officer,
    console,
    err_console,
    print_json,
    resolve_home,
)
from node.errors import ExitCode, InputError, NodeError

if TYPE_CHECKING:
    from node.ingest import IngestSummary

keys_app = typer.Typer(help="Show the node's public keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

# The same variable `credex serve` reads (node.runtime.open_runtime), e.g. from a systemd unit.
PASSPHRASE_ENV = "CREDEX_PASSPHRASE_FILE"  # noqa: S105 - an env var name, not a secret

PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"File whose first line is the passphrase protecting the key files "
        f"(else ${PASSPHRASE_ENV}).",
        show_default=False,
    ),
]


def read_passphrase(path: Path | None) -> bytes | None:
    """Return the passphrase in `path` (first line, without its newline), or None.

    Refuses (InputError) an unreadable or empty file; never echoes its content.
    """
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read the passphrase file ({error.strerror})") from None
    line = data.splitlines()[0] if data else b""
    if not line:
        raise InputError(f"{path}: the passphrase file is empty")
    return line


def node_passphrase(path: Path | None) -> bytes | None:
    """Return the passphrase of the node's key files: `--passphrase-file`, else the file named
    by $CREDEX_PASSPHRASE_FILE (as `credex serve` reads it), else None (unprotected keys).

    Refuses (InputError) an unreadable or empty file, naming the variable when it came from it;
    never echoes the passphrase.
    """
    if path is not None:
        return read_passphrase(path)
    env_file = os.environ.get(PASSPHRASE_ENV)
    if not env_file:
        return None
    try:
        return read_passphrase(Path(env_file))
    except InputError as error:
        raise InputError(f"${PASSPHRASE_ENV}: {error}") from None


def _existing_node(directory: Path) -> str | None:
    from node.config import CONFIG_FILE

    for name in (CONFIG_FILE, "keys", "data"):
        if (directory / name).exists():
            return name
    return None


def _make_work_dir(directory: Path) -> Path:
    """Create the parent of `directory` if needed and a private temporary sibling to build in.

    Refuses (InputError naming the directory and the OS reason) a parent that is a file, or
    one this user cannot create or write.
    """
    parent = directory.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{directory.name}.init-", dir=parent))
    except OSError as error:
        blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            reason = f"{blocker} is not a directory"
        else:
            reason = error.strerror or type(error).__name__
        raise InputError(f"{directory}: cannot create the node directory ({reason})") from None


def init_node(
    directory: Path,
    *,
    name: str,
    role: str,
    listen: str = "127.0.0.1:7443",
    passphrase: bytes | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Create a node in `directory`: keys, commented config, data/ with a migrated store,
    rejects/, trust/ (and for a platform its root key and trust/root.pub).

    Refuses (InputError) a bad name, role or listen address, a directory that already holds a
    node or any other file, and a directory that cannot be created (under a file, no write
    permission); builds everything aside and renames it into place, so it is all or nothing.
    Returns a JSON-ready description (public facts only).
    """
    import keys
    from node.config import write_default_config
    from node.store import open_store

    if not _NAME.match(name):
        raise InputError(
            f"--name {name!r}: use lower-case letters, digits and '-' (it becomes the node id)"
        )
    if role not in ("department", "platform"):
        raise InputError(f'--role {role!r}: must be "department" or "platform"')
    check_listen(listen)
    directory = directory.absolute()
    if directory.exists():
        if not directory.is_dir():
            raise InputError(f"{directory}: exists and is not a directory")
        found = _existing_node(directory)
        if found is not None:
            raise InputError(f"{directory}: already holds a node ({found}); refusing to overwrite")
        if any(directory.iterdir()):
            raise InputError(f"{directory}: is not empty; choose an empty or new directory")
    work = _make_work_dir(directory)
    try:
        work.chmod(0o700)
        node_keys = keys.create_key_dir(work / "keys", node_id=name, passphrase=passphrase, now=now)
        write_default_config(work, node_id=name, name=name, role=role, listen=listen)
        for sub in ("data", "rejects", "trust"):
            (work / sub).mkdir(mode=0o700)
        root_keyid = None
        if role == "platform":
            # The root is an Ed25519 signer in its own key directory (keys.create_key_dir);
            # only its signing key is used. trust/root.pub is what every node pins.
            root = keys.create_key_dir(
                work / "trust" / "root", node_id=f"{name}-root", passphrase=passphrase, now=now
            )
            pub = work / "trust" / "root.pub"
            pub.write_text(base64.b64encode(root.signing.public_key).decode("ascii") + "\n")
            root_keyid = root.signing.keyid
        # The store URL in the new config resolves against the final directory, so the
        # database is made here at the same relative place and moves with the rename.
        store = open_store(f"sqlite:///{work / 'data' / 'credex.db'}")
        store.close()
        (work / "data" / "credex.db").chmod(0o600)
        if directory.exists():
            directory.rmdir()  # empty (checked above); rename cannot replace it otherwise
        work.replace(directory)
    except OSError as error:
        # Full disk, quota, a directory appearing meanwhile: a diagnosis, not a traceback.
        shutil.rmtree(work, ignore_errors=True)
        raise NodeError(
            f"{directory}: cannot create the node ({error.strerror or type(error).__name__}); "
            "nothing was left behind"
        ) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {
        "home": str(directory),
        "node_id": name,
        "role": role,
        "listen": listen,
        "keyid": node_keys.signing.keyid,
        "tls_fingerprint": node_keys.tls_fingerprint,
        "root_keyid": root_keyid,
        "store": "data/credex.db",
        "passphrase": passphrase is not None,
    }


@app.command("init")
def init_command(
    directory: Annotated[Path, typer.Argument(help="New node directory (created, mode 0700).")],
    *,
    name: Annotated[str, typer.Option("--name", help="Node id, e.g. 'market'.")],
    role: Annotated[str, typer.Option("--role", help='"department" or "platform".')] = (
        "department"
    ),
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT the gRPC server binds.")
    ] = "127.0.0.1:7443",
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a node: keys, commented credex.toml, migrated store; refuses an existing node."""
    from node.config import CONFIG_FILE

    info = init_node(
        directory, name=name, role=role, listen=listen, passphrase=node_passphrase(passphrase_file)
    )
    if as_json:
        print_json(info)
        return
    table = Table(title=f"credex node {info['node_id']} ({info['role']})", show_header=False)
    for key in ("home", "listen", "keyid", "tls_fingerprint", "root_keyid", "store"):
        if info[key] is not None:
            table.add_row(key, escape(str(info[key])))
    console.print(table)
    config_file = escape(str(Path(info["home"]) / CONFIG_FILE))
    if info["role"] == "platform":
        console.print(
            f"next: edit {config_file}; give trust/root.pub to every department (they run "
            "`credex bundle pin root.pub`); list the nodes in a bundle.toml and run "
            "`credex bundle sign bundle.toml`.",
            highlight=False,
        )
    else:
        console.print(
            f"next: edit {config_file}; `credex bundle pin root.pub` (the platform's) and "
            "`credex bundle install bundle.json`; then `credex mapping check` and "
            "`credex ingest`.",
            highlight=False,
        )


@keys_app.command("show")
def keys_show_command(
    home: HomeOption = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the node's public identity (keys, key id, TLS certificate fingerprint)."""
    import keys
    from node.config import load_config

    config = load_config(resolve_home(home))
    node_keys = keys.load_key_dir(config.keys_dir, passphrase=node_passphrase(passphrase_file))
    identity = keys.public_identity(node_keys)
    if as_json:
        print_json(identity)
        return
    table = Table(title=f"public identity of {identity['node_id']}", show_header=False)
    for key in ("node_id", "keyid", "signing_key", "encryption_key", "tls_fingerprint"):
        table.add_row(key, str(identity[key]))
    for previous in identity.get("previous_signing_keys", []):
        table.add_row(
            "previous signing key", f"{previous['key']} (until {previous['accepted_until']})"
        )
    console.print(table)


# A retired key that peers accept for years is no longer retired; ten years is far past any
# bundle's validity, and keeps `now + overlap` inside the calendar.
MAX_OVERLAP_DAYS = 3650


@keys_app.command("rotate")
def keys_rotate_command(
    home: HomeOption = None,
    overlap_days: Annotated[
        int,
        typer.Option(
            "--overlap-days",
            help="Days the old signing key stays accepted by peers (at most 3650).",
            min=0,
            max=MAX_OVERLAP_DAYS,
        ),
    ] = 7,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replace the signing key; the old one stays valid for the overlap window.

    Send the printed identity (`credex keys show --json`) to the platform, which signs the
    next bundle with it before the overlap ends. A running node picks the new key up at restart.
    """
    import keys
    from node.config import load_config

    config = load_config(resolve_home(home))
    now = dt.datetime.now(dt.UTC)
    rotated = keys.rotate_signing_key(
        config.keys_dir,
        now=now,
        overlap=dt.timedelta(days=overlap_days),
        passphrase=node_passphrase(passphrase_file),
    )
    identity = keys.public_identity(rotated)
    if as_json:
        print_json(identity)
        return
    until = (now + dt.timedelta(days=overlap_days)).isoformat(timespec="seconds")
    console.print(
        f"new signing key {identity['keyid']}; the previous key stays accepted until {until}. "
        "Send `credex keys show --json` to the platform for the next trust bundle, then "
        "restart `credex serve`. If the previous key leaked, the platform revokes it: then run "
        "`credex keys resign` so that peers accept the records it signed."
    )


@keys_app.command("upgrade")
def keys_upgrade_command(
    home: HomeOption = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rewrite the key files in the current key-file format (the keys stay the same).

    Format 2 binds each protected key file to its node, so a file copied from another node's
    key directory no longer loads. Run it with the node stopped; run it again if it was cut
    short. A directory already in the current format is left as it is.
    """
    import keys
    from node.config import load_config

    config = load_config(resolve_home(home))
    upgraded = keys.upgrade_key_dir(config.keys_dir, passphrase=node_passphrase(passphrase_file))
    if as_json:
        print_json({"key_file_version": upgraded.key_file_version, "node_id": upgraded.node_id})
        return
    console.print(
        f"key files of {upgraded.node_id} are in format {upgraded.key_file_version}; "
        "the keys are unchanged."
    )


@keys_app.command("resign")
def keys_resign_command(
    home: HomeOption = None,
    officer: Annotated[
        str, typer.Option("--officer", help="Your staff id (recorded in the access log).")
    ] = "officer",
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign this node's stored records again with the current signing key.

    Needed when the platform revoked a previous key (it leaked): peers then refuse every
    record it signed. Resumable and idempotent; logged as an administrative read. Exit 3
    when a stored record does not verify under this node's keys.
    """
    from node.resign import resign_records
    from node.runtime import open_runtime

    check_officer(officer)
    runtime = open_runtime(resolve_home(home), passphrase=node_passphrase(passphrase_file))
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.completed:,} record versions read"),
            TimeElapsedColumn(),
            console=err_console,
            disable=as_json,
        ) as bar:
            task = bar.add_task("resign", total=None)
            report = resign_records(
                runtime, officer=officer, progress=lambda read: bar.update(task, completed=read)
            )
    finally:
        runtime.close()
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    console.print(
        f"{report.resigned} record version(s) signed again with key {report.keyid}; "
        f"{report.current} already were, of {report.checked} read."
    )


@app.command("ingest")
def ingest_command(
    mapping: Annotated[Path, typer.Argument(help="Mapping file (TOML) naming the source.")],
    *,
    home: HomeOption = None,
    passphrase_file: PassphraseFileOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Rows per transaction.")
    ] = 1000,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the saved resume point and read it all.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, max=64, help="Signing processes (default: \\[ingest] workers)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Map, validate, sign, encrypt and store a source's records (resumable, idempotent)."""
    import adapters
    from node.config import load_config
    from node.ingest import run_ingest
    from node.runtime import open_node_store

    config = load_config(resolve_home(home))
    passphrase = node_passphrase(passphrase_file)
    today = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    store = open_node_store(config)
    try:
        with adapters.RunProgress(err_console, label=mapping.name, quiet=as_json) as bar:
            summary = run_ingest(
                config,
                mapping,
                today=today,
                progress=bar.advance,
                passphrase=passphrase,
                batch_size=batch_size,
                restart=restart,
                workers=workers,
                store=store,
            )
    finally:
        store.close()
    if as_json:
        print_json(summary.to_dict())
    else:
        _show_summary(summary)
    if not summary.balanced:  # pragma: no cover - run_ingest's own invariant
        raise typer.Exit(int(ExitCode.FAILURE))


def _show_summary(summary: IngestSummary) -> None:
    table = Table(title=f"ingest {summary.run_id}")
    columns = ("read", "accepted", "corrected", "rejected", "unchanged", "kept withdrawn",
               "batches", "rows/s")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    rate = f"{summary.read / summary.seconds:,.0f}" if summary.seconds else "-"
    table.add_row(
        str(summary.read), str(summary.accepted), str(summary.corrected), str(summary.rejected),
        str(summary.skipped_unchanged), str(summary.skipped_lifecycle), str(summary.batches),
        rate,
    )  # fmt: skip
    console.print(table)
    if summary.top_reasons:
        reasons = Table(title="top reject reasons")
        for column in ("field", "code", "rows"):
            reasons.add_column(column)
        for field_id, code, count in summary.top_reasons:
            reasons.add_row(field_id, code, str(count))
        console.print(reasons)
    for path in summary.reject_files:
        console.print(f"rejects: {escape(str(path))}")
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)
