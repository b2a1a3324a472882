"""One error family for the node, and the one table that maps every package's errors to a
gRPC status code and a CLI exit code.

Every `credex` command imports this module, most of them never talk to a peer, so it does not
import grpc: an error names its status code (`StatusName`, a member of `grpc.StatusCode`) and
`status_for` looks the code up when a service needs it.

Exit codes (DESIGN.md section 7): 0 ok, 1 failure, 2 usage or input error, 3 verification
failure (tampering). Messages are written for a person to act on and never carry personal data
(identifiers, names) or key material.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import grpc

# The members of grpc.StatusCode (tests/node/test_errors_status.py keeps the two equal).
StatusName = Literal[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]


class ExitCode(enum.IntEnum):
    """Process exit codes of the `credex` command."""

    OK = 0
    FAILURE = 1
    INPUT = 2
    VERIFICATION = 3


class NodeError(Exception):
    """Root of the node's errors; `exit_code` and `status` say how it surfaces.

    `access_logged` is True for a refusal already written to the access log where it was
    raised, so that the service refusing the call does not log it a second time.
    """

    exit_code: ExitCode = ExitCode.FAILURE
    status: StatusName = "INTERNAL"
    access_logged: bool = False


class ConfigError(NodeError):
    """The node's configuration is missing or invalid (the message names the key)."""

    exit_code = ExitCode.INPUT
    status = "FAILED_PRECONDITION"


class InputError(NodeError):
    """A request or command argument is malformed."""

    exit_code = ExitCode.INPUT
    status = "INVALID_ARGUMENT"


class BundleSpecError(InputError):
    """A trust bundle spec (the platform's bundle.toml) is malformed: a missing or bad key,
    an unknown agreement kind, a node without roles. The operator's input, not tampering, so
    it exits 2, while a bundle failing its signature, rollback or expiry checks exits 3."""


class NotFound(NodeError):
    """The named record, peer or entry does not exist."""

    exit_code = ExitCode.INPUT
    status = "NOT_FOUND"


class AuthError(NodeError):
    """A signature, certificate, nonce or timestamp was not accepted.

    `reason` is the stable code a refusal is logged under (docs/officer-guide.md): one of
    AUTH_REASONS, so that an officer tells a forgery from a replay or a revoked key.
    """

    exit_code = ExitCode.VERIFICATION
    status = "UNAUTHENTICATED"

    def __init__(self, message: str, *, reason: str = "unauthenticated") -> None:
        """Carry `message` (for a person) and `reason` (a code from AUTH_REASONS)."""
        if reason not in AUTH_REASONS:
            raise ValueError(f"unknown authentication refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason


AUTH_REASONS = frozenset(
    {
        "unauthenticated",  # a peer's refusal relayed, with no finer reason known
        "tls_unpinned",  # no client certificate, or one the roster does not pin
        "requester_unknown",  # the node is not in the roster
        "requester_not_valid",  # its roster entry is not valid now
        "key_unknown",  # signed by a key that is not one of the node's current keys
        "key_revoked",  # signed by a key the trust bundle revokes
        "bad_signature",  # the signature does not verify
        "malformed_request",  # not a signed envelope, or a malformed signed payload
        "wrong_method",  # signed for another RPC
        "signer_mismatch",  # signed as another node than the TLS certificate's
        "stale_timestamp",  # the timestamp is outside the accepted clock skew
        "replayed",  # the nonce was used before
    }
)


class PolicyDenied(NodeError):
    """The policy denied a request; `reason` is a stable reason code."""

    exit_code = ExitCode.FAILURE
    status = "PERMISSION_DENIED"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class NotDelivered(NodeError):
    """A subscriber acknowledged feed events this provider has not sent it (beyond the last
    event of the batches delivered to it): its receipt would claim what it never received.
    Logged under the reason `not_delivered`; the acknowledged cursor does not move."""

    exit_code = ExitCode.INPUT
    status = "OUT_OF_RANGE"
    reason = "not_delivered"


class StaleBundle(NodeError):
    """The trust bundle is missing, expired or older than required."""

    exit_code = ExitCode.FAILURE
    status = "FAILED_PRECONDITION"


class WriteConflict(NodeError):
    """A write collided with a concurrent writer (another process on the same store) and wrote
    nothing; trying again on fresh state may succeed."""

    exit_code = ExitCode.FAILURE
    status = "ABORTED"


class LogUnavailable(NodeError):
    """The access log cannot be written, so nothing may be answered (fail closed)."""

    exit_code = ExitCode.FAILURE
    status = "UNAVAILABLE"


class TamperDetected(NodeError):
    """Stored data or the access log failed verification."""

    exit_code = ExitCode.VERIFICATION
    status = "DATA_LOSS"


class PeerUnavailable(NodeError):
    """A peer could not be reached (down, or refused our certificate)."""

    exit_code = ExitCode.FAILURE
    status = "UNAVAILABLE"


def exit_code_for(error: BaseException) -> ExitCode:
    """Return the CLI exit code for any credex error (FAILURE for anything unknown)."""
    # imported here, not above: `credex --help` imports this module and needs none of them
    import adapters  # noqa: PLC0415
    import catalog  # noqa: PLC0415
    import keys  # noqa: PLC0415

    if isinstance(error, NodeError):
        return error.exit_code
    if isinstance(error, keys.VerificationError | keys.BundleError):
        return ExitCode.VERIFICATION
    if isinstance(error, catalog.CatalogError | adapters.AdapterError | keys.KeyFileError):
        return ExitCode.INPUT
    return ExitCode.FAILURE


def status_for(error: BaseException) -> grpc.StatusCode:
    """Return the gRPC status code for any credex error (INTERNAL for anything unknown)."""
    import grpc  # noqa: PLC0415 - see the module's docstring

    import adapters  # noqa: PLC0415
    import catalog  # noqa: PLC0415
    import keys  # noqa: PLC0415

    if isinstance(error, NodeError):
        return grpc.StatusCode[error.status]
    if isinstance(error, keys.VerificationError):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(error, keys.BundleError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, catalog.UnknownItem):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, catalog.CatalogError | adapters.AdapterError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL
