"""Database URLs in messages (doctor, status, store errors) never carry a secret."""

from __future__ import annotations

import pytest

from node.store.errors import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://credex:hunter2@db/credex", "postgresql://credex:***@db/credex"),
        (
            "postgresql+psycopg://db/credex?user=credex&password=hunter2&sslpassword=pw2",
            "postgresql+psycopg://db/credex?user=credex&password=***&sslpassword=***",
        ),
        (
            "postgresql://db/c?PASSWORD=x&sslmode=require",
            "postgresql://db/c?PASSWORD=***&sslmode=require",
        ),
        (
            "mysql+pymysql://root@127.0.0.1/test?charset=utf8mb4",
            "mysql+pymysql://root@127.0.0.1/test?charset=utf8mb4",
        ),
        ("sqlite:////srv/credex/data/credex.db", "sqlite:////srv/credex/data/credex.db"),
    ],
)
def test_secrets_are_hidden_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)
