"""The dependency direction of DESIGN.md section 2, checked on the source tree (AST, no imports).

catalog <- adapters; catalog, keys <- node. Only keys imports nacl (and cryptography, for X.509).
Only the node's store and migrations, and the SQL adapter, import SQLAlchemy/SQLModel/Alembic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("catalog", "keys", "adapters", "node")

FORBIDDEN: dict[str, set[str]] = {
    "catalog": {
        "keys",
        "adapters",
        "node",
        "nacl",
        "cryptography",
        "grpc",
        "sqlalchemy",
        "sqlmodel",
    },
    "keys": {"catalog", "adapters", "node", "grpc", "sqlalchemy", "sqlmodel"},
    "adapters": {"keys", "node", "nacl", "cryptography", "grpc"},
    "node": {"nacl", "cryptography"},
}
SQL_MODULES = {"sqlalchemy", "sqlmodel", "alembic"}
SQL_ALLOWED_PREFIXES = ("node/store", "node/migrations", "adapters/sql")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _sources(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "_pb" not in p.parts]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_follow_the_design(package: str) -> None:
    problems = []
    for path in _sources(package):
        rel = path.relative_to(ROOT).as_posix()
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            problems.append(f"{rel} imports {sorted(bad)}")
        sql = _imports(path) & SQL_MODULES
        if sql and not rel.startswith(SQL_ALLOWED_PREFIXES):
            problems.append(f"{rel} imports {sorted(sql)} (only the store and the SQL adapter may)")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import nacl.signing\nfrom node.store import x\nfrom . import y\n")
    assert _imports(sample) == {"nacl", "node"}
