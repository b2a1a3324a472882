"""A district on one machine: several credex nodes on loopback, for the demo and the tests.

`LocalCluster` initialises each node with the real `credex init` code, has the platform sign
a trust bundle naming them all (with the agreements given), pins the platform root and
installs the bundle on every node, then runs each node as a real `credex serve` process. The
nodes speak mutual TLS to each other exactly as in production; only the addresses are local.

Processes are real so that tests can kill -9 them at any moment. A node is ready when it has
written `data/serve.json` naming its own pid (the file is written atomically once the server
listens).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import catalog
import keys
from node.bundles import sign_bundle_spec
from node.cli.init_cmds import init_node
from node.errors import NodeError
from node.runtime import NodeRuntime, install_bundle, open_runtime, utc_now
from node.serving import SERVE_FILE


class ClusterError(NodeError):
    """A local node did not start, stop or answer as expected (the message says which)."""


PORTS_ENV = "CREDEX_CLUSTER_PORTS"
"""`FIRST-LAST`: the ports `free_port` hands out, for processes that build clusters side by
side (the test suite's parallel workers each get their own range). Unset: the kernel's choice."""

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and that this process has not
    handed out before (a node stopped for a while must find its port still its own).

    A node binds its port only when it starts, so two processes asking the kernel can be given
    the same one; with `CREDEX_CLUSTER_PORTS` set, ports come from that range only, tried from a
    random point of it (the test workers of one session get disjoint ranges; two sessions on
    one machine share them and rarely meet)."""
    bounds = _port_range()
    if bounds:
        # from a random place in the range: two test sessions on one machine share the range
        first, last = bounds
        start = secrets.randbelow(last - first + 1)
        span = range(first, last + 1)
        candidates: Sequence[int] = [*span[start:], *span[:start]]
    else:
        candidates = (0,) * 64
    for wanted in candidates:
        if wanted in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:
                continue  # in use (a range's port): the next one
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise ClusterError(f"no free TCP port on 127.0.0.1 ({PORTS_ENV}={os.environ.get(PORTS_ENV)})")


def _port_range() -> tuple[int, int] | None:
    text = os.environ.get(PORTS_ENV, "").strip()
    if not text:
        return None
    first, sep, last = text.partition("-")
    try:
        bounds = (int(first), int(last))
    except ValueError:
        bounds = (0, -1)
    if not sep or not 1024 <= bounds[0] <= bounds[1] <= 65535:
        raise ClusterError(f"{PORTS_ENV} must be FIRST-LAST between 1024 and 65535, not {text!r}")
    return bounds


@dataclass
class LocalNode:
    """One node of the cluster: its home, address and (when running) its process."""

    name: str
    role: str
    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def endpoint(self) -> str:
        """host:port the node serves on."""
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalCluster:
    """Nodes under `root/<name>`; see the module docstring."""

    root: Path
    nodes: Sequence[tuple[str, str]]
    agreements: Sequence[Mapping[str, Any]] = ()
    store_urls: Mapping[str, str] = field(default_factory=dict)
    bundle_days: int = 30
    _nodes: dict[str, LocalNode] = field(default_factory=dict)
    _bundle_version: int = 0
    _spec: dict[str, Any] = field(default_factory=dict)
    _replicas: list[str] = field(default_factory=list)

    # setup --------------------------------------------------------------------------------
    def init(self) -> None:
        """Create every node, sign the first bundle and install it everywhere."""
        self.root.mkdir(parents=True, exist_ok=True)
        platforms = [name for name, role in self.nodes if role == "platform"]
        if len(platforms) != 1:
            raise ClusterError("a cluster needs exactly one node with the platform role")
        for name, role in self.nodes:
            home = self.root / name
            port = free_port()
            init_node(home, name=name, role=role, listen=f"127.0.0.1:{port}")
            url = self.store_urls.get(name)
            if url:
                self._set_store_url(home, url)
            self._nodes[name] = LocalNode(name=name, role=role, home=home, port=port)
        self._spec = self._initial_spec()
        self.reissue_bundle()

    def add_replica(self, name: str, *, of: str) -> LocalNode:
        """A second `credex serve` of node `of` under `root/<name>`: the same `credex.toml`
        (node id, store URL), `keys/` and `trust/`, listening on another port, as an operator
        runs replicas on several hosts. Only meaningful for a node whose store is PostgreSQL
        (a SQLite file lives in the home's own `data/`). Start it with `start(name)`; the
        cluster's CLI helpers run against it with `name` too."""
        if name in self._nodes:
            raise ClusterError(f"a node {name!r} is already in this cluster")
        source = self.node(of)
        home = self.home(name)
        shutil.copytree(
            source.home, home, ignore=shutil.ignore_patterns("data", "serve.log"), symlinks=True
        )
        (home / "data").mkdir(mode=0o700)
        port = free_port()
        config = home / "credex.toml"
        text = config.read_text(encoding="utf-8")
        old = f'listen = "{source.endpoint}"'
        if old not in text:
            raise ClusterError(f"{config}: no {old!r} to give the replica its own port")
        config.write_text(text.replace(old, f'listen = "127.0.0.1:{port}"', 1), encoding="utf-8")
        self._nodes[name] = LocalNode(name=name, role=source.role, home=home, port=port)
        self._replicas.append(name)
        return self._nodes[name]

    def _set_store_url(self, home: Path, url: str) -> None:
        config = home / "credex.toml"
        text = config.read_text(encoding="utf-8")
        if "\n[store]\n" not in text:
            raise ClusterError(f"{config}: no [store] section to set the URL in")
        text = text.replace("\n[store]\n", f"\n[store]\nurl = {json.dumps(url)}\n", 1)
        config.write_text(text, encoding="utf-8")

    def _initial_spec(self) -> dict[str, Any]:
        roster = []
        for name, role in self.nodes:
            node_keys = keys.load_key_dir(self.home(name) / "keys")
            roster.append(
                {
                    "node_id": name,
                    "name": name,
                    "roles": [role],
                    "endpoint": self._nodes[name].endpoint,
                    "identity": keys.public_identity(node_keys),
                }
            )
        return {
            "catalog_version": _catalog_version(),
            "valid_days": self.bundle_days,
            "revoked_keyids": [],
            "revoked_grants": [],
            "node": roster,
            "agreement": [dict(a) for a in self.agreements],
        }

    @property
    def platform(self) -> str:
        """The name of the platform node."""
        return next(name for name, role in self.nodes if role == "platform")

    def reissue_bundle(self, **changes: Any) -> keys.TrustBundle:
        """Sign the next bundle version (with `changes` applied to the spec) and install it on
        every node. Running nodes pick it up at their next bundle reload."""
        self._spec.update(changes)
        self._bundle_version += 1
        spec = dict(self._spec, version=self._bundle_version)
        now = utc_now()
        platform_home = self.home(self.platform)
        bundle, raw = sign_bundle_spec(platform_home, spec, now=now)
        root_pub = platform_home / "trust" / "root.pub"
        for node in self._nodes.values():
            trust = node.home / "trust"
            if node.home != platform_home:
                shutil.copyfile(root_pub, trust / "root.pub")
            install_bundle(trust, raw, now=now)
        (self.root / f"bundle-v{bundle.version}.json").write_bytes(raw)
        return bundle

    def spec(self) -> dict[str, Any]:
        """A copy of the current bundle spec (roster identities and agreements)."""
        copy: dict[str, Any] = json.loads(json.dumps(self._spec))
        return copy

    # access -------------------------------------------------------------------------------
    def node(self, name: str) -> LocalNode:
        """The node called `name` (ClusterError when there is none)."""
        try:
            return self._nodes[name]
        except KeyError:
            raise ClusterError(f"no node {name!r} in this cluster") from None

    def home(self, name: str) -> Path:
        """The node's home directory."""
        return self.root / name

    def env(self, name: str) -> dict[str, str]:
        """The environment a `credex` process for `name` runs with."""
        env = dict(os.environ)
        env["CREDEX_HOME"] = str(self.home(name))
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["COLUMNS"] = env.get("COLUMNS", "120")
        return env

    def cli(
        self, name: str, *args: str, check: bool = False, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `credex` CLI for node `name` and return its result."""
        done = subprocess.run(  # noqa: S603 - our own CLI, arguments from the caller's code
            [sys.executable, "-m", "node.cli", *args],
            env=self.env(name),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"credex {' '.join(args[:2])} on {name} exited {done.returncode}: "
                f"{done.stderr.strip()[-500:]}"
            )
        return done

    def cli_json(self, name: str, *args: str) -> Any:
        """Run a `--json` CLI command that must succeed and return its decoded output."""
        done = self.cli(name, *args, "--json", check=True)
        return json.loads(done.stdout)

    def runtime(self, name: str) -> NodeRuntime:
        """An in-process runtime of node `name` (the caller closes it)."""
        return open_runtime(self.home(name))

    # processes ----------------------------------------------------------------------------
    def start(self, name: str, *, timeout: float = 30.0) -> LocalNode:
        """Start `credex serve` for `name` and wait until it listens."""
        node = self.node(name)
        if node.process is not None and node.process.poll() is None:
            return node
        serve_json = node.home / "data" / SERVE_FILE
        serve_json.unlink(missing_ok=True)
        node.log_path = node.home / "serve.log"
        with node.log_path.open("ab") as log:
            node.process = subprocess.Popen(
                [sys.executable, "-m", "node.cli", "serve"],
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise ClusterError(
                    f"node {name} exited ({node.process.returncode}) while starting: "
                    f"{self.server_log(name)[-800:]}"
                )
            try:
                info = json.loads(serve_json.read_text(encoding="utf-8"))
                if info.get("pid") == node.process.pid:
                    return node
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.02)  # readiness poll of a file another process writes
        self.kill(name)
        raise ClusterError(f"node {name} did not start within {timeout:.0f} s")

    def start_all(self) -> None:
        """Start every node (the platform last, so the departments are up to be followed)."""
        for name, _role in sorted(self.nodes, key=lambda n: n[1] == "platform"):
            self.start(name)

    def running(self, name: str) -> bool:
        """True while the node's process is alive."""
        proc = self.node(name).process
        return proc is not None and proc.poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL the node's process (no cleanup at all, like a power cut of the process)."""
        node = self.node(name)
        if node.process is not None and node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()
        node.process = None

    def stop(self, name: str, *, timeout: float = 20.0) -> int | None:
        """SIGTERM the node and wait for its graceful shutdown; returns its exit code."""
        node = self.node(name)
        proc = node.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        node.process = None
        return proc.returncode

    def stop_all(self) -> None:
        """Stop every running node (and replica) gracefully."""
        for name in self._names():
            self.stop(name)

    def _names(self) -> list[str]:
        return [name for name, _role in self.nodes] + self._replicas

    def server_log(self, name: str) -> str:
        """What the node's `credex serve` printed so far."""
        path = self.node(name).log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self._names():
            if name not in self._nodes:
                continue
            if exc[0] is not None:
                self.kill(name)
            else:
                self.stop(name)


def _catalog_version() -> str:
    version: str = catalog.default_catalog().version
    return version
