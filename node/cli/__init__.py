"""The `credex` command line: nouns and verbs (DESIGN.md section 7).

Each command group lives in its own module and registers itself on `app` when imported; the
list below is the only place that names them. All of them are imported on every run (`credex
--help` lists them), so a command module imports at its top only typer, rich, the standard
library and node.cli.common / node.errors; what a command needs (the store, grpc, the keys, the
catalogue ...) it imports in its function, under `TYPE_CHECKING` for annotations.
tests/node/test_cli_startup.py holds every command's help, and the commands that need no node,
to that. `main` turns every credex error into a message a
person can act on and an exit code (0 ok, 1 failure, 2 input, 3 verification), never a traceback.
"""

from __future__ import annotations

import os

# gRPC's C core prints its own diagnostics on stderr ("E1126 ... add_port.cc:83] Failed to add
# port ...") before credex's one-line message says the same; it reads this once, when grpc is
# first imported, so it is set before anything below imports it. An operator who wants them
# sets GRPC_VERBOSITY=ERROR (or INFO) for the command.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import importlib
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape

from node.cli.common import err_console, print_json
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
    "node.cli.store_cmds",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name)


def _fail(message: str, code: int) -> NoReturn:
    """Print `message` as one escaped line on stderr (error text names paths and config keys
    such as "[log] retention_days", which rich would otherwise take for markup) and exit with
    `code`. A command run with `--json` also gets `{"error": ..., "exit": ...}` on stdout, so a
    script reading stdout always has one document to parse."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    args = sys.argv[1:]
    if "--json" in (args[: args.index("--")] if "--" in args else args):
        print_json({"error": message, "exit": code})
    sys.exit(code)


def _credex_errors() -> tuple[type[Exception], ...]:
    """The credex error families `main` turns into a message. Imported when an exception
    reaches `main`, not with this module: `credex --help` and the commands that need no node
    would otherwise load the store's and the keys' dependencies for nothing."""
    import adapters
    import catalog
    import keys

    return (NodeError, catalog.CatalogError, keys.KeysError, adapters.AdapterError)


def main() -> None:
    """Run the CLI; credex errors become a one-line diagnosis and a documented exit code.

    Usage errors are click's own (exit 2, with the usage line); every credex error family is
    caught here and printed as one line, so no traceback ever reaches an operator. Anything
    else is a bug or an operating-system failure a command did not anticipate: it is printed
    as one line too (an OSError's reason and file; otherwise only the exception's type and
    place, as its text may quote personal data) with exit 1, or re-raised when CREDEX_DEBUG
    is set. With `--json`, each of these also writes an error document to stdout (`_fail`).
    """
    try:
        app()
    except SystemExit:
        # click ends every run, a successful one too, with SystemExit: neither it nor an
        # interrupt needs the families of the next clause, which are imported when it is tried
        raise
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except _credex_errors() as error:
        import keys

        if isinstance(error, keys.PassphraseRequired):
            from node.runtime import with_passphrase_hint

            # commands that load the keys without a runtime (`keys show`, `ingest` ...) get
            # the hint open_runtime gives; the environment is not known to be the source here
            error = with_passphrase_hint(error, None)
        _fail(str(error), int(exit_code_for(error)))
    except OSError as error:
        # An operating-system failure no command turned into a credex error: its reason and
        # file are safe to show (strerror and a path, never the data being written).
        where = f": {error.filename}" if error.filename is not None else ""
        _fail((error.strerror or type(error).__name__) + where, int(ExitCode.FAILURE))
    except Exception as error:
        if os.environ.get("CREDEX_DEBUG"):
            raise
        # The message of an unexpected exception may quote the data it choked on (a
        # UnicodeError quotes the text), so only its type and place are shown.
        frames = traceback.extract_tb(error.__traceback__)
        place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        _fail(
            f"unexpected {type(error).__name__}{place}: a credex bug, please report it "
            "(CREDEX_DEBUG=1 shows the traceback)",
            int(ExitCode.FAILURE),
        )
