"""The trust bundle: building, signing, acceptance, rollback, expiry, rotation, revocation."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import keys
from keys import BundleError, KeysError, TrustBundle

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
ROOT = keys.Signer(b"r" * 32)
NEW_ROOT = keys.Signer(b"n" * 32)
OTHER = keys.Signer(b"o" * 32)


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base: Path = tmp_path_factory.mktemp("ids")
    out = {}
    for node in ("zd-market", "zd-tax", "platform"):
        out[node] = keys.public_identity(keys.create_key_dir(base / node, node_id=node, now=NOW))
    return out


def _config(identities: dict[str, dict[str, Any]], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "version": 3,
        "catalog_version": "2026.1",
        "valid_days": 30,
        "revoked_grants": ["grant-9"],
        "node": [
            {
                "node_id": n,
                "name": n.upper(),
                "roles": ["platform"] if n == "platform" else ["department"],
                "endpoint": f"{n}:7443",
                "identity": ident,
            }
            for n, ident in identities.items()
        ],
        "agreement": [
            {
                "provider": "zd-market",
                "consumer": "zd-tax",
                "items": ["admin_penalty"],
                "purposes": ["tax_collection"],
                "kind": "feed",
            }
        ],
    }
    cfg.update(over)
    return cfg


def _bundle(identities: dict[str, dict[str, Any]], **over: Any) -> TrustBundle:
    return keys.bundle_from_config(_config(identities, **over), root_keyid=ROOT.keyid, now=NOW)


def _accept(raw: bytes, **kw: Any) -> TrustBundle:
    args: dict[str, Any] = {"pinned_root": ROOT.public_key, "current_version": 2, "now": NOW}
    args.update(kw)
    return keys.accept_bundle(raw, **args)


def test_round_trip(identities: dict[str, dict[str, Any]]) -> None:
    bundle = _bundle(identities)
    raw = keys.sign_bundle(bundle, ROOT)
    env = json.loads(raw)
    assert env["payloadType"] == keys.BUNDLE_PAYLOAD_TYPE
    got = _accept(raw)
    assert got == bundle
    assert got.expires_at == NOW + 30 * DAY
    market = got.member("zd-market")
    assert market is not None
    assert market.tls_cert.startswith("-----BEGIN CERTIFICATE-----")
    assert got.member("nobody") is None
    assert got.revoked_grants == frozenset({"grant-9"})
    assert got.agreements[0].items == frozenset({"admin_penalty"})
    assert set(got.trusted_signing_keys(NOW)) == {i["keyid"] for i in identities.values()}
    assert got.owner_of(identities["zd-tax"]["keyid"], NOW) == got.member("zd-tax")


def test_payload_is_canonical(identities: dict[str, dict[str, Any]]) -> None:
    bundle = _bundle(identities)
    assert keys.canonical_json(json.loads(bundle.to_payload())) == bundle.to_payload()


def test_wrong_root_is_refused(identities: dict[str, dict[str, Any]]) -> None:
    forged = keys.bundle_from_config(_config(identities), root_keyid=OTHER.keyid, now=NOW)
    with pytest.raises(BundleError, match="pinned root"):
        _accept(keys.sign_bundle(forged, OTHER))


def test_tampered_bundle_is_refused(identities: dict[str, dict[str, Any]]) -> None:
    raw = json.loads(keys.sign_bundle(_bundle(identities), ROOT))
    env = keys.Envelope.from_json(json.dumps(raw))
    doc = json.loads(env.payload)
    doc["revoked_grants"] = []
    forged = keys.Envelope(env.payload_type, keys.canonical_json(doc), env.signatures)
    with pytest.raises(BundleError):
        _accept(forged.to_json().encode())


def test_valid_signature_under_another_payload_type(identities: dict[str, dict[str, Any]]) -> None:
    payload = _bundle(identities).to_payload()
    env = keys.sign_envelope(keys.RECORD_PAYLOAD_TYPE, payload, ROOT)
    with pytest.raises(BundleError):
        _accept(env.to_json().encode())


def test_rollback_is_refused(identities: dict[str, dict[str, Any]]) -> None:
    raw = keys.sign_bundle(_bundle(identities), ROOT)
    with pytest.raises(BundleError, match="older"):
        _accept(raw, current_version=4)


def test_same_version_must_be_identical(identities: dict[str, dict[str, Any]]) -> None:
    raw = keys.sign_bundle(_bundle(identities), ROOT)
    assert _accept(raw, current_version=3, current_raw=raw).version == 3
    different = keys.sign_bundle(_bundle(identities, revoked_grants=[]), ROOT)
    with pytest.raises(BundleError, match="same version"):
        _accept(different, current_version=3, current_raw=raw)
    with pytest.raises(BundleError, match="same version"):
        _accept(raw, current_version=3)


def test_expiry_and_future_issue(identities: dict[str, dict[str, Any]]) -> None:
    raw = keys.sign_bundle(_bundle(identities), ROOT)
    with pytest.raises(BundleError, match="expired"):
        _accept(raw, now=NOW + 30 * DAY)
    _accept(raw, now=NOW + 30 * DAY - datetime.timedelta(seconds=1))
    with pytest.raises(BundleError, match="future"):
        _accept(raw, now=NOW - datetime.timedelta(minutes=6))
    with pytest.raises(BundleError):
        _accept(raw, now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize("raw", [b"", b"{}", b"[1]", b"not json"])
def test_malformed_raw_is_refused(raw: bytes) -> None:
    with pytest.raises(BundleError):
        _accept(raw)


def test_malformed_payload_is_refused(identities: dict[str, dict[str, Any]]) -> None:
    doc = json.loads(_bundle(identities).to_payload())
    doc["roster"][0]["signing_key"] = "AAAA"
    env = keys.sign_envelope(keys.BUNDLE_PAYLOAD_TYPE, keys.canonical_json(doc), ROOT)
    with pytest.raises(BundleError, match=r"roster\[0\]\.signing_key"):
        _accept(env.to_json().encode())


def test_root_rotation(identities: dict[str, dict[str, Any]]) -> None:
    rotation = keys.sign_root_rotation(ROOT, NEW_ROOT, now=NOW)
    bundle = keys.bundle_from_config(_config(identities), root_keyid=NEW_ROOT.keyid, now=NOW)
    raw = keys.sign_bundle(bundle, NEW_ROOT)
    with pytest.raises(BundleError):
        _accept(raw)
    assert _accept(raw, rotations=[rotation]) == bundle
    assert keys.resolve_root(ROOT.public_key, [rotation]) == NEW_ROOT.public_key
    # The old root can no longer sign once the node follows the rotation.
    old_signed = keys.sign_bundle(_bundle(identities), ROOT)
    with pytest.raises(BundleError):
        _accept(old_signed, rotations=[rotation])


def test_bad_rotations_are_refused() -> None:
    # Signed by a key that is not the current root.
    with pytest.raises(BundleError, match="current root"):
        keys.resolve_root(ROOT.public_key, [keys.sign_root_rotation(OTHER, NEW_ROOT, now=NOW)])
    # Without the new root's own signature (no proof of possession).
    doc = {"issued_at": "2026-11-25T12:00:00Z", "new_root_key": "", "old_keyid": ROOT.keyid, "v": 1}
    doc["new_root_key"] = base64.b64encode(NEW_ROOT.public_key).decode()
    env = keys.sign_envelope(keys.ROTATION_PAYLOAD_TYPE, keys.canonical_json(doc), ROOT)
    with pytest.raises(BundleError, match="new root"):
        keys.resolve_root(ROOT.public_key, [env.to_json().encode()])
    # A chain applied out of order.
    third = keys.Signer(b"t" * 32)
    r1 = keys.sign_root_rotation(ROOT, NEW_ROOT, now=NOW)
    r2 = keys.sign_root_rotation(NEW_ROOT, third, now=NOW)
    assert keys.resolve_root(ROOT.public_key, [r1, r2]) == third.public_key
    with pytest.raises(BundleError):
        keys.resolve_root(ROOT.public_key, [r2, r1])


def test_revoked_keys_and_key_rotation_overlap(identities: dict[str, dict[str, Any]]) -> None:
    tax = identities["zd-tax"]
    old = keys.Signer(b"p" * 32)
    tax_rotated = {
        **tax,
        "previous_signing_keys": [
            {
                "key": base64.b64encode(old.public_key).decode(),
                "accepted_until": "2026-11-27T00:00:00Z",
            }
        ],
    }
    ids = {**identities, "zd-tax": tax_rotated}
    bundle = _bundle(ids, revoked_keyids=[identities["zd-market"]["keyid"]])
    trusted = bundle.trusted_signing_keys(NOW)
    assert identities["zd-market"]["keyid"] not in trusted
    assert old.keyid in trusted
    assert old.keyid not in bundle.trusted_signing_keys(NOW + 2 * DAY)
    assert bundle.owner_of(identities["zd-market"]["keyid"], NOW) is None
    assert bundle.node_signing_keys("zd-market", NOW) == {}
    assert set(bundle.node_signing_keys("zd-tax", NOW)) == {tax["keyid"], old.keyid}


def test_membership_validity(identities: dict[str, dict[str, Any]]) -> None:
    cfg = _config(identities)
    cfg["node"][0]["valid_until"] = "2026-11-26T00:00:00Z"
    bundle = keys.bundle_from_config(cfg, root_keyid=ROOT.keyid, now=NOW)
    market = identities["zd-market"]["keyid"]
    assert market in bundle.trusted_signing_keys(NOW)
    assert market not in bundle.trusted_signing_keys(NOW + DAY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("version"), r"bundle\.toml\.version: missing"),
        (lambda c: c.update(version="3"), r"version: must be an integer"),
        (lambda c: c.update(version=0), r"version: must be 1 or more"),
        (lambda c: c.pop("valid_days"), r"valid_days: missing"),
        (lambda c: c.update(expires_at="2026-11-01T00:00:00"), r"expires_at needs a UTC offset"),
        (lambda c: c.update(expires_at="2026-11-01T00:00:00Z"), r"must be after issued_at"),
        (lambda c: c["node"].append(dict(c["node"][0])), r"listed twice"),
        (lambda c: c["node"][1].pop("endpoint"), r"node\[1\]\.endpoint: missing"),
        (lambda c: c["node"][0]["identity"].update(keyid="0" * 16), r"identity\.keyid"),
        (lambda c: c["node"][0]["identity"].update(node_id="zd-x"), r"identity\.node_id"),
        (lambda c: c["node"][0]["identity"].update(tls_fingerprint="ab" * 32), r"tls_cert"),
        (lambda c: c["agreement"][0].update(kind="gossip"), r"agreement\[0\]\.kind"),
        (lambda c: c["agreement"][0].update(consumer="zd-x"), r"not in the roster"),
    ],
)
def test_config_errors_name_the_key(
    identities: dict[str, dict[str, Any]], change: Any, message: str
) -> None:
    cfg = json.loads(json.dumps(_config(identities)))
    change(cfg)
    with pytest.raises(BundleError, match=message):
        keys.bundle_from_config(cfg, root_keyid=ROOT.keyid, now=NOW)


def test_sign_bundle_refuses_another_root(identities: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(BundleError):
        keys.sign_bundle(_bundle(identities), OTHER)
    with pytest.raises(BundleError):
        keys.sign_bundle(dataclasses.replace(_bundle(identities), version=0), ROOT)


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (["producer"], r"unknown roles \['producer'\]"),
        (["Platform "], r"unknown roles"),
        (["department", "auditor"], r"unknown roles \['auditor'\]"),
        ([], r"has no role"),
        (["department", "department"], r"lists a role twice"),
        ("department", r"must be a list"),
        ([1], r"must be a list"),
        (None, r"must be a list"),
    ],
)
def test_roles_are_checked(
    identities: dict[str, dict[str, Any]], roles: object, message: str
) -> None:
    cfg = _config(identities)
    cfg["node"][1]["roles"] = roles
    with pytest.raises(BundleError, match=rf"node\[1\]\.roles: node 'zd-tax'.*{message}"):
        keys.bundle_from_config(cfg, root_keyid=ROOT.keyid, now=NOW)


def test_both_roles_are_accepted(identities: dict[str, dict[str, Any]]) -> None:
    cfg = _config(identities)
    cfg["node"][2]["roles"] = ["platform", "department"]
    bundle = keys.bundle_from_config(cfg, root_keyid=ROOT.keyid, now=NOW)
    platform = bundle.member("platform")
    assert platform is not None
    assert platform.roles == frozenset({"department", "platform"})


def test_roles_are_checked_when_signing_and_accepting(
    identities: dict[str, dict[str, Any]],
) -> None:
    bundle = _bundle(identities)
    odd = dataclasses.replace(bundle.roster[0], roles=frozenset({"producer"}))
    with pytest.raises(BundleError, match=r"roster: node 'zd-market' has unknown roles"):
        keys.sign_bundle(dataclasses.replace(bundle, roster=(odd, *bundle.roster[1:])), ROOT)
    for roles in (["producer"], [], ["platform", "platform"]):
        doc = json.loads(bundle.to_payload())
        doc["roster"][0]["roles"] = roles
        env = keys.sign_envelope(keys.BUNDLE_PAYLOAD_TYPE, keys.canonical_json(doc), ROOT)
        with pytest.raises(BundleError, match=r"roster\[0\]\.roles: node 'zd-market'"):
            _accept(env.to_json().encode())


def test_one_signing_key_cannot_belong_to_two_nodes(
    identities: dict[str, dict[str, Any]],
) -> None:
    market = identities["zd-market"]
    shared = {**identities["zd-tax"], "signing_key": market["signing_key"]}
    shared["keyid"] = market["keyid"]
    with pytest.raises(BundleError, match=r"'zd-market' and 'zd-tax' share the signing key"):
        _bundle({**identities, "zd-tax": shared})
    # A previous key of one node that is the current key of another is just as ambiguous.
    retired = {
        **identities["zd-tax"],
        "previous_signing_keys": [
            {"key": market["signing_key"], "accepted_until": "2026-11-27T00:00:00Z"}
        ],
    }
    with pytest.raises(BundleError, match=r"'zd-market' and 'zd-tax' share the signing key"):
        _bundle({**identities, "zd-tax": retired})
    # And a signed bundle that lists one key twice is refused on acceptance.
    doc = json.loads(_bundle(identities).to_payload())
    doc["roster"][2]["signing_key"] = doc["roster"][0]["signing_key"]
    env = keys.sign_envelope(keys.BUNDLE_PAYLOAD_TYPE, keys.canonical_json(doc), ROOT)
    with pytest.raises(BundleError, match=r"share the signing key"):
        _accept(env.to_json().encode())


def test_revocation_entries_in_other_spellings_still_revoke(
    identities: dict[str, dict[str, Any]],
) -> None:
    market = identities["zd-market"]
    full = hashlib.sha256(base64.b64decode(market["signing_key"])).hexdigest()
    for spelling in (market["keyid"].upper(), f" {market['keyid']} ", full, full.upper()):
        bundle = _bundle(identities, revoked_keyids=[spelling])
        assert bundle.revoked_keyids == {market["keyid"]}
        assert market["keyid"] not in bundle.trusted_signing_keys(NOW)
        # and the same holds for the signed payload a node accepts
        accepted = _accept(keys.sign_bundle(bundle, ROOT), current_version=0)
        assert market["keyid"] not in accepted.trusted_signing_keys(NOW)


@pytest.mark.parametrize("entry", ["zd-market", "0123456789abcdeg", "abc", "0" * 63])
def test_a_revocation_entry_that_names_no_key_id_is_refused(
    identities: dict[str, dict[str, Any]], entry: str
) -> None:
    with pytest.raises(keys.BundleError, match=r"revoked_keyids\[0\]: not a key id"):
        _bundle(identities, revoked_keyids=[entry])


def test_a_bad_revocation_entry_is_named_by_its_place_in_the_list(
    identities: dict[str, dict[str, Any]],
) -> None:
    good = identities["zd-market"]["keyid"]
    with pytest.raises(keys.BundleError, match=r"revoked_keyids\[0\]: not a key id"):
        _bundle(identities, revoked_keyids=["zz-typo", good])


@pytest.mark.parametrize("extra", ["second-cert", "key-block"])
def test_a_tls_cert_with_more_than_one_pem_block_is_refused(
    identities: dict[str, dict[str, Any]], extra: str
) -> None:
    # The first block matches the pin, but peers take the whole tls_cert as trusted roots
    # (and node.transport refuses a second certificate, so such a bundle, once accepted,
    # breaks mutual TLS for the whole district): refused where the bundle is checked.
    market, tax = identities["zd-market"], identities["zd-tax"]
    tail = (
        tax["tls_cert"]
        if extra == "second-cert"
        else "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    smuggled = market["tls_cert"] + tail
    with pytest.raises(KeysError):
        keys.tls_fingerprint(smuggled.encode("ascii"))
    assert keys.tls_fingerprint(market["tls_cert"].encode("ascii")) == market["tls_fingerprint"]
    changed = {**identities, "zd-market": {**market, "tls_cert": smuggled}}
    with pytest.raises(BundleError, match=r"node\[0\]\.tls_cert"):
        _bundle(changed)
    # and a signed bundle that carries one (signed by a root that did not check) is refused
    doc = json.loads(keys.Envelope.from_json(keys.sign_bundle(_bundle(identities), ROOT)).payload)
    doc["roster"][[e["node_id"] for e in doc["roster"]].index("zd-market")]["tls_cert"] = smuggled
    raw = keys.sign_envelope(keys.BUNDLE_PAYLOAD_TYPE, keys.canonical_json(doc), ROOT).to_json()
    with pytest.raises(BundleError, match="tls_cert"):
        _accept(raw.encode("utf-8"))


def test_a_revoked_key_verifies_no_history(identities: dict[str, dict[str, Any]]) -> None:
    # every_signing_key serves checking what a member signed before a rotation (its log's
    # checkpoints, a witness's cosignatures: node/cli/log_cmds.py). A revoked key is a
    # compromised one: whoever holds it could sign a checkpoint "from before", so it must not
    # come back through this path either, current or previous.
    tax = identities["zd-tax"]
    old, older = keys.Signer(b"p" * 32), keys.Signer(b"q" * 32)
    previous = [
        {"key": base64.b64encode(s.public_key).decode(), "accepted_until": "2026-11-01T00:00:00Z"}
        for s in (older, old)
    ]
    ids = {**identities, "zd-tax": {**tax, "previous_signing_keys": previous}}
    plain = _bundle(ids)
    entry = plain.member("zd-tax")
    assert entry is not None
    assert set(entry.every_signing_key()) >= {old.public_key, older.public_key}

    bundle = _bundle(ids, revoked_keyids=[old.keyid, identities["zd-market"]["keyid"]])
    assert bundle == _accept(keys.sign_bundle(bundle, ROOT))
    for got in (bundle, _accept(keys.sign_bundle(bundle, ROOT))):
        tax_entry, market_entry = got.member("zd-tax"), got.member("zd-market")
        assert tax_entry is not None
        assert market_entry is not None
        assert old.public_key not in tax_entry.every_signing_key()
        assert older.public_key in tax_entry.every_signing_key()
        assert market_entry.every_signing_key() == ()
        assert market_entry.signing_keys(NOW) == {}
        assert tax_entry in got.roster

    cp = keys.Checkpoint("zd-tax/log", 3, hashlib.sha256(b"r").digest())
    forged = keys.sign_checkpoint(cp, name="zd-tax", signer=old)
    tax_entry = bundle.member("zd-tax")
    assert tax_entry is not None
    with pytest.raises(keys.VerificationError):
        keys.verify_checkpoint(
            forged, verifiers={"zd-tax": tax_entry.every_signing_key()}, log_name="zd-tax"
        )
    kept = keys.sign_checkpoint(cp, name="zd-tax", signer=older)
    assert (
        keys.verify_checkpoint(
            kept, verifiers={"zd-tax": tax_entry.every_signing_key()}, log_name="zd-tax"
        )
        == cp
    )
