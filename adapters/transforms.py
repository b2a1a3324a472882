"""Transforms: small pure functions that turn one cell text into catalogue-ready text.

Each transform is built once from the mapping file (where its arguments are checked, so a bad
pattern or an unknown unit is a `MappingError` before any data is read) and then applied to
every row. Applying never raises anything but `TransformFailed`, which carries a reject code
and a message that names the rule, never the value (a value may be an ID number or a name).

Empty values skip every transform except `default`: an empty cell is "missing", and deciding
whether missing is allowed is the catalogue's job.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Protocol

from catalog.identifiers import INVISIBLE_FORMAT_CHARS

__all__ = [
    "DATE_FORMATS",
    "SIMPLE_TRANSFORMS",
    "TEXT_DATE_FORMATS",
    "UNIT_FACTORS",
    "DateTransform",
    "DefaultTransform",
    "MapTransform",
    "RegexTransform",
    "SimpleTransform",
    "SplitTransform",
    "Transform",
    "TransformFailed",
    "UnitTransform",
    "apply_all",
    "excel_serial_to_date",
    "plain_decimal",
]


class TransformFailed(Exception):
    """A transform could not turn a value into the wanted form (becomes a reject, not a crash)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Transform(Protocol):
    """One step of a field's transform list."""

    @property
    def name(self) -> str:
        """The transform's name in the mapping file."""
        ...

    @property
    def applies_to_empty(self) -> bool:
        """True when the step runs on empty values too (only `default`)."""
        ...

    def apply(self, value: str) -> str:
        """Return the transformed value or raise `TransformFailed`."""
        ...


# Characters that str.strip() keeps but that exports carry at the edges of cells.
_INVISIBLE = INVISIBLE_FORMAT_CHARS + "\u00a0\u3000"


def _trim(value: str) -> str:
    return value.strip().strip(_INVISIBLE).strip()


def _fullwidth(value: str) -> str:
    # NFKC folds full-width ASCII (ＡＢＣ１２３（）) to half-width; CJK ideographs are unchanged.
    return unicodedata.normalize("NFKC", value)


_SIMPLE: dict[str, Callable[[str], str]] = {
    "trim": _trim,
    "fullwidth": _fullwidth,
    "upper": str.upper,
    "lower": str.lower,
    "remove_spaces": lambda v: "".join(v.split()),
}


SIMPLE_TRANSFORMS: frozenset[str] = frozenset(_SIMPLE)
"""The transforms written as a bare name, besides "date"."""


@dataclass(frozen=True)
class SimpleTransform:
    """A named transform without arguments: trim, fullwidth, upper, lower, remove_spaces."""

    name: str
    applies_to_empty: bool = False

    def __post_init__(self) -> None:
        if self.name not in _SIMPLE:
            raise ValueError(f"unknown transform {self.name!r}; known: {sorted(_SIMPLE)}")

    def apply(self, value: str) -> str:
        """Apply the named string operation; never fails."""
        return _SIMPLE[self.name](value)


_EXCEL_EPOCH = dt.date(1899, 12, 30)
_EXCEL_MAX_SERIAL = 2958465  # 9999-12-31


def excel_serial_to_date(serial: float) -> dt.date:
    """Convert an Excel (1900 date system) serial number to a date.

    Excel counts 1900-02-29, a day that never was (serial 60), so serials from 61 on are days
    after 1899-12-30 and serials 1-59 are days after 1899-12-31. Serial 60 and values outside
    1..2958465 raise ValueError. A fractional part (time of day) is dropped.
    """
    whole = int(serial)
    if whole < 1 or whole > _EXCEL_MAX_SERIAL or whole == 60:
        raise ValueError("not an Excel date serial")
    if whole < 60:
        return dt.date(1899, 12, 31) + dt.timedelta(days=whole)
    return _EXCEL_EPOCH + dt.timedelta(days=whole)


