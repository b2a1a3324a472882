"""Which pytest-xdist worker this process is, for what the workers would otherwise share.

`make unit` runs the suite on several worker processes (pytest-xdist). Everything a test makes
under `tmp_path` or on a port a server binds at once (port 0) is its own already. Not so: a
name on the shared PostgreSQL and MariaDB servers, so those names carry the worker's tag; and
the ports LocalCluster writes into a node's config before the node binds them, so each worker
takes them from its own range (`node.cluster.free_port`).
"""

from __future__ import annotations

import os


def worker_tag() -> str:
    """This process's xdist worker id ("gw0", "gw1" ...), or "main" when xdist is not running
    it (`-n 0`, `-p no:xdist`). A plain function rather than xdist's `worker_id` fixture, so
    module-scoped fixtures and the suite without xdist can use it too."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


# Below Linux's ephemeral range (32768-60999), so no outgoing connection takes one either.
_CLUSTER_PORTS = (20000, 32767)


def worker_port_range() -> str:
    """This worker's share of the cluster ports, `FIRST-LAST` (node.cluster.PORTS_ENV): the
    range split evenly between the workers, so that no two hand out the same port."""
    first, last = _CLUSTER_PORTS
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    tag = worker_tag()
    index = int(tag[2:]) if tag.startswith("gw") and tag[2:].isdigit() else 0
    span = (last - first + 1) // count
    start = first + (index % count) * span
    return f"{start}-{start + span - 1}"
