"""docs/compliance-matrix.md names, for each rule, the test that enforces it: every file and
test function it names must exist, or the matrix promises a check nobody runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "docs" / "compliance-matrix.md"
# `tests/x/test_y.py`, `tests/x/test_y.py::test_name`, or `::test_name` (same file as before)
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def _references() -> list[tuple[int, str, str | None]]:
    found: list[tuple[int, str, str | None]] = []
    for number, line in enumerate(MATRIX.read_text(encoding="utf-8").splitlines(), start=1):
        current: str | None = None
        for match in _REFERENCE.finditer(line):
            path, name = match.group(1), match.group(2)
            current = path or current
            if current is not None and (path or name):
                found.append((number, current, name))
    return found


def test_every_test_the_matrix_names_exists() -> None:
    references = _references()
    assert len(references) > 50  # the matrix is read, not silently skipped
    missing = []
    for number, path, name in references:
        source = ROOT / path
        if not source.is_file():
            missing.append(f"line {number}: no file {path}")
        elif name is not None and not re.search(
            rf"^(async )?def {name}\(", source.read_text(encoding="utf-8"), re.MULTILINE
        ):
            missing.append(f"line {number}: no test {name} in {path}")
    assert missing == []
