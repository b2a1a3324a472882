"""Query service over mutual TLS: a store row whose columns disagree with its signed record.

The policy judges a record by the store's columns (its item, its subject's blind index, the
blind indexes linked to it), while what leaves is the signed body. Someone who can write to the
database but has no keys (threat 4 of docs/security-model.md) cannot forge a body, but can
change those columns: file a person's licence under an organisation's item (no grant needed),
move a person's record under another person's blind index (released on that person's grant,
and accepted by the requester as theirs), or link an organisation's record to a person it does
not name. The provider checks each record it is about to release against its signed header
and linked fields first: a disagreement releases nothing, reaches the requester as DATA_LOSS
and is logged as a denied access (`record_tampered`).

District, helpers and grants as in test_e2e_query_grant_scope.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import catalog
from node.cluster import LocalCluster
from node.errors import NodeError, TamperDetected
from node.query import QueryAsk, QueryResult, send_query
from tests.catalog.catalog_testdata import licence_fields
from tests.e2e.query_support import store_signed_record
from tests.e2e.test_e2e_query_grant_scope import (
    COMPANY,
    ENFORCEMENT,
    LICENCE,
    ask,
    id_number_that_is_also_a_credit_code,
    issue,
    logged,
    make_cluster,
    person,
)
from tests.e2e.test_e2e_query_grants_expiry import query_channel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path_factory.mktemp("district"))
    try:
        yield c
    finally:
        c.stop_all()  # nothing is started here; a failing test may have


def store(cluster: LocalCluster, subject: str, item: str, fields: dict[str, str]) -> str:
    """Store one signed record at market the way ingest does; return its row id."""
    rt = cluster.runtime("market")
    try:
        return store_signed_record(rt, subject, item, fields).row_id
    finally:
        rt.close()


def blind(cluster: LocalCluster, subject: str) -> str:
    rt = cluster.runtime("market")
    try:
        return rt.blind.token(subject)
    finally:
        rt.close()


def tamper(cluster: LocalCluster, sql: str, *params: str) -> None:
    """What an insider with write access to market's database (and no keys) can do."""
    db = sqlite3.connect(Path(cluster.home("market")) / "data" / "credex.db")
    try:
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()


def query(cluster: LocalCluster, a: QueryAsk) -> QueryResult | NodeError:
    market, tax = cluster.runtime("market"), cluster.runtime("tax")

    async def run() -> QueryResult | NodeError:
        async with query_channel(market, tax) as channel:
            try:
                return await send_query(tax, a, channel=channel)
            except NodeError as refused:
                return refused

    try:
        return asyncio.run(run())
    finally:
        tax.close()
        market.close()


def refused_as_tampered(cluster: LocalCluster, outcome: object, a: QueryAsk) -> None:
    assert isinstance(outcome, TamperDetected), outcome
    assert "integrity check" in str(outcome)
    assert a.subject not in str(outcome)
    entry = logged(cluster, a)
    assert (entry.decision, entry.reason, entry.result_count) == ("deny", "record_tampered", 0)
    assert entry.items_released == ()


def test_a_record_filed_under_another_item_is_not_released_under_that_items_rules(
    cluster: LocalCluster,
) -> None:
    # An ID number that is also a credit code, asked as an organisation: the natural-person
    # rules apply, but admin_licence (an organisation's item) needs no grant.
    subject = id_number_that_is_also_a_credit_code()
    row = store(cluster, subject, LICENCE, licence_fields(1))
    tamper(cluster, "UPDATE records SET item_id = 'admin_licence' WHERE row_id = ?", row)
    a = ask(subject, kind="organisation", items=("admin_licence",))
    refused_as_tampered(cluster, query(cluster, a), a)


def test_a_record_moved_under_another_subject_is_not_released_on_that_subjects_grant(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    victim, asked = person("19900101", 201), person("19900101", 202)
    row = store(cluster, victim, LICENCE, licence_fields(2, "受害人"))
    moved = blind(cluster, asked)
    tamper(cluster, "UPDATE records SET subject_index = ? WHERE row_id = ?", moved, row)
    _gid, grant = issue(cluster, asked)
    a = ask(asked, grant=grant)
    refused_as_tampered(cluster, query(cluster, a), a)


def test_the_operators_log_line_names_the_row_and_no_id_number(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    subject = id_number_that_is_also_a_credit_code()
    row = store(cluster, subject, LICENCE, licence_fields(3))
    tamper(cluster, "UPDATE records SET item_id = 'admin_licence' WHERE row_id = ?", row)
    # a careless requester that writes the ID number into its request id
    a = dataclasses.replace(
        ask(subject, kind="organisation", items=("admin_licence",)), request_id=f"r-{subject}"
    )
    caplog.set_level(logging.ERROR, logger="node.query")
    assert isinstance(query(cluster, a), TamperDetected)
    lines = [r.getMessage() for r in caplog.records if r.name == "node.query"]
    # this row's line (the first test's tampered row of the same subject has its own)
    (line,) = [text for text in lines if row in text]
    assert catalog.redact_identifiers(a.request_id) in line
    assert not [text for text in lines if subject in text]


def test_an_organisations_record_linked_to_a_person_it_does_not_name_is_not_released(
    cluster: LocalCluster,
) -> None:
    rep, stranger = person("19850505", 203), person("19850505", 204)
    rt = cluster.runtime("market")
    try:
        row = store_signed_record(
            rt, COMPANY, ENFORCEMENT,
            {"subject_name": "某公司", "subject_category": "法人及非法人组织", "uscc": COMPANY,
             "legal_rep_name": "X某", "legal_rep_id_number": rep, "case_no": "c-1",
             "status": "在执行"},
            linked=(rep,),
        ).row_id  # fmt: skip
    finally:
        rt.close()
    named = ask(rep, items=(ENFORCEMENT,), purpose="administrative_licensing")
    answer = query(cluster, named)
    assert isinstance(answer, QueryResult), answer
    assert [r.fields["case_no"] for r in answer.records] == ["c-1"]

    tamper(
        cluster,
        "INSERT INTO record_links (row_id, subject_index) VALUES (?, ?)",
        row,
        blind(cluster, stranger),
    )
    a = ask(stranger, items=(ENFORCEMENT,), purpose="administrative_licensing")
    refused_as_tampered(cluster, query(cluster, a), a)
