"""Query service over mutual TLS: which rules and which grant apply to what.

- an identifier that is also a valid citizen ID number, asked as an organisation or an
  individual business, gets the natural-person rules (its records are found by the identifier
  alone, whatever kind is asked);
- a grant named by id is verified again against the bundle in use, so a grant whose issuer
  lost its key or its platform role is refused as if it were sent afresh;
- a grant's field list widens only the subject's own records, never an organisation's record
  reached through the legal-representative link (Shandong Art. 31);
- a requester naming another's grant id learns only that it is not theirs, never its state.

District: `platform` (issues grants), `market` (holds records and answers), `tax` and `court`
(ask). market's Query service runs in this process, as in test_e2e_query_grants_expiry.py.
Every denial is checked twice: the reason the requester sees and market's access-log entry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import grpc.aio
import pytest

from catalog import InvalidIdentifier, normalize_uscc
from node._pb.credex.v1 import query_pb2_grpc
from node.accesslog import LogEntry, search
from node.cluster import LocalCluster
from node.errors import AuthError, PolicyDenied
from node.grants import Grant, issue_grant, subject_digest
from node.query import QUERY_METHOD, QueryAsk, QueryResult, build_body, send_query
from tests.catalog.catalog_testdata import licence_fields, make_ric
from tests.e2e.query_support import store_signed_record
from tests.e2e.test_e2e_query_grants_expiry import query_channel

pytestmark = pytest.mark.slow

LICENCE = "admin_licence_person"
ENFORCEMENT = "financial_enforcement"
RED_LIST = "red_list"
COMPANY = "91350100M000100Y43"  # GB 32100's worked example
Outcome = QueryResult | PolicyDenied | AuthError


def agreements(*consumers: str) -> list[dict[str, object]]:
    return [
        {"provider": "market", "consumer": c, "items": [LICENCE, ENFORCEMENT, RED_LIST],
         "purposes": ["staff_recruitment", "administrative_licensing", "public_disclosure"],
         "kind": "query"}
        for c in consumers
    ]  # fmt: skip


def make_cluster(root: Path) -> LocalCluster:
    c = LocalCluster(
        root,
        nodes=[
            ("platform", "platform"),
            ("market", "department"),
            ("tax", "department"),
            ("court", "department"),
        ],
        agreements=agreements("tax", "court"),
    )
    c.init()
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path_factory.mktemp("district"))
    try:
        yield c
    finally:
        c.stop_all()  # nothing is started here; a failing test may have


def person(birth: str, seq: int) -> str:
    """A valid resident ID number (GB 11643 check digit) unique per test."""
    return make_ric("370303", birth, f"{seq:03d}")


def seed(
    cluster: LocalCluster,
    subject: str,
    item: str,
    fields: Mapping[str, str],
    *,
    linked: Sequence[str] = (),
) -> str:
    """Sign and store one active record of `subject` the way ingest does (with the blind
    indexes of the `linked` persons); return its record key."""
    rt = cluster.runtime("market")
    try:
        return store_signed_record(rt, subject, item, fields, linked=linked).record_key
    finally:
        rt.close()


def issue(
    cluster: LocalCluster,
    subject: str,
    *,
    items: Sequence[str] = (LICENCE,),
    fields: Mapping[str, frozenset[str]] | None = None,
    use_limit: int = 5,
) -> tuple[str, bytes]:
    """A grant to tax for `subject`, signed by the platform node; returns (id, signed bytes)."""
    rt = cluster.runtime("platform")
    try:
        now = rt.clock()
        grant = Grant(
            grant_id=f"g-{uuid.uuid4().hex[:12]}",
            issuer="platform",
            subject_digest=subject_digest(subject),
            grantee="tax",
            purpose="staff_recruitment",
            items=frozenset(items),
            valid_from=now - dt.timedelta(minutes=1),
            valid_until=now + dt.timedelta(days=30),
            use_limit=use_limit,
            evidence_sha256="ab" * 32,
            issued_at=now,
            fields=dict(fields or {}),
        )
        return grant.grant_id, issue_grant(grant, rt.node_keys.signing)
    finally:
        rt.close()


def ask(
    subject: str,
    *,
    kind: str = "natural_person",
    items: Sequence[str] = (LICENCE,),
    purpose: str = "staff_recruitment",
    grant: bytes | None = None,
    grant_id: str | None = None,
) -> QueryAsk:
    return QueryAsk(
        peer="market",
        subject=subject,
        subject_kind=kind,
        items=tuple(items),
        purpose=purpose,
        legal_basis="公务员录用考察",
        officer="t-042",
        grant=grant,
        grant_id=grant_id,
    )


def query(cluster: LocalCluster, a: QueryAsk, *, requester: str = "tax") -> Outcome:
    """Serve market's Query service in this process and send `a` from `requester`."""
    market, asker = cluster.runtime("market"), cluster.runtime(requester)

    async def run() -> Outcome:
        async with query_channel(market, asker) as channel:
            try:
                return await send_query(asker, a, channel=channel)
            except (PolicyDenied, AuthError) as refused:
                return refused

    try:
        return asyncio.run(run())
    finally:
        asker.close()
        market.close()


