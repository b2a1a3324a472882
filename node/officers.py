"""Officer ids: who, at a department, made an access (the log's `officer` field).

An officer is named by a staff id, never by a name: the access log keeps entries for years and
must hold no personal names (DESIGN.md section 6). A staff id is 1-64 characters of ASCII
letters, digits and `. _ - @ :`, starting with a letter or digit (`m-001`, `hr.zhang`,
`sec-li@zd-market`), with no run of 15 digits (an ID number). Pure checks, no IO.
"""

from __future__ import annotations

import re

__all__ = ["NOT_AN_OFFICER_ID", "OFFICER_ID_RULE", "is_officer_id"]

_OFFICER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}")
# 15 digits in a row, also split by the id's own separators: an ID number, not a staff id.
_ID_NUMBER_INSIDE = re.compile(r"[0-9](?:[._@:-]?[0-9]){14}")
OFFICER_ID_RULE = (
    "a staff id of 1-64 ASCII letters, digits and . _ - @ : (never a person's name or ID number)"
)
# What the log keeps in place of an officer value that is not a staff id (it may be a name).
NOT_AN_OFFICER_ID = "(not-a-staff-id)"


def is_officer_id(text: str) -> bool:
    """True when `text` is a staff id as the module docstring defines it, and holds no run of
    15 digits (a citizen ID number glued to letters, as in `u110105...`)."""
    return _OFFICER_ID.fullmatch(text) is not None and _ID_NUMBER_INSIDE.search(text) is None
