"""Shared fixtures for the keys tests: fixed times and cheap signers."""

from __future__ import annotations

import datetime

import pytest

import keys

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def now() -> datetime.datetime:
    return NOW


@pytest.fixture
def signer() -> keys.Signer:
    return keys.Signer(bytes(range(32)))


@pytest.fixture
def other_signer() -> keys.Signer:
    return keys.Signer(bytes(range(1, 33)))
