"""The SQL `node.grants.GrantLedger`: registered subject authorisations and their use counts.

`use` is a check-and-increment in one write transaction with the grant's row locked
(`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), and it refuses with the
same shared rules as the in-memory ledger (`node.grants.use_refusal`), so two replicas can never
both take a grant's last use.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection, Row

from node.grants import (
    Grant,
    GrantConflictError,
    GrantRefusedError,
    GrantState,
    use_refusal,
)
from node.store.store import Store, from_db_time, to_db_time
from node.store.tables import GrantRow

__all__ = ["SqlGrantLedger"]


def _as_table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


GRANTS = _as_table(GrantRow)


class SqlGrantLedger:
    """`GrantLedger` on the node's store (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def register(self, grant: Grant, raw: bytes) -> GrantState:
        """Register a verified grant; idempotent for the same grant, GrantConflictError for a
        different grant under the same id. Returns the current state."""
        payload = grant.to_payload()
        with self._store.write("register a grant") as conn:
            row = _locked(conn, grant.grant_id)
            if row is not None:
                if bytes(row.payload) != payload:
                    raise GrantConflictError(
                        f"grant {grant.grant_id}: a different grant is registered under this id"
                    )
                return _state(row)
            conn.execute(
                insert(GRANTS).values(
                    grant_id=grant.grant_id,
                    body=raw,
                    payload=payload,
                    subject_digest=grant.subject_digest,
                    grantee=grant.grantee,
                    purpose=grant.purpose,
                    items=json.dumps(sorted(grant.items)),
                    valid_from=to_db_time(grant.valid_from),
                    valid_until=to_db_time(grant.valid_until),
                    use_limit=grant.use_limit,
                    uses=0,
                    revoked_at=None,
                    revoked_reason=None,
                )
            )
        return GrantState(grant=grant, raw=raw, uses=0)

    def get(self, grant_id: str) -> GrantState | None:
        """Return the grant's state, or None when it was never registered."""
        with self._store.read("read a grant") as conn:
            row = conn.execute(select(GRANTS).where(GRANTS.c.grant_id == grant_id)).first()
        return None if row is None else _state(row)

    def use(self, grant_id: str, now: dt.datetime) -> GrantState:
        """Count one use; GrantRefusedError (reason code) when unknown, revoked, outside its
        validity or exhausted. Returns the state after the use."""
        with self._store.write("use a grant") as conn:
            row = _locked(conn, grant_id)
            if row is None:
                raise GrantRefusedError("grant_unknown", "the grant is not registered at this node")
            state = _state(row)
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

    def revoke(self, grant_id: str, at: dt.datetime, reason: str) -> GrantState:
        """Mark the grant revoked (idempotent: the first revocation time is kept);
        GrantRefusedError("grant_unknown") when it was never registered."""
        stamp = to_db_time(at)
        with self._store.write("revoke a grant") as conn:
            row = _locked(conn, grant_id)
            if row is None:
                raise GrantRefusedError("grant_unknown", "the grant is not registered at this node")
            state = _state(row)
            if state.revoked:
                return state
            conn.execute(
                update(GRANTS)
                .where(GRANTS.c.grant_id == grant_id)
                .values(revoked_at=stamp, revoked_reason=reason)
            )
        return GrantState(
            grant=state.grant, raw=state.raw, uses=state.uses, revoked_at=stamp,
            revoked_reason=reason,
        )  # fmt: skip

    def for_subject(self, subject_digest: str) -> list[GrantState]:
        """Return every grant registered for a subject digest, by grant id (for reports)."""
        with self._store.read("read a subject's grants") as conn:
            rows = conn.execute(
                select(GRANTS)
                .where(GRANTS.c.subject_digest == subject_digest)
                .order_by(GRANTS.c.grant_id)
            ).all()
        return [_state(r) for r in rows]

    def active(self, now: dt.datetime, *, limit: int = 10_000) -> list[GrantState]:
        """Grants not revoked and not yet expired at `now`, by grant id (for the risk report
        and `credex grant list`); at most `limit`."""
        with self._store.read("read the active grants") as conn:
            rows = conn.execute(
                select(GRANTS)
                .where(GRANTS.c.revoked_at.is_(None))
                .order_by(GRANTS.c.grant_id)
                .limit(limit)
            ).all()
        states = [_state(r) for r in rows]
        return [s for s in states if s.grant.valid_until > now]


def _locked(conn: Connection, grant_id: str) -> Row[Any] | None:
    return conn.execute(
        select(GRANTS).where(GRANTS.c.grant_id == grant_id).with_for_update()
    ).first()


def _state(row: Row[Any]) -> GrantState:
    return GrantState(
        grant=Grant.from_payload(bytes(row.payload)),
        raw=bytes(row.body),
        uses=int(row.uses),
        revoked_at=None if row.revoked_at is None else from_db_time(row.revoked_at),
        revoked_reason=row.revoked_reason,
    )
