"""Which of a peer's keys vouch for what it signed long ago: records and checkpoints.

A node's requests, feed batches and receipts are checked against the keys it may sign with
now (`TrustBundle.node_signing_keys`: the current key and the previous ones still inside their
rotation overlap). What it signed once and others keep is another matter: a record is signed
when it is ingested and served for years, and a checkpoint or a witness cosignature stays
evidence for as long as the log is kept. Such signatures are checked against every signing key
the roster lists for the node, whatever its `accepted_until`, but never a revoked one: a key
that leaked is listed in `revoked_keyids`, and then nothing it signed is trusted again. (A
retired key's secret is destroyed at rotation, `keys.rotate_signing_key`.)
"""

from __future__ import annotations

import datetime as dt

import keys

__all__ = ["historic_signing_keys", "record_signing_keys"]


def historic_signing_keys(bundle: keys.TrustBundle, node_id: str) -> tuple[bytes, ...]:
    """The public keys that vouch for checkpoints and cosignatures `node_id` signed at any
    time: its current signing key and every previous one the roster lists, minus revoked
    key ids (an entry of a bundle leaves those out itself, `RosterEntry.every_signing_key`).
    Empty when the roster does not list the node."""
    entry = bundle.member(node_id)
    return () if entry is None else entry.every_signing_key()


def record_signing_keys(
    bundle: keys.TrustBundle, node_id: str, now: dt.datetime
) -> dict[str, bytes]:
    """keyid -> public key of the keys that vouch for records `node_id` produced, for
    `keys.verify_record`: `historic_signing_keys`, while the node's membership is valid at
    `now` (empty otherwise, and for a node not in the roster), so that the records it signed
    before a key rotation still verify after the rotation's overlap has closed."""
    entry = bundle.member(node_id)
    if entry is None or not entry.valid_at(now):
        return {}
    return {keys.keyid(k): k for k in entry.every_signing_key()}
