"""read_bundle_spec: a [[node]] may name the `credex keys show --json` file it was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.bundles import read_bundle_spec
from node.errors import InputError

SPEC = """version = 1
catalog_version = "2026.1"
valid_days = 30
[[node]]
node_id = "market"
name = "market"
roles = ["department"]
endpoint = "127.0.0.1:7443"
identity_file = "market.json"
"""


def test_identity_file_is_read_beside_the_spec(tmp_path: Path) -> None:
    identity = {"node_id": "market", "signing_key": "AAAA", "keyid": "00"}
    (tmp_path / "market.json").write_text(json.dumps(identity), encoding="utf-8")
    (tmp_path / "bundle.toml").write_text(SPEC, encoding="utf-8")
    spec = read_bundle_spec(tmp_path / "bundle.toml")
    (node,) = spec["node"]
    assert node["identity"] == identity
    assert "identity_file" not in node


@pytest.mark.parametrize(
    ("files", "extra", "words"),
    [
        ({}, "", "cannot read"),
        ({"market.json": "{not json"}, "", "is not the JSON of `credex keys show --json`"),
        ({"market.json": "{}"}, 'identity = { node_id = "market" }\n', "not both"),
    ],
)
def test_a_bad_identity_file_is_named(
    tmp_path: Path, files: dict[str, str], extra: str, words: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "bundle.toml").write_text(SPEC + extra, encoding="utf-8")
    with pytest.raises(InputError, match=r"node\[0\]\.identity_file") as caught:
        read_bundle_spec(tmp_path / "bundle.toml")
    assert words in str(caught.value)
