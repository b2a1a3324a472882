"""Authorised queries between real `credex serve` processes over mutual TLS.

District: `platform` (issues grants, witnesses logs), `market` (holds records), `tax` (asks).
One cluster for the module: each test asks about its own subject, so the tests do not share
grants or records. Every denial is checked twice: the reason code the requester sees, and the
denied entry in the provider's access log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import keys
from node import wire
from node._pb.credex.v1 import query_pb2_grpc
from node.accesslog import LogEntry, search
from node.cluster import LocalCluster
from node.errors import AuthError, PolicyDenied
from node.grants import Grant, issue_grant, subject_digest
from node.query import QUERY_METHOD, QueryAsk, QueryEngine, build_body, send_query
from node.requests import MAX_SKEW, VerifiedRequest
from node.runtime import NodeRuntime, open_runtime
from node.server import build_server
from node.services import query_service
from node.transport import ChannelIdentity, client_channel
from tests.catalog.catalog_testdata import licence_fields, make_ric
from tests.e2e.query_support import store_signed_record

pytestmark = pytest.mark.slow

ITEMS = [
    "admin_licence_person",
    "admin_penalty_person",
    "utility_account",
    "severe_dishonesty_list",
]
PURPOSES = ["staff_recruitment", "administrative_licensing"]
GRANT_FIELDS = frozenset({"decision_no", "license_category", "decision_date", "status"})


COMPANY = "91350100M000100Y43"  # GB 32100's worked example
SEVERE_LIST_FIELDS = {
    "subject_name": "淄博某某商贸有限公司",
    "subject_category": "法人及非法人组织",
    "uscc": COMPANY,
    "legal_rep_name": "王某某",
    "legal_rep_id_number": make_ric("370303", "19900101", "020"),  # person(20), the link
    "list_name": "严重违法失信名单",
    "decision_no": "张市监列〔2026〕7号",
    "status": "列入",
}


def person(seq: int) -> str:
    """A valid resident ID number (GB 11643 check digit) unique per test."""
    return make_ric("370303", "19900101", f"{seq:03d}")


def seed(
    rt: NodeRuntime,
    subject: str,
    item: str,
    fields: dict[str, str],
    *,
    linked: tuple[str, ...] = (),
) -> str:
    """Sign and store one record of `subject` the way ingest does (with the blind indexes of
    the `linked` persons, e.g. a legal representative); return its row id."""
    return store_signed_record(rt, subject, item, fields, linked=linked).row_id


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("district")
    agreements = [
        {"provider": "market", "consumer": "tax", "items": ITEMS, "purposes": PURPOSES,
         "kind": "query"},
    ]  # fmt: skip
    c = LocalCluster(
        root,
        nodes=[("platform", "platform"), ("market", "department"), ("tax", "department")],
        agreements=agreements,
    )
    c.init()
    rt = c.runtime("market")
    try:
        for seq in range(1, 12):
            seed(rt, person(seq), "admin_licence_person", licence_fields(seq))
        seed(rt, person(1), "utility_account", {"utility_type": "水", "account_no": "A-1"})
        seed(rt, COMPANY, "severe_dishonesty_list", SEVERE_LIST_FIELDS, linked=(person(20),))
    finally:
        rt.close()
    c.start("market")
    c.start("tax")
    try:
        yield c
    finally:
        c.stop_all()


def market_log(cluster: LocalCluster, *, request_id: str | None = None) -> list[LogEntry]:
    rt = cluster.runtime("market")
    try:
        found = search(rt.log.backend, requester="tax", kind="query")
    finally:
        rt.close()
    return [e for _i, e in found if request_id is None or e.request_id == request_id]


def query_args(subject: str, *extra: str, purpose: str = "staff_recruitment") -> list[str]:
    return [
        "query", "market", "--subject", subject, "--subject-kind", "natural_person",
        "--items", "admin_licence_person", "--purpose", purpose,
        "--legal-basis", "公务员录用考察", "--officer", "t-007", *extra,
    ]  # fmt: skip


def issue(
    cluster: LocalCluster,
    subject: str,
    *,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
    use_limit: int = 5,
) -> tuple[str, Path]:
    """A grant signed by the platform node, limited to GRANT_FIELDS; returns (id, file)."""
    rt = cluster.runtime("platform")
    try:
        now = rt.clock()
        grant = Grant(
            grant_id=f"g-{uuid.uuid4().hex[:12]}",
            issuer="platform",
            subject_digest=subject_digest(subject),
            grantee="tax",
            purpose="staff_recruitment",
            items=frozenset({"admin_licence_person"}),
            valid_from=valid_from or now - dt.timedelta(minutes=1),
            valid_until=valid_until or now + dt.timedelta(days=30),
            use_limit=use_limit,
            evidence_sha256="ab" * 32,
            issued_at=now,
            fields={"admin_licence_person": GRANT_FIELDS},
        )
        raw = issue_grant(grant, rt.node_keys.signing)
    finally:
        rt.close()
    path = cluster.root / f"{grant.grant_id}.json"
    path.write_bytes(raw)
    return grant.grant_id, path


def denied(cluster: LocalCluster, args: list[str], reason: str) -> None:
    done = cluster.cli("tax", *args)
    assert done.returncode == 1, done.stderr
    assert reason in done.stderr
    assert "370303" not in done.stderr  # no identifier in the message, not even masked
    entries = [e for e in market_log(cluster) if e.reason == reason]
    assert entries, f"no denied entry with reason {reason}"
    assert all(e.decision == "deny" and e.result_count == 0 for e in entries)


def test_allowed_query_returns_exactly_the_granted_fields_verified(cluster: LocalCluster) -> None:
    subject = person(1)
    grant_id, path = issue(cluster, subject)
    out = cluster.cli_json("tax", *query_args(subject, "--grant", str(path)))
    assert len(out["records"]) == 1
    record = out["records"][0]
    assert record["verified"] is True
    assert record["producer"] == "market"
    assert set(record["fields"]) == GRANT_FIELDS
    assert record["fields"]["decision_no"] == "淄张市监许〔2026〕1号"
    entries = market_log(cluster, request_id=out["request_id"])
    assert len(entries) == 1
    entry = entries[0]
    assert entry.decision == "allow"
    assert entry.grant_id == grant_id
    assert entry.result_count == 1
    assert entry.items_released == ("admin_licence_person",)
    assert entry.subject_masked == subject[:6] + "********" + subject[-4:]
    assert subject not in json.dumps(entry.to_dict())
    # a registered grant can then be named by id alone
    again = cluster.cli_json("tax", *query_args(subject, "--grant", grant_id))
    assert len(again["records"]) == 1


def test_statutory_duty_needs_no_grant_and_releases_non_sensitive_fields(
    cluster: LocalCluster,
) -> None:
    out = cluster.cli_json("tax", *query_args(person(2), purpose="administrative_licensing"))
    assert out["reason"] == "statutory_duty"
    assert set(out["records"][0]["fields"]) == set(licence_fields(2))


def test_a_request_narrowed_to_some_fields_gets_only_those(cluster: LocalCluster) -> None:
    narrowed = "admin_licence_person.decision_no,admin_licence_person.status"
    out = cluster.cli_json(
        "tax", *query_args(person(4), "--fields", narrowed, purpose="administrative_licensing")
    )
    assert set(out["records"][0]["fields"]) == {"decision_no", "status"}
    assert out["records"][0]["verified"] is True
    done = cluster.cli("tax", *query_args(person(4), "--fields", "decision_no"))
    assert done.returncode == 2  # not ITEM.FIELD: refused before anything is sent
    assert "ITEM.FIELD" in done.stderr


def test_a_legal_representative_query_returns_the_linked_severe_list_entry(
    cluster: LocalCluster,
) -> None:
    """Shandong Art. 31: an organisation's severe-dishonesty entry names its legal
    representative, and a query about that person returns the linked entry."""
    out = cluster.cli_json(
        "tax",
        *query_args(person(20), purpose="administrative_licensing")[:7],
        "severe_dishonesty_list",
        "--purpose",
        "administrative_licensing",
        "--legal-basis",
        "行政许可法",
    )
    assert [r["item"] for r in out["records"]] == ["severe_dishonesty_list"]
    record = out["records"][0]
    assert record["verified"] is True
    assert record["fields"]["decision_no"] == "张市监列〔2026〕7号"
    unrelated = cluster.cli_json(
        "tax",
        *query_args(person(21), purpose="administrative_licensing")[:7],
        "severe_dishonesty_list",
        "--purpose",
        "administrative_licensing",
        "--legal-basis",
        "行政许可法",
    )
    assert unrelated["records"] == []


def test_no_grant_for_a_natural_person_is_denied_and_logged(cluster: LocalCluster) -> None:
    denied(cluster, query_args(person(3)), "grant_required")


def test_unknown_purpose_is_denied(cluster: LocalCluster) -> None:
    denied(cluster, query_args(person(4), purpose="marketing"), "purpose_unknown")


def test_an_item_of_share_type_none_is_denied(cluster: LocalCluster) -> None:
    args = query_args(person(1), purpose="administrative_licensing")
    args[args.index("admin_licence_person")] = "utility_account"
    denied(cluster, args, "item_not_shareable")


def test_expired_grant_is_denied(cluster: LocalCluster) -> None:
    subject = person(5)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    _gid, path = issue(cluster, subject, valid_from=past, valid_until=past + dt.timedelta(days=1))
    denied(cluster, query_args(subject, "--grant", str(path)), "grant_expired")


def test_exhausted_grant_is_denied_after_its_last_use(cluster: LocalCluster) -> None:
    subject = person(6)
    _gid, path = issue(cluster, subject, use_limit=1)
    first = cluster.cli("tax", *query_args(subject, "--grant", str(path)))
    assert first.returncode == 0, first.stderr
    denied(cluster, query_args(subject, "--grant", str(path)), "grant_exhausted")


def test_revoked_grant_is_denied(cluster: LocalCluster) -> None:
    subject = person(7)
    grant_id, path = issue(cluster, subject)
    cluster.cli("market", "grant", "register", str(path), check=True)
    revocation = cluster.root / f"rev-{grant_id}.json"
    cluster.cli("platform", "grant", "revoke", grant_id, "--output", str(revocation), check=True)
    cluster.cli("market", "grant", "register-revocation", str(revocation), check=True)
    denied(cluster, query_args(subject, "--grant", grant_id), "grant_revoked")


def _raw_call(cluster: LocalCluster, signed: Any) -> grpc.StatusCode:
    async def call() -> grpc.StatusCode:
        rt = cluster.runtime("tax")
        try:
            channel = rt.channel("market")
            stub = __import__(
                "node._pb.credex.v1.query_pb2_grpc", fromlist=["QueryStub"]
            ).QueryStub(channel)
            try:
                await stub.Query(signed, timeout=10)
            except grpc.aio.AioRpcError as error:
                return error.code()
            finally:
                await channel.close()
            return grpc.StatusCode.OK
        finally:
            rt.close()

    return asyncio.run(call())


def _signed_query(cluster: LocalCluster, subject: str) -> tuple[QueryAsk, Any]:
    rt = cluster.runtime("tax")
    try:
        ask = QueryAsk(
            peer="market", subject=subject, subject_kind="natural_person",
            items=("admin_licence_person",), purpose="administrative_licensing",
            legal_basis="行政许可法", officer="t-008",
        )  # fmt: skip
        member = rt.bundle().member("market")
        assert member is not None
        body = build_body(ask, requester="tax", provider_key=member.encryption_key, now=rt.clock())
        return ask, rt.sign_request(QUERY_METHOD, body.SerializeToString())
    finally:
        rt.close()


def test_replayed_request_is_refused_and_logged(cluster: LocalCluster) -> None:
    _ask, signed = _signed_query(cluster, person(8))
    before = len([e for e in market_log(cluster) if e.reason == "replayed"])
    assert _raw_call(cluster, signed) == grpc.StatusCode.OK
    answered = market_log(cluster)[-1]
    assert _raw_call(cluster, signed) == grpc.StatusCode.UNAUTHENTICATED
    after = [e for e in market_log(cluster) if e.reason == "replayed"]
    assert len(after) == before + 1
    replay = after[-1]
    assert replay.decision == "deny"
    # the denial names the request that was replayed, and releases nothing
    assert replay.request_id == answered.request_id
    assert replay.subject_index == answered.subject_index
    assert (replay.items_released, replay.result_count) == ((), 0)


def test_a_request_sent_four_times_at_once_is_answered_once(cluster: LocalCluster) -> None:
    # The nonce is claimed in the access log's group commit: two copies in flight together,
    # possibly in one group, still get exactly one answer.
    _ask, signed = _signed_query(cluster, person(8))

    async def twice() -> list[grpc.StatusCode]:
        rt = cluster.runtime("tax")
        channel = rt.channel("market")
        stub = query_pb2_grpc.QueryStub(channel)

        async def call() -> grpc.StatusCode:
            try:
                await stub.Query(signed, timeout=10)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        try:
            return list(await asyncio.gather(*(call() for _ in range(4))))
        finally:
            await channel.close()
            rt.close()

    codes = asyncio.run(twice())
    assert sorted(c.name for c in codes) == ["OK", *["UNAUTHENTICATED"] * 3]


def test_a_request_replayed_after_a_kill_9_of_the_provider_is_refused(
    cluster: LocalCluster,
) -> None:
    # The nonce is group-committed in a worker thread: once the answer came back, the nonce
    # must already be on disk, so a provider killed without any cleanup still refuses a replay.
    _ask, signed = _signed_query(cluster, person(7))
    assert _raw_call(cluster, signed) == grpc.StatusCode.OK
    cluster.kill("market")
    cluster.start("market")
    assert _raw_call(cluster, signed) == grpc.StatusCode.UNAUTHENTICATED


def test_a_replay_at_the_edge_of_its_window_is_judged_at_the_clock_it_was_checked_at(
    cluster: LocalCluster,
) -> None:
    # The nonce is claimed after the request was checked. Judged at the later clock, a replay
    # checked at the last accepted instant would find the original's nonce expired and take
    # it over; the claim must use the clock the timestamp was checked at.
    _ask, signed = _signed_query(cluster, person(11))
    envelope = keys.Envelope.from_bytes(signed.envelope)
    fields = wire.request_payload_from_bytes(envelope.payload)
    keyid, nonce = envelope.signatures[0][0], fields.nonce.hex()
    edge = fields.issued_at + MAX_SKEW  # the last instant the timestamp check accepts
    later = edge + dt.timedelta(seconds=2)
    rt = open_runtime(cluster.home("market"), clock=lambda: later)
    try:
        replay = VerifiedRequest(
            node_id="tax", keyid=keyid, method=QUERY_METHOD, body=fields.body,
            issued_at=fields.issued_at, nonce=nonce, checked_at=edge,
        )  # fmt: skip
        # the original was answered: its nonce is remembered until `edge`, in tax's scope
        remembered = [(replay.nonce_scope, nonce, edge)]
        assert rt.store.remember_nonces(remembered, now=fields.issued_at) == [True]
        with pytest.raises(AuthError, match="replayed"):
            asyncio.run(QueryEngine(rt).answer(replay))
        logged = search(rt.log.backend, requester="tax", kind="query")[-1][1]
        assert (logged.decision, logged.reason) == ("deny", "replayed")
    finally:
        rt.close()


def test_forged_signature_is_refused_and_logged(cluster: LocalCluster) -> None:
    _ask, signed = _signed_query(cluster, person(9))
    envelope = keys.Envelope.from_bytes(signed.envelope)
    kid, sig = envelope.signatures[0]
    forged_env = keys.Envelope(
        envelope.payload_type, envelope.payload, ((kid, bytes([sig[0] ^ 1]) + sig[1:]),)
    )
    forged = type(signed)(envelope=forged_env.to_bytes())
    before = len([e for e in market_log(cluster) if e.reason == "bad_signature"])
    assert _raw_call(cluster, forged) == grpc.StatusCode.UNAUTHENTICATED
    after = [e for e in market_log(cluster) if e.reason == "bad_signature"]
    assert len(after) == before + 1


def test_in_process_client_verifies_the_answer(cluster: LocalCluster) -> None:
    rt = cluster.runtime("tax")
    try:
        result = asyncio.run(
            send_query(
                rt,
                QueryAsk(
                    peer="market",
                    subject=person(10),
                    subject_kind="natural_person",
                    items=("admin_licence_person",),
                    purpose="administrative_licensing",
                    legal_basis="行政许可法",
                    officer="t-009",
                ),
            )
        )
    finally:
        rt.close()
    assert [r.item_id for r in result.records] == ["admin_licence_person"]
    assert result.records[0].fields["decision_no"] == "淄张市监许〔2026〕10号"


def test_a_revoked_peer_is_refused(cluster: LocalCluster) -> None:
    rt = cluster.runtime("tax")
    try:
        tax_keyid = rt.node_keys.signing.keyid
    finally:
        rt.close()
    cluster.reissue_bundle(revoked_keyids=[tax_keyid])
    cluster.stop("market")
    cluster.start("market")
    try:
        done = cluster.cli("tax", *query_args(person(11), purpose="administrative_licensing"))
        assert done.returncode == 3, done.stderr  # UNAUTHENTICATED: a verification failure
        last = market_log(cluster)[-1]
        assert last.decision == "deny"
        assert last.reason == "key_revoked"
    finally:
        cluster.reissue_bundle(revoked_keyids=[])
        cluster.stop("market")
        cluster.start("market")


def test_a_signed_grant_is_registered_off_the_event_loop(cluster: LocalCluster) -> None:
    # Queries on the embedded store are prepared on the event loop (reads and CPU only), but
    # registering a signed grant writes, and a write may wait behind another's fsync: it must
    # run in a worker thread. Served in-process here so the thread can be observed.
    subject = person(11)
    _grant_id, path = issue(cluster, subject)
    market, tax = cluster.runtime("market"), cluster.runtime("tax")
    loop_threads: list[bool] = []
    register = market.grants.register

    def watched_register(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            loop_threads.append(True)
        except RuntimeError:
            loop_threads.append(False)
        return register(*args, **kwargs)

    market.grants.register = watched_register  # type: ignore[method-assign]

    async def ask(grant: bytes | None) -> list[str]:
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
            result = await send_query(
                tax,
                QueryAsk(
                    peer="market",
                    subject=subject,
                    subject_kind="natural_person",
                    items=("admin_licence_person",),
                    purpose="staff_recruitment",
                    legal_basis="公务员录用考察",
                    officer="t-011",
                    grant=grant,
                ),
                channel=channel,
            )
        finally:
            await channel.close()
            await server.stop(None)
        return sorted(f for r in result.records for f in r.fields)

    try:
        assert asyncio.run(ask(path.read_bytes())) == sorted(GRANT_FIELDS)
        assert loop_threads == [False]
        # Without a grant this purpose needs one: the inline path decides and logs the denial.
        with pytest.raises(PolicyDenied, match="grant_required"):
            asyncio.run(ask(None))
        assert loop_threads == [False]
    finally:
        market.close()
        tax.close()
