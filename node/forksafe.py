"""Forking without ever freeing, in the child, what the parent made.

A forked child has only the forking thread. Freeing an inherited object of a library that keeps
threads of its own (a gRPC channel left by earlier calls) crashed such a child. The pattern the
gc module documents for fork avoids it: collect in the parent and fork with automatic
collection off (`fork_window`); the child then freezes everything it inherited before it
collects anything (`set_inherited_aside`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["fork_window", "set_inherited_aside"]


@contextmanager
def fork_window() -> Iterator[None]:
    """Collect now, then keep automatic collection off while the body forks."""
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def set_inherited_aside() -> None:
    """In a child forked inside `fork_window`, first thing: never collect what it inherited;
    collect what it makes itself as usual."""
    gc.freeze()
    gc.enable()
