"""The platform's side of the trust bundle: read a bundle spec, sign it with the root key.

A spec is the human-edited `bundle.toml` (or the same document as JSON, which scripts write):
version, validity, catalogue version, revoked key and grant ids, `[[node]]` roster entries
(each with the node's `credex keys show --json` output as its `identity`) and `[[agreement]]`
tables. `keys.bundle_from_config` turns it into a TrustBundle; this module only does the IO.

Root rotation (`rotate_root`): the platform makes a new root key beside the old one
(`trust/root.next/`), has the old root and the new one sign the rotation statement, signs the
spec's bundle with the new root and installs both on itself (`node.runtime.install_bundle`),
and only then puts the new key in `trust/root/` and deletes the old one. A crash at any step
is finished or undone by the next `root_signer`: a new key whose rotation the platform already
follows takes its place; one it does not follow was never published and is removed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keys
from node.durable import fsync_dir
from node.errors import BundleSpecError, InputError
from node.runtime import ROOT_FOLLOWED_FILE, ROTATIONS_DIR, install_bundle, read_pinned_root

ROOT_KEY_DIR = ("trust", "root")
NEXT_ROOT_DIR = "root.next"
NEXT_ROOT_TMP = "root.next.tmp"
RETIRED_ROOT_PREFIX = "root.retired-"


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
    """The platform root signer kept in `trust/root/` (KeyFileError when it is not there),
    after finishing or undoing a root rotation that stopped half way (module docstring)."""
    root_dir = platform_home.joinpath(*ROOT_KEY_DIR)
    _settle_rotation(root_dir, passphrase)
    if not root_dir.is_dir():
        raise InputError(
            f"{root_dir}: no root key here; only the platform node (credex init --role "
            "platform) can sign trust bundles"
        )
    signer: keys.Signer = keys.load_key_dir(root_dir, passphrase=passphrase).signing
    return signer


def _settle_rotation(root_dir: Path, passphrase: bytes | None) -> None:
    """Finish or undo a root rotation that stopped half way (module docstring), and delete
    retired root keys only once the current one and the rotation leading to it are on disk."""
    trust = root_dir.parent
    shutil.rmtree(trust / NEXT_ROOT_TMP, ignore_errors=True)  # a key being made: never used
    next_dir = trust / NEXT_ROOT_DIR
    if next_dir.is_dir():
        followed = read_pinned_root(trust)
        old = (
            keys.load_key_dir(root_dir, passphrase=passphrase).signing
            if root_dir.is_dir()
            else None
        )
        if old is not None and old.public_key == followed:
            shutil.rmtree(next_dir)  # its rotation was never installed, so never sent out
        else:
            new = keys.load_key_dir(next_dir, passphrase=passphrase).signing
            if new.public_key != followed:
                raise InputError(
                    f"{trust}: this platform follows root {keys.keyid(followed)}, but neither "
                    f"{root_dir} nor {next_dir} holds it; restore the key directory of that "
                    "root from a backup (credex backup --include-keys)"
                )
            if old is not None:
                root_dir.rename(trust / f"{RETIRED_ROOT_PREFIX}{old.keyid}")
            next_dir.rename(root_dir)
    # The rotation statement is signed: nothing needs the retired key again, and a key that
    # was retired because it leaked must not stay usable here.
    retired = [p for p in trust.glob(f"{RETIRED_ROOT_PREFIX}*") if p.is_dir()]
    if retired and root_dir.is_dir():
        # Durable first: a power loss after the deletion must not bring back a trust/ where
        # the old key is gone but the rotation, the followed mark or the renames are not.
        _make_durable(trust, root_dir)
        for path in retired:
            shutil.rmtree(path)


def _make_durable(trust: Path, root_dir: Path) -> None:
    """Flush to disk what using the root in `root_dir` needs: the rotation files, the followed
    mark, the key files, and the directory entries (renames included) that hold them."""
    rotations = trust / ROTATIONS_DIR
    files = [*rotations.glob("*.json"), trust / ROOT_FOLLOWED_FILE, *root_dir.iterdir()]
    for path in files:
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for directory in (rotations, root_dir, trust):
        if directory.is_dir():
            fsync_dir(directory)


def rotate_root(
    platform_home: Path,
    spec: Mapping[str, Any],
    *,
    now: dt.datetime,
    passphrase: bytes | None = None,
) -> tuple[keys.TrustBundle, bytes, bytes]:
    """Replace the platform root: a new root key, the rotation statement signed by the old
    root and the new one, and the bundle described by `spec` signed by the new root, both
    installed on the platform before the new key replaces the old one in `trust/root/`.

    Returns the bundle, its DSSE JSON and the rotation statement (both go to every node:
    `credex bundle install BUNDLE --root-rotation ROTATION`). Raises BundleSpecError for a
    malformed spec and keys.BundleError for a bundle the platform refuses (nothing changes in
    either case), InputError when `trust/root/` is not the root this platform follows.
    """
    old = root_signer(platform_home, passphrase=passphrase)
    root_dir = platform_home.joinpath(*ROOT_KEY_DIR)
    trust = root_dir.parent
    followed = read_pinned_root(trust)
    if followed != old.public_key:
        raise InputError(
            f"{root_dir}: holds root {old.keyid}, but this platform follows root "
            f"{keys.keyid(followed)}; restore the key directory of the root it follows"
        )
    node_id = keys.load_key_dir(root_dir, passphrase=passphrase).node_id
    # made aside and renamed: a root.next/ is always a whole key directory
    new = keys.create_key_dir(
        trust / NEXT_ROOT_TMP, node_id=node_id, passphrase=passphrase, now=now
    ).signing
    (trust / NEXT_ROOT_TMP).rename(trust / NEXT_ROOT_DIR)
    try:
        rotation = keys.sign_root_rotation(old, new, now=now)
        try:
            bundle = keys.bundle_from_config(spec, root_keyid=new.keyid, now=now)
        except keys.BundleError as error:
            raise BundleSpecError(str(error)) from None
        raw = keys.sign_bundle(bundle, new)
        install_bundle(trust, raw, now=now, rotations=[rotation])
    except BaseException:
        if read_pinned_root(trust) != new.public_key:
            shutil.rmtree(trust / NEXT_ROOT_DIR, ignore_errors=True)
        raise
    _settle_rotation(root_dir, passphrase)
    return bundle, raw, rotation


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