def logged(cluster: LocalCluster, a: QueryAsk) -> LogEntry:
    rt = cluster.runtime("market")
    try:
        found = search(rt.log.backend, kind="query")
    finally:
        rt.close()
    [entry] = [e for _i, e in found if e.request_id == a.request_id]
    return entry


def denied(cluster: LocalCluster, outcome: Outcome, a: QueryAsk, reason: str) -> None:
    """`outcome` is a refusal logged with `reason`, and neither names the identifier. A policy
    denial carries the reason itself; a grant refused before the policy is UNAUTHENTICATED."""
    if reason == "grant_invalid":
        assert isinstance(outcome, AuthError), outcome
        assert "grant" in str(outcome)
    else:
        assert isinstance(outcome, PolicyDenied), outcome
        assert outcome.reason == reason, str(outcome)
    assert "370303" not in str(outcome)  # no identifier in the message, not even masked
    entry = logged(cluster, a)
    assert (entry.decision, entry.reason, entry.result_count) == ("deny", reason, 0)
    assert a.subject not in str(entry.to_dict())


def id_number_that_is_also_a_credit_code() -> str:
    """A resident ID number that also passes every GB 32100 credit-code check."""
    for seq in range(1000):
        ric = person("19900101", seq)
        try:
            normalize_uscc(ric)
        except InvalidIdentifier:
            continue
        return ric
    raise AssertionError("no such number in range")  # pragma: no cover


# --- an identifier of both kinds ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["organisation", "individual_business"])
def test_a_citizen_id_number_asked_as_another_kind_gets_the_natural_person_rules(
    cluster: LocalCluster, kind: str
) -> None:
    ric = id_number_that_is_also_a_credit_code()
    seed(cluster, ric, RED_LIST, {"subject_name": "张三", "id_number": ric, "list_name": "守信"})
    discretionary = ask(ric, kind=kind, items=(RED_LIST,))
    denied(cluster, query(cluster, discretionary), discretionary, "grant_required")
    public = ask(ric, kind=kind, items=(RED_LIST,), purpose="public_disclosure")
    denied(cluster, query(cluster, public), public, "natural_person_public_disclosure")
    # a statutory duty needs no grant, for a person either (PIPL Art. 13(3))
    statutory = ask(ric, kind=kind, items=(RED_LIST,), purpose="administrative_licensing")
    answer = query(cluster, statutory)
    assert isinstance(answer, QueryResult), answer
    assert answer.reason == "statutory_duty"
    assert logged(cluster, statutory).decision == "allow"


def test_a_real_credit_code_keeps_the_organisation_rules(cluster: LocalCluster) -> None:
    seed(
        cluster, COMPANY, RED_LIST, {"subject_name": "某公司", "uscc": COMPANY, "list_name": "守信"}
    )
    a = ask(COMPANY, kind="organisation", items=(RED_LIST,))
    answer = query(cluster, a)
    assert isinstance(answer, QueryResult), answer
    assert (answer.reason, len(answer.records)) == ("allowed", 1)


# --- a grant's fields on linked records ---------------------------------------------------------


