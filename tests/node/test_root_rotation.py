"""Platform root rotation as operators run it: `rotate_root` on the platform, `install_bundle`
with the rotation on the nodes, and the followed-rotations mark that keeps a node from falling
back to a retired root when rotation files disappear or are replaced (docs/keys.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import keys
from node.bundles import (
    NEXT_ROOT_DIR,
    NEXT_ROOT_TMP,
    root_signer,
    rotate_root,
    sign_bundle_spec,
)
from node.errors import ExitCode
from node.runtime import (
    BUNDLE_FILE,
    BUNDLE_VERSION_FILE,
    ROOT_FOLLOWED_FILE,
    ROOT_PUB,
    ROTATIONS_DIR,
    install_bundle,
    load_bundle,
    read_pinned_root,
)
from tests.node.bundle_support import bundle_spec, copy_homes, pinned_platform_and_market

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A platform and a department that pinned its root and installed bundle v1 (made once:
    key generation is the slow part)."""
    root = tmp_path_factory.mktemp("rotation")
    pinned_platform_and_market(root, now=NOW)
    return root


@pytest.fixture
def homes(made: Path, tmp_path: Path) -> dict[str, Path]:
    return copy_homes(made, tmp_path)


def _trust(home: Path) -> Path:
    return home / "trust"


def _snapshot(trust: Path) -> dict[str, bytes]:
    return {str(p.relative_to(trust)): p.read_bytes() for p in trust.rglob("*") if p.is_file()}


def test_root_chain_lists_every_root_and_resolve_root_the_last() -> None:
    first, second, third = (keys.Signer.generate() for _ in range(3))
    one = keys.sign_root_rotation(first, second, now=NOW)
    two = keys.sign_root_rotation(second, third, now=NOW)
    chain = keys.root_chain(first.public_key, [one, two])
    assert chain == (first.public_key, second.public_key, third.public_key)
    assert keys.resolve_root(first.public_key, [one, two]) == third.public_key
    assert keys.rotation_new_root(two) == (second.keyid, third.public_key)
    with pytest.raises(keys.BundleError, match="#2"):
        keys.root_chain(first.public_key, [one, one])
    with pytest.raises(keys.BundleError, match="not a root rotation"):
        keys.rotation_new_root(b'{"payloadType": "x", "payload": "", "signatures": []}')
    with pytest.raises(keys.BundleError, match="not a root rotation"):
        keys.rotation_new_root(b"not json")


def test_rotate_root_replaces_the_key_and_installs_the_new_roots_bundle(
    homes: dict[str, Path],
) -> None:
    platform = homes["platform"]
    old = root_signer(platform)
    bundle, raw, rotation = rotate_root(platform, bundle_spec(homes, 2), now=NOW)
    new = root_signer(platform)
    assert new.keyid != old.keyid
    assert bundle.root_keyid == new.keyid
    assert bundle.version == 2
    assert keys.rotation_new_root(rotation) == (old.keyid, new.public_key)
    trust = _trust(platform)
    assert read_pinned_root(trust) == new.public_key
    assert load_bundle(trust, now=NOW).version == 2
    assert (trust / BUNDLE_FILE).read_bytes() == raw
    # the pin itself is unchanged; the rotation is followed and recorded
    assert [p.read_bytes() for p in (trust / ROTATIONS_DIR).iterdir()] == [rotation]
    assert (trust / ROOT_FOLLOWED_FILE).read_text().split() == ["1", new.public_key.hex()]
    # the retired root is gone from the platform, and no half-made key is left behind
    assert sorted(p.name for p in trust.iterdir() if p.name.startswith("root")) == [
        "root",
        ROOT_FOLLOWED_FILE,
        ROOT_PUB,
    ]


def test_a_refused_spec_changes_nothing(homes: dict[str, Path]) -> None:
    platform = homes["platform"]
    before = _snapshot(_trust(platform))
    # version 1 again (the installed version), so the platform refuses it
    with pytest.raises(keys.BundleError, match="differs from the accepted bundle"):
        rotate_root(platform, bundle_spec(homes, 1), now=NOW)
    assert _snapshot(_trust(platform)) == before
    assert not (_trust(platform) / NEXT_ROOT_DIR).exists()


