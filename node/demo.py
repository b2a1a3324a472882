"""`make demo`: a district exchange on one machine, told as a story a department head can follow.

Three real nodes under `.demo/` in the repository (wiped first, left in place afterwards so a
person can run the CLI against them): 市场监管 (market), 人社 (hrss) and the district credit
platform 区信用平台 (platform). Every step drives the real `credex` CLI in subprocesses through
`node.cluster.LocalCluster`; the nodes talk gRPC over mutual TLS on loopback.

The story: the platform signs the trust bundle and the agreements; market ingests a GB18030
penalty export and an .xlsx licence export (bad rows rejected with reasons); the platform
receives market's feed, verified; hrss makes one authorised query (answered with the released
fields only) and one that is denied; market grants a credit repair, the withdrawal reaches the
platform and hrss no longer gets the penalty; the security officer verifies the access log,
searches it by subject and reads the risk report.

Nothing printed names a natural person or shows a full ID number: subjects are shown masked.
Exit code 0 when every step behaved as the story says, 1 otherwise (the failing step is named).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adapters
import catalog
import keys
from node.cluster import LocalCluster
from node.demo_data import DemoData, write_demo_data

__all__ = ["DEMO_AGREEMENTS", "DEMO_NODES", "StepResult", "main", "run_demo"]

REPO = Path(__file__).resolve().parent.parent
DEMO_NODES = (("market", "department"), ("hrss", "department"), ("platform", "platform"))
LABELS = {"market": "市场监管 market", "hrss": "人社 hrss", "platform": "区信用平台 platform"}
_ITEMS = ["admin_penalty", "admin_licence"]
DEMO_AGREEMENTS: tuple[dict[str, Any], ...] = (
    {
        "provider": "market",
        "consumer": "platform",
        "items": [*_ITEMS, "severe_dishonesty_list"],
        "purposes": ["public_disclosure", "other_management"],
        "kind": "feed",
    },
    {
        "provider": "market",
        "consumer": "hrss",
        "items": [*_ITEMS, "admin_penalty_person"],
        "purposes": ["staff_recruitment", "administrative_licensing"],
        "kind": "query",
    },
    {
        "provider": "market",
        "consumer": "hrss",
        "items": ["severe_dishonesty_list"],
        "purposes": ["other_management"],
        "kind": "push",
    },
)
QUERY_BASIS = "《事业单位人事管理条例》第八条"


@dataclass
class StepResult:
    """What one step of the story did: its title, whether it behaved, and what it showed."""

    title: str
    ok: bool
    lines: list[str] = field(default_factory=list)


class Story:
    """Prints the numbered steps and remembers which behaved."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.steps: list[StepResult] = []
        self.started = time.monotonic()

    def step(self, title: str) -> StepResult:
        result = StepResult(title, ok=True)
        self.steps.append(result)
        elapsed = time.monotonic() - self.started
        self.out(f"\n[{len(self.steps)}] {title}  (t+{elapsed:.1f} s)")
        return result

    def say(self, result: StepResult, line: str) -> None:
        result.lines.append(line)
        self.out(f"    {line}")

    def fail(self, result: StepResult, why: str) -> None:
        result.ok = False
        self.say(result, f"!! {why}")


def _mask(identifier: str) -> str:
    return catalog.mask_identifier(identifier)


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return None


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    text = " ".join(done.stderr.split())
    return text[-400:] if text else f"exit {done.returncode}"


def run_demo(
    root: Path, *, out: Callable[[str], None] = print, telemetry: str = "none"
) -> list[StepResult]:
    """Run the whole story under `root` (wiped first); return every step's result.

    `telemetry` is the nodes' exporter ("none" or "console": spans and metrics go to each
    node's serve.log, which the PII scan reads). Servers are always stopped at the end, even
    when a step fails; `root` is left in place.
    """
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    story = Story(out)
    today = dt.datetime.now(dt.UTC).date()
    data = write_demo_data(root / "exports", today=today)
    cluster = LocalCluster(root, DEMO_NODES, agreements=DEMO_AGREEMENTS)

    step = story.step("三个节点建立，平台签发信任包 / three nodes, one signed trust bundle")
    cluster.init()
    if telemetry != "none":
        for name, _role in DEMO_NODES:
            config = cluster.home(name) / "credex.toml"
            text = config.read_text(encoding="utf-8")
            config.write_text(
                text.replace('exporter = "none"', f"exporter = {json.dumps(telemetry)}", 1),
                encoding="utf-8",
            )
    for name, role in DEMO_NODES:
        keyid = keys.load_key_dir(cluster.home(name) / "keys").signing.keyid
        story.say(step, f"{LABELS[name]:<22} role={role:<10} signing key {keyid}")
    story.say(step, "the platform signed bundle v1: roster, catalogue version and 3 agreements:")
    story.say(step, "  market → platform  feed   penalties, licences, severe list")
    story.say(step, "  market → hrss      query  penalties, licences (purposes: recruitment ...)")
    story.say(step, "  market → hrss      push   severe-dishonesty list (joint punishment)")

    try:
        _ingest(story, cluster, data)
        step = story.step("节点上线（双向 TLS）/ the nodes go online with mutual TLS")
        cluster.start_all()
        for name, _role in DEMO_NODES:
            story.say(step, f"{LABELS[name]:<22} listening on {cluster.node(name).endpoint}")
        _feed(story, cluster, data)
        _queries(story, cluster, data)
        _repair(story, cluster, data)
        _officer(story, cluster, data)
    except Exception as error:  # the story reports, then stops the servers
        failed = story.steps[-1] if story.steps else story.step("demo")
        story.fail(failed, f"stopped: {type(error).__name__}: {error}")
    finally:
        cluster.stop_all()
    took = time.monotonic() - story.started
    good = sum(s.ok for s in story.steps)
    out(f"\n{good}/{len(story.steps)} steps behaved as expected, {took:.1f} s.")
    out(f"The nodes are in {root}; try: credex log verify --home {root / 'market'}")
    return story.steps


