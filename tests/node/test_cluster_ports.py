"""`free_port`: the ports LocalCluster writes into node configs before the nodes bind them.

Parallel test workers each build clusters; a port asked of the kernel and released can be
handed to another worker (or to this one again) before the first node binds it."""

from __future__ import annotations

import socket

import pytest

from node import cluster
from node.cluster import PORTS_ENV, ClusterError, free_port
from tests.workers import worker_port_range


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "_handed_out", set())


def test_a_port_is_handed_out_once_per_process(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PORTS_ENV, raising=False)
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50


def test_ports_come_from_the_range_and_skip_one_in_use(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        monkeypatch.setenv(PORTS_ENV, f"{taken}-{taken + 40}")
        ports = [free_port() for _ in range(3)]
    assert taken not in ports
    assert all(taken < p <= taken + 40 for p in ports)
    assert len(set(ports)) == 3


def test_an_exhausted_or_malformed_range_is_a_cluster_error(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PORTS_ENV, "24000-24000")
    free_port()
    with pytest.raises(ClusterError, match="no free TCP port"):
        free_port()
    for bad in ("24000", "x-y", "80-90", "30000-20000"):
        monkeypatch.setenv(PORTS_ENV, bad)
        with pytest.raises(ClusterError, match="FIRST-LAST"):
            free_port()


def test_workers_get_ranges_that_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    spans = []
    for n in range(3):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n}")
        first, last = map(int, worker_port_range().split("-"))
        spans.append(range(first, last + 1))
    assert all(len(s) > 4000 for s in spans)
    assert not set(spans[0]) & set(spans[1])
    assert not set(spans[1]) & set(spans[2])
    assert max(s[-1] for s in spans) < 32768  # below the kernel's ephemeral ports
