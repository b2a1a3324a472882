"""`credex bundle sign|install|show|pin|rotate-root`: the district's signed trust bundle.

The platform signs (`sign`) a spec listing the roster and the sharing agreements; every node
pins the platform root once (`pin`) and installs each new bundle (`install`), which refuses a
wrong signature, an expired bundle and a rollback to an older version.

`sign` installs the new bundle on the platform before it writes the output file, and writes it
atomically (temporary file, then rename): a bundle the platform itself refuses (a re-signed
version that differs from the installed one) never lands on disk for someone to send out.
A malformed spec exits 2 (BundleSpecError); a refused signature, rollback or expiry exits 3.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from node.cli import app
from node.cli.common import HomeOption, JsonOption, console, print_json, resolve_home
from node.cli.init_cmds import PassphraseFileOption, node_passphrase
from node.durable import fill_new_file, replace_file, staged_file
from node.errors import BundleSpecError, InputError, NodeError

bundle_app = typer.Typer(help="Sign, install and show the trust bundle.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


def _trust_dir(home: Path | None) -> Path:
    from node.config import load_config

    return load_config(resolve_home(home)).home / "trust"


def _stage(target: Path, raw: bytes) -> Path:
    """Write `raw` to a temporary file beside `target` (0600) and return its path.

    Done before the bundle is installed, so an output directory that is missing or not
    writable is refused (InputError naming --output) while nothing has changed yet.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"--output {target}: cannot write there ({reason})") from None
    try:
        fill_new_file(fd, Path(name), raw)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise NodeError(f"--output {target}: cannot write the bundle ({reason})") from None
    return Path(name)


def _check_output_dir(directory: Path) -> None:
    """Refuse (InputError naming --output-dir) a directory that is missing or where no file
    can be created, by creating and removing one."""
    if not directory.is_dir():
        raise InputError(
            f"--output-dir {directory}: not a directory; create it or name another "
            "(nothing has changed)"
        )
    try:
        fd, name = tempfile.mkstemp(prefix=".credex-check.", suffix=".tmp", dir=directory)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(
            f"--output-dir {directory}: cannot write there ({reason}); name a writable "
            "directory (nothing has changed)"
        ) from None
    os.close(fd)
    Path(name).unlink(missing_ok=True)


@bundle_app.command("sign")
def sign_command(
    spec: Annotated[
        Path, typer.Argument(help="bundle.toml (or .json) listing roster and agreements.")
    ],
    home: HomeOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Where to write the signed bundle.")
    ] = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign a bundle with the platform root and install it on the platform itself.

    The bundle is written to --output only once the platform has installed it; a malformed
    spec is refused (exit 2), and so is a bundle the platform refuses (exit 3), with nothing
    written in either case.
    """
    import keys
    from node.bundles import read_bundle_spec, sign_bundle_spec
    from node.config import load_config
    from node.runtime import BUNDLE_FILE, install_bundle, utc_now

    config = load_config(resolve_home(home))
    passphrase = node_passphrase(passphrase_file)
    document = read_bundle_spec(spec)
    now = utc_now()
    try:
        bundle, raw = sign_bundle_spec(config.home, document, now=now, passphrase=passphrase)
    except keys.BundleError as error:
        # Every BundleError here comes from building the bundle out of the spec: the
        # operator's input, not a verification failure.
        raise BundleSpecError(f"{spec}: {error}") from None
    target = output or (config.home / "trust" / f"bundle-v{bundle.version}.json")
    if target.is_dir():
        raise InputError(f"--output {target}: is a directory; name the file to write")
    staged = _stage(target, raw)
    try:
        install_bundle(config.home / "trust", raw, now=now)
        try:
            staged.replace(target)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise NodeError(
                f"{target}: installed v{bundle.version} but cannot write the file ({reason}); "
                f"copy {config.home / 'trust' / BUNDLE_FILE} instead"
            ) from None
    finally:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)  # already gone after a successful rename
    info = {
        "version": bundle.version,
        "expires_at": bundle.expires_at.isoformat(),
        "roster": [e.node_id for e in bundle.roster],
        "agreements": len(bundle.agreements),
        "output": str(target),
    }
    if as_json:
        print_json(info)
        return
    console.print(
        f"signed trust bundle v{bundle.version} ({len(bundle.roster)} nodes, "
        f"{len(bundle.agreements)} agreements), valid until {info['expires_at']}: "
        f"{escape(str(target))}"
    )


RotationOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--root-rotation",
        help="A root rotation statement from the platform, to follow before installing a "
        "bundle signed by its new root (repeat, oldest first; ones followed already are "
        "skipped).",
    ),
]


def _read_rotations(files: list[Path] | None) -> list[bytes]:
    """The rotation statements in `files`, each checked to be one (InputError names the file
    that is not); their signatures are checked when they are followed."""
    import keys

    out: list[bytes] = []
    for path in files or ():
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise InputError(f"{path}: cannot read ({error.strerror})") from None
        try:
            keys.rotation_new_root(raw)
        except keys.BundleError as error:
            raise InputError(f"{path}: {error}") from None
        out.append(raw)
    return out


def _check_bundle_shape(path: Path, raw: bytes) -> None:
    """Refuse (InputError, exit 2) a file that is not a signed trust bundle at all: the wrong
    file given is the operator's mistake, not tampering. Its signature, version and expiry
    are checked when it is installed (exit 3 when they fail)."""
    import keys

    try:
        envelope = keys.Envelope.from_json(raw)
    except keys.VerificationError:
        raise InputError(f"{path}: not a trust bundle (not a DSSE envelope in JSON)") from None
    if envelope.payload_type != keys.BUNDLE_PAYLOAD_TYPE:
        raise InputError(
            f"{path}: not a trust bundle (a signed {envelope.payload_type[:60]!r} document)"
        )


@bundle_app.command("install")
def install_command(
    bundle_file: Annotated[Path, typer.Argument(help="A signed bundle from the platform.")],
    home: HomeOption = None,
    root_rotation: RotationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a signed bundle against the pinned root and make it this node's bundle.

    With --root-rotation, first follow the platform's new root: the bundle must verify under
    it, or nothing is installed."""
    import keys
    from node.runtime import install_bundle, read_pinned_root, utc_now

    rotations = _read_rotations(root_rotation)
    try:
        raw = bundle_file.read_bytes()
    except OSError as error:
        raise InputError(f"{bundle_file}: cannot read ({error.strerror})") from None
    _check_bundle_shape(bundle_file, raw)
    trust = _trust_dir(home)
    bundle = install_bundle(trust, raw, now=utc_now(), rotations=rotations)
    root = keys.keyid(read_pinned_root(trust))
    if as_json:
        print_json(
            {
                "version": bundle.version,
                "expires_at": bundle.expires_at.isoformat(),
                "root_keyid": root,
            }
        )
        return
    console.print(f"installed trust bundle v{bundle.version} (platform root {root})")


