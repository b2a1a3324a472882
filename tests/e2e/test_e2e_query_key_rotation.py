"""A department rotates its signing key; the records it signed before stay verifiable.

A record is signed once, at ingest, and answered for years. Before, a requester checked an
answered record only against the keys the producer may sign with now: once the rotation's
overlap closed, every record ingested before the rotation was refused as forged (query
answers, and a new subscriber's feed replay). Now a record verifies under every signing key the
roster lists for its producer, unless the key is revoked (node/trust.py).

District: `platform`, `market` (holds records and answers), `tax` (asks). market's Query
service runs in this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import keys
from node.accesslog import search
from node.cli import app
from node.cluster import LocalCluster
from node.errors import ExitCode, TamperDetected
from node.query import QueryAsk, QueryResult, send_query
from node.runtime import NodeRuntime
from node.trust import historic_signing_keys, record_signing_keys
from tests.catalog.catalog_testdata import make_ric
from tests.e2e.query_support import store_signed_record
from tests.e2e.test_e2e_query_grants_expiry import query_channel
from tests.node.exchange_support import rotate_after_overlap

pytestmark = pytest.mark.slow

RED_LIST = "red_list"
runner = CliRunner()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path / "district",
        nodes=[("platform", "platform"), ("market", "department"), ("tax", "department")],
        agreements=[
            {"provider": "market", "consumer": "tax", "items": [RED_LIST],
             "purposes": ["administrative_licensing"], "kind": "query"},
        ],
    )  # fmt: skip
    c.init()
    try:
        yield c
    finally:
        c.stop_all()


def ask(subject: str) -> QueryAsk:
    return QueryAsk(
        peer="market",
        subject=subject,
        subject_kind="natural_person",
        items=(RED_LIST,),
        purpose="administrative_licensing",
        legal_basis="行政许可法第三十一条",
        officer="t-042",
    )


def query(cluster: LocalCluster, a: QueryAsk) -> QueryResult:
    market, tax = cluster.runtime("market"), cluster.runtime("tax")

    async def run() -> QueryResult:
        async with query_channel(market, tax) as channel:
            return await send_query(tax, a, channel=channel)

    try:
        return asyncio.run(run())
    finally:
        tax.close()
        market.close()


def seed(cluster: LocalCluster, subject: str) -> str:
    rt = cluster.runtime("market")
    try:
        fields = {"subject_name": "张三", "id_number": subject, "list_name": "守信"}
        return store_signed_record(rt, subject, RED_LIST, fields).record_key
    finally:
        rt.close()


def test_a_record_signed_before_a_rotation_still_verifies_after_its_overlap(
    cluster: LocalCluster,
) -> None:
    subject = make_ric("370303", "19900101", "011")
    before = seed(cluster, subject)
    rotate_after_overlap(cluster, "market")
    after = seed(cluster, subject)  # signed with the new key
    answer = query(cluster, ask(subject))
    assert sorted(r.record_key for r in answer.records) == sorted([before, after])
    assert all(r.fields["list_name"] == "守信" for r in answer.records)


def test_a_record_signed_with_a_revoked_key_is_refused(cluster: LocalCluster) -> None:
    subject = make_ric("370303", "19900101", "012")
    seed(cluster, subject)
    rotate_after_overlap(cluster, "market", revoke_old=True)
    with pytest.raises(keys.VerificationError):
        query(cluster, ask(subject))


def test_which_keys_vouch_for_old_signatures(cluster: LocalCluster) -> None:
    old = rotate_after_overlap(cluster, "market")
    rt = cluster.runtime("tax")
    try:
        bundle = rt.bundle()
        now = rt.clock()
    finally:
        rt.close()
    (entry,) = [e for e in bundle.roster if e.node_id == "market"]
    assert historic_signing_keys(bundle, "market") == (entry.signing_key, old)
    assert set(record_signing_keys(bundle, "market", now)) == {entry.keyid, keys.keyid(old)}
    # requests, batches and receipts: only the keys it may sign with now
    assert set(bundle.node_signing_keys("market", now)) == {entry.keyid}
    assert record_signing_keys(bundle, "nobody", now) == {}
    assert historic_signing_keys(bundle, "nobody") == ()
    assert record_signing_keys(bundle, "market", entry.valid_until) == {}  # membership over
    revoked = dataclasses.replace(bundle, revoked_keyids=bundle.revoked_keyids | {keys.keyid(old)})
    assert historic_signing_keys(revoked, "market") == (entry.signing_key,)
    assert set(record_signing_keys(revoked, "market", now)) == {entry.keyid}


def resign(cluster: LocalCluster, *extra: str) -> dict[str, object]:
    """Run `credex keys resign --json` for market and return its report; the command's own
    exception when it fails (CliRunner calls the app without the CLI's error handler)."""
    home = str(cluster.home("market"))
    result = runner.invoke(app, ["keys", "resign", "--home", home, "--json", *extra])
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_after_a_leaked_key_is_revoked_resign_makes_its_records_good_again(
    cluster: LocalCluster,
) -> None:
    subject = make_ric("370303", "19900101", "013")
    first, second = seed(cluster, subject), seed(cluster, subject)
    rotate_after_overlap(cluster, "market", revoke_old=True)
    fresh = seed(cluster, subject)  # already under the new key
    with pytest.raises(keys.VerificationError):
        query(cluster, ask(subject))
    report = resign(cluster, "--officer", "sec-007")
    assert (report["checked"], report["resigned"], report["current"]) == (3, 2, 1)
    answer = query(cluster, ask(subject))
    assert sorted(r.record_key for r in answer.records) == sorted([first, second, fresh])
    again = resign(cluster)  # idempotent: nothing left to do
    assert (again["resigned"], again["current"]) == (0, 3)
    rt = cluster.runtime("market")
    try:
        passes = [e for _i, e in search(rt.log.backend, kind="admin_read")]
        for version in rt.store.record_versions("market", first):
            assert (version.version, version.state) == (1, "active")  # same version, in place
    finally:
        rt.close()
    assert [(e.officer, e.reason) for e in passes] == [
        ("sec-007", "resign_records"),
        ("officer", "resign_records"),
    ]


def test_resign_refuses_a_record_this_node_did_not_sign(cluster: LocalCluster) -> None:
    subject = make_ric("370303", "19900101", "014")
    seed(cluster, subject)
    rt = cluster.runtime("market")
    try:
        stranger = keys.Signer.generate()
        planted = store_signed_record(rt, subject, RED_LIST, {"list_name": "守信"})
        (row,) = rt.store.record_versions("market", planted.record_key)
        opened = keys.SignedRecord.from_bytes(rt.cipher.decrypt(row.row_id, row.body))
        header = dict(keys.verify_record(opened, trusted=own_keys(rt)).header)
        forged = keys.sign_record(header, {"list_name": "守信"}, stranger)
        body = rt.cipher.encrypt(row.row_id, forged.to_bytes())
        assert rt.store.replace_bodies("market", [(row.row_id, row.body, body)]) == 1
    finally:
        rt.close()
    rotate_after_overlap(cluster, "market")
    with pytest.raises(TamperDetected, match="does not open or verify") as refused:
        resign(cluster)
    assert refused.value.exit_code == ExitCode.VERIFICATION
    assert "守信" not in str(refused.value)


def own_keys(rt: NodeRuntime) -> dict[str, bytes]:
    return {rt.node_keys.signing.keyid: rt.node_keys.signing.public_key}
