"""credex.v1.Catalog: the catalogue this node validates against and the items it provides.

The catalogue is immutable for the life of a server, so both answers are built once.
Any roster member may call (the call interceptor has already checked the TLS peer); the
catalogue holds no personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc.aio

import catalog
from node import wire
from node._pb.credex.v1 import catalog_pb2, catalog_pb2_grpc
from node.server import Service

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["CatalogServicer", "make_services"]


class CatalogServicer(catalog_pb2_grpc.CatalogServicer):
    """Serves GetCatalog (the whole catalogue) and ListItems (the items this node provides)."""

    def __init__(self, cat: catalog.Catalog, provided: Iterable[str]) -> None:
        """Prepare the answers; refuses (catalog.UnknownItem) a provided item not in `cat`."""
        items = sorted(set(provided))
        self._document = wire.catalog_to_pb(cat)
        self._items = catalog_pb2.ListItemsResponse(
            catalog_version=cat.version, items=[wire.item_to_pb(cat.item(i)) for i in items]
        )

    async def GetCatalog(  # noqa: N802 (the generated servicer's name)
        self,
        request: catalog_pb2.GetCatalogRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> catalog_pb2.CatalogDocument:
        """The whole catalogue: version, items and code tables."""
        del request, context  # the answer depends on neither
        return self._document

    async def ListItems(  # noqa: N802 (the generated servicer's name)
        self,
        request: catalog_pb2.ListItemsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> catalog_pb2.ListItemsResponse:
        """The items this node provides, sorted by id."""
        del request, context  # the answer depends on neither
        return self._items


def make_services(runtime: NodeRuntime) -> list[Service]:
    """The Catalog service of a running node; it provides the items its agreements name."""
    bundle = runtime.bundle()
    provided = {
        item for a in bundle.agreements if a.provider == runtime.node_id for item in a.items
    }
    return [
        Service(
            name="credex.v1.Catalog",
            servicer=CatalogServicer(runtime.catalogue, provided),
            add=catalog_pb2_grpc.add_CatalogServicer_to_server,
        )
    ]
