"""Byte and text encodings shared by the keys modules: canonical JSON, base64, time stamps.

Canonical JSON is UTF-8 with sorted keys and no insignificant whitespace (decision 0002). It
refuses floats and non-string keys, because two implementations would not agree on their bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import struct
from collections.abc import Mapping
from typing import Any

from keys.errors import KeysError, VerificationError

_U32 = struct.Struct(">I")
_URLSAFE = str.maketrans("-_", "+/")


def canonical_json(value: Any) -> bytes:
    """Encode `value` as canonical JSON bytes; refuses floats, NaN and non-string keys."""
    _check_json(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _check_json(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        raise KeysError(f"canonical JSON refuses the float at {where}; use a decimal string")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise KeysError(f"canonical JSON needs string keys at {where}")
            _check_json(item, f"{where}.{key}")
        return
    raise KeysError(f"canonical JSON cannot encode a {type(value).__name__} at {where}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a JSON object names a key twice")
    return out


def loads_unique_keys(data: bytes | str) -> Any:
    """`json.loads`, except that an object naming a key twice raises ValueError, and so does a
    document nested too deeply for the parser (a RecursionError otherwise).

    For signed payloads: parsers disagree on which of two equal keys wins, so a payload that
    repeats a key could mean one thing to credex and another to a different verifier. Anyone
    can send `[[[[...` a hundred thousand deep; every caller handles ValueError already.
    """
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("a JSON document is nested too deeply") from None


def parse_json_object(data: bytes | str, what: str, error: type[KeysError]) -> dict[str, Any]:
    """Parse a JSON object or raise `error` naming `what`; duplicate keys are refused."""
    try:
        value = loads_unique_keys(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object")
    return value


def b64e(data: bytes) -> str:
    """Standard base64 (RFC 4648 section 4) with padding."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, what: str, error: type[KeysError]) -> bytes:
    """Decode standard or URL-safe base64 (RFC 4648 sections 4 and 5, padded) strictly.

    Refuses, raising `error` naming `what`: any character outside the two alphabets (no
    whitespace or junk is skipped), a mix of the two alphabets, bad padding, and non-zero
    unused bits in the last character (RFC 4648 section 3.5): one byte string has exactly one
    spelling per alphabet, so nobody without the key can re-spell a signed document into other
    text that verifies as the same one.
    """
    if not isinstance(text, str):
        raise error(f"{what} must be a base64 string")
    try:
        url_safe = "-" in text or "_" in text
        if url_safe and ("+" in text or "/" in text):
            raise ValueError("two base64 alphabets in one string")
        # base64.urlsafe_b64decode has no validate flag: it would skip invalid characters.
        standard = (text.translate(_URLSAFE) if url_safe else text).encode("ascii")
        raw = base64.b64decode(standard, validate=True)
        if base64.b64encode(raw) != standard:
            raise ValueError("non-canonical base64")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise error(f"{what} is not valid base64") from None
    return raw


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 UTC text with a `Z`, to the second; refuses naive datetimes."""
    if moment.tzinfo is None:
        raise KeysError("times must be timezone-aware")
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: object, what: str, error: type[KeysError]) -> datetime.datetime:
    """Parse an RFC 3339 time with an offset (or `Z`), or raise `error` naming `what`."""
    if isinstance(text, datetime.datetime):
        moment = text
    elif isinstance(text, str):
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise error(f"{what} is not an RFC 3339 time") from None
    else:
        raise error(f"{what} must be an RFC 3339 time string")
    if moment.tzinfo is None:
        raise error(f"{what} needs a UTC offset (e.g. 'Z')")
    return moment.astimezone(datetime.UTC)


class Reader:
    """A bounds-checked cursor over bytes; every overrun is a VerificationError."""

    __slots__ = ("_data", "_pos", "_size")

    def __init__(self, data: bytes) -> None:
        # One copy at most (none for bytes): slices of bytes are the chunks themselves, where a
        # memoryview would need a second copy per field.
        self._data = bytes(data)
        self._pos = 0
        self._size = len(self._data)

    def take(self, n: int) -> bytes:
        start = self._pos
        end = start + n
        if n < 0 or end > self._size:
            raise VerificationError("truncated data")
        self._pos = end
        return self._data[start:end]

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def end(self) -> None:
        if self._pos != self._size:
            raise VerificationError("trailing bytes")
