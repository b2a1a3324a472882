"""Every float setting of credex.toml refuses nan and inf, naming its key: nan passes any
`<=` range check and inf never elapses, so either would silently stop what the interval runs
(a lifecycle scan, a push pass, a checkpoint group)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.config import parse_config
from node.errors import ConfigError

BASE = '[node]\nid = "market"\nrole = "department"\n'
FLOATS = [
    ("log", "checkpoint_interval_s"),
    ("lifecycle", "scan_interval_s"),
    ("lifecycle", "withdrawal_push_interval_s"),
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize(("section", "key"), FLOATS)
def test_non_finite_values_are_refused(tmp_path: Path, section: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"[{section}] {key} = ")) as caught:
        parse_config(f"{BASE}[{section}]\n{key} = {value}\n", home=tmp_path)
    assert "finite" in str(caught.value)


@pytest.mark.parametrize(("section", "key"), FLOATS)
def test_finite_values_in_range_still_load(tmp_path: Path, section: str, key: str) -> None:
    config = parse_config(f"{BASE}[{section}]\n{key} = 0.5\n", home=tmp_path)
    assert getattr(getattr(config, section), key) == 0.5