@bundle_app.command("rotate-root")
def rotate_root_command(
    spec: Annotated[
        Path,
        typer.Argument(help="bundle.toml (or .json) of the first bundle of the new root."),
    ],
    home: HomeOption = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", help="Where to write the rotation and the bundle (default trust/)."
        ),
    ] = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replace the platform root key (platform only): sign the rotation with the old root
    and the new one, sign SPEC's bundle with the new root, install both here.

    Send both files to every node: `credex bundle install BUNDLE --root-rotation ROTATION`.
    The old root key is deleted once the new one is in place. A malformed spec is refused
    (exit 2), and so is a bundle the platform refuses (exit 3), or an --output-dir that is
    missing or not writable (exit 2), with nothing changed.
    """
    import keys
    from node.bundles import read_bundle_spec, rotate_root
    from node.config import load_config
    from node.runtime import BUNDLE_FILE, ROTATIONS_DIR, read_pinned_root, utc_now

    config = load_config(resolve_home(home))
    passphrase = node_passphrase(passphrase_file)
    document = read_bundle_spec(spec)
    directory = output_dir or (config.home / "trust")
    # checked now: once rotate_root returns, the old root key is gone
    _check_output_dir(directory)
    try:
        bundle, raw, rotation = rotate_root(
            config.home, document, now=utc_now(), passphrase=passphrase
        )
    except BundleSpecError as error:
        raise BundleSpecError(f"{spec}: {error}") from None
    root = keys.keyid(read_pinned_root(config.home / "trust"))
    rotation_file = directory / f"root-rotation-{root}.json"
    bundle_file = directory / f"bundle-v{bundle.version}.json"
    try:
        for target, data in ((rotation_file, rotation), (bundle_file, raw)):
            staged = staged_file(target, data)
            try:
                staged.replace(target)
            finally:
                with contextlib.suppress(OSError):
                    staged.unlink(missing_ok=True)  # already gone after a successful rename
    except OSError as error:
        reason = error.strerror or type(error).__name__
        trust = config.home / "trust"
        raise NodeError(
            f"{directory}: the new root {root} is in place but the rotation and the bundle "
            f"cannot be written there ({reason}); send every node the newest file of "
            f"{trust / ROTATIONS_DIR}/ (the rotation) and {trust / BUNDLE_FILE} (the bundle "
            f"v{bundle.version}) instead, and back up the new root key now "
            "(credex backup --include-keys)"
        ) from None
    backup = "credex backup --include-keys"
    if as_json:
        print_json(
            {
                "root_keyid": root,
                "version": bundle.version,
                "rotation": str(rotation_file),
                "bundle": str(bundle_file),
                "next": [backup, "credex bundle install BUNDLE --root-rotation ROTATION"],
            }
        )
        return
    console.print(
        f"new platform root {root}; trust bundle v{bundle.version} signed by it. The old root "
        "key is deleted and earlier key backups hold only it:\n"
        f"1. back up the new root key now: {backup} (kept offline)\n"
        f"2. send both files to every node: credex bundle install {escape(str(bundle_file))} "
        f"--root-rotation {escape(str(rotation_file))}"
    )


@bundle_app.command("pin")
def pin_command(
    root_pub: Annotated[Path, typer.Argument(help="The platform's trust/root.pub.")],
    home: HomeOption = None,
) -> None:
    """Pin the platform root key (once, when the node joins the district)."""
    from node.runtime import ROOT_PUB

    trust = _trust_dir(home)
    target = trust / ROOT_PUB
    try:
        raw = root_pub.read_bytes()
    except OSError as error:
        raise InputError(f"{root_pub}: cannot read ({error.strerror})") from None
    try:
        text = raw.decode("ascii").strip()
        if len(base64.b64decode(text, validate=True)) != 32:
            raise ValueError
    except (UnicodeDecodeError, binascii.Error, ValueError):
        raise InputError(f"{root_pub}: not a base64 Ed25519 public key") from None
    try:
        pinned: str | None = target.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pinned = None
    except (OSError, UnicodeDecodeError):
        # Never re-pinned over: which root it held is unknown, and another one would let
        # whoever hands over the file choose this node's trust.
        raise InputError(
            f"{target}: damaged (not a base64 key); restore it from a backup, or remove it "
            "if you are sure this node never pinned another root, and pin again"
        ) from None
    if pinned is not None and pinned != text:
        raise InputError(
            f"{target}: a different root is already pinned; a root change needs a rotation "
            "signed by the old root (trust/rotations/)"
        )
    trust.mkdir(mode=0o700, parents=True, exist_ok=True)
    # whole and durable, like every trust file: half a key would read as another root
    replace_file(target, f"{text}\n".encode("ascii"))
    console.print(f"pinned platform root {text[:12]}...")


@bundle_app.command("show")
def show_command(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show the installed bundle: version, validity, roster, agreements, revocations."""
    from node.runtime import BUNDLE_FILE, load_bundle, utc_now

    trust = _trust_dir(home)
    bundle = load_bundle(trust, now=utc_now())
    if as_json:
        print_json(
            {
                "version": bundle.version,
                "issued_at": bundle.issued_at.isoformat(),
                "expires_at": bundle.expires_at.isoformat(),
                "catalog_version": bundle.catalog_version,
                "file": str(trust / BUNDLE_FILE),
                "roster": [
                    {
                        "node_id": e.node_id,
                        "name": e.name,
                        "roles": sorted(e.roles),
                        "endpoint": e.endpoint,
                        "keyid": e.keyid,
                        "tls_fingerprint": e.tls_fingerprint,
                        "valid_until": e.valid_until.isoformat(),
                    }
                    for e in bundle.roster
                ],
                "agreements": [
                    {
                        "provider": a.provider,
                        "consumer": a.consumer,
                        "kind": a.kind,
                        "items": sorted(a.items),
                        "purposes": sorted(a.purposes),
                    }
                    for a in bundle.agreements
                ],
                "revoked_keyids": sorted(bundle.revoked_keyids),
                "revoked_grants": sorted(bundle.revoked_grants),
            }
        )
        return
    console.print(
        f"trust bundle v{bundle.version}, catalogue {escape(bundle.catalog_version)}, "
        f"valid until {bundle.expires_at.isoformat()}"
    )
    roster = Table(title="roster")
    for column in ("node", "roles", "endpoint", "keyid", "valid until"):
        roster.add_column(column)
    for e in bundle.roster:
        roster.add_row(
            escape(e.node_id),
            escape(",".join(sorted(e.roles))),
            escape(e.endpoint),
            escape(e.keyid),
            e.valid_until.date().isoformat(),
        )
    console.print(roster)
    agreements = Table(title="sharing agreements")
    for column in ("provider", "consumer", "kind", "items", "purposes"):
        agreements.add_column(column)
    for a in bundle.agreements:
        agreements.add_row(
            escape(a.provider),
            escape(a.consumer),
            escape(a.kind),
            escape(", ".join(sorted(a.items))),
            escape(", ".join(sorted(a.purposes))),
        )
    console.print(agreements)
    if bundle.revoked_keyids or bundle.revoked_grants:
        console.print(
            f"revoked keys: {', '.join(sorted(bundle.revoked_keyids)) or '-'}; "
            f"revoked grants: {', '.join(sorted(bundle.revoked_grants)) or '-'}",
            markup=False,
        )
