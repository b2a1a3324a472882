"""Which pytest-xdist worker this process is, for names made on servers the workers share.

`make unit` runs the suite on several worker processes (pytest-xdist). Everything a test makes
under `tmp_path` or on a port it asked the kernel for (port 0) is its own already; what is not
is a name on the shared PostgreSQL and MariaDB servers, so those names carry the worker's tag.
"""

from __future__ import annotations

import os


def worker_tag() -> str:
    """This process's xdist worker id ("gw0", "gw1" ...), or "main" when xdist is not running
    it (`-n 0`, `-p no:xdist`). A plain function rather than xdist's `worker_id` fixture, so
    module-scoped fixtures and the suite without xdist can use it too."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")
