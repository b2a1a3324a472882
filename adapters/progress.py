"""A terminal progress line for mapping runs: rows read, rate, accepted and rejected so far.

Only the CLI creates one; `quiet=True` (for --json output or a non-terminal) shows nothing, so
machine output stays clean.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from adapters.run import Batch

__all__ = ["RunProgress"]


class RunProgress:
    """Context manager that shows the progress of a run, batch by batch."""

    def __init__(self, console: Console, *, label: str, quiet: bool = False) -> None:
        self._progress: Progress | None = None
        if not quiet:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TextColumn("{task.completed:,} rows"),
                TextColumn("{task.fields[rate]:,.0f} rows/s"),
                TextColumn("accepted {task.fields[accepted]:,}"),
                TextColumn("[red]rejected {task.fields[rejected]:,}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            # The label names the operator's file: escaped, so "[...]" in a path is text.
            self._task = self._progress.add_task(
                escape(label), total=None, rate=0.0, accepted=0, rejected=0
            )
        self._accepted = self._rejected = 0

    def advance(self, batch: Batch) -> None:
        """Count one stored batch."""
        self._accepted += len(batch.accepted)
        self._rejected += len(batch.rejected)
        if self._progress is None:
            return
        self._progress.update(
            self._task,
            advance=batch.read,
            accepted=self._accepted,
            rejected=self._rejected,
        )
        task = self._progress.tasks[0]
        self._progress.update(self._task, rate=task.speed or 0.0)

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