def test_a_grant_widens_only_the_subjects_own_records(cluster: LocalCluster) -> None:
    rep, controller = person("19850505", 51), person("19700101", 52)
    own = seed(
        cluster, rep, ENFORCEMENT, {"subject_name": "X某", "case_no": "c-own", "status": "在执行"}
    )
    company = seed(
        cluster,
        COMPANY,
        ENFORCEMENT,
        {
            "subject_name": "某公司",
            "subject_category": "法人及非法人组织",
            "uscc": COMPANY,
            "legal_rep_name": "X某",
            "legal_rep_id_number": rep,
            "actual_controller_name": "Z某",
            "actual_controller_id_number": controller,
            "case_no": "c-org",
            "status": "在执行",
        },
        linked=(rep, controller),
    )
    granted = frozenset({"case_no", "legal_rep_id_number", "actual_controller_id_number"})
    _gid, raw = issue(cluster, rep, items=(ENFORCEMENT,), fields={ENFORCEMENT: granted})
    a = ask(rep, items=(ENFORCEMENT,), grant=raw)
    answer = query(cluster, a)
    assert isinstance(answer, QueryResult), answer
    fields = {r.record_key: r.fields for r in answer.records}
    assert set(fields) == {own, company}
    assert fields[own] == {"case_no": "c-own"}
    # the company's record names other people: no sensitive field of it leaves on rep's grant
    assert fields[company] == {"case_no": "c-org"}
    assert controller not in str(answer.records)
    assert logged(cluster, a).decision == "allow"


# --- another requester naming a grant -----------------------------------------------------------


def test_another_requester_naming_a_used_up_grant_learns_nothing_of_it(
    cluster: LocalCluster,
) -> None:
    subject = person("19850505", 61)
    seed(cluster, subject, LICENCE, licence_fields(61))
    grant_id, raw = issue(cluster, subject, use_limit=1)
    assert isinstance(query(cluster, ask(subject, grant=raw)), QueryResult)
    for asked in (subject, person("19850505", 62)):
        a = ask(asked, grant_id=grant_id)
        denied(cluster, query(cluster, a, requester="court"), a, "grant_mismatch")
    a = ask(subject, grant_id=grant_id)  # its own grantee still learns why
    denied(cluster, query(cluster, a), a, "grant_exhausted")


# --- a registered grant whose issuer is no longer trusted ---------------------------------------


def test_a_grant_named_by_id_is_refused_once_its_issuer_is_no_longer_trusted(
    tmp_path: Path,
) -> None:
    c = make_cluster(tmp_path / "district")
    subject = person("19850505", 41)
    seed(c, subject, LICENCE, licence_fields(41))
    grant_id, raw = issue(c, subject, use_limit=10)
    assert isinstance(query(c, ask(subject, grant=raw)), QueryResult)  # registers it
    assert isinstance(query(c, ask(subject, grant_id=grant_id)), QueryResult)
    spec = c.spec()

    # the issuer loses its platform role
    demoted = [
        dict(n, roles=["department"]) if n["node_id"] == "platform" else n for n in spec["node"]
    ]
    c.reissue_bundle(node=demoted)
    by_id = ask(subject, grant_id=grant_id)
    denied(c, query(c, by_id), by_id, "grant_invalid")
    afresh = ask(subject, grant=raw)
    denied(c, query(c, afresh), afresh, "grant_invalid")

    # the role back, but the key that signed the grant revoked
    platform = c.runtime("platform")
    try:
        keyid = platform.node_keys.signing.keyid
    finally:
        platform.close()
    c.reissue_bundle(node=spec["node"], revoked_keyids=[keyid])
    by_id = ask(subject, grant_id=grant_id)
    denied(c, query(c, by_id), by_id, "grant_invalid")
    afresh = ask(subject, grant=raw)
    denied(c, query(c, afresh), afresh, "grant_invalid")
    # another requester naming it learns only that it is not theirs, not the issuer's state
    by_court = ask(subject, grant_id=grant_id)
    denied(c, query(c, by_court, requester="court"), by_court, "grant_mismatch")


# --- a child under 14 -------------------------------------------------------------------------


def test_a_childs_record_leaves_only_with_the_fields_the_guardians_consent_names(
    cluster: LocalCluster,
) -> None:
    child = person("20150301", 70)  # 11 years old
    seed(cluster, child, LICENCE, licence_fields(70))
    _, unnamed = issue(cluster, child)
    a = ask(child, grant=unnamed)
    denied(cluster, query(cluster, a), a, "minor_consent_required")
    _, named = issue(cluster, child, fields={LICENCE: frozenset({"decision_no", "content"})})
    answer = query(cluster, ask(child, grant=named))
    assert isinstance(answer, QueryResult), answer
    [record] = answer.records
    assert set(record.fields) == {"decision_no", "content"}
    # an adult's record under a grant naming no fields gets the default minimisation
    adult = person("19900301", 71)
    seed(cluster, adult, LICENCE, licence_fields(71))
    _, plain = issue(cluster, adult)
    grown = query(cluster, ask(adult, grant=plain))
    assert isinstance(grown, QueryResult), grown
    assert len(grown.records[0].fields) > 2


