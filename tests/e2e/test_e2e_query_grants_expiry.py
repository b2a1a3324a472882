"""Query service over mutual TLS: early grant revocations, racing grant uses, records past
their disclosure end, and public disclosure of a natural person.

District: `platform` (issues and revokes grants), `market` (holds records and answers), `tax`
(asks). market's Query service runs in this process (`query_service.make_services`, the same
servicer `credex serve` runs) so a test can hold two queries at the same point, and so no
lifecycle scan runs behind a test's back; the CLI commands are the real `credex`. Every denial
is checked twice: the reason code the requester sees and market's access-log entry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import pytest

from node._pb.credex.v1 import query_pb2_grpc
from node.accesslog import LogEntry, search
from node.cluster import LocalCluster
from node.errors import LogUnavailable, PolicyDenied
from node.grants import Grant, GrantRevocation, issue_grant, sign_revocation, subject_digest
from node.lifecycle import china_day
from node.query import QUERY_METHOD, QueryAsk, QueryResult, build_body, send_query
from node.runtime import NodeRuntime
from node.server import build_server
from node.services import query_service
from node.transport import ChannelIdentity, client_channel
from tests.catalog.catalog_testdata import licence_fields, make_ric
from tests.e2e.query_support import store_signed_record

pytestmark = pytest.mark.slow

ITEM = "admin_licence_person"
GRANT_FIELDS = frozenset({"decision_no", "license_category", "decision_date", "status"})


def person(seq: int) -> str:
    """A valid resident ID number (GB 11643 check digit) unique per test."""
    return make_ric("370303", "19850505", f"{seq:03d}")


def seed(rt: NodeRuntime, subject: str, n: int, *, max_end: dt.date | None = None) -> str:
    """Sign and store one active licence record of `subject`; return its record key."""
    fields = licence_fields(n, "李四")
    return store_signed_record(rt, subject, ITEM, fields, max_end=max_end).record_key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    agreements = [
        {"provider": "market", "consumer": "tax", "items": [ITEM],
         "purposes": ["staff_recruitment", "administrative_licensing", "public_disclosure"],
         "kind": "query"},
    ]  # fmt: skip
    c = LocalCluster(
        tmp_path_factory.mktemp("district"),
        nodes=[("platform", "platform"), ("market", "department"), ("tax", "department")],
        agreements=agreements,
    )
    c.init()
    try:
        yield c
    finally:
        c.stop_all()  # nothing is started here; a failing test may have


def issue(cluster: LocalCluster, subject: str, *, use_limit: int = 5) -> tuple[str, bytes]:
    """A grant for `subject` signed by the platform node; returns (grant id, signed bytes)."""
    rt = cluster.runtime("platform")
    try:
        now = rt.clock()
        grant = Grant(
            grant_id=f"g-{uuid.uuid4().hex[:12]}",
            issuer="platform",
            subject_digest=subject_digest(subject),
            grantee="tax",
            purpose="staff_recruitment",
            items=frozenset({ITEM}),
            valid_from=now - dt.timedelta(minutes=1),
            valid_until=now + dt.timedelta(days=30),
            use_limit=use_limit,
            evidence_sha256="ab" * 32,
            issued_at=now,
            fields={ITEM: GRANT_FIELDS},
        )
        return grant.grant_id, issue_grant(grant, rt.node_keys.signing)
    finally:
        rt.close()


def ask(
    subject: str,
    *,
    grant: bytes | None = None,
    purpose: str = "staff_recruitment",
    legal_basis: str = "公务员录用考察",
) -> QueryAsk:
    return QueryAsk(
        peer="market",
        subject=subject,
        subject_kind="natural_person",
        items=(ITEM,),
        purpose=purpose,
        legal_basis=legal_basis,
        officer="t-042",
        grant=grant,
    )


def serve_and_ask(
    cluster: LocalCluster, asks: Sequence[QueryAsk], *, market: NodeRuntime | None = None
) -> list[QueryResult | PolicyDenied]:
    """Serve market's Query service in this process and send `asks` from tax, all at once;
    each outcome is the verified answer or the denial."""
    own = market is None
    market_rt = cluster.runtime("market") if market is None else market
    tax = cluster.runtime("tax")

    async def run() -> list[QueryResult | PolicyDenied]:
        async with query_channel(market_rt, tax) as channel:

            async def one(a: QueryAsk) -> QueryResult | PolicyDenied:
                try:
                    return await send_query(tax, a, channel=channel)
                except PolicyDenied as denial:
                    return denial

            return list(await asyncio.gather(*(one(a) for a in asks)))

    try:
        return asyncio.run(run())
    finally:
        tax.close()
        if own:
            market_rt.close()


@asynccontextmanager
async def query_channel(market: NodeRuntime, tax: NodeRuntime) -> AsyncIterator[grpc.aio.Channel]:
    """market's Query service on a free loopback port, and tax's mTLS channel to it."""
    server = build_server(
        listen="127.0.0.1:0",
        tls=market.server_tls(),
        services=query_service.make_services(market),
    )
    await server.start()
    channel = client_channel(
        server.target,
        peer=tax.tls_roster().peer("market"),
        identity=ChannelIdentity(
            key_pem=tax.node_keys.tls_key_pem, cert_pem=tax.node_keys.tls_cert_pem
        ),
    )
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)


def logged(cluster: LocalCluster, request_id: str) -> list[LogEntry]:
    rt = cluster.runtime("market")
    try:
        found = search(rt.log.backend, requester="tax", kind="query")
    finally:
        rt.close()
    return [e for _i, e in found if e.request_id == request_id]


def the_denial(outcome: QueryResult | PolicyDenied, reason: str) -> PolicyDenied:
    assert isinstance(outcome, PolicyDenied), outcome
    assert outcome.reason == reason, str(outcome)
    assert "370303" not in str(outcome)  # no identifier in the message, not even masked
    return outcome


def test_a_grant_revoked_before_it_is_presented_is_denied_and_logged(
    cluster: LocalCluster,
) -> None:
    subject = person(1)
    rt = cluster.runtime("market")
    try:
        seed(rt, subject, 1)
    finally:
        rt.close()
    grant_id, raw = issue(cluster, subject)
    revocation = cluster.root / f"rev-{grant_id}.json"
    cluster.cli("platform", "grant", "revoke", grant_id, "--output", str(revocation), check=True)
    # market has never seen the grant: the revocation is recorded all the same
    recorded = cluster.cli_json("market", "grant", "register-revocation", str(revocation))
    assert recorded["grant_id"] == grant_id
    assert recorded["registered"] is False
    # later the grantee presents the grant itself with a query
    a = ask(subject, grant=raw)
    [outcome] = serve_and_ask(cluster, [a])
    the_denial(outcome, "grant_revoked")
    [entry] = logged(cluster, a.request_id)
    assert (entry.decision, entry.reason, entry.grant_id) == ("deny", "grant_revoked", grant_id)
    assert (entry.items_released, entry.result_count) == ((), 0)
    listed = cluster.cli_json("market", "grant", "list", "--id", grant_id)
    assert listed, listed


def test_a_bundle_revocation_of_an_unseen_grant_holds_after_the_bundle_drops_it(
    cluster: LocalCluster,
) -> None:
    subject = person(2)
    rt = cluster.runtime("market")
    try:
        seed(rt, subject, 2)
    finally:
        rt.close()
    grant_id, raw = issue(cluster, subject)
    cluster.reissue_bundle(revoked_grants=[grant_id])
    market = cluster.runtime("market")
    try:
        market.bundle()  # a runtime records a bundle's revoked_grants when it first uses it
    finally:
        market.close()
    cluster.reissue_bundle(revoked_grants=[])  # revocation is final; the list may shrink
    a = ask(subject, grant=raw)
    [outcome] = serve_and_ask(cluster, [a])
    the_denial(outcome, "grant_revoked")
    [entry] = logged(cluster, a.request_id)
    assert (entry.decision, entry.reason) == ("deny", "grant_revoked")


def test_a_signed_revocation_for_an_unseen_grant_verifies_before_it_is_kept(
    cluster: LocalCluster,
) -> None:
    # Only a platform may revoke: a department's "revocation" is refused and keeps nothing.
    tax = cluster.runtime("tax")
    try:
        forged = sign_revocation(
            GrantRevocation("g-forged", "tax", tax.clock(), "subject_withdrew_consent"),
            tax.node_keys.signing,
        )
    finally:
        tax.close()
    path = cluster.root / "forged-revocation.json"
    path.write_bytes(forged)
    done = cluster.cli("market", "grant", "register-revocation", str(path))
    assert done.returncode != 0
    market = cluster.runtime("market")
    try:
        assert market.grants.revocation("g-forged") is None
    finally:
        market.close()


def test_two_queries_racing_for_the_last_use_leave_one_entry_each(
    cluster: LocalCluster,
) -> None:
    subject = person(3)
    market = cluster.runtime("market")
    try:
        seed(market, subject, 3)
        _grant_id, raw = issue(cluster, subject, use_limit=1)
        # Both queries read the grant (one use left) before either counts a use.
        both_read = threading.Barrier(2, timeout=20)
        get = market.grants.get

        def held_get(*args: Any, **kwargs: Any) -> Any:
            state = get(*args, **kwargs)
            both_read.wait()
            return state

        market.grants.get = held_get  # type: ignore[method-assign]
        first, second = ask(subject, grant=raw), ask(subject, grant=raw)
        outcomes = serve_and_ask(cluster, [first, second], market=market)
    finally:
        market.close()
    answered = [o for o in outcomes if isinstance(o, QueryResult)]
    assert len(answered) == 1, outcomes
    assert [r.fields.keys() for r in answered[0].records] == [GRANT_FIELDS]
    loser = next(o for o in outcomes if not isinstance(o, QueryResult))
    the_denial(loser, "grant_exhausted")
    entries = {a.request_id: logged(cluster, a.request_id) for a in (first, second)}
    assert sorted(len(e) for e in entries.values()) == [1, 1], entries
    decisions = sorted((e[0].decision, e[0].reason, e[0].result_count) for e in entries.values())
    assert decisions == [("allow", "allowed", 1), ("deny", "grant_exhausted", 0)]


def test_a_record_past_its_disclosure_end_is_held_back_before_the_scan(
    cluster: LocalCluster,
) -> None:
    subject = person(4)
    rt = cluster.runtime("market")
    try:
        today = china_day(rt.clock())
        last_day = seed(rt, subject, 41, max_end=today)  # its last day: still shown
        seed(rt, subject, 42, max_end=today - dt.timedelta(days=1))  # over since yesterday
        states = {r.state for r in rt.store.records_by_subject(rt.blind.token(subject))}
    finally:
        rt.close()
    assert states == {"active"}  # no lifecycle scan has run
    a = ask(subject, purpose="administrative_licensing", legal_basis="行政许可法")
    [outcome] = serve_and_ask(cluster, [a])
    assert isinstance(outcome, QueryResult), outcome
    assert [r.record_key for r in outcome.records] == [last_day]
    assert outcome.records[0].fields["decision_no"] == "淄张市监许〔2026〕41号"
    [entry] = logged(cluster, a.request_id)
    assert (entry.decision, entry.result_count) == ("allow", 1)


def test_a_natural_persons_record_for_public_disclosure_is_denied_and_logged(
    cluster: LocalCluster,
) -> None:
    subject = person(5)
    rt = cluster.runtime("market")
    try:
        seed(rt, subject, 5)
    finally:
        rt.close()
    a = ask(subject, purpose="public_disclosure", legal_basis="山东省社会信用条例第二十条")
    [outcome] = serve_and_ask(cluster, [a])
    the_denial(outcome, "natural_person_public_disclosure")
    [entry] = logged(cluster, a.request_id)
    assert (entry.decision, entry.reason) == ("deny", "natural_person_public_disclosure")
    assert (entry.items_asked, entry.items_released, entry.result_count) == ((ITEM,), (), 0)
    assert entry.purpose == "public_disclosure"
    assert subject not in str(entry.to_dict())


def test_a_use_is_given_back_when_nothing_leaves(cluster: LocalCluster) -> None:
    # The use is counted before the entry is written: a replay of an answered request, and a
    # request whose entry cannot be written, must not spend the subject's authorisation.
    subject = person(6)
    market, tax = cluster.runtime("market"), cluster.runtime("tax")
    try:
        seed(market, subject, 6)
        grant_id, raw = issue(cluster, subject, use_limit=5)
        member = tax.bundle().member("market")
        assert member is not None
        first, broken = ask(subject, grant=raw), ask(subject, grant=raw)
        cancelled = ask(subject, grant=raw)

        def signed(a: QueryAsk) -> Any:
            key, now = member.encryption_key, tax.clock()
            body = build_body(a, requester="tax", provider_key=key, now=now)
            return tax.sign_request(QUERY_METHOD, body.SerializeToString())

        append = market.log.append

        async def failing_append(entry: LogEntry, **kwargs: Any) -> int:
            if entry.request_id == broken.request_id:
                raise LogUnavailable("access log: cannot write (test)")
            index = await append(entry, **kwargs)
            if entry.request_id == cancelled.request_id:
                # the group commit made the entry durable, but its caller was cancelled
                raise asyncio.CancelledError
            return index

        market.log.append = failing_append  # type: ignore[method-assign]
        requests = [signed(first), signed(first), signed(broken), signed(cancelled)]
        requests[1] = requests[0]  # the very same signed request again: a replay

        async def run() -> list[grpc.StatusCode]:
            codes = []
            async with query_channel(market, tax) as channel:
                stub = query_pb2_grpc.QueryStub(channel)
                for request in requests:
                    # the cancelled handler never answers: its caller gives up after 2 s
                    timeout = 2 if request is requests[-1] else 20
                    try:
                        await stub.Query(request, timeout=timeout)
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as error:
                        codes.append(error.code())
            return codes

        codes = asyncio.run(run())
        state = market.grants.get(grant_id)
    finally:
        market.close()
        tax.close()
    assert codes == [
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,  # the replay
        grpc.StatusCode.UNAVAILABLE,  # its entry could not be written
        grpc.StatusCode.DEADLINE_EXCEEDED,  # its allow entry is durable: the use stays counted
    ]
    assert state is not None
    assert state.uses == 2  # the answer that left, and the one the log shows as released
