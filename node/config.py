"""The node's configuration: one commented TOML file, `credex.toml`, in the node's home.

`load_config(home)` reads and validates it at start and returns frozen dataclasses; every
problem is a `ConfigError` whose message names the file, the section and the key, and says why
(for example the legal minimum retention of the access log, 网络安全法 Art. 21). Unknown
sections and keys are refused too, so a typo never silently falls back to a default.

Relative paths (trust files, the holiday file, a relative SQLite path) are resolved against the
home directory, never against the current directory, so a node behaves the same from anywhere.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import catalog
from node.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "MIN_RETENTION_DAYS",
    "IngestConfig",
    "LifecycleConfig",
    "LogConfig",
    "NodeConfig",
    "NodeSection",
    "PeerOverride",
    "ServerConfig",
    "StoreConfig",
    "TelemetryConfig",
    "TrustConfig",
    "load_config",
    "log_origin",
    "parse_config",
    "write_default_config",
]

CONFIG_FILE = "credex.toml"
# 网络安全法 Art. 21(3): network logs are kept for no less than six months.
MIN_RETENTION_DAYS = 180
ROLES = frozenset({"department", "platform"})
EXPORTERS = frozenset({"none", "console", "otlp"})
_NODE_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_STORE_SCHEMES = ("sqlite://", "postgresql://", "postgresql+psycopg://")
_ORIGIN_PREFIX = "zhangdian.credex/"


def log_origin(node_id: str) -> str:
    """The origin line of node `node_id`'s access-log checkpoints: the `[log] origin` default,
    and the one origin the platform's witness cosigns for that node (it knows node ids from
    the roster, not each node's configuration)."""
    return f"{_ORIGIN_PREFIX}{node_id}"


@dataclass(frozen=True)
class NodeSection:
    """[node]: who this node is."""

    id: str
    name: str
    role: str  # "department" | "platform"


# Calls one roster node may have in flight at a server (node.server.MAX_CALLS_PER_PEER).
DEFAULT_MAX_CALLS_PER_PEER = 64


@dataclass(frozen=True)
class ServerConfig:
    """[server]: where the gRPC server listens and the endpoint peers are told to use."""

    listen: str
    advertise: str
    max_calls_per_peer: int = DEFAULT_MAX_CALLS_PER_PEER


@dataclass(frozen=True)
class StoreConfig:
    """[store]: the database URL (SQLite path resolved against the home directory)."""

    url: str

    @property
    def sqlite_file(self) -> Path | None:
        """The database file of a SQLite store (an absolute path), None for a server database."""
        prefix = "sqlite:///"
        if not self.url.startswith(prefix):
            return None
        return Path(self.url.removeprefix(prefix).split("?", 1)[0])


@dataclass(frozen=True)
class TrustConfig:
    """[trust]: the pinned platform root key and the last accepted trust bundle."""

    root_key: Path
    bundle: Path


@dataclass(frozen=True)
class LogConfig:
    """[log]: the access log's checkpoint origin, cadence and retention."""

    origin: str
    checkpoint_interval_s: float
    retention_days: int


@dataclass(frozen=True)
class TelemetryConfig:
    """[telemetry]: where OpenTelemetry traces and metrics go."""

    exporter: str  # "none" | "console" | "otlp"
    otlp_endpoint: str | None


@dataclass(frozen=True)
class LifecycleConfig:
    """[lifecycle]: the optional holiday file, how often the expiry scan runs, how many
    months an expired or withdrawn record is kept (encrypted, undisclosed) before its purge,
    and how often pending joint-punishment withdrawal notices are sent (node/push.py)."""

    holiday_file: Path | None
    scan_interval_s: float
    retention_months: int = 60
    withdrawal_push_interval_s: float = 10.0


@dataclass(frozen=True)
class IngestConfig:
    """[ingest]: how many processes sign and encrypt during `credex ingest` (None: one per
    usable CPU, at most 8; docs/operator-guide.md)."""

    workers: int | None = None


