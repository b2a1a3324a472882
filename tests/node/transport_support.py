"""Unsigned trust bundles for the transport tests, which check how a node pins TLS certificates
against the bundle in use (docs/transport.md); signing is tested with the bundles themselves."""

from __future__ import annotations

import datetime as dt
from typing import Any

import keys


def department_entry(
    member: Any,
    *,
    valid_from: dt.datetime,
    valid_until: dt.datetime,
    node_id: str | None = None,
    tls_cert: str = "",
) -> keys.RosterEntry:
    """The roster entry of department `member` (a test node's keys) under `node_id` (its own
    by default), pinning its TLS fingerprint (and `tls_cert`, if given) from `valid_from` to
    `valid_until`."""
    node_id = node_id or member.node_id
    return keys.RosterEntry(
        node_id=node_id,
        name=node_id,
        roles=frozenset({"department"}),
        endpoint="127.0.0.1:7443",
        signing_key=member.signing.public_key,
        encryption_key=member.encryption_public,
        tls_fingerprint=member.tls_fingerprint,
        valid_from=valid_from,
        valid_until=valid_until,
        tls_cert=tls_cert,
    )


def unsigned_bundle(
    *entries: keys.RosterEntry, version: int, issued_at: dt.datetime, expires_at: dt.datetime
) -> keys.TrustBundle:
    """Bundle `version` of `entries`, with no revocations and no agreements, never signed: for
    code that takes a bundle already verified."""
    return keys.TrustBundle(
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        root_keyid="0" * 16,
        roster=entries,
        revoked_keyids=frozenset(),
        revoked_grants=frozenset(),
        catalog_version="2026.1",
        agreements=(),
    )
