"""The store's errors, and the one place SQLAlchemy and driver errors are translated.

Driver messages are never passed through verbatim: they can quote SQL parameters (blind
indexes, record bodies) and connection strings (passwords). The translation keeps only a short
classification a person can act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc

from node.errors import ExitCode, NodeError, StatusName, TamperDetected, WriteConflict

__all__ = [
    "RecordTampered",
    "StoreConflictError",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "redact_url",
    "translate_errors",
]


class StoreError(NodeError):
    """The node's database failed; the message says what to check."""

    exit_code = ExitCode.FAILURE
    status: StatusName = "UNAVAILABLE"


class StoreUnavailableError(StoreError):
    """The database cannot be reached or opened (down, wrong URL, locked, unreadable file)."""


class StoreFullError(StoreError):
    """The disk or database is full; nothing of the failed transaction was written."""


class StoreConflictError(StoreError, WriteConflict):
    """A write collided with a concurrent one (for example two appends to the log); retry."""

    status = "ABORTED"


class StateChanged(StoreConflictError):
    """A record is no longer in the state the caller read it in: another writer (a second
    `credex serve` replica's scan, say) changed it first. Nothing was written."""


class RecordTampered(StoreError, TamperDetected):
    """A `records` row fails its integrity tag (docs/decisions/0018): its columns were written
    without the storage key. The message names the row id only, never a value of the row."""

    exit_code = TamperDetected.exit_code
    status = TamperDetected.status

    def __init__(self, row_id: str) -> None:
        """Name the row `row_id` (a store-assigned id, never personal data)."""
        super().__init__(
            f"store: record row {row_id} fails its integrity tag (its columns were changed "
            "outside credex); nothing was done with it. Run `credex store verify` and restore "
            "the row from a backup"
        )
        self.row_id = row_id


_FULL = ("database or disk is full", "disk full", "no space left", "could not extend file")
_UNDECODABLE = "could not decode to utf-8"
_LOCKED = ("database is locked", "could not obtain lock", "deadlock detected")


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by ***, safe for messages: the user:password
    part, and query parameters that carry a secret (password=, sslpassword=, ...)."""
    url = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
    return _SECRET_PARAM.sub(r"\1***", url)


# libpq and the drivers' secret-bearing parameters (password, sslpassword, passfile is a path)
_SECRET_PARAM = re.compile(
    r"([?&;](?:[a-z_]*password|[a-z_]*secret|[a-z_]*token|sslkey)=)[^&;#]*", re.I
)


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors raised inside into StoreError subclasses.

    `what` names the operation ("store records", "append to the access log"). Refuses to carry
    the driver's message when it could hold data; only known classifications are named.
    """
    try:
        yield
    except StoreError:
        raise
    except exc.IntegrityError:
        raise StoreConflictError(
            f"store: {what} collided with a concurrent write (a unique key already exists); "
            "nothing was written, retry"
        ) from None
    except exc.DBAPIError as error:
        text = str(error.orig).lower() if error.orig is not None else ""
        if any(marker in text for marker in _FULL):
            raise StoreFullError(
                f"store: {what} failed because the disk or database is full; nothing of it was "
                "written (free space and retry)"
            ) from None
        if _UNDECODABLE in text:
            # SQLite keeps the type a value was written with: bytes rewritten with SQL text
            # functions (replace(), ||) are text that is not UTF-8, which the driver cannot
            # hand back. Nothing credex writes is stored so: the database was edited.
            raise TamperDetected(
                f"store: {what} failed: a stored value was rewritten outside credex (binary "
                "data stored as text); run `credex doctor` and restore the store from a backup"
            ) from None
        if any(marker in text for marker in _LOCKED):
            raise StoreConflictError(
                f"store: {what} timed out waiting for a lock held by another writer; retry"
            ) from None
        if isinstance(error, exc.OperationalError | exc.InterfaceError):
            raise StoreUnavailableError(
                f"store: {what} failed: database unavailable ({_classify(text)})"
            ) from None
        raise StoreError(
            f"store: {what} failed ({type(error.orig).__name__ if error.orig else 'error'})"
        ) from None
    except exc.SQLAlchemyError as error:
        raise StoreError(f"store: {what} failed ({type(error).__name__})") from None


def _classify(text: str) -> str:
    for marker, label in (
        ("connection refused", "connection refused: is the server running?"),
        ("could not connect", "cannot connect: is the server running?"),
        ("does not exist", "the database does not exist"),
        ("password authentication failed", "authentication failed"),
        ("unable to open database file", "cannot open the SQLite file: check the path"),
        ("disk i/o error", "disk I/O error"),
        ("readonly", "the database is read-only"),
        ("read-only", "the database is read-only"),
        ("no such table", "the schema is missing: was the store migrated?"),
        ("server closed the connection", "the server closed the connection"),
        ("timeout", "timed out"),
    ):
        if marker in text:
            return label
    return "see the database server's log"
