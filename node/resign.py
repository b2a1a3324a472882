"""Signing this node's stored records again with its current key (`credex keys resign`).

A record is signed once, at ingest, and kept. After a routine rotation its peers still accept
it under the retired key (node/trust.py), but a key that leaked is revoked in the trust
bundle, and then nothing it signed is trusted again: every answer, feed replay and push that
carries such a record is refused as forged. This pass restores them. For each of this node's
own versions that still holds a body (any state but purged), it opens the body with the storage
key, verifies it under this node's own keys (the current one and every retired one), signs the
same header and fields again with the current key, with fresh salts, and stores the result in
place of the old body (`Store.replace_bodies`; the content, version and state are unchanged).

Invariants:
- one pass is resumable and idempotent: a version already signed with the current key is
  skipped, and each page is one transaction, so a crash or kill loses at most the page in
  flight, which the next run does again;
- a body that does not open or does not verify stops the pass with TamperDetected naming its
  row id, never re-signing what this node did not sign;
- the pass reads every stored record, so it is logged before it starts, as an administrative
  read naming the officer who ran it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import keys
from node.accesslog import LogEntry, utc_iso
from node.errors import TamperDetected
from node.runtime import NodeRuntime

__all__ = ["ResignReport", "resign_records"]

_PAGE = 500


@dataclass(frozen=True)
class ResignReport:
    """What one pass did: versions read, signed again, and already under the current key.
    A version purged or changed while the pass ran is counted in `checked` only."""

    keyid: str
    checked: int
    resigned: int
    current: int


def resign_records(
    runtime: NodeRuntime,
    *,
    officer: str,
    page: int = _PAGE,
    progress: Callable[[int], None] | None = None,
) -> ResignReport:
    """Sign every stored version of this node's own records that is not signed with its
    current key again with it, and return the counts.

    `officer` (a staff id, checked by the caller) is logged with the pass before it starts;
    `progress` is called with the number of versions read after each page. Raises
    TamperDetected (naming the row id) on a body that does not open or verify under this
    node's keys, LogUnavailable when the log entry cannot be written (nothing is changed).
    """
    runtime.log.append_sync(
        LogEntry(
            time=utc_iso(runtime.clock()),
            kind="admin_read",
            requester=runtime.node_id,
            officer=officer,
            purpose="key_rotation",
            legal_basis="re-signing stored records after a signing key rotation",
            decision="allow",
            reason="resign_records",
            request_id=secrets.token_hex(16),
        )
    )
    signer = runtime.node_keys.signing
    trusted = {signer.keyid: signer.public_key}
    for public, _until in runtime.node_keys.previous_signing:
        trusted[keys.keyid(public)] = public
    checked = resigned = current = 0
    after = ""
    while rows := runtime.store.local_bodies_after(runtime.node_id, after, limit=page):
        replacements: list[tuple[str, bytes, bytes]] = []
        for row_id, body in rows:
            again = _signed_again(runtime, row_id, body, signer, trusted)
            if again is None:
                current += 1
            else:
                replacements.append((row_id, body, again))
        resigned += runtime.store.replace_bodies(runtime.node_id, replacements)
        checked += len(rows)
        after = rows[-1][0]
        if progress is not None:
            progress(checked)
    return ResignReport(signer.keyid, checked, resigned, current)


def _signed_again(
    runtime: NodeRuntime,
    row_id: str,
    body: bytes,
    signer: keys.Signer,
    trusted: dict[str, bytes],
) -> bytes | None:
    """The body of row `row_id` signed with `signer`, encrypted for the same row; None when it
    is signed with `signer` already."""
    try:
        signed = keys.SignedRecord.from_bytes(runtime.cipher.decrypt(row_id, body))
        if [kid for kid, _sig in signed.envelope.signatures] == [signer.keyid]:
            keys.verify_record(signed, trusted={signer.keyid: signer.public_key})
            return None
        verified = keys.verify_record(signed, trusted=trusted)
    except keys.KeysError:
        raise TamperDetected(
            f"stored record row {row_id} does not open or verify under this node's keys; "
            "run `credex doctor` and restore the store from a backup"
        ) from None
    if verified.hidden:
        # this node's own copy holds every field; one without them was not written here
        raise TamperDetected(f"stored record row {row_id} lacks fields its signature covers")
    again = keys.sign_record(verified.header, dict(verified.fields), signer)
    return runtime.cipher.encrypt(row_id, again.to_bytes())
