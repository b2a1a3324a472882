"""What the witness signs is what it checked: a note shown with a line in the witness's own
name is cosigned only when that line is truly the witness's signature.

A department that served its checkpoint with a made-up `— platform <key id ‖ junk>` line (the
key id is public) used to have it passed through as "already cosigned": the witness
remembered a note carrying a signature it never made, and `credex log witnessed` then could
not produce the department's anchor at all, so a cut at the end of that log went unseen.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from typer.testing import CliRunner

import keys
from node.accesslog import AccessLog, MemoryLogBackend
from node.cli import app
from node.cluster import LocalCluster
from node.runtime import open_runtime
from node.witness import WitnessState, cosign_extension
from tests.node.accesslog_support import query_entry

LOG_KEY = keys.Signer(b"\x01" * 32)
WITNESS_KEY = keys.Signer(b"\x02" * 32)


def _note(entries: int = 3) -> str:
    log = AccessLog(
        MemoryLogBackend(), origin="zhangdian.credex/market", signer=LOG_KEY, key_name="market"
    )
    for i in range(entries):
        log.append_sync(query_entry(i))
    return log.checkpoint()


def _forged_line(name: str, public: bytes) -> str:
    blob = keys.note_key_id(name, public) + b"\x07" * 64
    return f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def _cosign(previous: str | None, note: str) -> str:
    return cosign_extension(
        previous, note, [], log_name="market", log_keys=[LOG_KEY.public_key],
        name="platform", signer=WITNESS_KEY,
    )  # fmt: skip


def test_a_made_up_line_in_the_witness_name_is_refused() -> None:
    forged = _note() + _forged_line("platform", WITNESS_KEY.public_key)
    with pytest.raises(keys.VerificationError):
        _cosign(None, forged)


def test_a_note_the_witness_truly_cosigned_is_returned_as_it_is() -> None:
    note = _note()
    cosigned = _cosign(None, note)
    assert _cosign(None, cosigned) == cosigned
    assert _cosign(note, cosigned) == cosigned


def test_log_witnessed_gives_the_anchor_of_a_note_shown_cosigned(tmp_path: Path) -> None:
    """The state may hold the note as the department showed it, our cosignature included:
    `log witnessed` hands it over as it is instead of failing to sign it twice."""
    cluster = LocalCluster(tmp_path, nodes=[("market", "department"), ("platform", "platform")])
    cluster.init()
    market = open_runtime(cluster.home("market"))
    platform = open_runtime(cluster.home("platform"))
    try:
        market.log.append_sync(query_entry(0))
        note = keys.cosign_note(
            market.log.checkpoint(), name="platform", signer=platform.node_keys.signing
        )
        WitnessState.load(platform.config.data_dir).remember("market", note)
    finally:
        market.close()
        platform.close()
    result = CliRunner().invoke(
        app, ["log", "witnessed", "market", "--home", str(cluster.home("platform"))]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == note
