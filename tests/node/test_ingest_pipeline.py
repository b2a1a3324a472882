"""Ingest end to end: CSV -> mapping -> catalogue -> signed, encrypted, versioned rows."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest

import adapters
import keys
from catalog.periods import UNGRADED
from node.cli.init_cmds import init_node
from node.config import load_config
from node.demo_data import numbered_uscc
from node.errors import ConfigError
from node.ingest import IngestSummary, run_ingest, source_key
from node.lifecycle import visible
from node.store import open_store

TODAY = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
HEADER = [
    "行政相对人名称", "行政相对人类别", "统一社会信用代码", "法定代表人", "行政处罚决定书文号",
    "违法行为类型", "违法事实", "处罚依据", "处罚类别", "处罚内容", "罚款金额（元）",
    "处罚决定日期", "处罚机关", "处罚机关统一社会信用代码", "失信程度", "备注",
]  # fmt: skip


AUTHORITY = numbered_uscc("11370303", 1)
MAPPING = f'''
item = "admin_penalty"

[source]
kind = "csv"
path = "penalties.csv"

[fields]
subject_name = "行政相对人名称"
legal_rep_name = "法定代表人"
violation_type = "违法行为类型"
violation_facts = "违法事实"
legal_basis = "处罚依据"
penalty_content = "处罚内容"
authority_name = "处罚机关"
remarks = "备注"
uscc = "统一社会信用代码"
decision_no = "行政处罚决定书文号"
authority_uscc = "处罚机关统一社会信用代码"
severity = "失信程度"

[fields.subject_category]
column = "行政相对人类别"
transforms = [{{ map = {{ "企业" = "法人及非法人组织" }} }}]

[fields.penalty_types]
column = "处罚类别"
transforms = [{{ split = ["、"] }}]

[fields.fine_wan_yuan]
column = "罚款金额（元）"
transforms = [{{ unit = {{ from = "元", to = "万元" }} }}]

[fields.decision_date]
column = "处罚决定日期"
transforms = ["date"]

[fields.penalty_valid_until]
const = "2099-12-31"

[fields.source_unit]
const = "淄博市张店区市场监督管理局"

[fields.source_unit_uscc]
const = "{numbered_uscc("11370303", 2)}"
'''


def penalty_row(
    i: int, *, fine: int = 5000, bad: bool = False, decided: str = "2026-05-11"
) -> dict[str, str]:
    return {
        "行政相对人名称": f"淄博张店某某商贸有限公司{i}",
        "行政相对人类别": "企业",
        "统一社会信用代码": numbered_uscc("91370303", 1000 + i),
        "法定代表人": "王某某",
        "行政处罚决定书文号": f"张市监罚〔2026〕{i}号",
        "违法行为类型": "销售不合格产品",
        "违法事实": "经查，当事人销售的产品经抽检不合格。",
        "处罚依据": "《中华人民共和国产品质量法》第四十九条",
        "处罚类别": "警告、罚款",
        "处罚内容": "警告，并处罚款",
        "罚款金额（元）": str(fine),
        "处罚决定日期": "2026-13-45" if bad else decided,
        "处罚机关": "淄博市张店区市场监督管理局",
        "处罚机关统一社会信用代码": AUTHORITY,
        "失信程度": "一般",
        "备注": "",
    }


def write_source(directory: Path, rows: list[dict[str, str]]) -> Path:
    with (directory / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    mapping = directory / "penalties.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return mapping


@pytest.fixture
def home(tmp_path: Path) -> Path:
    init_node(tmp_path / "node", name="market", role="department", now=NOW)
    return tmp_path / "node"


def ingest(home: Path, mapping: Path, **kwargs: object) -> IngestSummary:
    return run_ingest(load_config(home), mapping, today=TODAY, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def test_first_run_stores_signed_encrypted_rows_and_reports_rejects(home: Path) -> None:
    rows = [penalty_row(i) for i in range(1, 8)] + [penalty_row(8, bad=True)]
    mapping = write_source(home.parent, rows)
    summary = ingest(home, mapping, batch_size=3)
    assert (summary.read, summary.accepted, summary.rejected) == (8, 7, 1)
    assert (summary.skipped_unchanged, summary.corrected, summary.batches) == (0, 0, 3)
    assert summary.balanced
    assert [p.suffix for p in summary.reject_files] == [".csv", ".jsonl"]
    reject = json.loads(summary.reject_files[1].read_text(encoding="utf-8").splitlines()[0])
    assert reject["row"] == 9
    assert oct(summary.reject_files[0].stat().st_mode & 0o777) == "0o600"

    config = load_config(home)
    node_keys = keys.load_key_dir(config.keys_dir)
    store = open_store(config.store.url)
    try:
        assert store.count_records() == 7
        token = keys.BlindIndex(node_keys.blind_index_key).token(numbered_uscc("91370303", 1001))
        (stored,) = store.records_by_subject(token)
        # the body is encrypted and bound to its row; it opens to a record signed by this node
        assert b"91370303" not in stored.body
        signed = keys.SignedRecord.from_bytes(
            keys.StorageCipher(node_keys.storage_key).decrypt(stored.row_id, stored.body)
        )
        verified = keys.verify_record(
            signed, trusted={node_keys.signing.keyid: node_keys.signing.public_key}
        )
        assert verified.header["subject"] == token
        assert verified.header["version"] == 1
        assert verified.fields["decision_no"] == "张市监罚〔2026〕1号"
        with pytest.raises(keys.VerificationError):
            keys.StorageCipher(node_keys.storage_key).decrypt("another-row", stored.body)
        # 令第36号 一般: 3 months to 1 year from the decision (民法典 Arts. 201-202)
        assert stored.severity == "general"
        assert (stored.disclosure_min_end, stored.disclosure_max_end) == (
            dt.date(2026, 8, 11),
            dt.date(2027, 5, 11),
        )
        assert store.load_ingest_state(source_key_for(mapping)) is None  # finished run
    finally:
        store.close()


def test_a_file_where_the_rejects_directory_belongs_stops_the_run_cleanly(home: Path) -> None:
    config = load_config(home)
    if config.rejects_dir.exists():
        config.rejects_dir.rmdir()
    config.rejects_dir.write_text("", encoding="utf-8")
    mapping = write_source(home.parent, [penalty_row(1), penalty_row(2, bad=True)])
    with pytest.raises(adapters.ReportError, match="directory for reject reports"):
        ingest(home, mapping)
    store = open_store(config.store.url)
    try:
        assert store.count_records() == 0  # the batch whose rejects had nowhere to go
    finally:
        store.close()


def source_key_for(mapping: Path) -> str:
    return source_key(adapters.load_mapping(mapping))


def test_rerun_skips_unchanged_and_a_changed_row_becomes_a_new_version(home: Path) -> None:
    mapping = write_source(home.parent, [penalty_row(i) for i in range(1, 6)])
    ingest(home, mapping)
    again = ingest(home, mapping)
    assert (again.read, again.accepted, again.skipped_unchanged) == (5, 0, 5)
    write_source(home.parent, [penalty_row(i, fine=9000 if i == 3 else 5000) for i in range(1, 6)])
    changed = ingest(home, mapping)
    assert (changed.accepted, changed.corrected, changed.skipped_unchanged) == (1, 1, 4)
    assert changed.balanced
    store = open_store(load_config(home).store.url)
    try:
        assert store.count_records() == 6
        assert store.count_records(state="superseded") == 1
    finally:
        store.close()


def test_duplicate_rows_in_one_batch_are_counted_once_each(home: Path) -> None:
    rows = [penalty_row(1), penalty_row(1), penalty_row(1, fine=7000), penalty_row(2)]
    summary = ingest(home, write_source(home.parent, rows))
    # row 2 repeats row 1 exactly; row 3 corrects it within the same batch
    assert (summary.read, summary.accepted, summary.skipped_unchanged) == (4, 3, 1)
    assert summary.corrected == 1
    assert summary.balanced


def test_feed_subscribers_get_events_from_the_stored_subscriptions(home: Path) -> None:
    config = load_config(home)
    store = open_store(config.store.url)
    try:
        store.ensure_subscription("tax", ["admin_penalty"], now=NOW)
        mapping = write_source(home.parent, [penalty_row(i) for i in range(1, 4)])
        summary = ingest(home, mapping, store=store)
        assert summary.events == 3
        write_source(home.parent, [penalty_row(1, fine=9000)])
        ingest(home, mapping, store=store)
        kinds = [(e.kind, e.version) for e in store.events_after("tax", 0)]
        assert kinds == [("upsert", 1)] * 3 + [("correct", 2)]
    finally:
        store.close()


def test_a_row_past_its_disclosure_end_is_stored_expired_and_never_published(
    home: Path,
) -> None:
    config = load_config(home)
    store = open_store(config.store.url)
    try:
        store.ensure_subscription("tax", ["admin_penalty"], now=NOW)
        # 一般 decided 2023-06-01 (令第58号: at most 3 years): not shown from 2026-06-02
        rows = [penalty_row(1, decided="2023-06-01"), penalty_row(2)]
        summary = ingest(home, write_source(home.parent, rows), store=store)
        assert (summary.accepted, summary.events) == (2, 2)
        assert store.count_records(state="expired") == 1
        assert store.count_records(state="active") == 1
        [old] = store.record_versions("market", store.events_after("tax", 0)[0].record_key)
        assert (old.state, old.disclosure_max_end) == ("expired", dt.date(2026, 6, 1))
        # the scan has nothing left to do for it: no second event, no gap
        assert store.records_due_for_expiry(TODAY) == []
    finally:
        store.close()


def test_keys_of_another_node_are_refused(home: Path, tmp_path: Path) -> None:
    other = keys.create_key_dir(tmp_path / "other-keys", node_id="tax", now=NOW)
    mapping = write_source(home.parent, [penalty_row(1)])
    with pytest.raises(ConfigError, match="belong to node 'tax'"):
        ingest(home, mapping, node_keys=other)


def test_minor_ungraded_and_capped_penalties_get_their_lawful_windows(home: Path) -> None:
    """The periods the sealer stores (catalogue-facts §5): every one judged by the rules that
    queries (node/query.py via `visible`) and feeds (`disclosure_ended`) apply."""
    header = [*HEADER, "违法行为终止日期"]
    mapping = write_source(home.parent, [])
    mapping.write_text(
        MAPPING.replace('severity = "失信程度"\n', 'severity = "失信程度"\n'
                        'conduct_end_date = "违法行为终止日期"\n'),
        encoding="utf-8",
    )  # fmt: skip
    rows = [
        # 轻微 under 令第36号: 原则上不予公示 -> withheld, also on its decision day
        {**penalty_row(1), "失信程度": "轻微", "违法行为终止日期": ""},
        {**penalty_row(2, decided=TODAY.isoformat()), "失信程度": "轻微", "违法行为终止日期": ""},
        # no 失信程度 before 2026-04-01: still 失信信息, 令第58号 3 months - 3 years
        {**penalty_row(3, decided="2025-06-01"), "失信程度": "", "违法行为终止日期": ""},
        # Shandong Art. 38: five years from the end of the conduct (2021-01-10 -> 2026-01-10)
        {**penalty_row(4, decided="2025-06-01"), "失信程度": "", "违法行为终止日期": "2021-01-10"},
    ]
    with (home.parent / "penalties.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    config = load_config(home)
    store = open_store(config.store.url)
    try:
        store.ensure_subscription("tax", ["admin_penalty"], now=NOW)
        summary = ingest(home, mapping, store=store)
        assert (summary.accepted, summary.rejected) == (4, 0)
        blind = keys.BlindIndex(keys.load_key_dir(config.keys_dir).blind_index_key)

        def stored(i: int) -> tuple[str, str | None, dt.date | None, dt.date | None, bool]:
            token = blind.token(numbered_uscc("91370303", 1000 + i))
            (row,) = store.records_by_subject(token, states=None)
            # what the query path reads and judges (node/query.py)
            (candidate,) = store.release_candidates(
                token, producer="market", states=("active", "withdrawn", "expired")
            )
            shown = visible(
                state=candidate.state,
                severity=candidate.severity,
                decided_on=candidate.decided_on,
                disclosure_max_end=candidate.disclosure_max_end,
                today=TODAY,
            )
            return row.state, row.severity, row.disclosure_min_end, row.disclosure_max_end, shown

        decided, today = dt.date(2026, 5, 11), TODAY
        assert stored(1) == ("expired", "minor", decided, decided, False)
        assert stored(2) == ("expired", "minor", today, today, False)
        ungraded = dt.date(2025, 9, 1), dt.date(2028, 6, 1)
        assert stored(3) == ("active", UNGRADED, *ungraded, True)
        capped = dt.date(2025, 9, 1), dt.date(2026, 1, 10)
        assert stored(4) == ("expired", UNGRADED, *capped, False)
        # the feed provider withholds the body of every expired version (docs/feeds.md)
        states = {store.record_versions("market", e.record_key)[0].state
                  for e in store.events_after("tax", 0)}  # fmt: skip
        assert states == {"active", "expired"}
        assert store.records_due_for_expiry(TODAY) == []
    finally:
        store.close()
