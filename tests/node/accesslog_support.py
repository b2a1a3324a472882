"""Access-log entries for tests that need a log with something in it and do not care what: the
transparency, witness and log-verification tests (docs/transparency.md)."""

from __future__ import annotations

import datetime as dt
import uuid

from node.accesslog import LogEntry, utc_iso


def query_entry(i: int) -> LogEntry:
    """The `i`th allowed query by tax for administrative licensing, stamped now, under a fresh
    request id: two calls never make the same entry, so two logs built from them differ."""
    return LogEntry(
        time=utc_iso(dt.datetime.now(dt.UTC)), kind="query", requester="tax",
        officer=f"officer-{i % 3}", purpose="administrative_licensing", legal_basis="x",
        decision="allow", reason="ok", request_id=uuid.uuid4().hex, result_count=1,
    )  # fmt: skip


def fixed_query_entry(i: int) -> LogEntry:
    """The `i`th allowed query by tax, with a fixed time and request id `r{i}`: the same `i`
    always makes the same entry, so logs built from them are the same bytes on every run."""
    return LogEntry(
        time="2026-11-25T02:00:00.000000Z", kind="query", requester="tax",
        officer=f"o-{i}", purpose="administrative_licensing", legal_basis="x",
        decision="allow", reason="statutory_duty", request_id=f"r{i}",
    )  # fmt: skip
