"""Subject grants against hostile or careless input: nested JSON that exhausts the parser's
recursion, ids with a trailing newline, and grant ids that carry a subject's identifier.

A grant travels inside a query (`QueryBody.grant`) from any roster member and as a file given to
`credex grant register`; what does not parse must be refused as malformed (INVALID_ARGUMENT,
exit 2, logged as `grant_invalid`), never escape as an unexpected exception. A grant id is
stored in the clear at every holder, listed by `credex grant list`, named on the wire and put in
the bundle's `revoked_grants`: it must not be a citizen ID number or credit code.
"""

from __future__ import annotations

import base64
import json

import pytest

import keys
from catalog import mask_identifier
from node.grants import (
    GRANT_PAYLOAD_TYPE,
    REVOCATION_PAYLOAD_TYPE,
    Grant,
    GrantRevocation,
    MalformedGrantError,
    is_grant_id,
    issue_grant,
    verify_grant,
    verify_revocation,
)
from tests.catalog.catalog_testdata import make_ric
from tests.node.test_grants_ledger import BUNDLE, NOW, PLATFORM, make

DEEP = b"[" * 100_000 + b"]" * 100_000
RIC = make_ric("370303", "19850505", "017")
USCC = "91350100M000100Y43"


def _envelope(payload_type: str, payload: bytes) -> bytes:
    return json.dumps(
        {
            "payloadType": payload_type,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": "00" * 8, "sig": base64.b64encode(b"x" * 64).decode()}],
        }
    ).encode()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DEEP, id="nested envelope"),
        pytest.param(_envelope(GRANT_PAYLOAD_TYPE, DEEP), id="nested payload"),
        pytest.param(
            _envelope(GRANT_PAYLOAD_TYPE, b'{"issuer":' + DEEP + b"}"), id="nested issuer"
        ),
    ],
)
def test_deeply_nested_json_is_a_malformed_grant(raw: bytes) -> None:
    with pytest.raises(MalformedGrantError, match=r"^signed grant: "):
        verify_grant(raw, bundle=BUNDLE, now=NOW)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DEEP, id="nested envelope"),
        pytest.param(_envelope(REVOCATION_PAYLOAD_TYPE, DEEP), id="nested payload"),
    ],
)
def test_deeply_nested_json_is_a_malformed_revocation(raw: bytes) -> None:
    # ... and the message says what the file was meant to be: a revocation, not a grant
    with pytest.raises(MalformedGrantError, match=r"^signed revocation: "):
        verify_revocation(raw, bundle=BUNDLE, now=NOW)


def test_a_nested_payload_is_malformed_after_a_good_signature_too() -> None:
    signed = keys.sign_envelope(GRANT_PAYLOAD_TYPE, DEEP, PLATFORM).to_json().encode()
    with pytest.raises(MalformedGrantError):
        verify_grant(signed, bundle=BUNDLE, now=NOW)
    with pytest.raises(MalformedGrantError):
        Grant.from_payload(DEEP)
    with pytest.raises(MalformedGrantError):
        GrantRevocation.from_payload(DEEP)


@pytest.mark.parametrize("grant_id", ["g-1\n", "g-1\r\n", "\ng-1"])
def test_a_grant_id_with_a_line_break_is_not_a_grant_id(grant_id: str) -> None:
    # `$` matches before a final newline: "g-1\n" passed as an id distinct from "g-1"
    assert not is_grant_id(grant_id)
    with pytest.raises(MalformedGrantError, match="grant_id"):
        make(grant_id=grant_id)
    with pytest.raises(MalformedGrantError, match="grant_id"):
        GrantRevocation(grant_id, "zd-platform", NOW, "subject_withdrew_consent")


@pytest.mark.parametrize(
    "grant_id",
    [
        pytest.param(RIC, id="a citizen ID number"),
        pytest.param(f"g-{RIC}", id="an ID number inside"),
        pytest.param(f"g-{RIC.lower()}.2026", id="an ID number, lowercase x"),
        pytest.param(f"grant:{USCC}", id="a credit code inside"),
    ],
)
def test_a_grant_id_holding_an_identifier_is_neither_issued_nor_accepted(grant_id: str) -> None:
    grant = make(grant_id=grant_id)
    with pytest.raises(MalformedGrantError) as issuing:
        issue_grant(grant, PLATFORM)
    assert grant_id not in str(issuing.value)
    assert mask_identifier(RIC)[:6] not in str(issuing.value)
    # a platform that signed one anyway (an older release): the holder refuses to register it
    signed = keys.sign_envelope(GRANT_PAYLOAD_TYPE, grant.to_payload(), PLATFORM)
    with pytest.raises(MalformedGrantError) as verifying:
        verify_grant(signed.to_json().encode(), bundle=BUNDLE, now=NOW)
    assert grant_id not in str(verifying.value)


def test_a_revocation_of_such_an_id_still_revokes() -> None:
    # refusing it would leave a grant that was registered under an older release unrevoked
    revocation = GrantRevocation(f"g-{RIC}", "zd-platform", NOW, "subject_withdrew_consent")
    assert revocation.grant_id == f"g-{RIC}"


@pytest.mark.parametrize("grant_id", ["g-0123456789abcdef", "grant-2026-0001", "g-" + "1" * 18])
def test_ordinary_grant_ids_are_issued(grant_id: str) -> None:
    raw = issue_grant(make(grant_id=grant_id), PLATFORM)
    assert verify_grant(raw, bundle=BUNDLE, now=NOW).grant_id == grant_id
