"""Files that must survive a crash whole: written beside their target, synced, renamed.

A reader sees the old content or the new, never a part, and once `replace_file` returns the
new content survives a power loss (the file and its directory entry are synced). Temporary
files get names of their own, so two processes writing the same target never collide.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["fill_new_file", "fsync_dir", "publish_new_file", "replace_file", "staged_file"]


def fsync_dir(directory: Path) -> None:
    """Flush `directory`'s entries (files created, renamed or removed in it) to disk; raises
    OSError."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fill_new_file(fd: int, path: Path, data: bytes) -> None:
    """Write `data` to the new file `path`, open as `fd` (closed here), and sync it; on any
    failure remove `path` and raise."""
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def staged_file(target: Path, data: bytes) -> Path:
    """Write `data` to a new temporary file beside `target` (0600, synced) and return its path,
    for the caller to rename onto `target`; raises OSError, leaving no temporary file."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    fill_new_file(fd, Path(name), data)
    return Path(name)


def replace_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (0600) durably (module docstring); raises OSError, leaving
    `path` as it was and no temporary file."""
    tmp = staged_file(path, data)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # the rename itself is durable only once the directory is


def publish_new_file(target: Path, chunks: Iterable[bytes]) -> None:
    """Write `chunks` to the new file `target` (0600) whole or not at all: they go to a
    temporary file beside it, which is synced and then linked in as `target`. Raises
    FileExistsError when `target` exists (it is never replaced, even if it appears while the
    chunks are written), OSError on any other failure, and whatever iterating `chunks` raises;
    in every case no temporary file and no partial `target` is left."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        _link_new(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


# What link() says on a file system without hard links (FAT, some network shares).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def _link_new(tmp: Path, target: Path) -> None:
    """Give the synced file `tmp` the name `target`, refusing (FileExistsError) to replace one.

    link() refuses atomically; where the file system has no hard links, the name is checked
    first and then renamed onto, which could replace a file created in between: there is no
    atomic no-replace rename in the standard library."""
    try:
        os.link(tmp, target)
    except OSError as error:
        if isinstance(error, FileExistsError) or error.errno not in _NO_HARD_LINKS:
            raise
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        tmp.rename(target)
