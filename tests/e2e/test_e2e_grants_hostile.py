"""`credex grant ...` and the Query service against hostile or careless grant input.

- a grant file (or a grant sent inside a query) of deeply nested JSON is a malformed grant:
  exit 2 with a message, INVALID_ARGUMENT logged as `grant_invalid`, never an unexpected
  exception (which left the query without its access-log entry);
- `grant issue --id` refuses an id holding the subject's ID number (grant ids travel and are
  stored in the clear);
- `grant issue` / `grant revoke` never overwrite a file (the consent form, an earlier grant).

District as in test_e2e_query_grant_scope.py: `platform`, `market` (answers), `tax`, `court`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cluster import LocalCluster
from node.errors import InputError
from node.grants import GRANT_PAYLOAD_TYPE
from node.query import QueryAsk
from tests.catalog.catalog_testdata import licence_fields
from tests.e2e.test_e2e_query_grant_scope import (
    LICENCE,
    ask,
    issue,
    logged,
    make_cluster,
    person,
    query,
    seed,
)

pytestmark = pytest.mark.slow

DEEP = b"[" * 50_000 + b"]" * 50_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path_factory.mktemp("district"))
    try:
        yield c
    finally:
        c.stop_all()


def _nested_envelope() -> bytes:
    return json.dumps(
        {
            "payloadType": GRANT_PAYLOAD_TYPE,
            "payload": base64.b64encode(DEEP).decode(),
            "signatures": [{"keyid": "00" * 8, "sig": base64.b64encode(b"x" * 64).decode()}],
        }
    ).encode()


@pytest.mark.parametrize("raw", [DEEP, _nested_envelope()], ids=["envelope", "payload"])
def test_a_nested_grant_sent_with_a_query_is_refused_and_logged(
    cluster: LocalCluster, raw: bytes
) -> None:
    subject = person("19850505", 201)
    seed(cluster, subject, LICENCE, _licence())
    a = ask(subject, grant=raw)
    outcome = _query_input_error(cluster, a)
    assert isinstance(outcome, InputError), outcome
    assert "signed grant: not a DSSE envelope" in str(outcome), str(outcome)
    entry = logged(cluster, a)
    assert (entry.decision, entry.reason, entry.result_count) == ("deny", "grant_invalid", 0)


def _licence() -> dict[str, str]:
    return dict(licence_fields(1, "李四"))


def _query_input_error(cluster: LocalCluster, a: QueryAsk) -> object:
    try:
        return query(cluster, a)
    except InputError as error:
        return error


@pytest.mark.parametrize(
    ("command", "what"),
    [("register", "grant"), ("register-revocation", "revocation")],
)
def test_grant_register_of_a_nested_file_exits_2(
    cluster: LocalCluster, tmp_path: Path, command: str, what: str
) -> None:
    path = tmp_path / "nested.json"
    path.write_bytes(DEEP)
    done = cluster.cli("market", "grant", command, str(path))
    assert done.returncode == 2, done.stderr
    assert f"signed {what}: not a DSSE envelope" in done.stderr
    assert "unexpected" not in done.stderr


def _issue(
    cluster: LocalCluster,
    evidence: Path,
    subject: str,
    *args: str,
    grantee: str = "tax",
    purpose: str = "staff_recruitment",
    items: str = LICENCE,
) -> tuple[int, str, str]:
    done = cluster.cli(
        "platform", "grant", "issue", "--subject", subject, "--grantee", grantee,
        "--purpose", purpose, "--items", items, "--evidence", str(evidence), *args,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_grant_issue_refuses_an_id_holding_the_subjects_id_number(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    subject = person("19850505", 202)
    evidence = tmp_path / "consent.pdf"
    evidence.write_bytes(b"signed consent")
    out = tmp_path / "g.json"
    for grant_id in (subject, f"g-{subject}", f"g-{subject.lower()}-1"):
        code, stdout, stderr = _issue(
            cluster, evidence, subject, "--id", grant_id, "--output", str(out)
        )
        assert code == 2, stderr
        assert "personal data" in stderr
        assert subject not in stdout + stderr
        assert not out.exists()


def test_grant_issue_and_revoke_never_overwrite_a_file(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    subject = person("19850505", 203)
    evidence = tmp_path / "consent.pdf"
    evidence.write_bytes(b"signed consent")
    digest = hashlib.sha256(evidence.read_bytes()).hexdigest()
    # the consent form itself named as --output: it must survive, its hash is the evidence
    code, _out, stderr = _issue(cluster, evidence, subject, "--output", str(evidence))
    assert code == 2, stderr
    assert "exists" in stderr
    assert hashlib.sha256(evidence.read_bytes()).hexdigest() == digest
    first = tmp_path / "grant.json"
    code, _out, stderr = _issue(cluster, evidence, subject, "--output", str(first))
    assert code == 0, stderr
    kept = first.read_bytes()
    assert first.stat().st_mode & 0o777 == 0o600
    code, _out, stderr = _issue(cluster, evidence, subject, "--output", str(first))
    assert code == 2, stderr
    assert first.read_bytes() == kept
    revocation = tmp_path / "revocation.json"
    revocation.write_bytes(b"keep me")
    done = cluster.cli(
        "platform", "grant", "revoke", "g-0123456789abcdef", "--output", str(revocation)
    )
    assert done.returncode == 2, done.stderr
    assert revocation.read_bytes() == b"keep me"


def test_a_grant_issued_by_the_cli_still_works(cluster: LocalCluster, tmp_path: Path) -> None:
    # the refusals above leave the ordinary path alone: issue, register, query by id
    subject = person("19850505", 204)
    seed(cluster, subject, LICENCE, _licence())
    grant_id, raw = issue(cluster, subject)
    path = tmp_path / "grant.json"
    path.write_bytes(raw)
    done = cluster.cli("market", "grant", "register", str(path))
    assert done.returncode == 0, done.stderr
    outcome = query(cluster, ask(subject, grant_id=grant_id))
    assert not isinstance(outcome, Exception), outcome
    assert len(outcome.records) == 1


def test_grant_issue_refuses_a_grant_no_query_could_use(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """A typo in the grantee, purpose or items used to be signed: the subject's consent was
    spent on a grant every department's policy refuses."""
    subject = person("19850505", 205)
    evidence = tmp_path / "consent.pdf"
    evidence.write_bytes(b"signed consent")
    out = tmp_path / "g.json"
    code, stdout, stderr = _issue(
        cluster, evidence, subject, "--output", str(out), grantee="taxx", purpose="marketing",
        items=f"{LICENCE},admin_licence,utility_account,no_such_item",
    )  # fmt: skip
    assert code == 2, stderr
    said = " ".join(stderr.split())
    for problem in (
        "grantee 'taxx' is not a node of the trust bundle (nodes: court, market, platform, tax)",
        "purpose 'marketing' is not a query purpose",
        "item 'admin_licence' is not kept about natural_person subjects",
        "item 'no_such_item' is not in the catalogue",
        "item 'utility_account' is never shared (share type none)",
    ):
        assert f"- {problem}" in said
    assert subject not in stdout + stderr
    assert not out.exists()


def test_grant_issue_warns_when_no_agreement_lets_the_grantee_use_it(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # signed all the same (the agreement may come with the next bundle), but said so
    subject = person("19850505", 206)
    evidence = tmp_path / "consent.pdf"
    evidence.write_bytes(b"signed consent")
    out = tmp_path / "g.json"
    code, stdout, stderr = _issue(
        cluster, evidence, subject, "--output", str(out), "--json", purpose="commendation"
    )
    assert code == 0, stderr
    assert out.exists()
    warning = (
        "no query agreement in trust bundle v1 lets tax ask for admin_licence_person for "
        "commendation: the grant cannot be used for it until a bundle adds one"
    )
    assert json.loads(stdout)["warnings"] == [warning]
    assert warning in " ".join(stderr.split())
