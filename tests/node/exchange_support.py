"""Shared by the Exchange tests: an mTLS server of one runtime, and signed local records."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import keys
from node.cluster import LocalCluster
from node.runtime import NodeRuntime
from node.server import NodeServer, Service, build_server
from node.services import exchange_service
from node.store import NewRecord


@asynccontextmanager
async def serving(
    runtime: NodeRuntime,
    make_services: Callable[[NodeRuntime], list[Service]] = exchange_service.make_services,
) -> AsyncIterator[NodeServer]:
    """`runtime`'s Exchange service (or the services `make_services` builds, e.g.
    `transparency_service.make_services`) on its configured address, stopped on exit."""
    services = make_services(runtime)
    server = build_server(
        listen=runtime.config.server.listen, tls=runtime.server_tls(), services=services
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(None)


def seed(
    runtime: NodeRuntime,
    count: int,
    *,
    item: str = "admin_penalty",
    fields_of: Callable[[int], Mapping[str, str]] = lambda i: {"decision_no": f"N{i}"},
) -> list[str]:
    """Store `count` signed records of `runtime`'s own (`row-<i>`, record key and subject from
    `i`, fields `fields_of(i)`), subscribed by the platform; return their row ids."""
    now = runtime.clock()
    runtime.store.ensure_subscription("platform", [item], now=now)
    rows = []
    for i in range(count):
        header = {
            "item": item,
            "catalog_version": runtime.catalogue.version,
            "record_key": f"{i:064x}",
            "version": 1,
            "producer": runtime.node_id,
            "issued_at": "2026-11-25T00:00:00Z",
            "subject": f"{i:032x}",
        }
        signed = keys.sign_record(header, dict(fields_of(i)), runtime.node_keys.signing)
        row_id = f"row-{i}"
        rows.append(
            NewRecord(
                row_id=row_id,
                producer=runtime.node_id,
                record_key=f"{i:064x}",
                version=1,
                item_id=item,
                catalog_version=runtime.catalogue.version,
                subject_index=f"{i:032x}",
                body=runtime.cipher.encrypt(row_id, signed.to_bytes()),
                content_hash=f"{i:064x}",
                severity=None,
                decided_on=None,
                disclosure_min_end=None,
                disclosure_max_end=None,
                disclosure_rule="none",
                created_at=now,
            )
        )
    runtime.store.store_batch(rows, now=now)
    return [r.row_id for r in rows]


def rotate_after_overlap(cluster: LocalCluster, name: str, *, revoke_old: bool = False) -> bytes:
    """Rotate `name`'s signing key with no overlap, the overlap already over, and install on
    every node the bundle listing the new identity (and, with `revoke_old`, revoking the old
    key). Returns the old public key."""
    home = cluster.home(name) / "keys"
    old = keys.load_key_dir(home).signing.public_key
    rotated = keys.rotate_signing_key(
        home, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), overlap=dt.timedelta(0)
    )
    spec = cluster.spec()
    for node in spec["node"]:
        if node["node_id"] == name:
            node["identity"] = keys.public_identity(rotated)
    changes: dict[str, object] = {"node": spec["node"]}
    if revoke_old:
        changes["revoked_keyids"] = [keys.keyid(old)]
    bundle = cluster.reissue_bundle(**changes)
    entry = bundle.member(name)
    assert entry is not None
    assert [k for k, _until in entry.previous_signing_keys] == [old]
    assert entry.previous_signing_keys[0][1] < dt.datetime.now(dt.UTC)  # overlap over
    return old
