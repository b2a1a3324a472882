"""Fuzz the parsers that take outside bytes: the CSV and xlsx sources,
mapping files, node config files, and every protobuf message a node parses from the wire.

A finding is an exception outside the target's documented error family (a traceback an
operator or a peer could provoke). Known errors (SourceError, MappingError, ConfigError,
InputError ...) are the expected answer to bad input and are not findings.

    python bench/fuzz.py                      # every target, 1,000,000 inputs each (atheris)
    python bench/fuzz.py --runs 5000 --target csv --target protobuf
    python bench/fuzz.py --engine mutate      # no atheris: seeded random mutation of the seeds

Each target runs in its own child process (atheris, i.e. libFuzzer, can fuzz once per
process); only our packages and tomllib are instrumented for coverage. Each finding is written
to bench/out/fuzz-findings/<target>.jsonl (exception type, file:line, and a hex dump of at
most 256 input bytes) and the last lines are

    BENCH fuzz <target> <inputs> inputs findings <n>
"""

# Imports inside functions are deliberate: the atheris child must import our packages inside
# `atheris.instrument_imports()` to get coverage feedback.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TODAY = dt.date(2026, 11, 25)
PROTO_TYPES = (
    "common_pb2.SignedRequest",
    "common_pb2.RequestPayload",
    "common_pb2.Record",
    "common_pb2.FeedEvent",
    "common_pb2.Receipt",
    "common_pb2.SignedReceipt",
    "exchange_pb2.SubscribeRequest",
    "exchange_pb2.SubscribeBody",
    "exchange_pb2.SealedBatch",
    "exchange_pb2.PushRequest",
    "exchange_pb2.PushNotice",
    "query_pb2.QueryBody",
    "query_pb2.QueryAnswer",
    "lifecycle_pb2.ObjectionBody",
    "lifecycle_pb2.ResolveObjectionBody",
    "lifecycle_pb2.CorrectBody",
    "lifecycle_pb2.RepairBody",
    "lifecycle_pb2.RevokeBody",
    "transparency_pb2.GetInclusionProofRequest",
    "transparency_pb2.GetConsistencyProofRequest",
    "transparency_pb2.CosignRequest",
)


@dataclass
class Target:
    """One fuzz target: `run(data)` may raise only `expected`; `seeds()` is the start corpus."""

    name: str
    run: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]


def _scratch() -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    return Path(tempfile.mkdtemp(prefix="credex-fuzz-", dir=base))