_DATE_PATTERNS: dict[str, re.Pattern[str]] = {
    # An optional time part ("2024-09-27 10:30:00", "2024-09-27T10:30") is accepted and dropped.
    "iso": re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"),
    "slash": re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})(?: \d{1,2}:\d{2}(?::\d{2})?)?"),
    "dot": re.compile(r"(\d{4})\.(\d{1,2})\.(\d{1,2})"),
    "compact": re.compile(r"(\d{4})(\d{2})(\d{2})"),
    "chinese": re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日"),
}
# 5 to 7 digits. Fewer digits are a year ("2024"), a month or a day far more often than a day
# before 1927-05-18 (serial 10000); more would compete with the 8-digit "compact" form.
_EXCEL_PATTERN = re.compile(r"\d{5,7}(?:\.\d+)?")

TEXT_DATE_FORMATS: tuple[str, ...] = tuple(_DATE_PATTERNS)
"""The date formats written as text; a plain `date` transform uses these (and `excel` too when
the source is an Excel workbook, whose number cells can be serials)."""

DATE_FORMATS: tuple[str, ...] = (*TEXT_DATE_FORMATS, "excel")
"""The date formats a `date` transform knows; `excel` is an Excel serial number."""


@dataclass(frozen=True)
class DateTransform:
    """Parse a date in one of the allowed formats and write it as YYYY-MM-DD.

    Refuses (code "bad_date") text that matches no allowed format and impossible dates such as
    2024-02-30. "excel" accepts serial numbers of 5 to 7 digits (10000, 1927-05-18, up to
    9999-12-31): a shorter number is far more likely a year or a day of the month, and an 8-digit
    one is the "compact" form. It is not among the default formats: "2024" in a text export is
    never read as 1905-07-16.
    """

    formats: tuple[str, ...] = TEXT_DATE_FORMATS
    name: str = "date"
    applies_to_empty: bool = False

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in DATE_FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"unknown date format(s) {unknown}; known: {list(DATE_FORMATS)}")

    def apply(self, value: str) -> str:
        """Return the ISO date or raise TransformFailed('bad_date')."""
        text = value.strip()
        for fmt in self.formats:
            if fmt == "excel":
                if _EXCEL_PATTERN.fullmatch(text):
                    try:
                        return excel_serial_to_date(float(text)).isoformat()
                    except ValueError:
                        continue
                continue
            match = _DATE_PATTERNS[fmt].fullmatch(text)
            if match:
                year, month, day = (int(g) for g in match.groups())
                try:
                    return dt.date(year, month, day).isoformat()
                except ValueError:
                    raise TransformFailed(
                        "bad_date", f"not a real calendar date (format {fmt})"
                    ) from None
        raise TransformFailed("bad_date", f"not a date in the allowed formats {list(self.formats)}")


@dataclass(frozen=True)
class MapTransform:
    """Replace a value by its entry in a value map (e.g. 男 -> 1), onto a code table.

    The whole value is looked up first; if it is absent and contains ";" (a code list, see
    `split`), each part is looked up. Values absent from the map pass through unchanged, so
    the catalogue reports them as unknown codes, unless `strict` is set: then they are rejected
    here with code "unmapped_value".
    """

    table: Mapping[str, str]
    strict: bool = False
    name: str = "map"
    applies_to_empty: bool = False

    def apply(self, value: str) -> str:
        """Return the mapped value (or the value itself when it is not mapped and not strict)."""
        hit = self.table.get(value)
        if hit is not None:
            return hit
        if ";" in value:
            parts = [self.table.get(p, p) for p in value.split(";")]
            if self.strict and any(p not in self.table for p in value.split(";")):
                raise TransformFailed("unmapped_value", "a part of the list is not in the map")
            return ";".join(parts)
        if self.strict:
            raise TransformFailed("unmapped_value", "value is not in the value map")
        return value


