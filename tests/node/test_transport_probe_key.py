"""The unavailability probe never writes the node's TLS private key to a file.

The probe presents this node's certificate with Python's ssl module, which loads a key only
from a path. It used to write the key, in clear, to a temporary file: for a key directory
under a passphrase (tls.key boxed under Argon2id, docs/security-model.md) that put the clear
key on the disk, recoverable from a stolen disk after deletion, and left behind for good if the
process died in between.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from node.transport import UnavailableCause, diagnose_unavailable
from tests.node.test_transport_mtls import identity, node_keys, roster_of, run, start

__all__ = ["node_keys"]  # the module-scoped key directories, shared with the mTLS tests


def test_the_probe_writes_no_key_file(
    node_keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a, platform = node_keys["dept-a"], node_keys["platform"]
    roster = roster_of(a, platform)
    created: list[str] = []
    real_open = os.open

    def spying_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append(str(path))
        return real_open(path, flags, *args, **kwargs)

    async def scenario() -> UnavailableCause:
        server = await start(a, roster)
        try:
            with monkeypatch.context() as patch:
                patch.setattr(os, "open", spying_open)
                patch.setattr("tempfile.tempdir", str(tmp_path))
                found = await diagnose_unavailable(
                    server.target, peer=roster.peer("dept-a"), identity=identity(platform)
                )
            return found.cause
        finally:
            await server.stop(None)

    assert run(scenario()) == UnavailableCause.TLS_OK  # the probe still presents our certificate
    assert created == []
    assert list(tmp_path.iterdir()) == []
