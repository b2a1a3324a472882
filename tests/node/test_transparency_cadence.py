"""Checkpoints keep coming while entries do, whatever the wall clock does.

`maybe_checkpoint` waits for the checkpoint interval since the last checkpoint it signed,
measured on the wall clock. When NTP stepped the clock back (by an hour, say), `now - last`
stayed negative for that hour and no checkpoint was signed: the unwitnessed tail, which the
security model bounds by one interval, grew to an hour of accesses.
"""

from __future__ import annotations

import datetime as dt

import keys
from node.accesslog import AccessLog, MemoryLogBackend
from tests.node.accesslog_support import fixed_query_entry

LOG_KEY = keys.Signer(b"\x01" * 32)
T0 = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


def test_a_clock_stepped_back_does_not_stop_checkpoints() -> None:
    log = AccessLog(MemoryLogBackend(), origin="zhangdian.credex/market", signer=LOG_KEY)
    log.append_sync(fixed_query_entry(0))
    assert log.maybe_checkpoint(T0) is not None
    log.append_sync(fixed_query_entry(1))
    assert log.maybe_checkpoint(T0 + dt.timedelta(milliseconds=500)) is None  # not due yet
    stepped_back = T0 - dt.timedelta(hours=1)
    assert log.maybe_checkpoint(stepped_back) is not None
    log.append_sync(fixed_query_entry(2))
    assert log.maybe_checkpoint(stepped_back + dt.timedelta(seconds=1)) is not None
    assert log.maybe_checkpoint(stepped_back + dt.timedelta(seconds=2)) is None  # nothing new