def test_a_department_follows_the_rotation_with_the_new_bundle(homes: dict[str, Path]) -> None:
    market = _trust(homes["market"])
    _, raw, rotation = rotate_root(homes["platform"], bundle_spec(homes, 2), now=NOW)
    before = _snapshot(market)
    with pytest.raises(keys.BundleError, match="--root-rotation"):
        install_bundle(market, raw, now=NOW)
    assert _snapshot(market) == before  # refused: nothing written
    assert install_bundle(market, raw, now=NOW, rotations=[rotation]).version == 2
    new = root_signer(homes["platform"])
    assert read_pinned_root(market) == new.public_key
    assert (market / ROOT_FOLLOWED_FILE).read_text().split() == ["1", new.public_key.hex()]
    # installing again with the same rotation (a re-run) adds nothing
    install_bundle(market, raw, now=NOW, rotations=[rotation])
    assert len(list((market / ROTATIONS_DIR).iterdir())) == 1


def test_the_retired_root_signs_nothing_a_following_node_accepts(
    homes: dict[str, Path],
) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    old = root_signer(platform)
    _, raw, rotation = rotate_root(platform, bundle_spec(homes, 2), now=NOW)
    install_bundle(market, raw, now=NOW, rotations=[rotation])
    stale = keys.bundle_from_config(bundle_spec(homes, 9), root_keyid=old.keyid, now=NOW)
    with pytest.raises(keys.BundleError, match="follows root"):
        install_bundle(market, keys.sign_bundle(stale, old), now=NOW)


def test_deleting_the_rotation_file_does_not_bring_the_old_root_back(
    homes: dict[str, Path],
) -> None:
    market = _trust(homes["market"])
    _, raw, rotation = rotate_root(homes["platform"], bundle_spec(homes, 2), now=NOW)
    install_bundle(market, raw, now=NOW, rotations=[rotation])
    (file,) = (market / ROTATIONS_DIR).iterdir()
    file.unlink()
    with pytest.raises(keys.BundleError, match="removed or replaced"):
        load_bundle(market, now=NOW)
    with pytest.raises(keys.BundleError, match="removed or replaced"):
        read_pinned_root(market)
    file.write_bytes(rotation)  # restored from a backup
    assert load_bundle(market, now=NOW).version == 2


def test_a_leaked_old_root_cannot_swap_in_its_own_rotation(homes: dict[str, Path]) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    old = root_signer(platform)
    _, raw, rotation = rotate_root(platform, bundle_spec(homes, 2), now=NOW)
    install_bundle(market, raw, now=NOW, rotations=[rotation])
    # whoever holds the retired root makes a rotation to a key of their own and puts it in
    # place of the real one: the chain verifies, but it is not the one this node followed
    evil = keys.Signer.generate()
    (file,) = (market / ROTATIONS_DIR).iterdir()
    file.write_bytes(keys.sign_root_rotation(old, evil, now=NOW))
    forged = keys.bundle_from_config(bundle_spec(homes, 3), root_keyid=evil.keyid, now=NOW)
    (market / BUNDLE_FILE).write_bytes(keys.sign_bundle(forged, evil))
    with pytest.raises(keys.BundleError, match="removed or replaced"):
        load_bundle(market, now=NOW)