def make_targets(scratch: Path) -> dict[str, Target]:
    """Build every target, writing its scratch files under `scratch` (imports are local so the
    atheris child can instrument them first)."""
    import adapters
    import catalog
    import keys
    from node.config import write_default_config
    from node.demo_data import write_demo_data
    from node.errors import NodeError

    data_dir = scratch / "demo"
    demo = write_demo_data(data_dir, today=TODAY)
    cat = catalog.default_catalog()

    # --- csv and xlsx sources: every row of fuzzed file bytes ----------------------------
    csv_path = scratch / "fuzz.csv"
    xlsx_path = scratch / "fuzz.xlsx"

    def drain(source: Any) -> None:
        source.columns()
        for _row in source.rows():
            pass
        source.position()

    def run_csv(data: bytes) -> None:
        csv_path.write_bytes(data)
        drain(adapters.CsvSource(csv_path, encoding="auto"))

    def run_xlsx(data: bytes) -> None:
        xlsx_path.write_bytes(data)
        drain(adapters.XlsxSource(xlsx_path))

    # --- mapping files ------------------------------------------------------------------
    mapping_path = data_dir / "fuzz-mapping.toml"  # beside the demo exports it may name

    def run_mapping_file(data: bytes) -> None:
        mapping_path.write_bytes(data)
        spec = adapters.load_mapping(mapping_path)
        adapters.check_mapping(spec, cat)

    # --- node config ----------------------------------------------------------------------
    home = scratch / "home"
    home.mkdir()
    write_default_config(home, node_id="market", name="market", role="department")
    config_seed = (home / "credex.toml").read_bytes()

    def run_config(data: bytes) -> None:
        from node.config import load_config

        (home / "credex.toml").write_bytes(data)
        load_config(home)

    # --- protobuf -------------------------------------------------------------------------
    from node import wire
    from node._pb.credex.v1 import (
        common_pb2,
        exchange_pb2,
        lifecycle_pb2,
        query_pb2,
        transparency_pb2,
    )

    modules = {
        "common_pb2": common_pb2,
        "exchange_pb2": exchange_pb2,
        "lifecycle_pb2": lifecycle_pb2,
        "query_pb2": query_pb2,
        "transparency_pb2": transparency_pb2,
    }
    types: list[Any] = []
    for dotted in PROTO_TYPES:
        module, name = dotted.split(".")
        types.append(getattr(modules[module], name))

    def run_protobuf(data: bytes) -> None:
        if not data:
            return
        message_type = types[data[0] % len(types)]
        message = wire.parse(message_type, data[1:])
        # Go one step further where the node does: into envelopes, payloads, timestamps.
        if message_type is common_pb2.Record:
            wire.record_from_pb(message)
        elif message_type is common_pb2.RequestPayload:
            wire.request_payload_from_bytes(data[1:])
        elif message_type is common_pb2.Receipt:
            wire.receipt_from_bytes(data[1:])
        elif message_type is common_pb2.FeedEvent:
            wire.event_kind_from_pb(message.kind)

    def protobuf_seeds() -> list[bytes]:
        from node.requests import sign_request

        signer = keys.Signer.generate()
        now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
        body = query_pb2.QueryBody(items=["admin_penalty"], purpose="行政管理").SerializeToString()
        signed = sign_request("/credex.v1.Query/Query", body, signer, "hrss", now)
        header = {
            "item": "admin_penalty",
            "catalog_version": catalog.default_catalog().version,
            "issued_at": "2026-11-25T00:00:00Z",
            "producer": "market",
            "record_key": "00" * 32,
            "subject": "ab" * 16,
            "version": 1,
        }
        rec = keys.sign_record(header, {"decision_no": "x", "fine_wan_yuan": "0.5"}, signer)
        seeds = []
        for message_type, payload in (
            (common_pb2.SignedRequest, signed.SerializeToString()),
            (query_pb2.QueryBody, body),
            (common_pb2.Record, wire.record_to_pb(rec).SerializeToString()),
            (
                common_pb2.RequestPayload,
                keys.Envelope.from_bytes(bytes(signed.envelope)).payload,
            ),
        ):
            seeds.append(bytes([types.index(message_type)]) + payload)
        return seeds

    return {
        "csv": Target(
            "csv",
            run_csv,
            (adapters.AdapterError,),
            lambda: [demo.penalties_csv.read_bytes(), b"a,b\r\n1,2\r\n"],
        ),
        "xlsx": Target(
            "xlsx", run_xlsx, (adapters.AdapterError,), lambda: [demo.licences_xlsx.read_bytes()]
        ),
        "mapping": Target(
            "mapping",
            run_mapping_file,
            (adapters.AdapterError,),
            lambda: [demo.penalties_mapping.read_bytes(), demo.licences_mapping.read_bytes()],
        ),
        "config": Target("config", run_config, (NodeError,), lambda: [config_seed]),
        "protobuf": Target("protobuf", run_protobuf, (NodeError,), protobuf_seeds),
    }


def finding_of(target: Target, data: bytes) -> dict[str, Any] | None:
    """Run one input; return a finding (type, where, message head, input) or None."""
    try:
        target.run(data)
    except target.expected:
        return None
    except RecursionError as error:
        return _finding(error, data)
    except Exception as error:  # a finding is precisely an exception we did not expect
        return _finding(error, data)
    return None


def _finding(error: BaseException, data: bytes) -> dict[str, Any]:
    frames = traceback.extract_tb(error.__traceback__)
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename]
    return {
        "raised_from": (
            f"{Path(ours[-1].filename).relative_to(ROOT)}:{ours[-1].lineno}" if ours else "?"
        ),
        "type": type(error).__name__,
        "where": where,
        "message": str(error)[:200],
        "input_hex": data[:256].hex(),
        "input_len": len(data),
    }


def _mutate(rng: random.Random, seed: bytes, pool: Sequence[bytes]) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        choice = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 2 and data:
            del data[pos : pos + rng.randint(1, 16)]
        elif choice == 3 and data:
            data[min(pos, len(data) - 1)] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x2C, 0x22, 0x0A))
        elif choice == 4:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            data[pos:pos] = other[start : start + rng.randint(1, 64)]
        else:
            data = data[:pos]
    return bytes(data)


