"""The `credex` command line: nouns and verbs (DESIGN.md section 7).

Each command group lives in its own module and registers itself on `app` when imported; the
list below is the only place that names them. `main` turns every credex error into a message a
person can act on and an exit code (0 ok, 1 failure, 2 input, 3 verification), never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from node.cli.common import err_console
from node.errors import exit_code_for

app = typer.Typer(
    name="credex",
    help="credex: a privacy-first exchange node for public credit information.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules, each registering its commands on `app`. Add one line per module.
_COMMAND_MODULES = (
    "node.cli.catalog_cmds",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name)


def main() -> None:
    """Run the CLI; credex errors become a one-line diagnosis and a documented exit code."""
    import adapters
    import catalog
    import keys
    from node.errors import NodeError

    try:
        result = app(standalone_mode=False)
        # click returns the exit code of ctx.exit()/typer.Exit instead of raising in this mode
        if isinstance(result, int):
            sys.exit(result)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except (NodeError, catalog.CatalogError, keys.KeysError, adapters.AdapterError) as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(int(exit_code_for(error)))
    except Exception as error:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(2)
        raise
