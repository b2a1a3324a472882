"""Shared pieces of the CLI: how a command finds its node, JSON output, the console."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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
