"""The mapping file (TOML): which source, which catalogue item, and how each field is made.

`load_mapping` checks the file's own shape (known keys, types, transforms that can be built,
paths relative to the mapping file) and refuses it with a `MappingError` naming the file and
the key. Whether the item, fields and codes exist is `check_mapping`'s job, against a catalogue.
The format is documented with a worked example in docs/mapping.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.delimited import canonical_encoding
from adapters.errors import MappingError
from adapters.transforms import (
    DATE_FORMATS,
    SIMPLE_TRANSFORMS,
    TEXT_DATE_FORMATS,
    DateTransform,
    DefaultTransform,
    MapTransform,
    RegexTransform,
    SimpleTransform,
    SplitTransform,
    Transform,
    UnitTransform,
)

__all__ = ["FieldSpec", "MappingSpec", "SourceSpec", "load_mapping", "parse_mapping"]

SOURCE_KINDS = ("csv", "xlsx", "jsonl", "sql")
_SOURCE_KEYS: dict[str, set[str]] = {
    "csv": {"path", "encoding", "delimiter", "header_row"},
    "xlsx": {"path", "sheet", "header_row", "header_rows"},
    "jsonl": {"path"},
    "sql": {"url", "url_env", "table", "query", "key", "watermark"},
}
_FIELD_KEYS = {"column", "const", "concat", "separator", "transforms"}
_NAMED_DELIMITERS = {"auto": None, "comma": ",", "tab": "\t", "semicolon": ";", "bar": "|"}


@dataclass(frozen=True)
class SourceSpec:
    """The [source] table: where rows come from and how to read them."""

    kind: str
    name: str
    path: Path | None = None
    encoding: str = "auto"
    delimiter: str | None = None
    header_row: int = 1
    header_rows: int = 1
    sheet: str | None = None
    url: str | None = None
    url_env: str | None = None
    table: str | None = None
    query: str | None = None
    key: str | None = None
    watermark: str | None = None


@dataclass(frozen=True)
class FieldSpec:
    """How one catalogue field is made from a row: one column, a constant, or a concatenation."""

    field_id: str
    column: str | None = None
    const: str | None = None
    concat: tuple[str, ...] = ()
    separator: str = ""
    transforms: tuple[Transform, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The source columns this field reads (empty for a constant)."""
        if self.column is not None:
            return (self.column,)
        return self.concat

    @property
    def where(self) -> str:
        """What to call the field's origin in a reject report (its column, or a description)."""
        if self.column is not None:
            return self.column
        if self.concat:
            return "+".join(self.concat)
        return "(constant)"

    def value_maps(self) -> tuple[MapTransform, ...]:
        """The value maps among the transforms (their targets must be codes)."""
        return tuple(t for t in self.transforms if isinstance(t, MapTransform))

    def units(self) -> tuple[UnitTransform, ...]:
        """The unit conversions among the transforms."""
        return tuple(t for t in self.transforms if isinstance(t, UnitTransform))


@dataclass(frozen=True)
class MappingSpec:
    """A loaded mapping file: the source, the catalogue item and the field rules."""

    path: Path
    item: str
    source: SourceSpec
    fields: Mapping[str, FieldSpec]


