"""The SQL `node.grants.GrantLedger`: registered subject authorisations and their use counts.

`use` is a check-and-increment in one write transaction with the grant's row locked
(`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), and it refuses with the
same shared rules as the in-memory ledger (`node.grants.use_refusal`), so two replicas can never
both take a grant's last use.

Revocations live in their own table (`grant_revocations`), keyed by grant id, because one may
arrive before its grant has ever been presented here. Every read of a grant's state joins that
table, so a grant registered after (or concurrently with) its revocation is revoked whatever
order two replicas committed the two writes in.

At rest (`GrantSealing`, which a node's runtime always gives): the signed grant and its payload
are encrypted under the node's storage key, and the subject digest column holds a keyed token
of it. A grant's subject digest is an unkeyed SHA-256 of an ID number, which has too few
possible values to hide it: kept in the clear, a copy of the database would give away the ID
number of every subject with a grant, while its blind indexes protect everyone else. Rows
written before are sealed the first time a node opens its ledger (`seal_legacy_rows`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

import keys
from node.errors import TamperDetected
from node.grants import (
    Grant,
    GrantConflictError,
    GrantRefusedError,
    GrantState,
    RecordedRevocation,
    use_refusal,
)
from node.store.store import Store, from_db_time, to_db_time
from node.store.tables import GrantRevocationRow, GrantRow, binary_value

__all__ = ["GrantSealing", "SqlGrantLedger"]

# The first byte of a sealed blob (keys.StorageCipher); a signed grant as received starts with
# "{" (JSON) or "CXE1" (compact), a payload with "{".
_SEALED = b"\x01"


class GrantSealing:
    """How grants are kept at rest: the signed grant and its payload under the storage key
    (bound to the grant id), the subject digest as a keyed token (`keys.BlindIndex`)."""

    def __init__(self, cipher: keys.StorageCipher, blind: keys.BlindIndex) -> None:
        self._cipher = cipher
        self._blind = blind

    def seal(self, grant_id: str, data: bytes) -> bytes:
        """`data` encrypted for the grant `grant_id`."""
        return self._cipher.encrypt(_row(grant_id), data)

    def open(self, grant_id: str, blob: bytes) -> bytes:
        """What `seal` sealed for `grant_id` (a row not sealed yet is returned as it is);
        TamperDetected when it does not open (changed, moved from another grant)."""
        if blob[:1] != _SEALED:
            return blob
        try:
            return self._cipher.decrypt(_row(grant_id), blob)
        except keys.KeysError:
            raise TamperDetected(
                f"grant {grant_id}: the stored grant does not open under this node's storage "
                "key (changed, or moved from another row)"
            ) from None

    def subject_key(self, subject_digest: str) -> str:
        """The keyed token stored and looked up in place of `subject_digest`."""
        return self._blind.token("credex-grant-subject:" + subject_digest)


def _row(grant_id: str) -> str:
    # apart from record row ids (UUIDs), which the same cipher binds the same way
    return "grant:" + grant_id


class _InTheClear:
    """No sealing: what SqlGrantLedger does without a GrantSealing (tests of the ledger)."""

    def seal(self, grant_id: str, data: bytes) -> bytes:
        del grant_id
        return data

    def open(self, grant_id: str, blob: bytes) -> bytes:
        del grant_id
        return blob

    def subject_key(self, subject_digest: str) -> str:
        return subject_digest


def _as_table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


GRANTS = _as_table(GrantRow)
REVOCATIONS = _as_table(GrantRevocationRow)
# A grant with its recorded revocation, if any (the revocation wins over the row's columns).
_WITH_REVOCATION: Select[Any] = select(
    GRANTS,
    REVOCATIONS.c.revoked_at.label("recorded_at"),
    REVOCATIONS.c.reason.label("recorded_reason"),
).select_from(GRANTS.outerjoin(REVOCATIONS, REVOCATIONS.c.grant_id == GRANTS.c.grant_id))


class SqlGrantLedger:
    """`GrantLedger` on the node's store (SQLite or PostgreSQL); with `sealing` (a node's
    ledger), grants are kept encrypted and their subjects as keyed tokens."""

    def __init__(self, store: Store, *, sealing: GrantSealing | None = None) -> None:
        self._store = store
        self._sealing: GrantSealing | _InTheClear = sealing or _InTheClear()

    def seal_legacy_rows(self) -> int:
        """Seal the rows stored in the clear (by a release before sealing, or without one);
        return how many. Idempotent, and safe beside another process doing the same: a row is
        rewritten only if it is still the one read."""
        sealing = self._sealing
        if isinstance(sealing, _InTheClear):
            return 0
        # Read first: a write transaction every time a process opens its ledger would take
        # SQLite's write lock for nothing, and fail for a reader without write access.
        with self._store.read("find grants stored in the clear") as conn:
            legacy = conn.execute(
                select(func.count()).where(func.length(GRANTS.c.subject_digest) == 64)
            ).scalar_one()
        if not legacy:
            return 0
        sealed = 0
        with self._store.write("seal grants stored in the clear") as conn:
            rows = conn.execute(
                select(GRANTS.c.grant_id, GRANTS.c.body, GRANTS.c.payload, GRANTS.c.subject_digest)
                # a digest is 64 hex digits, a token 32
                .where(func.length(GRANTS.c.subject_digest) == 64)
                .with_for_update()
            ).all()
            for row in rows:
                body, payload = binary_value(row.body), binary_value(row.payload)
                result = conn.execute(
                    update(GRANTS)
                    .where(
                        GRANTS.c.grant_id == row.grant_id,
                        GRANTS.c.subject_digest == row.subject_digest,
                    )
                    .values(
                        body=sealing.seal(row.grant_id, sealing.open(row.grant_id, body)),
                        payload=sealing.seal(row.grant_id, sealing.open(row.grant_id, payload)),
                        subject_digest=sealing.subject_key(row.subject_digest),
                    )
                )
                sealed += result.rowcount
        return sealed

    def register(self, grant: Grant, raw: bytes) -> GrantState:
        """Register a verified grant; idempotent for the same grant, GrantConflictError for a
        different grant under the same id. A grant whose revocation was recorded before is
        registered revoked. Returns the current state."""
        payload = grant.to_payload()
        with self._store.write("register a grant") as conn:
            row = _locked(conn, grant.grant_id)
            recorded = _recorded(conn, grant.grant_id)
            if row is not None:
                return self._registered(row, recorded, grant.grant_id, payload)
            # A grant revoked before it reached this node is registered revoked (evidence is
            # kept, every use refused).
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            inserted = conn.execute(
                dialect.insert(GRANTS)
                .values(
                    grant_id=grant.grant_id,
                    body=self._sealing.seal(grant.grant_id, raw),
                    payload=self._sealing.seal(grant.grant_id, payload),
                    subject_digest=self._sealing.subject_key(grant.subject_digest),
                    grantee=grant.grantee,
                    purpose=grant.purpose,
                    items=json.dumps(sorted(grant.items)),
                    valid_from=to_db_time(grant.valid_from),
                    valid_until=to_db_time(grant.valid_until),
                    use_limit=grant.use_limit,
                    uses=0,
                    revoked_at=None if recorded is None else to_db_time(recorded.revoked_at),
                    revoked_reason=None if recorded is None else recorded.reason,
                )
                .on_conflict_do_nothing(index_elements=["grant_id"])
                .returning(GRANTS.c.grant_id)  # rowcount: psycopg reports -1 for ON CONFLICT
            )
            if inserted.first() is None:
                # Another replica registered this id between the read above and the insert
                # (its row was not committed yet, so the read found none): the grant presented
                # to both at once is registered once, and the second query goes on with it,
                # rather than failing on the unique key; a different grant is still refused.
                row = _locked(conn, grant.grant_id)
                if row is None:  # pragma: no cover - the conflicting row is committed
                    raise GrantConflictError(
                        f"grant {grant.grant_id}: registered concurrently elsewhere; retry"
                    )
                recorded = _recorded(conn, grant.grant_id)
                return self._registered(row, recorded, grant.grant_id, payload)
        return GrantState(
            grant=grant,
            raw=raw,
            uses=0,
            revoked_at=None if recorded is None else recorded.revoked_at,
            revoked_reason=None if recorded is None else recorded.reason,
        )

    def get(self, grant_id: str) -> GrantState | None:
        """Return the grant's state, or None when it was never registered."""
        with self._store.read("read a grant") as conn:
            row = conn.execute(_WITH_REVOCATION.where(GRANTS.c.grant_id == grant_id)).first()
        return None if row is None else self._joined(row)

    def use(self, grant_id: str, now: dt.datetime) -> GrantState:
        """Count one use; GrantRefusedError (reason code) when unknown, revoked, outside its
        validity or exhausted. Returns the state after the use."""
        with self._store.write("use a grant") as conn:
            row = _locked(conn, grant_id)
            if row is None:
                raise GrantRefusedError("grant_unknown", "the grant is not registered at this node")
            state = self._state(row, _recorded(conn, grant_id))
            refusal = use_refusal(state, now)
            if refusal is not None:
                raise GrantRefusedError(*refusal)
            conn.execute(
                update(GRANTS).where(GRANTS.c.grant_id == grant_id).values(uses=state.uses + 1)
            )
        return GrantState(
            grant=state.grant,
            raw=state.raw,
            uses=state.uses + 1,
            revoked_at=state.revoked_at,
            revoked_reason=state.revoked_reason,
        )

    def revoke(
        self, grant_id: str, at: dt.datetime, reason: str, *, raw: bytes | None = None
    ) -> GrantState | None:
        """Record the grant's revocation (final and idempotent: the first one is kept, with
        `raw`, the signed revocation as received) and return the revoked state, or None when
        the grant is not registered here; it then starts revoked if it is ever registered."""
        stamp = to_db_time(at)
        with self._store.write("revoke a grant") as conn:
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            # Two replicas may record the same revocation at once: the first one stays.
            conn.execute(
                dialect.insert(REVOCATIONS)
                .values(grant_id=grant_id, revoked_at=stamp, reason=reason, body=raw)
                .on_conflict_do_nothing(index_elements=["grant_id"])
            )
            recorded = _recorded(conn, grant_id)
            assert recorded is not None  # inserted above, or already there
            row = _locked(conn, grant_id)
            if row is None:
                return None
            if row.revoked_at is None:
                conn.execute(
                    update(GRANTS)
                    .where(GRANTS.c.grant_id == grant_id)
                    .values(
                        revoked_at=to_db_time(recorded.revoked_at),
                        revoked_reason=recorded.reason,
                    )
                )
            return self._state(row, recorded)

    def revocation(self, grant_id: str) -> RecordedRevocation | None:
        """Return the revocation recorded for a grant id (registered here or not), else None."""
        with self._store.read("read a grant revocation") as conn:
            return _recorded(conn, grant_id)

    def refund_use(self, grant_id: str) -> None:
        """Give back one use counted for a request that was then not answered (see
        `node.grants.GrantLedger.refund_use`); never below zero."""
        with self._store.write("give back a grant use") as conn:
            row = _locked(conn, grant_id)
            if row is not None and int(row.uses) > 0:
                conn.execute(
                    update(GRANTS).where(GRANTS.c.grant_id == grant_id).values(uses=row.uses - 1)
                )

    def for_subject(self, subject_digest: str) -> list[GrantState]:
        """Return every grant registered for a subject digest, by grant id (for reports)."""
        with self._store.read("read a subject's grants") as conn:
            rows = conn.execute(
                _WITH_REVOCATION.where(
                    GRANTS.c.subject_digest == self._sealing.subject_key(subject_digest)
                ).order_by(GRANTS.c.grant_id)
            ).all()
        return [self._joined(r) for r in rows]

    def active(self, now: dt.datetime, *, limit: int = 10_000) -> list[GrantState]:
        """Grants not revoked and not yet expired at `now`, by grant id (for the risk report
        and `credex grant list`); at most `limit`."""
        with self._store.read("read the active grants") as conn:
            # Expiry is filtered in SQL, before the limit: expired grants sorting first must
            # not fill the limit and hide the active ones.
            rows = conn.execute(
                _WITH_REVOCATION.where(
                    GRANTS.c.revoked_at.is_(None),
                    REVOCATIONS.c.grant_id.is_(None),
                    GRANTS.c.valid_until > to_db_time(now),
                )
                .order_by(GRANTS.c.grant_id)
                .limit(limit)
            ).all()
        states = [self._joined(r) for r in rows]
        # the signed payload is the authority; the column is its copy
        return [s for s in states if s.grant.valid_until > now]

    def _registered(
        self, row: Row[Any], recorded: RecordedRevocation | None, grant_id: str, payload: bytes
    ) -> GrantState:
        """The state of the grant already registered under `grant_id` when it is the grant
        with `payload` (registration is idempotent); GrantConflictError when it is another."""
        if self._sealing.open(grant_id, binary_value(row.payload)) != payload:
            raise GrantConflictError(
                f"grant {grant_id}: a different grant is registered under this id"
            )
        return self._state(row, recorded)

    def _joined(self, row: Row[Any]) -> GrantState:
        """The state of a `_WITH_REVOCATION` row."""
        recorded = None
        if row.recorded_at is not None:
            recorded = RecordedRevocation(
                row.grant_id, from_db_time(row.recorded_at), row.recorded_reason
            )
        return self._state(row, recorded)

    def _state(self, row: Row[Any], recorded: RecordedRevocation | None) -> GrantState:
        """A grant row's state; a recorded revocation wins over the row's own revocation
        columns (it is the first one received, and a concurrent registration may have missed
        it)."""
        if recorded is not None:
            revoked_at: dt.datetime | None = recorded.revoked_at
            reason: str | None = recorded.reason
        else:
            revoked_at = None if row.revoked_at is None else from_db_time(row.revoked_at)
            reason = row.revoked_reason
        grant_id = str(row.grant_id)
        return GrantState(
            grant=Grant.from_payload(self._sealing.open(grant_id, binary_value(row.payload))),
            raw=self._sealing.open(grant_id, binary_value(row.body)),
            uses=int(row.uses),
            revoked_at=revoked_at,
            revoked_reason=reason,
        )


def _locked(conn: Connection, grant_id: str) -> Row[Any] | None:
    return conn.execute(
        select(GRANTS).where(GRANTS.c.grant_id == grant_id).with_for_update()
    ).first()


def _recorded(conn: Connection, grant_id: str) -> RecordedRevocation | None:
    row = conn.execute(
        select(REVOCATIONS.c.revoked_at, REVOCATIONS.c.reason).where(
            REVOCATIONS.c.grant_id == grant_id
        )
    ).first()
    if row is None:
        return None
    return RecordedRevocation(grant_id, from_db_time(row.revoked_at), row.reason)