def run_mutation(target: Target, runs: int, *, seed: int) -> tuple[int, list[dict[str, Any]]]:
    """The engine without atheris: seeded random mutation of the seeds, in this process."""
    rng = random.Random(seed)
    pool = target.seeds()
    findings: dict[tuple[str, str], dict[str, Any]] = {}
    for i in range(runs):
        data = pool[i] if i < len(pool) else _mutate(rng, rng.choice(pool), pool)
        found = finding_of(target, data)
        if found is not None:
            findings.setdefault((found["type"], found["where"]), found)
    return runs, list(findings.values())


def _child(name: str, runs: int, findings_file: Path, *, seed: int = 0) -> None:
    """Run one target under atheris; never returns (libFuzzer exits)."""
    import atheris

    with atheris.instrument_imports(include=["adapters", "catalog", "node", "tomllib"]):
        import adapters  # noqa: F401
        import node.config
        import node.wire  # noqa: F401

    scratch = _scratch()
    target = make_targets(scratch)[name]
    corpus = scratch / "corpus"
    corpus.mkdir()
    for i, start in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(start)
    seen: set[tuple[str, str]] = set()

    def one_input(data: bytes) -> None:
        found = finding_of(target, data)
        if found is not None and (found["type"], found["where"]) not in seen:
            seen.add((found["type"], found["where"]))
            with findings_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(found) + "\n")

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            f"-seed={seed}",
            "-timeout=20",
            "-rss_limit_mb=3072",
            "-max_len=65536",
            f"-artifact_prefix={scratch}/",
            "-print_final_stats=0",
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


def run_atheris(
    name: str, runs: int, out_dir: Path, *, seed: int = 0
) -> tuple[int, list[dict[str, Any]], str]:
    """Run `name` in an atheris child; return (inputs run, findings, the child's tail)."""
    findings_file = out_dir / f"{name}.jsonl"
    findings_file.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", name, "--runs", str(runs),
         "--findings", str(findings_file), "--seed", str(seed)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    counts = re.findall(r"Done (\d+) runs", done.stderr)
    inputs = int(counts[-1]) if counts else 0
    findings = []
    if findings_file.exists():
        findings = [json.loads(line) for line in findings_file.read_text().splitlines() if line]
    if done.returncode != 0:
        findings.append(
            {"type": "ChildExit", "where": f"rc {done.returncode}", "message": done.stderr[-300:]}
        )
    return inputs, findings, done.stderr[-2000:]


def main(argv: Sequence[str] | None = None) -> int:
    """Fuzz the chosen targets; print one BENCH line each; exit 1 when anything was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--target", action="append", choices=sorted(
        ["csv", "xlsx", "mapping", "config", "protobuf"]), help="default: all")  # fmt: skip
    parser.add_argument("--engine", choices=["atheris", "mutate"], default=None)
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (0: a fresh one; atheris and mutate)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--findings", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.runs, args.findings, seed=args.seed)
        return 0
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutate"
    names = args.target or ["csv", "xlsx", "mapping", "config", "protobuf"]
    out_dir = HERE / "out" / "fuzz-findings"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    scratch = _scratch() if engine == "mutate" else None
    targets = make_targets(scratch) if scratch is not None else {}
    for name in names:
        started = time.monotonic()
        if engine == "atheris":
            inputs, findings, tail = run_atheris(name, args.runs, out_dir, seed=args.seed)
        else:
            seed = args.seed or random.randrange(1, 1 << 31)
            inputs, findings = run_mutation(targets[name], args.runs, seed=seed)
            tail = ""
            (out_dir / f"{name}.jsonl").write_text(
                "".join(json.dumps(f) + "\n" for f in findings), encoding="utf-8"
            )
        took = time.monotonic() - started
        results[name] = {"inputs": inputs, "findings": findings, "seconds": round(took, 1)}
        for found in findings:
            print(
                f"finding in {name}: {found['type']} at {found['where']} "
                f"(from {found.get('raised_from', '?')}): {found['message']}"
            )
        if engine == "atheris" and inputs == 0:
            print(f"{name}: atheris did not report a run count:\n{tail}")
        print(f"fuzz {name}: {inputs} inputs in {took:.1f} s ({engine})", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    for name, result in results.items():
        print(f"BENCH fuzz {name} {result['inputs']} inputs findings {len(result['findings'])}")
    return 1 if any(r["findings"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