def load_mapping(path: Path) -> MappingSpec:
    """Read and check the shape of a mapping file.

    Refuses (MappingError naming the file and the key) unreadable files, invalid TOML, unknown
    keys, wrong types, unknown transforms or units, bad regular expressions and dates formats.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise MappingError(path, "", f"cannot read the mapping file ({error.strerror})") from None
    except UnicodeDecodeError:
        raise MappingError(path, "", "the mapping file is not UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MappingError(path, "", f"not valid TOML ({error})") from None
    return parse_mapping(data, path)


def _str(file: Path, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise MappingError(file, key, f"must be a string, not {type(value).__name__}")
    return value


def _opt_str(file: Path, table: Mapping[str, Any], name: str, prefix: str) -> str | None:
    value = table.get(name)
    return None if value is None else _str(file, f"{prefix}.{name}", value)


def _positive_int(file: Path, key: str, value: object, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MappingError(file, key, "must be a positive integer")
    if maximum is not None and value > maximum:
        raise MappingError(file, key, f"must be at most {maximum}")
    return value


def _unknown(file: Path, prefix: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        key = f"{prefix}.{extra[0]}" if prefix else extra[0]
        raise MappingError(file, key, f"unknown key; allowed: {sorted(allowed)}")


def _source(file: Path, data: object) -> SourceSpec:
    if not isinstance(data, dict):
        raise MappingError(file, "source", "a [source] table is required")
    kind = data.get("kind")
    if kind not in SOURCE_KINDS:
        raise MappingError(file, "source.kind", f"must be one of {list(SOURCE_KINDS)}")
    _unknown(file, "source", data, _SOURCE_KEYS[kind] | {"kind", "name"})
    name = _opt_str(file, data, "name", "source")
    if kind == "sql":
        url, url_env = (
            _opt_str(file, data, "url", "source"),
            _opt_str(file, data, "url_env", "source"),
        )
        if (url is None) == (url_env is None):
            raise MappingError(file, "source.url", "name exactly one of url and url_env")
        table, query = (
            _opt_str(file, data, "table", "source"),
            _opt_str(file, data, "query", "source"),
        )
        if (table is None) == (query is None):
            raise MappingError(file, "source.table", "name exactly one of table and query")
        key = _opt_str(file, data, "key", "source")
        if key is None:
            raise MappingError(file, "source.key", "a unique key column is required for SQL")
        return SourceSpec(
            kind=kind,
            name=name or table or "query",
            url=url,
            url_env=url_env,
            table=table,
            query=query,
            key=key,
            watermark=_opt_str(file, data, "watermark", "source"),
        )
    raw_path = _opt_str(file, data, "path", "source")
    if raw_path is None:
        raise MappingError(file, "source.path", "the data file's path is required")
    # Paths are relative to the mapping file, so a mapping and its export travel together.
    source_path = (file.parent / raw_path) if not Path(raw_path).is_absolute() else Path(raw_path)
    encoding = _opt_str(file, data, "encoding", "source") or "auto"
    if canonical_encoding(encoding) is None:
        raise MappingError(
            file, "source.encoding", "must be auto, utf-8, utf-8-sig, gb18030 or gbk"
        )
    delimiter = _opt_str(file, data, "delimiter", "source") or "auto"
    if delimiter in _NAMED_DELIMITERS:
        sep = _NAMED_DELIMITERS[delimiter]
    elif len(delimiter) == 1 and delimiter not in '"\r\n':
        sep = delimiter
    else:
        raise MappingError(
            file, "source.delimiter", "must be one character or auto, comma, tab, semicolon, bar"
        )
    return SourceSpec(
        kind=kind,
        name=name or source_path.name,
        path=source_path,
        encoding=encoding,
        delimiter=sep,
        header_row=_positive_int(file, "source.header_row", data.get("header_row", 1)),
        header_rows=_positive_int(file, "source.header_rows", data.get("header_rows", 1), 2),
        sheet=_opt_str(file, data, "sheet", "source"),
    )


# The transforms written as a one-key table (`{ map = {...} }`), in the order docs/mapping.md
# lists them.
_TABLE_TRANSFORMS = ("map", "split", "unit", "regex", "default", "date")


def _transform(file: Path, key: str, item: object, source_kind: str) -> Transform:
    try:
        if isinstance(item, str):
            if item not in SIMPLE_TRANSFORMS and item != "date":
                raise MappingError(
                    file,
                    key,
                    f"unknown transform {item!r}; names: {sorted([*SIMPLE_TRANSFORMS, 'date'])}, "
                    f"tables: {list(_TABLE_TRANSFORMS)}",
                )
            if item != "date":
                return SimpleTransform(item)
            # Only a workbook has number cells that can be date serials; in text, "2024" is a
            # year and "12" a month, so other sources read serials only when asked ("excel").
            return DateTransform(DATE_FORMATS if source_kind == "xlsx" else TEXT_DATE_FORMATS)
        if not isinstance(item, dict) or not item:
            raise MappingError(file, key, "a transform is a name or a one-key table")
        name = next(iter(item))
        arg = item[name]
        allowed = {"map", "strict"} if name == "map" else {name}
        _unknown(file, key, item, allowed)
        if name == "date":
            formats = [arg] if isinstance(arg, str) else arg
            if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
                raise MappingError(file, f"{key}.date", "a format name or a list of them")
            return DateTransform(tuple(formats))
        if name == "map":
            if not isinstance(arg, dict) or not all(isinstance(v, str) for v in arg.values()):
                raise MappingError(file, f"{key}.map", "a table of source value = code")
            strict = item.get("strict", False)
            if not isinstance(strict, bool):
                raise MappingError(file, f"{key}.strict", "must be true or false")
            return MapTransform(dict(arg), strict=strict)
        if name == "unit":
            if not isinstance(arg, dict) or set(arg) != {"from", "to"}:
                raise MappingError(file, f"{key}.unit", 'write unit = { from = "元", to = "万元" }')
            return UnitTransform(
                _str(file, f"{key}.unit.from", arg["from"]), _str(file, f"{key}.unit.to", arg["to"])
            )
        if name == "regex":
            try:
                return RegexTransform(re.compile(_str(file, f"{key}.regex", arg)))
            except re.error as error:
                raise MappingError(
                    file, f"{key}.regex", f"bad regular expression ({error})"
                ) from None
        if name == "default":
            return DefaultTransform(_str(file, f"{key}.default", arg))
        if name == "split":
            seps = [arg] if isinstance(arg, str) else arg
            if (
                not isinstance(seps, list)
                or not seps
                or not all(isinstance(s, str) and s for s in seps)
            ):
                raise MappingError(file, f"{key}.split", "a separator or a list of them")
            return SplitTransform(tuple(seps))
        raise MappingError(
            file, key, f"unknown transform {name!r}; tables: {list(_TABLE_TRANSFORMS)}"
        )
    except ValueError as error:  # the transforms' own argument checks
        raise MappingError(file, key, str(error)) from None


def _field(file: Path, field_id: str, data: object, source_kind: str) -> FieldSpec:
    prefix = f"fields.{field_id}"
    if isinstance(data, str):  # shorthand: field = "column"
        return FieldSpec(field_id=field_id, column=data)
    if not isinstance(data, dict):
        raise MappingError(file, prefix, "a column name or a table")
    _unknown(file, prefix, data, _FIELD_KEYS)
    origins = [k for k in ("column", "const", "concat") if k in data]
    if len(origins) != 1:
        raise MappingError(file, prefix, "name exactly one of column, const and concat")
    concat: tuple[str, ...] = ()
    if "concat" in data:
        parts = data["concat"]
        if (
            not isinstance(parts, list)
            or len(parts) < 2
            or not all(isinstance(p, str) for p in parts)
        ):
            raise MappingError(file, f"{prefix}.concat", "a list of at least two column names")
        concat = tuple(parts)
    transforms = data.get("transforms", [])
    if not isinstance(transforms, list):
        raise MappingError(file, f"{prefix}.transforms", "must be a list")
    return FieldSpec(
        field_id=field_id,
        column=_opt_str(file, data, "column", prefix),
        const=_opt_str(file, data, "const", prefix),
        concat=concat,
        separator=_opt_str(file, data, "separator", prefix) or "",
        transforms=tuple(
            _transform(file, f"{prefix}.transforms[{i}]", t, source_kind)
            for i, t in enumerate(transforms)
        ),
    )


def parse_mapping(data: Mapping[str, Any], path: Path) -> MappingSpec:
    """Build a MappingSpec from parsed TOML; `path` names the file in errors and anchors paths."""
    _unknown(path, "", data, {"item", "source", "fields"})
    item = data.get("item")
    if not isinstance(item, str) or not item:
        raise MappingError(path, "item", "the catalogue item id is required")
    source = _source(path, data.get("source"))
    fields = data.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise MappingError(path, "fields", "at least one [fields.<field id>] is required")
    return MappingSpec(
        path=path,
        item=item,
        source=source,
        fields={fid: _field(path, fid, spec, source.kind) for fid, spec in fields.items()},
    )
