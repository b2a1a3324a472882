"""Group commit for durable writes awaited by many tasks (access-log entries, request nonces).

Items submitted while a commit is in flight are committed together in the next one, in a
worker thread, in submission order; each submitter resumes only after the commit that holds its
item returned, with that item's result, or with the group's error when the commit failed.
A group commit given a `stage` name records each commit as that pipeline stage (one span per
group, never per item: node/telemetry.py) in the process's active telemetry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from node.telemetry import active_telemetry

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiter(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class GroupCommit(Generic[T, R]):
    """Commit submitted items in groups of at most `max_batch` with `commit(items) -> results`.

    `commit` runs in a worker thread and returns one result per item, in order. When it raises,
    every submitter of that group gets `on_error(error)` (the error itself by default).
    """

    def __init__(
        self,
        commit: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int,
        on_error: Callable[[Exception], BaseException] = lambda error: error,
        stage: str | None = None,
    ) -> None:
        """Group items for `commit`; `max_batch` bounds one commit's size; `stage` names the
        pipeline stage each commit is recorded as (None: not recorded)."""
        self._commit = commit
        self._max_batch = max_batch
        self._on_error = on_error
        self._stage = stage
        self._pending: list[_Waiter[T, R]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Commit `item` with whatever else is waiting; return its result once durable."""
        loop = asyncio.get_running_loop()
        if self._flusher is not None and self._flusher.get_loop() is not loop:
            # A server restarted on a new event loop: the old loop's flusher and waiters are
            # gone with it, and would otherwise keep this one from ever flushing.
            self._flusher = None
            self._pending = [w for w in self._pending if w.future.get_loop() is loop]
        waiter: _Waiter[T, R] = _Waiter(item, loop.create_future())
        self._pending.append(waiter)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await waiter.future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._commit_recorded([w.item for w in batch])
            except Exception as error:
                failure = self._on_error(error)
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(failure)
                continue
            for w, result in zip(batch, results, strict=True):
                if not w.future.done():
                    w.future.set_result(result)

    async def _commit_recorded(self, items: list[T]) -> Sequence[R]:
        if self._stage is None:
            return await asyncio.to_thread(self._commit, items)
        # A root span: the group serves many callers, not the one whose call started the flusher.
        with active_telemetry().stage(self._stage, items=len(items), root=True):
            return await asyncio.to_thread(self._commit, items)
