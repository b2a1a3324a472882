"""A call is identified by the certificate the bundle IN USE pins, not by a stale TLS roster.

The TLS roster (the handshake roots and the fingerprint -> node map) is rebuilt from the
bundle when it is loaded, and that rebuild can fail on its own: `NodeRuntime.reload_bundle`
installs the new bundle first and then asks `roster_from_bundle`, which refuses a peer
directory certificate that no longer matches its pin (ConfigError), leaving the old roster in
force. A bundle that rotates a node's TLS certificate (the old key leaked) must still shut the
old certificate out at the next call, on old and new connections alike.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from typing import Any

import pytest

import keys
from node.errors import AuthError
from node.transport import ServerTls, TlsRoster
from tests.node.transport_support import department_entry, unsigned_bundle

NOW = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def node_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("keys")
    made = {n: keys.create_key_dir(base / n, node_id=n) for n in ("dept-a", "dept-b")}
    # dept-b's new key directory after a rotation: same node id, a new TLS key and certificate.
    made["dept-b-rotated"] = keys.create_key_dir(base / "dept-b-rotated", node_id="dept-b")
    return made


class Call:
    """A stand-in servicer context presenting one certificate."""

    def __init__(self, cert_pem: bytes) -> None:
        self.cert_pem = cert_pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.cert_pem]}


def _entry(member: Any, node_id: str) -> keys.RosterEntry:
    return department_entry(
        member, node_id=node_id, valid_from=NOW - DAY, valid_until=NOW + 30 * DAY
    )


def _bundle(version: int, *entries: keys.RosterEntry) -> keys.TrustBundle:
    return unsigned_bundle(
        *entries, version=version, issued_at=NOW - DAY, expires_at=NOW + 30 * DAY
    )


def test_a_certificate_the_bundle_in_use_no_longer_pins_is_refused(
    node_keys: dict[str, Any],
) -> None:
    a, b, rotated = node_keys["dept-a"], node_keys["dept-b"], node_keys["dept-b-rotated"]
    old_roster = TlsRoster.of((m.node_id, m.tls_fingerprint, m.tls_cert_pem) for m in (a, b))
    # Bundle v5 pins dept-b's NEW certificate; the TLS roster could not be rebuilt from it.
    current = _bundle(5, _entry(a, "dept-a"), _entry(rotated, "dept-b"))
    tls = ServerTls(
        key_pem=a.tls_key_pem,
        cert_pem=a.tls_cert_pem,
        roster=old_roster,
        bundle=lambda: current,
        clock=lambda: NOW,
    )

    def old_certificate() -> None:
        with pytest.raises(AuthError, match="not the one trust bundle v5 pins") as refused:
            tls.identify(Call(b.tls_cert_pem))
        assert refused.value.reason == "tls_unpinned"
        assert "dept-b" in str(refused.value)

    contextvars.copy_context().run(old_certificate)
    # dept-a, whose pin did not change, is still served.
    assert contextvars.copy_context().run(tls.identify, Call(a.tls_cert_pem)) == "dept-a"


def test_the_pin_is_checked_again_when_the_bundle_changes_within_a_call(
    node_keys: dict[str, Any],
) -> None:
    a, b, rotated = node_keys["dept-a"], node_keys["dept-b"], node_keys["dept-b-rotated"]
    roster = TlsRoster.of((m.node_id, m.tls_fingerprint, m.tls_cert_pem) for m in (a, b))
    bundles = [_bundle(4, _entry(a, "dept-a"), _entry(b, "dept-b"))]
    tls = ServerTls(
        key_pem=a.tls_key_pem,
        cert_pem=a.tls_cert_pem,
        roster=roster,
        bundle=lambda: bundles[-1],
        clock=lambda: NOW,
    )

    def one_call() -> None:
        call = Call(b.tls_cert_pem)
        assert tls.identify(call) == "dept-b"  # cached for this call from here on
        bundles.append(_bundle(5, _entry(a, "dept-a"), _entry(rotated, "dept-b")))
        with pytest.raises(AuthError, match="not the one trust bundle v5 pins"):
            tls.identify(call)

    contextvars.copy_context().run(one_call)