@dataclass(frozen=True)
class FeedsConfig:
    """[feeds]: how many processes check received feed records (None: one per usable CPU, at
    most 8; docs/feeds.md)."""

    workers: int | None = None


@dataclass(frozen=True)
class PeerOverride:
    """[peers.<id>]: a local override of a roster entry's endpoint."""

    node_id: str
    endpoint: str


@dataclass(frozen=True)
class NodeConfig:
    """The whole validated configuration of one node."""

    home: Path
    node: NodeSection
    server: ServerConfig
    store: StoreConfig
    trust: TrustConfig
    log: LogConfig
    telemetry: TelemetryConfig
    lifecycle: LifecycleConfig
    peers: tuple[PeerOverride, ...]
    ingest: IngestConfig = IngestConfig()
    feeds: FeedsConfig = FeedsConfig()

    @property
    def keys_dir(self) -> Path:
        """The node's key directory (docs/decisions/0003)."""
        return self.home / "keys"

    @property
    def data_dir(self) -> Path:
        """Where the embedded SQLite store lives."""
        return self.home / "data"

    @property
    def rejects_dir(self) -> Path:
        """Where ingest writes its reject reports."""
        return self.home / "rejects"

    def peer_endpoint(self, node_id: str) -> str | None:
        """Return the local endpoint override for peer `node_id`, or None to use the roster's."""
        for peer in self.peers:
            if peer.node_id == node_id:
                return peer.endpoint
        return None


def default_store_url(home: Path) -> str:
    """The default store: SQLite at <home>/data/credex.db (absolute path)."""
    return f"sqlite:///{(home / 'data' / 'credex.db').resolve()}"


def load_config(home: Path) -> NodeConfig:
    """Read and validate `<home>/credex.toml`.

    Refuses (ConfigError, naming the key) a missing or unparsable file, unknown sections or keys,
    wrong types and values outside their rules.
    """
    path = home / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no node configuration here (run `credex init` or pass --home)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the configuration ({error})") from None
    return parse_config(text, home=home)


# The sections credex.toml may have (anything else is refused as a typo).
_SECTIONS = {
    "node",
    "server",
    "store",
    "trust",
    "log",
    "telemetry",
    "lifecycle",
    "ingest",
    "feeds",
    "peers",
}


