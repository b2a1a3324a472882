"""Benchmark: validating generated penalty records with catalog.validate_record.

Prints records validated per CPU-second for 100,000 generated 行政处罚 records on one core,
beside the rate of merely building the same input dicts (the floor any validator pays), then
one machine-readable line per figure:

    BENCH catalog <name> <value> <unit> <limit-name> <limit-value>

Run: .venv/bin/python bench/catalog.py [--records N]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog import default_catalog, validate_record

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
TODAY = datetime.date(2026, 11, 25)
GOAL = 30_000


def ric(i: int) -> str:
    born = datetime.date(1950, 1, 1) + datetime.timedelta(days=(i * 7) % 20000)
    body = f"370303{born:%Y%m%d}{i % 1000:03d}"
    s = sum(int(d) * (2 ** (17 - k) % 11) for k, d in enumerate(body))
    value = (12 - s % 11) % 11
    return body + ("X" if value == 10 else str(value))


def uscc(i: int) -> str:
    body = f"91370303MA{i % 10**7:07d}"
    s = sum(ALPHABET.index(c) * (3**k % 31) for k, c in enumerate(body))
    return body + ALPHABET[(31 - s % 31) % 31]


AUTHORITIES = [uscc(10**6 + k) for k in range(20)]
PERSONS = [ric(i) for i in range(5000)]
COMPANIES = [uscc(i) for i in range(5000)]


def row(i: int) -> tuple[str, dict[str, str | None]]:
    person = i % 3 == 0
    day = datetime.date(2026, 4, 1) + datetime.timedelta(days=i % 200)
    authority = AUTHORITIES[i % len(AUTHORITIES)]
    values: dict[str, str | None] = {
        "subject_name": f"淄博某某商贸有限公司{i}",
        "subject_category": "自然人" if person else "法人及非法人组织",
        "decision_no": f"张市监罚〔2026〕{i}号",
        "violation_type": "虚假宣传",
        "violation_facts": "经查，当事人在其经营场所发布虚假广告，违反了相关规定。",
        "legal_basis": "《中华人民共和国反不正当竞争法》第二十条",
        "penalty_types": "罚款;警告" if i % 2 else "罚款",
        "penalty_content": f"罚款{i % 50 + 1}万元",
        "fine_wan_yuan": f"{i % 50 + 1}.5",
        "decision_date": day.strftime("%Y/%m/%d" if i % 4 else "%Y-%m-%d"),
        "penalty_valid_until": "2099-12-31",
        "authority_name": "淄博市张店区市场监督管理局",
        "authority_uscc": authority,
        "source_unit": "淄博市张店区市场监督管理局",
        "source_unit_uscc": authority,
        "severity": "一般" if i % 5 else "严重",
        "procedure": "普通程序",
        "remarks": None,
    }
    if person:
        values.update(id_type="身份证", id_number=PERSONS[i % len(PERSONS)])
        return "admin_penalty_person", values
    values.update(uscc=COMPANIES[i % len(COMPANIES)], legal_rep_name="张某")
    return "admin_penalty", values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    n = parser.parse_args().records
    catalog = default_catalog()
    validate_record(*row(1), today=TODAY, catalog=catalog)  # compile once, outside the timing

    # CPU time of this process: other work on a shared machine does not count against us
    start = time.process_time()
    rows = [row(i) for i in range(n)]
    build = time.process_time() - start

    start, wall = time.process_time(), time.perf_counter()
    ok = 0
    for item, values in rows:
        ok += validate_record(item, values, today=TODAY, catalog=catalog).ok
    validate = time.process_time() - start
    wall = time.perf_counter() - wall
    if ok != n:
        raise SystemExit(f"benchmark data is wrong: only {ok} of {n} records valid")

    build_rate = n / build
    rate = n / validate
    print(f"records:            {n:,} penalty records (1/3 natural persons), all valid")
    print(f"build input dicts:  {build_rate:,.0f} records/s")
    print(f"validate_record:    {rate:,.0f} records/s  ({1e6 / rate:.1f} us/record, CPU time)")
    print(f"  (wall clock:      {n / wall:,.0f} records/s)")
    print(f"goal:               {GOAL:,} records/s -> {'met' if rate >= GOAL else 'NOT met'}")
    print(f"BENCH catalog validate_penalty {rate:.0f} records/s build_dicts {build_rate:.0f}")
    print(f"BENCH catalog validate_penalty_vs_goal {rate:.0f} records/s goal {GOAL}")


if __name__ == "__main__":
    main()
