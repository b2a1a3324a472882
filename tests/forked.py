"""Forked test children that never free what they inherited from the pytest process.

The pytest process has made gRPC calls by the time these tests run; a forked child that frees
an inherited object of such a library may crash, which a kill test would then misread. The
sealer's workers are forked the same way (node/forksafe.py).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from node.forksafe import fork_window, set_inherited_aside

_CTX = multiprocessing.get_context("fork")


def start_forked(
    target: Callable[..., None], args: tuple[Any, ...], *, daemon: bool
) -> BaseProcess:
    """Fork a child running `target(*args)`; it sets aside everything it inherited."""
    with fork_window():
        child = _CTX.Process(target=_run_set_aside, args=(target, *args), daemon=daemon)
        child.start()
    return child


def _run_set_aside(target: Callable[..., None], *args: Any) -> None:
    set_inherited_aside()
    target(*args)
