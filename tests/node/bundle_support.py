"""A platform and a department that trust the same bundle: what the bundle install, freeze and
root rotation tests start from (docs/keys.md, "Trust bundle")."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import catalog
import keys
from node.bundles import sign_bundle_spec
from node.cli.init_cmds import init_node
from node.runtime import ROOT_PUB, install_bundle


def bundle_spec(homes: dict[str, Path], version: int, **changes: Any) -> dict[str, Any]:
    """The bundle spec of the nodes in `homes` (name to home; "platform" is the platform, every
    other node a department) at `version`, valid 30 days, with no agreements; `changes`
    replace top-level keys."""
    roster = [
        {
            "node_id": name,
            "name": name,
            "roles": ["platform" if name == "platform" else "department"],
            "endpoint": f"127.0.0.1:{7700 + i}",
            "identity": keys.public_identity(keys.load_key_dir(home / "keys")),
        }
        for i, (name, home) in enumerate(sorted(homes.items()))
    ]
    return {
        "version": version,
        "catalog_version": catalog.default_catalog().version,
        "valid_days": 30,
        "node": roster,
        "agreement": [],
        **changes,
    }


def pinned_platform_and_market(root: Path, *, now: dt.datetime) -> dict[str, Path]:
    """Initialise `root/platform` (the platform) and `root/market` (a department), pin the
    platform's root on the market and install bundle v1, signed at `now`, on both. Returns
    the homes by name. Key generation is the slow part: make this once per module and copy
    it with `copy_homes`."""
    platform, market = root / "platform", root / "market"
    init_node(platform, name="platform", role="platform")
    init_node(market, name="market", role="department")
    homes = {"platform": platform, "market": market}
    _, raw = sign_bundle_spec(platform, bundle_spec(homes, 1), now=now)
    install_bundle(platform / "trust", raw, now=now)
    shutil.copyfile(platform / "trust" / ROOT_PUB, market / "trust" / ROOT_PUB)
    install_bundle(market / "trust", raw, now=now)
    return homes


def copy_homes(made: Path, into: Path) -> dict[str, Path]:
    """A private copy (links kept as links) of the homes `pinned_platform_and_market` made
    under `made`, so a test may change its nodes without touching the others'."""
    out = {}
    for name in ("platform", "market"):
        out[name] = into / name
        shutil.copytree(made / name, out[name], symlinks=True)
    return out
