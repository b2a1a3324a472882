"""The platform's side of the trust bundle: read a bundle spec, sign it with the root key.

A spec is the human-edited `bundle.toml` (or the same document as JSON, which scripts write):
version, validity, catalogue version, revoked key and grant ids, `[[node]]` roster entries
(each with the node's `credex keys show --json` output as its `identity`) and `[[agreement]]`
tables. `keys.bundle_from_config` turns it into a TrustBundle; this module only does the IO.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keys
from node.errors import InputError

ROOT_KEY_DIR = ("trust", "root")


def read_bundle_spec(path: Path) -> dict[str, Any]:
    """Parse a bundle spec (`.toml`, or `.json`); InputError names the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read the bundle spec ({error.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a valid bundle spec ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the bundle spec must be a table")
    nodes = data.get("node", [])
    for i, node in enumerate(nodes if isinstance(nodes, list) else []):
        if isinstance(node, dict) and "identity_file" in node:
            node["identity"] = _identity_file(path, i, node.pop("identity_file"), node)
    return data


def _identity_file(spec: Path, index: int, name: object, node: Mapping[str, Any]) -> Any:
    """The `credex keys show --json` output a `[[node]]` names by `identity_file` (a path
    relative to the spec), so the operator saves what the node sent instead of retyping it."""
    where = f"{spec}: node[{index}].identity_file"
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: must be a file name")
    if "identity" in node:
        raise InputError(f"{where}: give identity or identity_file, not both")
    target = spec.parent / name
    try:
        return json.loads(target.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{where}: cannot read {target} ({error.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise InputError(
            f"{where}: {target} is not the JSON of `credex keys show --json`"
        ) from None


def root_signer(platform_home: Path, *, passphrase: bytes | None = None) -> keys.Signer:
    """The platform root signer kept in `trust/root/` (KeyFileError when it is not there)."""
    root_dir = platform_home.joinpath(*ROOT_KEY_DIR)
    if not root_dir.is_dir():
        raise InputError(
            f"{root_dir}: no root key here; only the platform node (credex init --role "
            "platform) can sign trust bundles"
        )
    signer: keys.Signer = keys.load_key_dir(root_dir, passphrase=passphrase).signing
    return signer


def sign_bundle_spec(
    platform_home: Path,
    spec: Mapping[str, Any],
    *,
    now: dt.datetime,
    passphrase: bytes | None = None,
) -> tuple[keys.TrustBundle, bytes]:
    """Build the bundle described by `spec` and sign it with the platform root.

    Returns the bundle and its DSSE JSON bytes; raises keys.BundleError naming a bad key.
    """
    root = root_signer(platform_home, passphrase=passphrase)
    bundle = keys.bundle_from_config(spec, root_keyid=root.keyid, now=now)
    return bundle, keys.sign_bundle(bundle, root)