def test_a_hand_placed_rotation_is_recorded_at_the_next_load(homes: dict[str, Path]) -> None:
    market = _trust(homes["market"])
    _, raw, rotation = rotate_root(homes["platform"], bundle_spec(homes, 2), now=NOW)
    (market / ROTATIONS_DIR).mkdir()
    (market / ROTATIONS_DIR / "zz-from-the-platform.json").write_bytes(rotation)
    assert not (market / ROOT_FOLLOWED_FILE).exists()
    install_bundle(market, raw, now=NOW)
    new = root_signer(homes["platform"])
    assert (market / ROOT_FOLLOWED_FILE).read_text().split() == ["1", new.public_key.hex()]
    # a second rotation installed by credex sorts after the hand-named file
    _, raw3, rotation2 = rotate_root(homes["platform"], bundle_spec(homes, 3), now=NOW)
    install_bundle(market, raw3, now=NOW, rotations=[rotation, rotation2])
    names = sorted(p.name for p in (market / ROTATIONS_DIR).iterdir())
    assert names[0] == "zz-from-the-platform.json"
    assert len(names) == 2
    assert read_pinned_root(market) == root_signer(homes["platform"]).public_key


def test_a_damaged_mark_fails_closed(homes: dict[str, Path]) -> None:
    market = _trust(homes["market"])
    (market / ROOT_FOLLOWED_FILE).write_text("one root\n")
    with pytest.raises(keys.BundleError, match="damaged"):
        load_bundle(market, now=NOW)


def test_an_offline_node_catches_up_through_two_rotations(homes: dict[str, Path]) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    _, _, first = rotate_root(platform, bundle_spec(homes, 2), now=NOW)
    _, raw, second = rotate_root(platform, bundle_spec(homes, 3), now=NOW)
    before = _snapshot(market)
    with pytest.raises(keys.BundleError, match="continues root"):
        install_bundle(market, raw, now=NOW, rotations=[second, first])
    with pytest.raises(keys.BundleError, match="continues root"):
        install_bundle(market, raw, now=NOW, rotations=[second])
    assert _snapshot(market) == before
    assert install_bundle(market, raw, now=NOW, rotations=[first, second]).version == 3
    assert read_pinned_root(market) == root_signer(platform).public_key
    assert (market / ROOT_FOLLOWED_FILE).read_text().split()[0] == "2"


def test_a_rotation_not_signed_by_the_new_root_is_refused(homes: dict[str, Path]) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    old = root_signer(platform)
    new, other = keys.Signer.generate(), keys.Signer.generate()
    # signed by the old root and by some other key, naming `new`
    good = json.loads(keys.sign_root_rotation(old, new, now=NOW))
    swapped = json.loads(keys.sign_root_rotation(old, other, now=NOW))
    good["signatures"][1] = swapped["signatures"][1]
    forged = json.dumps(good).encode()
    bundle = keys.bundle_from_config(bundle_spec(homes, 2), root_keyid=new.keyid, now=NOW)
    before = _snapshot(market)
    with pytest.raises(keys.BundleError, match="not signed by both"):
        install_bundle(market, keys.sign_bundle(bundle, new), now=NOW, rotations=[forged])
    assert _snapshot(market) == before


@pytest.mark.parametrize("state", ["whole", "empty", "half"])
def test_a_rotation_stopped_before_install_is_undone(homes: dict[str, Path], state: str) -> None:
    platform = homes["platform"]
    trust = _trust(platform)
    old = root_signer(platform)
    if state == "half":  # killed while the new key was being made
        keys.create_key_dir(trust / NEXT_ROOT_TMP, node_id="platform-root", now=NOW)
        (trust / NEXT_ROOT_TMP / "signing.key").unlink()
    else:
        (trust / NEXT_ROOT_DIR).mkdir(mode=0o700)
        if state == "whole":
            keys.create_key_dir(trust / NEXT_ROOT_DIR, node_id="platform-root", now=NOW)
    assert root_signer(platform).keyid == old.keyid
    assert not (trust / NEXT_ROOT_DIR).exists()
    assert not (trust / NEXT_ROOT_TMP).exists()


