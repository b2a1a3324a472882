"""Run every benchmark under bench/ and print one table of figures beside their limits.

Each benchmark prints lines of the form

    BENCH <area> <name> <value> <unit> <limit-name> <limit-value>

where the limit is the rate of the part underneath (raw SQLite insert, PyNaCl sign, a bare gRPC
stream ...) measured in the same run. This script collects them, prints a rich table with the
ratio, and writes the same table as Markdown to bench/out/results.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py"}


@dataclass(frozen=True)
class Figure:
    """One measured figure and the limit it is compared with."""

    area: str
    name: str
    value: float
    unit: str
    limit_name: str
    limit_value: float

    @property
    def ratio(self) -> str:
        """The figure as a share of its limit, or '-' when there is no comparable limit."""
        if self.limit_value <= 0:
            return "-"
        return f"{self.value / self.limit_value:.0%}"


def parse(line: str) -> Figure | None:
    """Return the figure on a `BENCH ...` line, or None for any other line."""
    parts = line.split()
    if len(parts) != 7 or parts[0] != "BENCH":
        return None
    try:
        return Figure(parts[1], parts[2], float(parts[3]), parts[4], parts[5], float(parts[6]))
    except ValueError:
        return None


def _number(value: float) -> str:
    """Thousands separators for rates, two decimals for small figures such as latencies."""
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.2f}"


def main(argv: list[str]) -> int:
    """Run the benchmarks one after another (`--skip NAME.py` leaves one out); exit 1 if any
    of them failed."""
    skip = set(SKIP)
    for i, arg in enumerate(argv):
        if arg == "--skip" and i + 1 < len(argv):
            skip.add(argv[i + 1])
    console = Console()
    figures: list[Figure] = []
    failed: list[str] = []
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name not in skip and not p.name.startswith("_")
    )
    for script in scripts:
        console.print(f"[bold]running[/] {script.name} ...")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=False
        )
        took = time.monotonic() - started
        if done.returncode != 0:
            failed.append(script.name)
            console.print(
                f"[red]{script.name} failed ({done.returncode})[/]\n{done.stderr[-2000:]}"
            )
            continue
        found = [f for f in (parse(line) for line in done.stdout.splitlines()) if f]
        figures.extend(found)
        console.print(f"  {len(found)} figures in {took:.1f} s")

    table = Table(title="credex benchmarks (same machine, one run)")
    for column in ("area", "figure", "value", "unit", "limit underneath", "limit", "ratio"):
        table.add_column(column)
    rows = []
    for f in figures:
        row = (
            f.area,
            f.name,
            _number(f.value),
            f.unit,
            f.limit_name,
            _number(f.limit_value),
            f.ratio,
        )
        rows.append(row)
        table.add_row(*row)
    console.print(table)

    out = HERE / "out"
    out.mkdir(exist_ok=True)
    lines = [
        "| area | figure | value | unit | limit underneath | limit | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
