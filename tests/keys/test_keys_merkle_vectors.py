"""Every RFC 6962 / 9162 vector of transparency-dev/merkle (see vectors/rfc6962/README.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from keys import VerificationError, verify_consistency, verify_inclusion

VECTORS = Path(__file__).parent / "vectors" / "rfc6962" / "testdata"


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b(p) for p in case["proof"] or []]


def test_vector_folders_are_complete() -> None:
    assert len(_cases("inclusion")) > 60
    assert len(_cases("consistency")) > 60


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    args = (case["leafIdx"], case["treeSize"], _b(case["leafHash"]), _proof(case), _b(case["root"]))
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    args = (case["size1"], case["size2"], _b(case["root1"]), _b(case["root2"]), _proof(case))
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)
