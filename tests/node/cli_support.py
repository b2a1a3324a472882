"""The real `credex` console entry point (`node.cli.main`) run in a subprocess, as an operator
runs it: what the CLI tests use when the exit code and stderr of `main` are what is tested."""

from __future__ import annotations

import os
import subprocess
import sys

# What would pick a node or a passphrase from the test runner's own environment.
_CALLER_SETTINGS = ("CREDEX_HOME", "CREDEX_PASSPHRASE_FILE", "CREDEX_BACKUP_PASSPHRASE_FILE")


def credex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `credex ARGS` with wide output and none of the caller's CREDEX_* settings (`env`
    adds variables); returns the finished process, whatever its exit code."""
    full = {**os.environ, "COLUMNS": "300"}
    for name in _CALLER_SETTINGS:
        full.pop(name, None)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", "from node.cli import main; main()", *args],
        capture_output=True, text=True, env=full, check=False,
    )  # fmt: skip