@dataclass(frozen=True)
class SplitTransform:
    """Split a multi-valued cell on any of the separators and join the parts with ";".

    Empty parts are dropped and parts are trimmed; the catalogue orders code lists.
    """

    separators: tuple[str, ...]
    name: str = "split"
    applies_to_empty: bool = False

    def apply(self, value: str) -> str:
        """Return the parts joined with ';'; never fails."""
        parts = [value]
        for sep in self.separators:
            parts = [piece for part in parts for piece in part.split(sep)]
        return ";".join(p.strip() for p in parts if p.strip())


UNIT_FACTORS: dict[str, Decimal] = {
    "元": Decimal(1),
    "万元": Decimal(10000),
    "亿元": Decimal(10**8),
}
"""Money units a `unit` transform converts between, as multiples of one 元."""

# Digits with an optional fraction; the integer part either plain or in well-formed groups of
# three ("1,234,567.89"). "1.200,50", "12,00" and "1,5" are not amounts: removing their commas
# would scale them by powers of ten.
_NUMBER = re.compile(r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)")


def plain_decimal(number: Decimal) -> str:
    """Write a decimal without exponent and without trailing zeros ("0.012345", "3", "-1.5")."""
    text = format(number.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


@dataclass(frozen=True)
class UnitTransform:
    """Convert an amount between money units, both named in the mapping (never guessed).

    Accepts the source unit written after the number ("1,200.50元") and thousands separators
    ("," or the full-width "，") only in groups of three digits before the decimal point;
    refuses (code "bad_number") anything else, such as "1.200,50", "12,00" or "1,5" (a decimal
    comma would be read as a thousands separator and scale the amount).
    """

    from_unit: str
    to_unit: str
    name: str = "unit"
    applies_to_empty: bool = False

    def __post_init__(self) -> None:
        for unit in (self.from_unit, self.to_unit):
            if unit not in UNIT_FACTORS:
                raise ValueError(f"unknown unit {unit!r}; known: {sorted(UNIT_FACTORS)}")

    def apply(self, value: str) -> str:
        """Return the converted amount as a plain decimal."""
        text = value.replace("，", ",").strip().removesuffix(self.from_unit).strip()
        if not _NUMBER.fullmatch(text):
            raise TransformFailed(
                "bad_number",
                f"not an amount in {self.from_unit} (digits, a decimal point, and commas only "
                "between groups of three digits, as in 1,234,567.89)",
            )
        try:
            amount = Decimal(text.replace(",", ""))
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            raise TransformFailed("bad_number", f"not an amount in {self.from_unit}") from None
        factor = UNIT_FACTORS[self.from_unit] / UNIT_FACTORS[self.to_unit]
        return plain_decimal(amount * factor)


@dataclass(frozen=True)
class RegexTransform:
    """Extract part of a value with a regular expression (re.search).

    The result is the first named group if the pattern has named groups, else group 1 if it
    has groups, else the whole match. No match is a reject with code "no_match".
    """

    pattern: re.Pattern[str]
    name: str = "regex"
    applies_to_empty: bool = False
    _group: int | str = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.pattern.groupindex:
            first = min(self.pattern.groupindex.items(), key=lambda kv: kv[1])[0]
            object.__setattr__(self, "_group", first)
        elif self.pattern.groups:
            object.__setattr__(self, "_group", 1)

    def apply(self, value: str) -> str:
        """Return the extracted text or raise TransformFailed('no_match')."""
        match = self.pattern.search(value)
        if match is None:
            raise TransformFailed("no_match", f"does not match /{self.pattern.pattern}/")
        return match.group(self._group) or ""


@dataclass(frozen=True)
class DefaultTransform:
    """Use a fixed value when the value is empty (after the steps before it)."""

    value: str
    name: str = "default"
    applies_to_empty: bool = True

    def apply(self, value: str) -> str:
        """Return the value, or the default when it is empty."""
        return value if value else self.value


def apply_all(transforms: Sequence[Transform], value: str) -> str:
    """Run transforms in order; empty values skip every step except `default`."""
    for step in transforms:
        if value or step.applies_to_empty:
            value = step.apply(value)
    return value
