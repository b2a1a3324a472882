"""Forked test children that never collect what they inherited from the pytest process.

The pytest process has made gRPC calls by the time these tests run; a forked child that frees
an inherited object of such a library (whose threads the fork does not copy) may crash, which a
kill test would then misread. node/sealer.py protects its workers the same way.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

_CTX = multiprocessing.get_context("fork")


def start_forked(
    target: Callable[..., None], args: tuple[Any, ...], *, daemon: bool
) -> BaseProcess:
    """Fork a child running `target(*args)`; it sets aside everything it inherited."""
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        child = _CTX.Process(target=_run_frozen, args=(target, *args), daemon=daemon)
        child.start()
    finally:
        if collecting:
            gc.enable()
    return child


def _run_frozen(target: Callable[..., None], *args: Any) -> None:
    gc.freeze()
    gc.enable()
    target(*args)
