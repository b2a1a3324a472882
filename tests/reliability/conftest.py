"""Shared pieces of the reliability suite: the kill counter and its report.

Every test that kills a process with SIGKILL counts it through the `kills` fixture; at the end of
the session the totals go to bench/out/reliability.json and into one summary line
(`reliability: N kill -9 ...`) of the pytest report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

OUT = Path(__file__).resolve().parents[2] / "bench" / "out" / "reliability.json"
_TOTALS: Counter[str] = Counter()


class KillCounter:
    """Counts kill -9 by the scenario they interrupted."""

    def add(self, scenario: str, n: int = 1) -> None:
        _TOTALS[scenario] += n

    def total(self) -> int:
        return sum(_TOTALS.values())


@pytest.fixture(scope="session")
def kills() -> Iterator[KillCounter]:
    counter = KillCounter()
    yield counter
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"kill_9_total": counter.total(), "by_scenario": dict(_TOTALS)}, indent=1)
        + "\n",
        encoding="utf-8",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TOTALS:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(_TOTALS.items()))
        terminalreporter.write_line(
            f"reliability: {sum(_TOTALS.values())} kill -9 ({detail}); see {OUT}"
        )
