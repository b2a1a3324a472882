"""credex.v1.Query: authorised queries from peer departments.

The servicer is thin: authenticate the signed request (a refusal is logged as a denied access
before UNAUTHENTICATED goes back), then hand the verified request to `node.query.QueryEngine`,
which decides, logs durably and releases. The request's nonce is not recorded on its own: the
engine claims it with the request's access-log entry, in one group commit (decision 0011).
Grants revoked by a trust bundle are recorded in the ledger by the runtime before it hands that
bundle out (at start and after every reload, `NodeRuntime.bundle`); the policy also checks the
bundle's list on every query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc.aio

from node._pb.credex.v1 import common_pb2, query_pb2, query_pb2_grpc
from node.query import QUERY_METHOD, QueryEngine
from node.refusals import logged_refusals, trace_id
from node.server import Service

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["QueryServicer", "make_services"]


class QueryServicer(query_pb2_grpc.QueryServicer):
    """Serves Query: authenticate, then `QueryEngine.answer`."""

    def __init__(self, runtime: NodeRuntime) -> None:
        """Answer from `runtime` (its authenticator checks every request first)."""
        self._runtime = runtime
        self._auth = runtime.authenticator()
        self._engine = QueryEngine(runtime)

    async def Query(  # noqa: N802 (the generated servicer's name)
        self,
        request: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> query_pb2.QueryAnswer:
        """Answer one signed query; refusals are logged before the error status is returned."""
        async with logged_refusals(
            self._runtime, context, kind="query", purpose="", envelope=request.envelope
        ):
            # The nonce is claimed by the engine, with the request's access-log entry.
            verified = self._auth.authenticate_unclaimed(request, context, method=QUERY_METHOD)
        # Refusals past this point are logged by the engine, with what the body says.
        return await self._engine.answer(verified, trace=trace_id())


def make_services(runtime: NodeRuntime) -> list[Service]:
    """The Query service of a running node (the runtime records the bundle's grant
    revocations when it first hands the bundle out, also after a reload)."""
    return [
        Service(
            name="credex.v1.Query",
            servicer=QueryServicer(runtime),
            add=query_pb2_grpc.add_QueryServicer_to_server,
        )
    ]
