"""Query service over mutual TLS: a record row edited in the database by someone without the
node's keys (docs/decisions/0018). The policy decides on the row's state, objection flag and
disclosure window, which the producer's signature does not cover; the row's integrity tag
does. A row whose tag fails releases nothing: DATA_LOSS to the requester, a denied access
entry `record_tampered`, and an error in the provider's log naming the row, never the subject.

District, helpers and grants as in test_e2e_query_grant_scope.py.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest

from node.cluster import LocalCluster
from node.query import QueryResult
from tests.catalog.catalog_testdata import licence_fields
from tests.e2e.query_support import store_signed_record
from tests.e2e.test_e2e_query_grant_scope import LICENCE, ask, issue, make_cluster, person
from tests.e2e.test_e2e_query_store_tamper import query, refused_as_tampered, tamper

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path_factory.mktemp("district"))
    try:
        yield c
    finally:
        c.stop_all()


def _stored(cluster: LocalCluster, subject: str, n: int, **kwargs: object) -> str:
    rt = cluster.runtime("market")
    try:
        return store_signed_record(rt, subject, LICENCE, licence_fields(n), **kwargs).row_id  # type: ignore[arg-type]
    finally:
        rt.close()


def _withdraw(cluster: LocalCluster, row: str) -> None:
    rt = cluster.runtime("market")
    try:
        rt.store.set_record_state(row, "withdrawn", event_kind=None, now=rt.clock())
    finally:
        rt.close()


def test_a_withdrawn_record_set_active_again_with_sql_is_not_released(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    subject = person("19910101", 301)
    row = _stored(cluster, subject, 11)
    _withdraw(cluster, row)
    _gid, grant = issue(cluster, subject, use_limit=5)
    before = query(cluster, ask(subject, grant=grant))
    assert isinstance(before, QueryResult), before
    assert before.records == ()  # withdrawn: nothing to release

    tamper(cluster, "UPDATE records SET state = 'active' WHERE row_id = ?", row)
    caplog.set_level(logging.ERROR, logger="node.query")
    a = ask(subject, grant=grant)
    refused_as_tampered(cluster, query(cluster, a), a)
    lines = [r.getMessage() for r in caplog.records if r.name == "node.query"]
    assert [line for line in lines if row in line and "integrity tag" in line], lines
    assert not [line for line in lines if subject in line]


def test_moved_disclosure_dates_do_not_bring_an_ended_record_back(cluster: LocalCluster) -> None:
    subject = person("19910101", 302)
    row = _stored(cluster, subject, 12, max_end=dt.date(2020, 1, 1))
    tamper(cluster, "UPDATE records SET disclosure_max_end = '2099-01-01' WHERE row_id = ?", row)
    _gid, grant = issue(cluster, subject)
    a = ask(subject, grant=grant)
    refused_as_tampered(cluster, query(cluster, a), a)


def test_a_cleared_objection_flag_or_a_nulled_tag_is_refused(cluster: LocalCluster) -> None:
    subject = person("19910101", 303)
    row = _stored(cluster, subject, 13)
    rt = cluster.runtime("market")
    try:
        rt.store.set_objection(row, True, now=rt.clock())
    finally:
        rt.close()
    _gid, grant = issue(cluster, subject, use_limit=5)
    tamper(cluster, "UPDATE records SET objection = 0 WHERE row_id = ?", row)
    a = ask(subject, grant=grant)
    refused_as_tampered(cluster, query(cluster, a), a)
    tamper(cluster, "UPDATE records SET objection = 1, tag = NULL WHERE row_id = ?", row)
    b = ask(subject, grant=grant)
    refused_as_tampered(cluster, query(cluster, b), b)