def _ingest(story: Story, cluster: LocalCluster, data: DemoData) -> None:
    for label, mapping, good, bad in (
        ("GB18030 行政处罚 CSV", data.penalties_mapping, data.penalties_good, data.penalties_bad),
        ("行政许可 .xlsx", data.licences_mapping, data.licences_good, data.licences_bad),
    ):
        step = story.step(f"市场监管导入 {label} / market ingests its {mapping.stem} export")
        done = cluster.cli("market", "ingest", str(mapping), "--json")
        summary = _json(done)
        if done.returncode != 0 or summary is None:
            story.fail(step, f"ingest failed: {_last_error(done)}")
            continue
        story.say(
            step,
            f"read {summary['read']} rows: {summary['accepted']} signed, encrypted and stored; "
            f"{summary['rejected']} rejected (kept in a reject report for the clerk)",
        )
        for reason in summary.get("top_reasons", []):
            story.say(step, f"  rejected: {reason['field']} → {reason['code']} ×{reason['count']}")
        if (summary["accepted"], summary["rejected"]) != (good, bad):
            story.fail(step, f"expected {good} accepted and {bad} rejected")


def _received(cluster: LocalCluster) -> int:
    runtime = cluster.runtime("platform")
    try:
        return runtime.store.count_records(producer="market")
    finally:
        runtime.close()


def _feed(story: Story, cluster: LocalCluster, data: DemoData) -> None:
    step = story.step("平台订阅市场监管的数据 / the platform receives market's feed")
    done = cluster.cli("platform", "subscribe", "market", "--json")
    if done.returncode != 0:
        story.fail(step, f"subscribe failed: {_last_error(done)}")
        return
    expected = data.penalties_good + data.licences_good
    received = _received(cluster)
    story.say(
        step,
        f"the platform holds {received} of market's records, each checked against market's "
        "signature before it was stored (sealed to the platform in transit)",
    )
    if received != expected:
        story.fail(step, f"expected {expected} records at the platform")


def _query(
    cluster: LocalCluster, *, items: str, subject: str, kind: str, purpose: str
) -> subprocess.CompletedProcess[str]:
    return cluster.cli(
        "hrss", "query", "market", "--subject", subject, "--subject-kind", kind, "--items", items,
        "--purpose", purpose, "--legal-basis", QUERY_BASIS, "--officer", "hr-zhang", "--json",
    )  # fmt: skip


def _show_records(story: Story, step: StepResult, answer: Any) -> list[str]:
    items: list[str] = []
    for record in answer.get("records", []):
        fields = record.get("fields", {})
        items.append(record["item"])
        story.say(
            step,
            f"  {record['item']:<14} {fields.get('decision_no', '?')}  "
            f"{fields.get('subject_name', '')}  verified={record.get('verified')}  "
            f"({len(fields)} fields released)",
        )
    return items


def _queries(story: Story, cluster: LocalCluster, data: DemoData) -> None:
    step = story.step("人社授权查询 / hrss asks about a company, for staff recruitment")
    story.say(step, f"subject {_mask(data.focus.uscc)} (organisation), purpose staff_recruitment")
    done = _query(cluster, items="admin_penalty,admin_licence", subject=data.focus.uscc,
                  kind="organisation", purpose="staff_recruitment")  # fmt: skip
    answer = _json(done)
    if done.returncode != 0 or answer is None:
        story.fail(step, f"query failed: {_last_error(done)}")
    else:
        items = _show_records(story, step, answer)
        story.say(
            step,
            f"policy: {answer.get('reason')}; it permits {len(answer.get('released_fields', []))} "
            "fields of these 2 items and withholds the sensitive ones (e.g. the legal "
            "representative's ID number); the records carry nothing else. Logged as entry "
            f"{answer.get('log_index')} BEFORE the answer left market",
        )
        if sorted(items) != ["admin_licence", "admin_penalty"]:
            story.fail(step, "expected one penalty and one licence")

    step = story.step("无授权查询个人 / hrss asks about a person without their authorisation")
    person_id = data.focus.legal_rep_id
    story.say(step, f"subject {_mask(person_id)} (natural person), no signed authorisation")
    done = _query(cluster, items="admin_penalty_person", subject=person_id,
                  kind="natural_person", purpose="staff_recruitment")  # fmt: skip
    if done.returncode == 0:
        story.fail(step, "the query was answered; it must be denied")
    else:
        story.say(step, f"denied (exit {done.returncode}): {_last_error(done)}")
        story.say(step, "the denial itself is logged too; no data left market")