def parse_config(text: str, *, home: Path) -> NodeConfig:
    """Validate configuration text for the node at `home` (pure: reads no file)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{CONFIG_FILE}: not valid TOML ({error})") from None
    _only(raw, "", _SECTIONS)
    home = home.resolve()

    node_raw = _section(raw, "node")
    _only(node_raw, "node", {"id", "name", "role"})
    node_id = _str(node_raw, "node", "id", required=True)
    if not _NODE_ID.match(node_id):
        raise _bad("node", "id", repr(node_id), "must be lower-case letters, digits and '-'")
    role = _str(node_raw, "node", "role", required=True)
    if role not in ROLES:
        raise _bad("node", "role", repr(role), 'must be "department" or "platform"')
    node = NodeSection(id=node_id, name=_str(node_raw, "node", "name", default=node_id), role=role)

    server_raw = _section(raw, "server")
    _only(server_raw, "server", {"listen", "advertise", "max_calls_per_peer"})
    listen = _endpoint(server_raw, "server", "listen", default="127.0.0.1:7443")
    max_calls = _int(server_raw, "server", "max_calls_per_peer", DEFAULT_MAX_CALLS_PER_PEER)
    if not 1 <= max_calls <= 10_000:
        raise _bad("server", "max_calls_per_peer", str(max_calls), "must be 1 to 10000")
    server = ServerConfig(
        listen=listen,
        advertise=_endpoint(server_raw, "server", "advertise", default=listen),
        max_calls_per_peer=max_calls,
    )

    store_raw = _section(raw, "store")
    _only(store_raw, "store", {"url"})
    store = StoreConfig(url=_store_url(store_raw, home))

    trust_raw = _section(raw, "trust")
    _only(trust_raw, "trust", {"root_key", "bundle"})
    trust = TrustConfig(
        root_key=_path(trust_raw, "trust", "root_key", home, "trust/root.pub"),
        bundle=_path(trust_raw, "trust", "bundle", home, "trust/bundle.json"),
    )

    log_raw = _section(raw, "log")
    _only(log_raw, "log", {"origin", "checkpoint_interval_s", "retention_days"})
    interval = _number(log_raw, "log", "checkpoint_interval_s", 1.0)
    if not 0 < interval <= 1:
        raise _bad(
            "log",
            "checkpoint_interval_s",
            str(interval),
            "must be above 0 and at most 1 second (accesses wait for their checkpoint group)",
        )
    retention = _int(log_raw, "log", "retention_days", MIN_RETENTION_DAYS)
    if retention < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"{CONFIG_FILE}: [log] retention_days = {retention} is below the legal minimum of "
            f"{MIN_RETENTION_DAYS} days (网络安全法 Art. 21)"
        )
    origin = _str(log_raw, "log", "origin", default=log_origin(node_id))
    if not origin or any(c.isspace() for c in origin):
        raise _bad("log", "origin", repr(origin), "must be non-empty without whitespace")
    log = LogConfig(origin=origin, checkpoint_interval_s=interval, retention_days=retention)

    tel_raw = _section(raw, "telemetry")
    _only(tel_raw, "telemetry", {"exporter", "otlp_endpoint"})
    exporter = _str(tel_raw, "telemetry", "exporter", default="none")
    if exporter not in EXPORTERS:
        raise _bad("telemetry", "exporter", repr(exporter), 'must be "none", "console" or "otlp"')
    otlp = _str(tel_raw, "telemetry", "otlp_endpoint", default="") or None
    if exporter == "otlp" and otlp is None:
        raise ConfigError(
            f'{CONFIG_FILE}: [telemetry] otlp_endpoint is required with exporter "otlp"'
        )
    telemetry = TelemetryConfig(exporter=exporter, otlp_endpoint=otlp)

    life_raw = _section(raw, "lifecycle")
    _only(
        life_raw,
        "lifecycle",
        {"holiday_file", "scan_interval_s", "retention_months", "withdrawal_push_interval_s"},
    )
    holiday = _str(life_raw, "lifecycle", "holiday_file", default="")
    scan = _number(life_raw, "lifecycle", "scan_interval_s", 3600.0)
    if scan <= 0:
        raise _bad("lifecycle", "scan_interval_s", str(scan), "must be finite, above 0")
    withdrawals = _number(life_raw, "lifecycle", "withdrawal_push_interval_s", 10.0)
    if withdrawals <= 0:
        raise _bad(
            "lifecycle", "withdrawal_push_interval_s", str(withdrawals), "must be finite, above 0"
        )
    keep = _int(life_raw, "lifecycle", "retention_months", 60)
    if keep < 1:
        raise _bad("lifecycle", "retention_months", str(keep), "must be 1 or more")
    holiday_path = (home / holiday) if holiday else None
    if holiday_path is not None:
        _check_holiday_file(holiday_path)
    lifecycle = LifecycleConfig(
        holiday_file=holiday_path,
        scan_interval_s=scan,
        retention_months=keep,
        withdrawal_push_interval_s=withdrawals,
    )

    ingest = IngestConfig(workers=_workers(raw, "ingest"))
    feeds = FeedsConfig(workers=_workers(raw, "feeds"))

    peers_raw = _section(raw, "peers")
    peers: list[PeerOverride] = []
    for peer_id in sorted(peers_raw):
        where = f"peers.{peer_id}"
        entry = peers_raw[peer_id]
        if not isinstance(entry, dict):
            raise ConfigError(f"{CONFIG_FILE}: [{where}] must be a table")
        if not _NODE_ID.match(peer_id):
            raise ConfigError(f"{CONFIG_FILE}: [{where}] is not a valid node id")
        _only(entry, where, {"endpoint"})
        endpoint = _endpoint(entry, where, "endpoint", default=None)
        peers.append(PeerOverride(node_id=peer_id, endpoint=endpoint))

    return NodeConfig(
        home=home,
        node=node,
        server=server,
        store=store,
        trust=trust,
        log=log,
        telemetry=telemetry,
        lifecycle=lifecycle,
        peers=tuple(peers),
        ingest=ingest,
        feeds=feeds,
    )


def write_default_config(
    home: Path, *, node_id: str, name: str, role: str, listen: str = "127.0.0.1:7443"
) -> Path:
    """Write a commented `credex.toml` for a new node and return its path.

    Refuses to overwrite an existing file and refuses values `parse_config` would refuse (the
    written file is validated before it is written).
    """
    path = home / CONFIG_FILE
    text = _DEFAULT_TEMPLATE.format(
        node_id=_toml_str(node_id),
        name=_toml_str(name),
        role=_toml_str(role),
        listen=_toml_str(listen),
        origin=_toml_str(log_origin(node_id)),
        min_days=MIN_RETENTION_DAYS,
        max_calls=DEFAULT_MAX_CALLS_PER_PEER,
    )
    parse_config(text, home=home)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; refusing to overwrite a node") from None
    return path


_DEFAULT_TEMPLATE = """\
# credex node configuration (written by `credex init`).
# Relative paths are resolved against this directory. Unknown keys are refused.

