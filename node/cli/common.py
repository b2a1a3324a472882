"""Shared pieces of the CLI: how a command finds its node, JSON output, the console.

Text that comes from outside (paths, error messages, names from files) is escaped before it is
printed with rich markup: "[log] retention_days" would otherwise lose "[log]", and "[/]" in a
path would raise a MarkupError instead of printing.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from node.durable import publish_new_file
from node.errors import InputError
from node.officers import OFFICER_ID_RULE, is_officer_id

console = Console()
err_console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Node directory (else $CREDEX_HOME, else the current directory).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

# The rule of `[server] listen` in node/config.py (tests/node/test_cli_robustness.py checks that
# both agree), applied to a command-line value so the message names the flag, not credex.toml.
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def china_today() -> dt.date:
    """Today in China Standard Time (UTC+8), the day every rule of the node judges by (ingest,
    queries, the lifecycle scan; docs/lifecycle.md): never the machine's local date, which on a
    server kept in UTC is still yesterday until 08:00 in Zibo."""
    from node.lifecycle import china_day

    return china_day(_utcnow())


def resolve_home(home: Path | None) -> Path:
    """Return the node directory: --home, else $CREDEX_HOME, else the current directory."""
    if home is not None:
        return home
    env = os.environ.get("CREDEX_HOME")
    if env:
        return Path(env)
    return Path.cwd()


def print_json(data: Any) -> None:
    """Write one JSON document to stdout (UTF-8, Chinese kept readable)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def check_listen(value: str, *, flag: str = "--listen", ephemeral: bool = False) -> str:
    """Return `value` when it is HOST:PORT (IPv6 as [::1]:7443) with a port from 1 to 65535
    (or 0, "any free port", when `ephemeral`: only for binding now, never for a config file).

    Refuses anything else with an InputError naming `flag`, so a bad command-line value is not
    reported as a problem of credex.toml.
    """
    lowest = 0 if ephemeral else 1
    match = _HOST_PORT.match(value)
    if not match or not lowest <= int(match.group(1)) < 65536:
        raise InputError(
            f"{flag} {value!r}: must be HOST:PORT (IPv6 as [::1]:7443) with a port from "
            f"{lowest} to 65535"
        )
    return value


def check_officer(value: str, *, flag: str = "--officer") -> str:
    """Return `value` when it is a staff id (node.officers), else raise InputError naming the
    flag, never the value (it may be a person's name)."""
    if not is_officer_id(value):
        raise InputError(f"{flag}: must be {OFFICER_ID_RULE}")
    return value


# `--subject -`: the identifier is read from standard input, so it stays out of the process
# list (`ps`) and the shell's history, where a command-line argument is visible to others.
SUBJECT_FROM_STDIN = "-"
SUBJECT_HELP = "ID number or credit code; '-' reads it from standard input (kept out of ps)"


def subject_value(value: str) -> str:
    """`value`, or for `-` one line read from standard input (a hidden prompt on a terminal).

    Refuses (InputError) an empty identifier. The identifier is never echoed.
    """
    if value != SUBJECT_FROM_STDIN:
        return value
    if sys.stdin.isatty():
        typed = getpass.getpass("subject ID number or credit code: ")
    else:
        typed = sys.stdin.readline()
    typed = typed.strip()
    if not typed:
        raise InputError("--subject -: no identifier on standard input")
    return typed


def refuse_existing_output(output: Path | None) -> None:
    """InputError when `--output` names a file (or a link) that exists: an export never
    replaces one. Asked before anything is logged; `write_export` checks again as it writes."""
    if output is not None and (output.exists() or output.is_symlink()):
        raise InputError(f"--output {output}: the file exists; choose a new name")


def write_export(output: Path | None, lines: Iterable[str]) -> int:
    """Write `lines` (each ending in a newline) to stdout, or to the new file `output` whole or
    not at all (`node.durable.publish_new_file`); return how many were written. InputError
    naming `--output` when the file exists or cannot be written."""
    count = 0
    if output is None:
        for line in lines:
            sys.stdout.write(line)
            count += 1
        sys.stdout.flush()
        return count

    def encoded() -> Iterator[bytes]:
        nonlocal count
        for line in lines:
            count += 1
            yield line.encode("utf-8")

    try:
        publish_new_file(output, encoded())
    except FileExistsError:
        raise InputError(f"--output {output}: the file exists; choose a new name") from None
    except OSError as error:
        raise InputError(
            f"--output {output}: cannot write the export ({error.strerror or error})"
        ) from None
    return count