@pytest.mark.parametrize("moved_old", [False, True], ids=["before-renames", "between-renames"])
def test_a_rotation_stopped_after_install_is_finished(
    homes: dict[str, Path], moved_old: bool
) -> None:
    platform = homes["platform"]
    trust = _trust(platform)
    old = root_signer(platform)
    new = keys.create_key_dir(trust / NEXT_ROOT_DIR, node_id="platform-root", now=NOW).signing
    bundle = keys.bundle_from_config(bundle_spec(homes, 2), root_keyid=new.keyid, now=NOW)
    rotation = keys.sign_root_rotation(old, new, now=NOW)
    install_bundle(trust, keys.sign_bundle(bundle, new), now=NOW, rotations=[rotation])
    if moved_old:
        (trust / "root").rename(trust / f"root.retired-{old.keyid}")
    assert root_signer(platform).keyid == new.keyid
    assert not (trust / NEXT_ROOT_DIR).exists()
    assert not list(trust.glob("root.retired-*"))


def _credex(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run `credex ARGS` in a fresh process, after the Python code `prelude` (a test's patch)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDEX_")}
    env["COLUMNS"] = "300"
    return subprocess.run(
        [sys.executable, "-c", prelude + "from node.cli import main; main()", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


def test_the_cli_rotates_on_the_platform_and_installs_on_a_node(
    homes: dict[str, Path], tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(bundle_spec(homes, 2)), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    done = _credex(
        "bundle", "rotate-root", str(spec), "--home", str(homes["platform"]),
        "--output-dir", str(out), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["root_keyid"] == root_signer(homes["platform"]).keyid
    bundle, rotation = Path(info["bundle"]), Path(info["rotation"])
    assert bundle.parent == out
    assert rotation.parent == out
    # a bundle or a rotation given as the rotation is refused as bad input, naming the file
    bad = _credex(
        "bundle", "install", str(bundle), "--root-rotation", str(bundle),
        "--home", str(homes["market"]),
    )  # fmt: skip
    assert bad.returncode == ExitCode.INPUT, bad.stderr
    assert str(bundle) in " ".join(bad.stderr.split())
    assert "Traceback" not in bad.stderr
    without = _credex("bundle", "install", str(bundle), "--home", str(homes["market"]))
    assert without.returncode == ExitCode.VERIFICATION, without.stderr
    assert "--root-rotation" in " ".join(without.stderr.split())
    ok = _credex(
        "bundle", "install", str(bundle), "--root-rotation", str(rotation),
        "--home", str(homes["market"]),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert info["root_keyid"] in ok.stdout
    assert load_bundle(_trust(homes["market"]), now=dt.datetime.now(dt.UTC)).version == 2


def test_a_node_that_followed_a_root_without_its_bundle_says_what_to_ask_for(
    homes: dict[str, Path],
) -> None:
    market = _trust(homes["market"])
    _, _, rotation = rotate_root(homes["platform"], bundle_spec(homes, 2), now=NOW)
    # as after a crash between writing the rotation and the bundle
    (market / ROTATIONS_DIR).mkdir()
    (market / ROTATIONS_DIR / "0001-new.json").write_bytes(rotation)
    with pytest.raises(keys.BundleError, match=r"rotated past .* bundle of the current root"):
        load_bundle(market, now=NOW)


def test_the_cli_refuses_a_malformed_spec_and_a_refused_bundle_apart(
    homes: dict[str, Path], tmp_path: Path
) -> None:
    platform = homes["platform"]
    before = _snapshot(_trust(platform))
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({**bundle_spec(homes, 2), "valid_days": 0}), encoding="utf-8")
    done = _credex("bundle", "rotate-root", str(malformed), "--home", str(platform))
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert str(malformed) in " ".join(done.stderr.split())
    same_version = tmp_path / "v1.json"
    same_version.write_text(json.dumps(bundle_spec(homes, 1)), encoding="utf-8")
    done = _credex("bundle", "rotate-root", str(same_version), "--home", str(platform))
    assert done.returncode == ExitCode.VERIFICATION, done.stderr
    assert "Traceback" not in done.stderr
    assert _snapshot(_trust(platform)) == before


def test_a_bundle_of_a_retired_root_is_named_as_such(homes: dict[str, Path]) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    old = root_signer(platform)
    _, raw, rotation = rotate_root(platform, bundle_spec(homes, 2), now=NOW)
    install_bundle(market, raw, now=NOW, rotations=[rotation])
    stale = keys.sign_bundle(
        keys.bundle_from_config(bundle_spec(homes, 9), root_keyid=old.keyid, now=NOW), old
    )
    with pytest.raises(keys.BundleError, match="rotated past"):
        install_bundle(market, stale, now=NOW)


def test_a_cycle_back_to_the_current_root_is_refused_truthfully(
    homes: dict[str, Path],
) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    a = root_signer(platform)
    b = keys.Signer.generate()
    there, back = keys.sign_root_rotation(a, b, now=NOW), keys.sign_root_rotation(b, a, now=NOW)
    bundle = keys.sign_bundle(
        keys.bundle_from_config(bundle_spec(homes, 2), root_keyid=a.keyid, now=NOW), a
    )
    # A -> B -> A: the second link leads to a root already in the chain, so it is not
    # followed, and the bundle of A is refused under B (the chain the files would hold)
    before = _snapshot(market)
    with pytest.raises(keys.BundleError, match="rotated past"):
        install_bundle(market, bundle, now=NOW, rotations=[there, back])
    assert _snapshot(market) == before


def test_an_unreadable_rotation_entry_is_named(homes: dict[str, Path]) -> None:
    market = _trust(homes["market"])
    (market / ROTATIONS_DIR / "0001-odd.json").mkdir(parents=True)
    with pytest.raises(keys.BundleError, match=r"0001-odd\.json: cannot read"):
        load_bundle(market, now=NOW)


def test_a_self_rotation_placed_ahead_of_the_real_ones_fails_closed(
    homes: dict[str, Path],
) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    _, raw, rotation = rotate_root(platform, bundle_spec(homes, 2), now=NOW)
    install_bundle(market, raw, now=NOW, rotations=[rotation])
    # only a holder of the new root could sign B -> B; it still breaks the followed chain
    new = root_signer(platform)
    (market / ROTATIONS_DIR / "0000-x.json").write_bytes(keys.sign_root_rotation(new, new, now=NOW))
    with pytest.raises(keys.BundleError):
        load_bundle(market, now=NOW)


@pytest.mark.parametrize("damage", ["deleted", "emptied", "garbled"])
def test_a_lost_version_mark_fails_closed_instead_of_allowing_a_rollback(
    homes: dict[str, Path], damage: str
) -> None:
    market = _trust(homes["market"])
    old_raw = (market / BUNDLE_FILE).read_bytes()  # v1, signed and once accepted
    mark = market / "bundle.version"
    assert mark.read_text().strip() == "1"
    mark.write_text("3\n")  # as after v3 was accepted; v1 is then put back in place
    with pytest.raises(keys.BundleError, match="older than"):
        load_bundle(market, now=NOW)
    # deleting or damaging the mark as well must not make v1 acceptable again
    if damage == "deleted":
        mark.unlink()
    else:
        mark.write_text("" if damage == "emptied" else "three\n")
    with pytest.raises(keys.BundleError, match=r"bundle\.version: (missing|damaged)"):
        load_bundle(market, now=NOW)
    assert (market / BUNDLE_FILE).read_bytes() == old_raw


# ----------------------------------------------------------------------------- trust files


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, int]]) -> None:
    """Append ("fsync-dir" or "fsync-file", inode) to `events` at every os.fsync."""
    real = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        kind = "fsync-dir" if stat.S_ISDIR(info.st_mode) else "fsync-file"
        events.append((kind, info.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_trust_file_write_does_not_collide_on_a_fixed_temporary_name(
    homes: dict[str, Path],
) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    # another process writing the same file holds `<name>.tmp` (a directory here, so a
    # writer that reuses the name fails instead of silently truncating the other's file)
    blockers = sorted(f"{n}.tmp" for n in (BUNDLE_VERSION_FILE, BUNDLE_FILE, ROOT_FOLLOWED_FILE))
    for name in blockers:
        (market / name).mkdir()
    _, raw = sign_bundle_spec(platform, bundle_spec(homes, 2), now=NOW)
    assert install_bundle(market, raw, now=NOW).version == 2
    assert (market / BUNDLE_VERSION_FILE).read_text() == "2\n"
    # the followed mark, written by any process that reads the trust directory
    _, _, rotation = rotate_root(platform, bundle_spec(homes, 3), now=NOW)
    (market / ROTATIONS_DIR).mkdir()
    (market / ROTATIONS_DIR / "0001-by-hand.json").write_bytes(rotation)
    new = read_pinned_root(market)
    assert (market / ROOT_FOLLOWED_FILE).read_text().split() == ["1", new.hex()]
    # no temporary file of its own is left behind
    left = sorted(p.name for p in market.iterdir() if p.name.endswith(".tmp"))
    assert left == blockers


def test_a_trust_file_write_makes_the_rename_durable(
    homes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    _, raw = sign_bundle_spec(platform, bundle_spec(homes, 2), now=NOW)
    events: list[tuple[str, int]] = []
    _record_fsyncs(monkeypatch, events)
    install_bundle(market, raw, now=NOW)
    trust_dir = ("fsync-dir", market.stat().st_ino)
    bundle = ("fsync-file", (market / BUNDLE_FILE).stat().st_ino)
    version = ("fsync-file", (market / BUNDLE_VERSION_FILE).stat().st_ino)
    # each file is synced, renamed, and the rename synced (the directory) before the next
    # (the bundle before its mark: test_bundle_install_crash.py)
    assert events.index(bundle) < events.index(trust_dir) < events.index(version)
    assert events[-2:] == [version, trust_dir]


def test_settling_a_rotation_is_durable_before_the_old_root_is_deleted(
    homes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = homes["platform"]
    trust = _trust(platform)
    old = root_signer(platform)
    new = keys.create_key_dir(trust / NEXT_ROOT_DIR, node_id="platform-root", now=NOW).signing
    bundle = keys.bundle_from_config(bundle_spec(homes, 2), root_keyid=new.keyid, now=NOW)
    rotation = keys.sign_root_rotation(old, new, now=NOW)
    install_bundle(trust, keys.sign_bundle(bundle, new), now=NOW, rotations=[rotation])
    # stopped before the renames: the next root_signer renames and deletes the old key
    events: list[tuple[str, int]] = []
    _record_fsyncs(monkeypatch, events)
    real_rmtree = shutil.rmtree

    def rmtree(path: Path, *args: Any, **kwargs: Any) -> None:
        if Path(path).name.startswith("root.retired-"):
            events.append(("rmtree-retired", 0))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert root_signer(platform).keyid == new.keyid
    deleted = events.index(("rmtree-retired", 0))
    synced_first = events[:deleted]
    for directory in (trust, trust / ROTATIONS_DIR, trust / "root"):
        assert ("fsync-dir", directory.stat().st_ino) in synced_first, directory


def test_a_lost_version_mark_is_rewritten_by_installing_a_newer_bundle(
    homes: dict[str, Path],
) -> None:
    market = _trust(homes["market"])
    (market / BUNDLE_VERSION_FILE).unlink()  # v1 installed
    with pytest.raises(keys.BundleError, match=r"credex bundle install FILE"):
        load_bundle(market, now=NOW)
    _, raw = sign_bundle_spec(homes["platform"], bundle_spec(homes, 2), now=NOW)
    assert install_bundle(market, raw, now=NOW).version == 2
    assert (market / BUNDLE_VERSION_FILE).read_text() == "2\n"
    assert load_bundle(market, now=NOW).version == 2


@pytest.mark.parametrize("damage", ["deleted", "garbled"])
def test_without_its_version_mark_the_installed_bundle_is_the_floor(
    homes: dict[str, Path], damage: str
) -> None:
    platform, market = homes["platform"], _trust(homes["market"])
    v1 = (market / BUNDLE_FILE).read_bytes()
    _, v2 = sign_bundle_spec(platform, bundle_spec(homes, 2), now=NOW)
    install_bundle(market, v2, now=NOW)
    mark = market / BUNDLE_VERSION_FILE
    if damage == "deleted":
        mark.unlink()
    else:
        mark.write_text("two\n")
    before = _snapshot(market)
    with pytest.raises(keys.BundleError, match="older than the current 2"):
        install_bundle(market, v1, now=NOW)
    _, other_v2 = sign_bundle_spec(platform, {**bundle_spec(homes, 2), "valid_days": 20}, now=NOW)
    with pytest.raises(keys.BundleError, match="differs from the accepted bundle"):
        install_bundle(market, other_v2, now=NOW)
    assert _snapshot(market) == before
    # the same bundle again (what the platform sends when it signed nothing newer) restores
    # the mark: it cannot move the node to another bundle
    assert install_bundle(market, v2, now=NOW).version == 2
    assert mark.read_text() == "2\n"
    assert load_bundle(market, now=NOW).version == 2


def test_without_its_version_mark_a_damaged_bundle_gives_no_floor(
    homes: dict[str, Path],
) -> None:
    market = _trust(homes["market"])
    (market / BUNDLE_VERSION_FILE).unlink()
    (market / BUNDLE_FILE).write_text("{}")
    _, raw = sign_bundle_spec(homes["platform"], bundle_spec(homes, 2), now=NOW)
    with pytest.raises(keys.BundleError, match=r"bundle\.json: .*restore"):
        install_bundle(market, raw, now=NOW)


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        out = tmp_path / "read-only"
        out.mkdir(mode=0o500)
        return out
    if not Path("/proc/self").is_dir():
        pytest.skip("running as root without /proc: no directory refuses new files")
    return Path("/proc")  # root may write anywhere else


@pytest.mark.parametrize("problem", ["missing", "unwritable"])
def test_rotate_root_checks_the_output_dir_before_rotating(
    homes: dict[str, Path], tmp_path: Path, problem: str
) -> None:
    platform = homes["platform"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(bundle_spec(homes, 2)), encoding="utf-8")
    out = tmp_path / "absent" if problem == "missing" else _unwritable_dir(tmp_path)
    old = root_signer(platform).keyid
    before = _snapshot(_trust(platform))
    done = _credex(
        "bundle", "rotate-root", str(spec), "--home", str(platform), "--output-dir", str(out),
    )  # fmt: skip
    assert done.returncode == ExitCode.INPUT, done.stderr
    assert f"--output-dir {out}" in " ".join(done.stderr.split())
    assert root_signer(platform).keyid == old
    assert _snapshot(_trust(platform)) == before


def test_rotate_root_says_where_the_files_are_when_it_cannot_write_them(
    homes: dict[str, Path], tmp_path: Path
) -> None:
    platform = homes["platform"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(bundle_spec(homes, 2)), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    old = root_signer(platform).keyid
    # the output directory disappears while the root is being rotated (replaced in node.bundles,
    # where the command imports rotate_root from when it runs)
    prelude = (
        "import shutil\n"
        "import node.bundles as bundles\n"
        "real = bundles.rotate_root\n"
        "def rotate(*args, **kwargs):\n"
        "    result = real(*args, **kwargs)\n"
        f"    shutil.rmtree({str(out)!r})\n"
        "    return result\n"
        "bundles.rotate_root = rotate\n"
    )
    done = _credex(
        "bundle", "rotate-root", str(spec), "--home", str(platform), "--output-dir", str(out),
        prelude=prelude,
    )  # fmt: skip
    assert done.returncode == ExitCode.FAILURE, done.stderr
    message = " ".join(done.stderr.split())
    new = root_signer(platform).keyid
    assert new != old
    assert f"new root {new} is in place" in message
    assert str(_trust(platform) / ROTATIONS_DIR) in message
    assert str(_trust(platform) / BUNDLE_FILE) in message
    assert "Traceback" not in done.stderr
