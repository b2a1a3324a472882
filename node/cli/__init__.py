"""The `credex` command line: nouns and verbs (DESIGN.md section 7).

Each command group lives in its own module and registers itself on `app` when imported; the
list below is the only place that names them. `main` turns every credex error into a message a
person can act on and an exit code (0 ok, 1 failure, 2 input, 3 verification), never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.markup import escape

import adapters
import catalog
import keys
from node.cli.common import err_console
from node.errors import NodeError, exit_code_for

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
    caught here and printed as one line, so no traceback ever reaches an operator. The message
    is escaped: error text names paths and config keys such as "[log] retention_days", which
    rich would otherwise take for markup (dropped, or a MarkupError for "[/]").
    """
    try:
        app()
    except (NodeError, catalog.CatalogError, keys.KeysError, adapters.AdapterError) as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        sys.exit(int(exit_code_for(error)))
