"""Make the shared catalogue test data importable as `tests.catalog.catalog_testdata`.

Tests run with --import-mode=importlib, which puts no test directory on sys.path; the repository
root is added so the helper module resolves the same way for pytest and for mypy.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
