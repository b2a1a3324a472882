"""gRPC servicers of the credex.v1 services, and their registrations for `node.server`."""

from __future__ import annotations

from collections.abc import Iterable

import catalog
from node._pb.credex.v1 import catalog_pb2_grpc
from node.server import Service
from node.services.catalog_service import CatalogServicer

__all__ = ["CatalogServicer", "catalog_service"]


def catalog_service(cat: catalog.Catalog, provided: Iterable[str]) -> Service:
    """The Catalog service registration for `build_server` (see CatalogServicer)."""
    return Service(
        name="credex.v1.Catalog",
        servicer=CatalogServicer(cat, provided),
        add=catalog_pb2_grpc.add_CatalogServicer_to_server,
    )