[node]
# Stable node id: the name peers, the roster and the access log know this node by.
id = {node_id}
name = {name}
# "department" (publishes and queries records) or "platform" (signs the trust bundle,
# subscribes to every department, witnesses their logs).
role = {role}

[server]
# Address the gRPC server binds (mutual TLS).
listen = {listen}
# Endpoint peers are told to use (defaults to listen).
# advertise = "node.example.gov.cn:7443"
# Calls one peer may have in flight here at once; more end RESOURCE_EXHAUSTED (retry later).
# max_calls_per_peer = {max_calls}

[store]
# Default: SQLite in WAL mode at data/credex.db (synchronous=FULL).
# Production: url = "postgresql+psycopg://credex@db.example:5432/credex"
# url = "sqlite:///data/credex.db"

[trust]
# The pinned platform root public key and the last accepted trust bundle.
root_key = "trust/root.pub"
bundle = "trust/bundle.json"

[log]
# Checkpoint origin line of the access log (C2SP signed note).
origin = {origin}
# Entries are committed and checkpointed in groups at most this far apart (0 < s <= 1).
checkpoint_interval_s = 1.0
# Access log retention; 网络安全法 Art. 21 requires at least {min_days} days.
retention_days = {min_days}

[telemetry]
# "none", "console" or "otlp".
exporter = "none"
# otlp_endpoint = "http://127.0.0.1:4317"

[lifecycle]
# Holiday schedule (TOML) for years the chinesecalendar package does not know yet, e.g.
#   ["2027"]
#   holidays = [2027-01-01, 2027-02-08]   # weekdays off
#   workdays = [2027-02-06]               # weekend days worked
# Checked when the config is loaded; a running node reads it once, so restart it after a change.
# holiday_file = "holidays.toml"
# Seconds between disclosure-expiry scans (one also runs at start).
scan_interval_s = 3600
# Months an expired, withdrawn or superseded record is kept encrypted (never disclosed) after
# its disclosure ended, as evidence for objections and reviews; then it is purged (logged).
retention_months = 60
# Seconds between passes that send pending joint-punishment withdraw/expire notices (a repair
# or revocation made with the CLI, or a receiver that was down); the service's own are sent
# at once.
withdrawal_push_interval_s = 10

[ingest]
# Processes that sign and encrypt records during `credex ingest`, beside the one that reads
# and commits. Leave it out for one per usable CPU (at most 8); 1 keeps it all in one process.
# workers = 2

[feeds]
# Processes that verify and re-validate the records of large received feed batches, beside
# the one that stores them. Leave it out for one per usable CPU (at most 8); 1 checks in-process.
# workers = 2

