"""Errors name their gRPC status code without importing grpc (node/errors.py); the names must
be codes grpc knows, or `status_for` would fail while answering a refused call."""

from __future__ import annotations

from typing import get_args

import grpc

import node.errors
from node.errors import NodeError, StatusName, TamperDetected, status_for
from node.server import PeerBusy
from node.store.errors import StoreError


def _subclasses(cls: type[NodeError]) -> list[type[NodeError]]:
    found: list[type[NodeError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_status_names_are_the_members_of_grpc_status_code() -> None:
    assert set(get_args(StatusName)) == set(grpc.StatusCode.__members__)


def test_every_node_error_names_a_grpc_status_code() -> None:
    # some are defined where they are raised, imported above
    assert PeerBusy.status == "RESOURCE_EXHAUSTED"
    assert StoreError.status == "UNAVAILABLE"
    every: list[type[NodeError]] = [NodeError, *_subclasses(NodeError)]
    for error in every:
        assert error.status in grpc.StatusCode.__members__, error


def test_status_for_returns_the_grpc_code() -> None:
    assert status_for(TamperDetected("x")) is grpc.StatusCode.DATA_LOSS
    assert status_for(ValueError("x")) is grpc.StatusCode.INTERNAL
    assert node.errors.status_for(NodeError("x")) is grpc.StatusCode.INTERNAL
