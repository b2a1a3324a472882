"""A signed grant revocation outlives a routine rotation of the platform key.

A revocation only ever takes access away (PIPL Art. 15: the subject withdrew consent), so one
signed with a platform key that a rotation has since retired must still be registered when it
reaches a department late; a revoked key, another node's key or an edited payload still are not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

import keys
from node.grants import (
    GrantRevocation,
    InvalidGrantError,
    MemoryGrantLedger,
    issue_grant,
    sign_revocation,
    verify_grant,
    verify_revocation,
)
from tests.node.test_grants_ledger import (
    DEPARTMENT,
    NOW,
    PLATFORM,
    ROTATED_OUT,
    Bundle,
    Member,
    make,
)

OVERLAP_END = NOW + dt.timedelta(hours=1)
LATER = NOW + dt.timedelta(days=3)  # the revocation file is registered after the overlap
ROTATED = Bundle(
    members=(
        Member(
            "zd-platform",
            PLATFORM.public_key,
            frozenset({"platform"}),
            previous_signing_keys=((ROTATED_OUT.public_key, OVERLAP_END),),
        ),
        Member("zd-tax", DEPARTMENT.public_key, frozenset({"department"})),
    )
)


def revocation(issuer: str = "zd-platform") -> GrantRevocation:
    return GrantRevocation("grant-2026-0001", issuer, NOW, "subject_withdrew_consent")


def test_a_revocation_signed_before_a_rotation_is_registered_after_the_overlap() -> None:
    raw = sign_revocation(revocation(), ROTATED_OUT)
    assert verify_revocation(raw, bundle=ROTATED, now=LATER) == revocation()
    ledger = MemoryGrantLedger()
    ledger.revoke("grant-2026-0001", NOW, "subject_withdrew_consent", raw=raw)
    assert ledger.revocation("grant-2026-0001") is not None


def test_a_grant_signed_with_the_retired_key_is_not_accepted_afresh() -> None:
    # the widening is for revocations only: a new grant needs a current key
    with pytest.raises(InvalidGrantError):
        verify_grant(issue_grant(make(), ROTATED_OUT), bundle=ROTATED, now=LATER)


def test_a_revocation_from_a_revoked_key_or_a_department_is_refused() -> None:
    revoked = replace(ROTATED, revoked_keyids=frozenset({keys.keyid(ROTATED_OUT.public_key)}))
    with pytest.raises(InvalidGrantError):
        verify_revocation(sign_revocation(revocation(), ROTATED_OUT), bundle=revoked, now=LATER)
    with pytest.raises(InvalidGrantError):
        verify_revocation(
            sign_revocation(revocation("zd-tax"), DEPARTMENT), bundle=ROTATED, now=NOW
        )
    with pytest.raises(InvalidGrantError):
        # a department's key claiming to be the platform
        verify_revocation(sign_revocation(revocation(), DEPARTMENT), bundle=ROTATED, now=NOW)
