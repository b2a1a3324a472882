"""Every `[section]` a command's help names reaches the screen.

The CLI renders help with rich markup, which takes `[lifecycle]` for a style tag and drops it:
"the node's [lifecycle] retention_months" read "the node's  retention_months". A help text
writes `\\[section]` to show the brackets.
"""

from __future__ import annotations

import re
from typing import Any

import typer.main
from typer.testing import CliRunner

from node.cli import app

_SECTION = re.compile(r"(?<!\\)\[([a-z_]+)\]")


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group` (typer's click group: `.commands` by name)."""
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found.extend(_commands(command, (*path, name)))
    return found


def test_no_help_text_loses_a_config_section_to_markup() -> None:
    root = typer.main.get_command(app)
    runner = CliRunner()
    for path in _commands(root):
        command: Any = root
        for name in path:
            command = command.commands[name]
        texts = [command.help or ""] + [
            getattr(param, "help", None) or "" for param in command.params
        ]
        sections = {m for text in texts for m in _SECTION.findall(text)}
        assert not sections, f"credex {' '.join(path)}: write \\[{sorted(sections)[0]}] in help"
        shown = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert shown.exit_code == 0, path
        escaped = {m for text in texts for m in re.findall(r"\\\[([a-z_]+)\]", text)}
        for section in escaped:
            assert f"[{section}]" in shown.stdout, (path, section)
