"""Record identity, so that re-running a mapping is idempotent (docs/decisions/0001).

`record_key` names the record (the same decision about the same subject always has the same
key, whatever else changed); `content_hash` names its content (a corrected row keeps its key and
gets a new hash). Both are lowercase hex SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

__all__ = ["canonical_json", "content_hash", "record_key"]


def record_key(item_id: str, natural_key: Sequence[str]) -> str:
    """sha256("credex-record-key\\0" + item_id + "\\0" + "\\0".join(natural key values)), hex."""
    text = "credex-record-key\0" + item_id + "\0" + "\0".join(natural_key)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# One encoder for every call: json.dumps() with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(fields: Mapping[str, str]) -> bytes:
    """UTF-8 JSON with sorted keys, no insignificant whitespace, non-ASCII kept (as in 0002)."""
    # the C encoder takes a plain dict as it is; other mappings are copied into one
    plain = fields if fields.__class__ is dict else dict(fields)
    return _ENCODER.encode(plain).encode("utf-8")


def content_hash(fields: Mapping[str, str]) -> str:
    """sha256(canonical JSON of the record's fields), hex."""
    return hashlib.sha256(canonical_json(fields)).hexdigest()