def _repair(story: Story, cluster: LocalCluster, data: DemoData) -> None:
    step = story.step("信用修复 / market grants a credit repair of the company's penalty")
    key = adapters.record_key("admin_penalty", [data.focus_penalty_no, data.focus.uscc])
    commitment = cluster.root / "exports" / "信用承诺书.txt"
    commitment.write_text("本单位承诺依法诚信经营。（演示用承诺书）\n", encoding="utf-8")
    done = cluster.cli(
        "market", "lifecycle", "repair", key, "--obligations-fulfilled",
        "--commitment-file", str(commitment), "--decision-no", "张市监信修〔2026〕1号", "--json",
    )  # fmt: skip
    if done.returncode != 0:
        story.fail(step, f"repair refused: {_last_error(done)}")
        return
    story.say(step, f"penalty {data.focus_penalty_no} repaired: disclosure AND sharing stopped")

    step = story.step("修复传播 / the withdrawal reaches the platform; hrss no longer sees it")
    cluster.cli("platform", "subscribe", "market", "--json")
    runtime = cluster.runtime("platform")
    try:
        states = {r.state for r in runtime.store.record_versions("market", key)}
    finally:
        runtime.close()
    story.say(step, f"platform's copy of the penalty is now: {', '.join(sorted(states)) or '?'}")
    if "active" in states or not states:
        story.fail(step, "the platform still holds the penalty as active")
    done = _query(cluster, items="admin_penalty,admin_licence", subject=data.focus.uscc,
                  kind="organisation", purpose="staff_recruitment")  # fmt: skip
    answer = _json(done)
    if done.returncode != 0 or answer is None:
        story.fail(step, f"second query failed: {_last_error(done)}")
        return
    items = _show_records(story, step, answer)
    story.say(step, "the same question as before now returns the licence only")
    if items != ["admin_licence"]:
        story.fail(step, f"expected the licence only, got {items}")


def _officer(story: Story, cluster: LocalCluster, data: DemoData) -> None:
    step = story.step("安全员核验访问日志 / the security officer verifies market's access log")
    done = cluster.cli("market", "log", "verify", "--json")
    report = _json(done)
    if done.returncode != 0 or report is None or not report.get("ok"):
        story.fail(step, f"log verify failed: {_last_error(done)}")
    else:
        story.say(
            step,
            f"{report['size']} entries, every hash and {report['checkpoints_checked']} signed "
            f"checkpoints check out; {report['witnesses_checked']} witnessed by the platform",
        )

    step = story.step("谁查过这家企业 / who looked at this company, when and why")
    done = cluster.cli(
        "market", "log", "search", "--subject", data.focus.uscc, "--subject-kind",
        "organisation", "--officer", "sec-li", "--json",
    )  # fmt: skip
    entries = _json(done)
    if done.returncode != 0 or not isinstance(entries, list):
        story.fail(step, f"log search failed: {_last_error(done)}")
    else:
        for entry in entries:
            story.say(
                step,
                f"  #{entry['index']} {entry['time'][:19]} {entry['requester']}/"
                f"{entry['officer']} {entry['purpose']} → {entry['decision']} "
                f"({entry['reason']}), released {entry['items_released'] or '-'}",
            )
        if len(entries) < 2:
            story.fail(step, "expected both hrss queries about the company")

    step = story.step("风险报告 / the daily risk review")
    done = cluster.cli("market", "log", "report", "--json")
    report = _json(done)
    if done.returncode != 0 or report is None:
        story.fail(step, f"log report failed: {_last_error(done)}")
    else:
        story.say(step, _summarise_report(report))


def _summarise_report(report: Any) -> str:
    if not isinstance(report, dict):
        return "report received"
    parts = []
    for key, value in report.items():
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            parts.append(f"{key}={value}")
        elif isinstance(value, list):
            parts.append(f"{key}: {len(value)}")
    return "; ".join(parts[:8]) or "report received"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo under `.demo/` in the repository (or the directory given)."""
    parser = argparse.ArgumentParser(prog="python -m node.demo", description="credex demo")
    parser.add_argument("root", nargs="?", type=Path, default=REPO / ".demo")
    parser.add_argument("--telemetry", choices=["none", "console"], default="none")
    args = parser.parse_args(argv)
    steps = run_demo(args.root.absolute(), telemetry=args.telemetry)
    return 0 if steps and all(s.ok for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
