"""ServerTls.identify judges every call by the bundle in use and the clock of that call.

The TLS roots are computed when the roster is loaded; a bundle that expires, or a member whose
validity window closes, while the node runs must stop being trusted at once, on new and old
connections alike (DESIGN.md section 5: an expired bundle stops the node trusting anyone).
"""

from __future__ import annotations

import contextvars
import datetime as dt
from typing import Any

import pytest

import keys
from node.errors import AuthError, StaleBundle
from node.transport import ServerTls, TlsRoster
from tests.node.transport_support import department_entry, unsigned_bundle

NOW = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def node_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("keys")
    return {n: keys.create_key_dir(base / n, node_id=n) for n in ("dept-a", "dept-b", "platform")}


class Call:
    """A stand-in servicer context presenting one certificate; counts auth_context reads."""

    def __init__(self, cert_pem: bytes) -> None:
        self.cert_pem = cert_pem
        self.reads = 0

    def auth_context(self) -> dict[str, list[bytes]]:
        self.reads += 1
        return {"x509_pem_cert": [self.cert_pem]}


def _entry(member: Any, until: dt.datetime) -> keys.RosterEntry:
    return department_entry(member, valid_from=NOW - DAY, valid_until=until)


def _bundle(*entries: keys.RosterEntry) -> keys.TrustBundle:
    return unsigned_bundle(*entries, version=4, issued_at=NOW - DAY, expires_at=NOW + 30 * DAY)


class Node:
    """The bundle in use and the clock of a running node, both changeable by the test."""

    def __init__(self, bundle: keys.TrustBundle) -> None:
        self.now = NOW
        self.current: keys.TrustBundle | None = bundle

    def bundle(self) -> keys.TrustBundle:
        if self.current is None or self.current.expires_at <= self.now:
            raise StaleBundle("trust bundle v4 expired at ...; install a newer one")
        return self.current

    def clock(self) -> dt.datetime:
        return self.now


def _server(node_keys: dict[str, Any], node: Node) -> ServerTls:
    a = node_keys["dept-a"]
    roster = TlsRoster.of(
        (m.node_id, m.tls_fingerprint, m.tls_cert_pem) for m in node_keys.values()
    )
    return ServerTls(
        key_pem=a.tls_key_pem,
        cert_pem=a.tls_cert_pem,
        roster=roster,
        bundle=node.bundle,
        clock=node.clock,
    )


def test_a_membership_that_lapses_is_refused_at_the_next_call(node_keys: dict[str, Any]) -> None:
    b, platform = node_keys["dept-b"], node_keys["platform"]
    node = Node(
        _bundle(
            _entry(node_keys["dept-a"], NOW + 30 * DAY),
            _entry(b, NOW + 2 * DAY),
            _entry(platform, NOW + 30 * DAY),
        )
    )
    tls = _server(node_keys, node)

    def one_call() -> None:
        call = Call(b.tls_cert_pem)
        assert tls.identify(call) == "dept-b"
        node.now = NOW + 3 * DAY  # dept-b's membership ended; the bundle is still in force
        with pytest.raises(AuthError, match="not valid now") as refused:
            tls.identify(call)
        assert refused.value.reason == "requester_not_valid"
        assert "renews it" in str(refused.value)
        # The certificate is still read once per call: only the validity is checked again.
        assert call.reads == 1
        # Who the certificate belongs to stays known, for the refusal's log entry.
        assert tls.certificate_owner(call) == "dept-b"

    contextvars.copy_context().run(one_call)
    assert contextvars.copy_context().run(tls.identify, Call(platform.tls_cert_pem)) == "platform"


def test_an_expired_bundle_trusts_no_one(node_keys: dict[str, Any]) -> None:
    platform = node_keys["platform"]
    node = Node(_bundle(*(_entry(m, NOW + 60 * DAY) for m in node_keys.values())))
    tls = _server(node_keys, node)
    assert tls.identify(Call(platform.tls_cert_pem)) == "platform"
    node.now = NOW + 31 * DAY
    with pytest.raises(StaleBundle, match="trusts no peer") as refused:
        tls.identify(Call(platform.tls_cert_pem))
    assert "install a newer one" in str(refused.value)
    assert tls.certificate_owner(Call(platform.tls_cert_pem)) == "platform"


def test_a_pinned_certificate_the_bundle_does_not_list_is_refused(
    node_keys: dict[str, Any],
) -> None:
    # The TLS roster and the bundle in use disagree (a bundle swapped in without a TLS reload).
    node = Node(_bundle(_entry(node_keys["dept-a"], NOW + 30 * DAY)))
    tls = _server(node_keys, node)
    with pytest.raises(AuthError, match="not in the roster of trust bundle v4") as refused:
        tls.identify(Call(node_keys["platform"].tls_cert_pem))
    assert refused.value.reason == "requester_unknown"


def test_an_unpinned_certificate_has_no_owner(node_keys: dict[str, Any], tmp_path: Any) -> None:
    outsider = keys.create_key_dir(tmp_path / "outsider", node_id="outsider")
    node = Node(_bundle(*(_entry(m, NOW + 30 * DAY) for m in node_keys.values())))
    tls = _server(node_keys, node)
    with pytest.raises(AuthError, match="not pinned") as refused:
        tls.identify(Call(outsider.tls_cert_pem))
    assert refused.value.reason == "tls_unpinned"
    assert tls.certificate_owner(Call(outsider.tls_cert_pem)) is None


def test_bundle_and_clock_come_together(node_keys: dict[str, Any]) -> None:
    a = node_keys["dept-a"]
    roster = TlsRoster.of([(a.node_id, a.tls_fingerprint, a.tls_cert_pem)])
    node = Node(_bundle(_entry(a, NOW + DAY)))
    with pytest.raises(ValueError, match="both"):
        ServerTls(key_pem=a.tls_key_pem, cert_pem=a.tls_cert_pem, roster=roster, bundle=node.bundle)