# Local endpoint override for a roster peer:
# [peers.tax]
# endpoint = "10.0.0.5:7443"
"""


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_holiday_file(path: Path) -> None:
    """Refuse at load a holiday file that is missing or not in the TOML format
    (`catalog.load_holiday_file`), instead of at the first deadline that needs it."""
    try:
        catalog.load_holiday_file(path, catalog.WorkCalendar())
    except catalog.CatalogError as error:
        raise ConfigError(
            f"{CONFIG_FILE}: [lifecycle] holiday_file = {str(path)!r}: not a usable TOML "
            f'holiday schedule (["2027"] holidays = [...] workdays = [...]): {error}'
        ) from None


def _bad(section: str, key: str, shown: str, why: str) -> ConfigError:
    return ConfigError(f"{CONFIG_FILE}: [{section}] {key} = {shown} {why}")


def _only(raw: Mapping[str, Any], section: str, allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        where = f"[{section}] " if section else ""
        raise ConfigError(
            f"{CONFIG_FILE}: {where}unknown key {unknown[0]!r} (expected one of "
            f"{', '.join(sorted(allowed))})"
        )


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{CONFIG_FILE}: [{name}] must be a table")
    return value


def _str(
    raw: Mapping[str, Any],
    section: str,
    key: str,
    *,
    default: str | None = None,
    required: bool = False,
) -> str:
    if key not in raw:
        if required or default is None:
            raise ConfigError(f"{CONFIG_FILE}: [{section}] {key} is required")
        return default
    value = raw[key]
    if not isinstance(value, str):
        raise ConfigError(f"{CONFIG_FILE}: [{section}] {key} must be a string")
    return value


def _number(raw: Mapping[str, Any], section: str, key: str, default: float) -> float:
    """A finite number: TOML's nan and inf pass every `<=` check (nan) or never elapse (inf),
    so every float setting refuses them here, before its own range check."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{CONFIG_FILE}: [{section}] {key} must be a number")
    if not math.isfinite(value):
        raise _bad(section, key, str(value), "must be a finite number")
    return float(value)


def _workers(raw: Mapping[str, Any], section: str) -> int | None:
    """The `[section]` table's only key, `workers`: 1 to 64, or None (auto) when left out."""
    table = _section(raw, section)
    _only(table, section, {"workers"})
    if "workers" not in table:
        return None
    workers = _int(table, section, "workers", 0)
    if not 1 <= workers <= 64:
        raise _bad(section, "workers", str(workers), "must be 1 to 64 (leave it out for auto)")
    return workers


def _int(raw: Mapping[str, Any], section: str, key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{CONFIG_FILE}: [{section}] {key} must be a whole number")
    return value


def _endpoint(raw: Mapping[str, Any], section: str, key: str, *, default: str | None) -> str:
    value = _str(raw, section, key, default=default)
    match = _HOST_PORT.match(value)
    if not match or not 0 < int(match.group(1)) < 65536:
        raise _bad(section, key, repr(value), "must be HOST:PORT with a port from 1 to 65535")
    return value


def _path(raw: Mapping[str, Any], section: str, key: str, home: Path, default: str) -> Path:
    value = _str(raw, section, key, default=default)
    if not value:
        raise ConfigError(f"{CONFIG_FILE}: [{section}] {key} must not be empty")
    return home / value


def _store_url(raw: Mapping[str, Any], home: Path) -> str:
    if "url" not in raw:
        return default_store_url(home)
    url = _str(raw, "store", "url")
    if not url.startswith(_STORE_SCHEMES):
        raise ConfigError(
            f"{CONFIG_FILE}: [store] url must start with sqlite:///, postgresql:// or "
            "postgresql+psycopg:// (the URL is not shown: it may hold a password)"
        )
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        if not rest or rest == ":memory:":
            raise ConfigError(f"{CONFIG_FILE}: [store] url must name a SQLite file, not memory")
        if not rest.startswith("/"):
            # a relative SQLite path means relative to the home, not to the current directory
            url = f"sqlite:///{(home / rest).resolve()}"
    elif url.startswith("sqlite://"):
        raise ConfigError(f"{CONFIG_FILE}: [store] url must be sqlite:///PATH for SQLite")
    return url
