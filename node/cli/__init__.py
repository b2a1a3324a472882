"""The `credex` command line: nouns and verbs (DESIGN.md section 7).

Each command group lives in its own module and registers itself on `app` when imported; the
list below is the only place that names them. `main` turns every credex error into a message a
person can act on and an exit code (0 ok, 1 failure, 2 input, 3 verification), never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

import typer
from rich.markup import escape

import adapters
import catalog
import keys
from node.cli.common import err_console
from node.errors import ExitCode, NodeError, exit_code_for

app = typer.Typer(
    name="credex",
    help="credex: a privacy-first exchange node for public credit information.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules, each registering its commands on `app`. Add one line per module.
_COMMAND_MODULES = (
    "node.cli.init_cmds",
    "node.cli.catalog_cmds",
    "node.cli.mapping_cmds",
    "node.cli.serve_cmds",
    "node.cli.bundle_cmds",
    "node.cli.feed_cmds",
    "node.cli.query_cmds",
    "node.cli.log_cmds",
    "node.cli.backup_cmds",
    "node.cli.lifecycle_cmds",
    "node.cli.window_cmds",  # `credex lifecycle windows`, on lifecycle_cmds' group
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name)


def main() -> None:
    """Run the CLI; credex errors become a one-line diagnosis and a documented exit code.

    Usage errors are click's own (exit 2, with the usage line); every credex error family is
    caught here and printed as one line, so no traceback ever reaches an operator. Anything
    else is a bug or an operating-system failure a command did not anticipate: it is printed
    as one line too (an OSError's reason and file; otherwise only the exception's type and
    place, as its text may quote personal data) with exit 1, or re-raised when CREDEX_DEBUG
    is set. The message
    is escaped: error text names paths and config keys such as "[log] retention_days", which
    rich would otherwise take for markup (dropped, or a MarkupError for "[/]").
    """
    try:
        app()
    except (NodeError, catalog.CatalogError, keys.KeysError, adapters.AdapterError) as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        sys.exit(int(exit_code_for(error)))
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        sys.exit(130)
    except OSError as error:
        # An operating-system failure no command turned into a credex error: its reason and
        # file are safe to show (strerror and a path, never the data being written).
        where = f": {error.filename}" if error.filename is not None else ""
        reason = error.strerror or type(error).__name__
        err_console.print(f"[bold red]error:[/] {escape(reason + where)}", highlight=False)
        sys.exit(int(ExitCode.FAILURE))
    except Exception as error:
        if os.environ.get("CREDEX_DEBUG"):
            raise
        # The message of an unexpected exception may quote the data it choked on (a
        # UnicodeError quotes the text), so only its type and place are shown.
        frames = traceback.extract_tb(error.__traceback__)
        place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        err_console.print(
            f"[bold red]error:[/] unexpected {type(error).__name__}{escape(place)}: a credex "
            "bug, please report it (CREDEX_DEBUG=1 shows the traceback)",
            highlight=False,
        )
        sys.exit(int(ExitCode.FAILURE))
