"""credex.v1.Transparency: the access log's checkpoints, proofs and witness cosignatures.

Any roster member may read checkpoints and proofs (they hold hashes, never entries), proofs only
up to the latest signed checkpoint (what was committed since is in no signed tree yet). Only a
roster node with the `platform` role may hand in a cosignature (`Cosign`), and the node keeps
it only when the cosigned note is one of its own checkpoints (or, failing that, matches its own
tree) and the witness's signature verifies with the platform's key in the trust bundle. A
refused cosignature is logged as a denied `cosign` access (node.refusals). A cosigned note that
contradicts this node's tree is a fork alarm (ForkDetected, DATA_LOSS), which the access log
records as its own alarm entry.

On a platform node this module also runs the witness loop (`node.witness.background`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import grpc.aio

import keys
from node import wire, witness
from node._pb.credex.v1 import transparency_pb2, transparency_pb2_grpc
from node.errors import InputError, PolicyDenied
from node.refusals import COSIGN_METHOD, METHOD_ACCESS, logged_refusals
from node.server import Service

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = ["TransparencyServicer", "background", "make_services"]


class TransparencyServicer(transparency_pb2_grpc.TransparencyServicer):
    """Serves checkpoints and proofs of the node's access log, and stores cosignatures."""

    def __init__(self, runtime: NodeRuntime) -> None:
        """Serve `runtime.log`."""
        self._rt = runtime

    def _latest(self) -> transparency_pb2.SignedCheckpoint:
        log = self._rt.log
        latest = log.backend.latest_checkpoint()
        note = latest[1] if latest is not None else log.checkpoint()
        cp = keys.verify_checkpoint(
            note, verifiers=self._rt.log_verifiers(), log_name=self._rt.node_id
        )
        return wire.checkpoint_to_pb(note, cp)

    async def GetCheckpoint(  # noqa: N802 (the generated servicer's name)
        self,
        request: transparency_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> transparency_pb2.SignedCheckpoint:
        """The latest signed checkpoint (one is signed now when none exists yet)."""
        del request, context
        return await asyncio.to_thread(self._latest)

    def _signed(self, what: str, size: int) -> None:
        """Refuse (InputError) a proof up to `size` beyond the latest signed checkpoint: entries
        committed since are in no signed tree, so such a proof verifies against nothing, and
        answering it would tell how many accesses were logged since the last checkpoint."""
        latest = self._rt.log.backend.latest_checkpoint()
        if size > (latest[0] if latest is not None else 0):
            raise InputError(f"{what}: size {size} is beyond the latest signed checkpoint")

    def _inclusion(self, index: int, size: int) -> transparency_pb2.InclusionProof:
        log = self._rt.log
        self._signed("inclusion proof", size)
        proof = log.inclusion_proof(index, size)
        leaf = log.backend.leaf_hashes(index, index + 1)[0]
        return wire.inclusion_proof_to_pb(index, size, leaf, proof)

    async def GetInclusionProof(  # noqa: N802 (the generated servicer's name)
        self,
        request: transparency_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> transparency_pb2.InclusionProof:
        """RFC 9162 inclusion proof of entry `index` in the tree of `size` entries;
        INVALID_ARGUMENT when the range is not in the log up to its latest signed checkpoint."""
        del context
        return await asyncio.to_thread(self._inclusion, request.index, request.size)

    async def GetConsistencyProof(  # noqa: N802 (the generated servicer's name)
        self,
        request: transparency_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> transparency_pb2.ConsistencyProof:
        """RFC 9162 consistency proof from `size1` to `size2`; INVALID_ARGUMENT out of range
        (`0 < size1 <= size2 <=` the latest signed checkpoint's size)."""
        del context
        size1, size2 = request.size1, request.size2
        proof = await asyncio.to_thread(self._consistency, size1, size2)
        return wire.consistency_proof_to_pb(size1, size2, proof)

    def _consistency(self, size1: int, size2: int) -> list[bytes]:
        self._signed("consistency proof", size2)
        return self._rt.log.consistency_proof(size1, size2)

    def _store_cosignature(self, witness_id: str, note: str) -> str:
        rt = self._rt
        bundle = rt.bundle()
        member = bundle.member(witness_id)
        if member is None or witness.PLATFORM_ROLE not in member.roles:
            raise PolicyDenied("not_a_witness", "only a platform node may cosign checkpoints")
        cp = keys.verify_checkpoint(note, verifiers=rt.log_verifiers(), log_name=rt.node_id)
        if cp.origin != rt.log.origin:
            raise InputError("Cosign: the note is not a checkpoint of this node's log")
        signed_by_witness = False
        for public in bundle.node_signing_keys(witness_id, rt.clock()).values():
            try:
                keys.verify_checkpoint(note, verifiers={witness_id: public}, log_name=witness_id)
            except keys.VerificationError:
                continue
            signed_by_witness = True
            break
        if not signed_by_witness:
            raise keys.VerificationError("the note carries no valid cosignature of the witness")
        ours = dict(rt.log.backend.checkpoints()).get(cp.size)
        if ours is None or not note.startswith(ours):
            # Not a note we stored: it must still match our own tree (ForkDetected otherwise,
            # recorded as an alarm entry by the access log).
            rt.log.check_foreign_checkpoint(note, rt.log_verifiers())
        rt.log.backend.save_witness(cp.size, witness_id, note)
        return note

    async def Cosign(  # noqa: N802 (the generated servicer's name)
        self,
        request: transparency_pb2.CosignRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> transparency_pb2.CosignResponse:
        """Store the platform witness's cosignature of one of this node's checkpoints; a
        refusal (not the witness, a bad cosignature, not our checkpoint) is logged first."""
        access = METHOD_ACCESS[COSIGN_METHOD]
        async with logged_refusals(
            self._rt,
            context,
            kind=access.kind,
            purpose=access.purpose,
            envelope=request.SerializeToString(),
        ):
            witness_id = self._rt.server_tls().identify(context)
            note = await asyncio.to_thread(self._store_cosignature, witness_id, request.note)
        return transparency_pb2.CosignResponse(note=note)


def make_services(runtime: NodeRuntime) -> list[Service]:
    """The Transparency service of a running node."""
    return [
        Service(
            name="credex.v1.Transparency",
            servicer=TransparencyServicer(runtime),
            add=transparency_pb2_grpc.add_TransparencyServicer_to_server,
        )
    ]


def background(
    runtime: NodeRuntime,
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """The platform's witness loop (nothing on a department node)."""
    return witness.background(runtime)
