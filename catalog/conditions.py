"""Conditional requirement rules of catalogue fields.

A field's `required` is "M" (mandatory), "O" (optional) or one condition on another field of the
same item, after that field has been normalised:

    subject_category=自然人                      equals one of the values (| separates values)
    penalty_types contains 没收违法所得|没收非法财物  a code list holds at least one of the values
    decision_date>=2026-04-01                    an ISO date on or after the given date

When the condition holds the field is mandatory, otherwise optional. Conditions are parsed once,
when the catalogue is loaded; a rule that names an unknown field or value makes the catalogue
inconsistent.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass

_CONTAINS = re.compile(r"^\s*([a-z][a-z0-9_]*)\s+contains\s+(.+?)\s*$")
_GE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*>=\s*(\d{4}-\d{2}-\d{2})\s*$")
_EQ = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*=\s*(.+?)\s*$")


@dataclass(frozen=True)
class Condition:
    """A parsed rule: `op` is "eq", "contains" or "ge"; `values` are canonical values."""

    field_id: str
    op: str
    values: frozenset[str]
    text: str

    def holds(self, fields: Mapping[str, str]) -> bool:
        """Return True when the rule holds for these normalised field values."""
        value = fields.get(self.field_id)
        if value is None:
            return False
        if self.op == "eq":
            return value in self.values
        if self.op == "contains":
            return not self.values.isdisjoint(value.split(";"))
        (bound,) = self.values
        return value >= bound  # ISO dates compare as strings


def parse_rule(text: str) -> Condition | None:
    """Parse a required rule: None for "M"/"O", else a Condition; raises ValueError if malformed.

    Values are returned as written; the loader canonicalises them against the code table.
    """
    if text in ("M", "O"):
        return None
    match = _CONTAINS.match(text)
    if match:
        return Condition(match[1], "contains", _split(match[2]), text)
    match = _GE.match(text)
    if match:
        datetime.date.fromisoformat(match[2])
        return Condition(match[1], "ge", frozenset({match[2]}), text)
    match = _EQ.match(text)
    if match:
        return Condition(match[1], "eq", _split(match[2]), text)
    raise ValueError(
        "expected 'M', 'O', 'FIELD=V1|V2', 'FIELD contains V1|V2' or 'FIELD>=YYYY-MM-DD'"
    )


def _split(values: str) -> frozenset[str]:
    parts = frozenset(v.strip() for v in values.split("|"))
    if "" in parts:
        raise ValueError("empty value in rule")
    return parts