# --- a natural person's record is never found through another person ---------------------------


@pytest.mark.parametrize(
    ("born", "seq"), [("20150301", 91), ("19700101", 93)], ids=["a child", "an adult"]
)
def test_a_persons_record_naming_another_person_is_not_released_on_that_persons_grant(
    cluster: LocalCluster, born: str, seq: int
) -> None:
    # A record stored with a link from a natural person's record (a child's 法定代理人, as
    # an earlier release linked it) must not leave on the linked person's query and grant:
    # it is the record's own subject's, under their grant and the under-14 rule.
    subject, rep = person(born, seq), person("19850505", seq + 1)
    theirs = seed(
        cluster, subject, ENFORCEMENT,
        {"subject_name": "王某", "subject_category": "自然人", "case_no": "c-p",
         "status": "在执行", "legal_rep_name": "李某", "legal_rep_id_number": rep},
        linked=(rep,),
    )  # fmt: skip
    _, plain = issue(cluster, rep, items=(ENFORCEMENT,))
    answer = query(cluster, ask(rep, items=(ENFORCEMENT,), grant=plain))
    assert isinstance(answer, QueryResult), answer
    assert theirs not in {r.record_key for r in answer.records}
    # an organisation's record naming the same person still is (Shandong Art. 31)
    company = seed(
        cluster, COMPANY, ENFORCEMENT,
        {"subject_name": "某公司", "subject_category": "法人及非法人组织", "uscc": COMPANY,
         "case_no": "c-o", "status": "在执行", "legal_rep_name": "李某",
         "legal_rep_id_number": rep},
        linked=(rep,),
    )  # fmt: skip
    again = query(cluster, ask(rep, items=(ENFORCEMENT,), grant=plain))
    assert isinstance(again, QueryResult), again
    assert company in {r.record_key for r in again.records}


# --- what a request's free text can do to the log ------------------------------------------------


def _sent_raw(cluster: LocalCluster, a: QueryAsk, **body_changes: str) -> grpc.StatusCode:
    """Send `a` as tax with its signed body changed (past the client's own checks)."""
    market, tax = cluster.runtime("market"), cluster.runtime("tax")

    async def run() -> grpc.StatusCode:
        provider = tax.bundle().member("market")
        assert provider is not None
        body = build_body(a, requester="tax", provider_key=provider.encryption_key, now=tax.clock())
        for name, value in body_changes.items():
            setattr(body, name, value)
        signed = tax.sign_request(QUERY_METHOD, body.SerializeToString())
        async with query_channel(market, tax) as channel:
            try:
                await query_pb2_grpc.QueryStub(channel).Query(signed, timeout=30)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    try:
        return asyncio.run(run())
    finally:
        tax.close()
        market.close()


def test_an_id_number_in_the_legal_basis_is_not_kept_however_it_is_spelt(
    cluster: LocalCluster,
) -> None:
    subject = person("19800101", 97)
    seed(cluster, subject, LICENCE, licence_fields(97))
    spelt = f"{subject[:6]}-{subject[6:14]} {subject[14:]}"
    a = dataclasses.replace(ask(subject), legal_basis=f"公务员录用考察 对象ID{spelt}")
    query(cluster, a)
    assert subject[6:14] not in logged(cluster, a).legal_basis.replace("-", "").replace(" ", "")


def test_an_oversized_legal_basis_or_a_junk_grant_id_is_refused_and_logged_short(
    cluster: LocalCluster,
) -> None:
    subject = person("19800101", 98)
    a = ask(subject)
    assert _sent_raw(cluster, a, legal_basis="x" * 200_000) == grpc.StatusCode.INVALID_ARGUMENT
    entry = logged(cluster, a)
    assert (entry.decision, entry.reason) == ("deny", "malformed_request")
    assert len(entry.legal_basis) < 1100
    b = ask(subject)
    assert _sent_raw(cluster, b, grant_id="g" * 5000) == grpc.StatusCode.INVALID_ARGUMENT
    assert logged(cluster, b).reason == "malformed_request"
