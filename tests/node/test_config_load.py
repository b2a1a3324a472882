"""credex.toml: the written default loads, every rule names its key, nothing unknown passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import (
    CONFIG_FILE,
    MIN_RETENTION_DAYS,
    load_config,
    parse_config,
    write_default_config,
)
from node.errors import ConfigError

BASE = '[node]\nid = "market"\nrole = "department"\n'


def test_default_file_is_commented_and_loads(tmp_path: Path) -> None:
    path = write_default_config(
        tmp_path, node_id="market", name="市场监管", role="department", listen="0.0.0.0:7443"
    )
    text = path.read_text(encoding="utf-8")
    assert text.count("#") > 15
    config = load_config(tmp_path)
    assert (config.node.id, config.node.name, config.node.role) == (
        "market",
        "市场监管",
        "department",
    )
    assert config.server.listen == config.server.advertise == "0.0.0.0:7443"
    assert config.store.url == f"sqlite:///{(tmp_path / 'data' / 'credex.db').resolve()}"
    assert config.trust.root_key == tmp_path.resolve() / "trust" / "root.pub"
    assert config.log.retention_days == MIN_RETENTION_DAYS
    assert config.log.checkpoint_interval_s == 1.0
    assert config.log.origin == "zhangdian.credex/market"
    assert config.telemetry.exporter == "none"
    assert config.lifecycle.holiday_file is None
    assert config.peers == ()
    assert config.keys_dir == tmp_path.resolve() / "keys"


def test_default_config_never_overwrites(tmp_path: Path) -> None:
    write_default_config(tmp_path, node_id="market", name="m", role="department")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_default_config(tmp_path, node_id="market", name="m", role="platform")


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="credex init"):
        load_config(tmp_path)


def test_retention_below_the_legal_minimum_names_the_law(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[log]\nretention_days = 30\n", home=tmp_path)
    assert str(info.value) == (
        "credex.toml: [log] retention_days = 30 is below the legal minimum of 180 days "
        "(网络安全法 Art. 21)"
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("[log]\ncheckpoint_interval_s = 5\n", "[log] checkpoint_interval_s = 5.0"),
        ("[log]\ncheckpoint_interval_s = 0\n", "[log] checkpoint_interval_s"),
        ("[log]\nretention_days = 365.5\n", "[log] retention_days must be a whole number"),
        ("[log]\nretention_days = true\n", "[log] retention_days must be a whole number"),
        ("[log]\norigin = 'a b'\n", "[log] origin"),
        ("[server]\nlisten = 'localhost'\n", "[server] listen"),
        ("[server]\nlisten = 'h:70000'\n", "[server] listen"),
        ("[server]\nlisten = 7443\n", "[server] listen must be a string"),
        ("[server]\nport = 1\n", "[server] unknown key 'port'"),
        ("[server]\nmax_calls_per_peer = 0\n", "[server] max_calls_per_peer = 0"),
        ("[server]\nmax_calls_per_peer = 1.5\n", "[server] max_calls_per_peer must be a whole"),
        ("[telemetry]\nexporter = 'jaeger'\n", "[telemetry] exporter"),
        ("[telemetry]\nexporter = 'otlp'\n", "[telemetry] otlp_endpoint is required"),
        ("[lifecycle]\nscan_interval_s = -1\n", "[lifecycle] scan_interval_s"),
        ("[store]\nurl = 'sqlite://'\n", "[store] url"),
        ("[store]\nurl = 'sqlite:///:memory:'\n", "[store] url must name a SQLite file"),
        ("[peers.tax]\nendpoint = 'nope'\n", "[peers.tax] endpoint"),
        ("[peers.Tax]\nendpoint = 'h:1'\n", "[peers.Tax] is not a valid node id"),
        ("[peers]\ntax = 1\n", "[peers.tax] must be a table"),
        ("[extra]\n", "unknown key 'extra'"),
        ("[ingest]\nworkers = 0\n", "[ingest] workers = 0"),
        ("[ingest]\nworkers = 65\n", "[ingest] workers = 65"),
        ("[ingest]\nworkers = 'two'\n", "[ingest] workers must be a whole number"),
        ("[feeds]\nworkers = 0\n", "[feeds] workers = 0"),
        ("[feeds]\nworkers = 65\n", "[feeds] workers = 65"),
        ("[feeds]\nchecker = 2\n", "[feeds] unknown key 'checker'"),
        ("[ingest]\nthreads = 2\n", "[ingest] unknown key 'threads'"),
    ],
)
def test_each_bad_value_names_its_key(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra, home=tmp_path)
    assert needle in str(info.value)
    assert str(info.value).startswith(CONFIG_FILE)


@pytest.mark.parametrize(
    ("node", "needle"),
    [
        ('[node]\nrole = "department"\n', "[node] id is required"),
        ('[node]\nid = "Market"\nrole = "department"\n', "[node] id = 'Market'"),
        ('[node]\nid = "market"\nrole = "bank"\n', "[node] role = 'bank'"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_node_section_rules(tmp_path: Path, node: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(node, home=tmp_path)
    assert needle in str(info.value)


def test_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[store\] must be a table"):
        parse_config("store = 1\n" + BASE, home=tmp_path)


def test_store_urls_are_resolved_and_passwords_never_echoed(tmp_path: Path) -> None:
    rel = parse_config(BASE + "[store]\nurl = 'sqlite:///db/x.db'\n", home=tmp_path)
    assert rel.store.url == f"sqlite:///{tmp_path.resolve() / 'db' / 'x.db'}"
    pg = parse_config(BASE + "[store]\nurl = 'postgresql://u:pw@h/credex'\n", home=tmp_path)
    assert pg.store.url == "postgresql+psycopg://u:pw@h/credex"
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[store]\nurl = 'mysql://root:hunter2@h/x'\n", home=tmp_path)
    assert "hunter2" not in str(info.value)


def test_peers_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "holidays.toml").write_text("", encoding="utf-8")  # checked at load
    config = parse_config(
        BASE
        + "[lifecycle]\nholiday_file = 'holidays.toml'\n"
        + "[peers.tax]\nendpoint = '[::1]:7444'\n[peers.court]\nendpoint = 'court.zd:443'\n",
        home=tmp_path,
    )
    assert config.lifecycle.holiday_file == tmp_path.resolve() / "holidays.toml"
    assert [p.node_id for p in config.peers] == ["court", "tax"]
    assert config.peer_endpoint("tax") == "[::1]:7444"
    assert config.peer_endpoint("unknown") is None


def test_ingest_workers_default_to_auto_and_take_a_count(tmp_path: Path) -> None:
    assert parse_config(BASE, home=tmp_path).ingest.workers is None  # auto: one per CPU
    assert parse_config(BASE + "[ingest]\nworkers = 3\n", home=tmp_path).ingest.workers == 3


def test_feed_check_workers_default_to_auto_and_take_a_count(tmp_path: Path) -> None:
    assert parse_config(BASE, home=tmp_path).feeds.workers is None  # auto: one per CPU
    assert parse_config(BASE + "[feeds]\nworkers = 1\n", home=tmp_path).feeds.workers == 1


def test_calls_per_peer_default_to_64_and_take_a_count(tmp_path: Path) -> None:
    assert parse_config(BASE, home=tmp_path).server.max_calls_per_peer == 64
    raised = parse_config(BASE + "[server]\nmax_calls_per_peer = 500\n", home=tmp_path)
    assert raised.server.max_calls_per_peer == 500
