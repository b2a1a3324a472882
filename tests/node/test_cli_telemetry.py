"""One-shot commands export their stage spans where `[telemetry]` says, as serve and ingest do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from node.cli.init_cmds import init_node


def test_lifecycle_scan_exports_its_stage_span_to_the_console(tmp_path: Path) -> None:
    home = tmp_path / "market"
    init_node(home, name="market", role="department")
    config = home / "credex.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('exporter = "none"', 'exporter = "console"', 1), encoding="utf-8"
    )
    assert 'exporter = "console"' in config.read_text(encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CREDEX_PASSPHRASE_FILE"}
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "lifecycle", "scan", "--home", str(home), "--json"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["expired"] == 0  # stdout stays machine-readable
    assert '"name": "credex.lifecycle.scan"' in done.stderr
