"""Loading the catalogue file and refusing an inconsistent one.

`load_catalog` parses the TOML file (format: docs/catalog.md), expands field groups and checks
every rule before a `Catalog` exists; the first broken rule raises CatalogInconsistent with a
message naming the item, the field and the rule (with its legal source where there is one):

- natural-person items never have the `public` disclosure mode (Shandong Art. 20);
- no item or field names prohibited information (Shandong Art. 42; see catalog.prohibited);
- no disclosure period beyond 5 years (Shandong Art. 38);
- every referenced code table exists; money fields carry a unit (元 or 万元);
- share type `none` comes without `gov_sharing`/`public`, and conditional or non-shared items
  state their legal basis (国发〔2016〕51号);
- attribute values are from their closed lists; ids are unique; rules, natural keys, decision
  dates, severity rules and identifier checks name fields that exist and fit;
- an item is dishonesty information exactly when it has a severity rule (so every dishonesty
  record gets a severity and a disclosure period), and its decision date is mandatory;
- `conduct_end` (the end of the dishonest conduct, Shandong Art. 38) names an optional date
  field of a dishonesty item;
- `ended_when` / `ended_on` (a list entry's 名单状态=移出 and its 移出日期, 令第36号 Art. 3) come
  together, the rule is `FIELD=V` on a code field, and the date field is required whenever
  the rule holds;
- identifier checks sit on fixed-length fields of their length: `uscc` C18, `org_code` C9,
  `admin_division` C6.
"""

from __future__ import annotations

import datetime
import functools
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catalog.conditions import parse_rule
from catalog.errors import CatalogInconsistent
from catalog.model import (
    DISCLOSURE_MODES,
    FIELD_KINDS,
    INFO_NATURES,
    SENSITIVITIES,
    SEVERITIES,
    SHARE_TYPES,
    SUBJECT_KINDS,
    Catalog,
    CodeEntry,
    CodeTable,
    Field,
    Item,
)
from catalog.periods import MAX_DISCLOSURE_MONTHS
from catalog.prohibited import prohibited_reason

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "catalog.toml"
MONEY_UNITS = frozenset({"元", "万元"})

# record-level checks an item may ask for, and the fields each one reads
RECORD_CHECKS: Mapping[str, frozenset[str]] = {
    # Shandong Art. 13 / 行政处罚法 Art. 51: summary-procedure penalties stay out of the data list
    "summary_procedure": frozenset({"penalty_types", "fine_wan_yuan", "procedure"}),
    # Shandong Art. 31: a severe-dishonesty organisation names its legal representative/principal
    "responsible_person": frozenset(
        {"legal_rep_name", "legal_rep_id_number", "principal_name", "principal_id_number"}
    ),
    # GB 11643: a stated birth date agrees with the one in the citizen ID number
    "birth_date_matches_id": frozenset({"birth_date", "id_type", "id_number"}),
    # a penalty cannot stop being in force before it was decided
    "penalty_valid_after_decision": frozenset({"decision_date", "penalty_valid_until"}),
    # a licence or qualification cannot end before it starts
    "valid_to_after_valid_from": frozenset({"valid_from", "valid_to"}),
}

# identifier checks of fixed-length fields, and the length each needs (GB 32100 / GB 11714 /
# GB/T 2260)
FIXED_CHECKS: Mapping[str, int] = {"uscc": 18, "org_code": 9, "admin_division": 6}

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_TYPE_C = re.compile(r"^C(\.\.)?(\d+)$")
_TYPE_N = re.compile(r"^N\.\.(\d+)(?:,(\d+))?$")
_MONEY_ID = re.compile(r"(^|_)(yuan|wan_yuan|amount|fine|fee|arrears)(_|$)")
_MONEY_NAME = ("金额", "（元）", "(元)", "（万元）", "(万元)", "罚款", "欠费", "欠缴")


def _fail(where: str, why: str) -> CatalogInconsistent:
    return CatalogInconsistent(f"{where}: {why}")


@functools.cache
def default_catalog() -> Catalog:
    """Return the catalogue shipped with credex (loaded once, then cached)."""
    return load_catalog(DEFAULT_PATH)


def load_catalog(path: Path) -> Catalog:
    """Load and check a catalogue TOML file; raises CatalogInconsistent naming what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _fail(f"catalogue {path}", f"cannot be read ({error})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _fail(f"catalogue {path}", f"not valid TOML ({error})") from None
    return build_catalog(data)


def build_catalog(data: Mapping[str, Any]) -> Catalog:
    """Build a Catalog from parsed TOML data, checking every rule (raises CatalogInconsistent)."""
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise _fail("catalogue", "missing 'version' (e.g. \"2026.1\")")
    tables = _code_tables(_table(data, "code_tables", "catalogue"))
    groups = _table(data, "field_groups", "catalogue")
    raw_items = data.get("items", [])
    if not isinstance(raw_items, list) or not raw_items:
        raise _fail("catalogue", "'items' must be a non-empty array of tables ([[items]])")
    items: dict[str, Item] = {}
    for index, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            raise _fail(f"catalogue items[{index}]", "not a table")
        item = _item(raw, groups, tables, index)
        if item.id in items:
            raise _fail(f"item {item.id}", "duplicate item id")
        items[item.id] = item
    return Catalog(version=version, items=items, code_tables=tables, title=data.get("title", ""))


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _fail(where, f"'{key}' must be a table")
    return value


def _str(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise _fail(where, f"missing or empty '{key}'")
    return value


def _strs(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, f"'{key}' must be a list of strings")
    return tuple(value)


def _code_tables(raw: Mapping[str, Any]) -> dict[str, CodeTable]:
    tables: dict[str, CodeTable] = {}
    for table_id, body in raw.items():
        where = f"code table {table_id}"
        if not _ID.match(table_id) or not isinstance(body, dict):
            raise _fail(where, "id must be lower_snake_case and the body a table")
        entries: list[CodeEntry] = []
        seen: set[str] = set()
        for index, entry in enumerate(body.get("entries", [])):
            at = f"{where} entry {index}"
            if not isinstance(entry, dict):
                raise _fail(at, "not a table")
            until = entry.get("until")
            if until is not None and not isinstance(until, datetime.date):
                raise _fail(at, "'until' must be a TOML date")
            made = CodeEntry(
                label=_str(entry, "label", at),
                codes=_strs(entry, "codes", at),
                aliases=_strs(entry, "aliases", at),
                key=entry.get("key"),
                until=until,
            )
            for spelling in (made.label, *made.codes, *made.aliases):
                if spelling in seen:
                    raise _fail(at, f"spelling {spelling!r} is used twice in the table")
                seen.add(spelling)
            entries.append(made)
        if not entries:
            raise _fail(where, "has no entries")
        open_prefix = body.get("open_prefix")
        if open_prefix is not None and not isinstance(open_prefix, str):
            raise _fail(where, "'open_prefix' must be a string")
        tables[table_id] = CodeTable(
            id=table_id,
            name_zh=_str(body, "name_zh", where),
            entries=tuple(entries),
            source=_str(body, "source", where, ""),
            open_prefix=open_prefix,
        )
    return tables


def _item(
    raw: Mapping[str, Any],
    groups: Mapping[str, Any],
    tables: Mapping[str, CodeTable],
    index: int,
) -> Item:
    item_id = _str(raw, "id", f"catalogue items[{index}]")
    where = f"item {item_id}"
    if not _ID.match(item_id):
        raise _fail(where, "id must be lower_snake_case")
    name_zh = _str(raw, "name_zh", where)
    name_en = _str(raw, "name_en", where)
    for name in (item_id, name_zh, name_en):
        reason = prohibited_reason(name)
        if reason:
            raise _fail(where, f"prohibited information item ({reason})")

    raw_fields: list[Any] = []
    for group in _strs(raw, "include", where):
        body = groups.get(group)
        if not isinstance(body, dict):
            raise _fail(where, f"includes unknown field group {group!r}")
        raw_fields.extend(body.get("fields", []))
    raw_fields.extend(raw.get("fields", []))
    fields = tuple(_field(f, where, tables) for f in raw_fields)
    ids = [f.id for f in fields]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise _fail(f"{where} field {duplicates[0]}", "duplicate field id")
    by_id = {f.id: f for f in fields}

    subject_kinds = frozenset(_strs(raw, "subject_kinds", where))
    if not subject_kinds or not subject_kinds <= SUBJECT_KINDS:
        raise _fail(where, f"subject_kinds must be a non-empty subset of {sorted(SUBJECT_KINDS)}")
    share_type = _str(raw, "share_type", where)
    if share_type not in SHARE_TYPES:
        raise _fail(where, f"share_type {share_type!r} not in {sorted(SHARE_TYPES)}")
    modes = frozenset(_strs(raw, "disclosure_modes", where))
    if not modes <= DISCLOSURE_MODES:
        raise _fail(where, f"disclosure_modes must be a subset of {sorted(DISCLOSURE_MODES)}")
    info_nature = _str(raw, "info_nature", where)
    if info_nature not in INFO_NATURES:
        raise _fail(where, f"info_nature {info_nature!r} not in {sorted(INFO_NATURES)}")
    legal_basis = _str(raw, "legal_basis", where, "")
    personal = "natural_person" in subject_kinds

    if personal and "public" in modes:
        raise _fail(
            where,
            "an item that holds natural persons' data cannot have disclosure mode 'public' "
            "(山东省社会信用条例第二十条: 自然人的公共信用信息不得公开公示)",
        )
    if share_type == "none" and modes & {"public", "gov_sharing"}:
        raise _fail(
            where,
            "share_type 'none' contradicts disclosure modes 'public'/'gov_sharing' "
            "(国发〔2016〕51号)",
        )
    if share_type != "unconditional" and not legal_basis.strip():
        raise _fail(
            where,
            f"share_type {share_type!r} needs a legal_basis (国发〔2016〕51号: 有条件共享和不予共享"
            "须注明依据)",
        )

    max_months = raw.get("max_disclosure_months")
    if max_months is not None:
        if not isinstance(max_months, int) or isinstance(max_months, bool) or max_months < 0:
            raise _fail(where, "max_disclosure_months must be a non-negative integer")
        if max_months > MAX_DISCLOSURE_MONTHS:
            raise _fail(
                where,
                f"disclosure period of {max_months} months exceeds 5 years "
                "(山东省社会信用条例第三十八条: 失信信息披露期限最长不得超过五年)",
            )

    severity_rule = _str(raw, "severity_rule", where, "none")
    _check_severity_rule(severity_rule, by_id, tables, where)

    natural_key = _strs(raw, "natural_key", where)
    if not natural_key:
        raise _fail(where, "natural_key must name at least one field")
    for key in natural_key:
        if key != "subject_id" and key not in by_id:
            raise _fail(where, f"natural_key names unknown field {key!r}")

    decided_on = raw.get("decided_on")
    if decided_on is not None:
        if not isinstance(decided_on, str) or decided_on not in by_id:
            raise _fail(where, f"decided_on names unknown field {decided_on!r}")
        if by_id[decided_on].kind != "date":
            raise _fail(where, f"decided_on field {decided_on!r} is not a date")
    elif info_nature == "dishonesty":
        raise _fail(where, "a dishonesty item needs 'decided_on' (the date disclosure runs from)")
    if info_nature == "dishonesty" and (
        severity_rule == "none" or by_id[str(decided_on)].required != "M"
    ):
        raise _fail(
            where,
            "a dishonesty item needs a severity rule and a mandatory 'decided_on' field: every "
            "失信 record gets a disclosure period and the 5-year cap (令第36号; 山东省社会信用条例"
            "第三十八条)",
        )
    if info_nature != "dishonesty" and severity_rule != "none":
        raise _fail(where, f"severity_rule {severity_rule!r} on an item that is not dishonesty")

    conduct_end = raw.get("conduct_end")
    if conduct_end is not None:
        if not isinstance(conduct_end, str) or conduct_end not in by_id:
            raise _fail(where, f"conduct_end names unknown field {conduct_end!r}")
        if info_nature != "dishonesty":
            raise _fail(where, "conduct_end applies to dishonesty items only")
        if by_id[conduct_end].kind != "date" or conduct_end == decided_on:
            raise _fail(where, f"conduct_end field {conduct_end!r} must be a date of its own")

    valid_until, revoked_when = _validity(
        raw, by_id, tables, where, info_nature=info_nature, decided_on=decided_on
    )
    ended_when, ended_on = _ending(raw, by_id, tables, where, decided_on=decided_on)

    linked = _strs(raw, "linked_id_fields", where)
    for link in linked:
        if link not in by_id or not (by_id[link].check or "").startswith("person_id:"):
            raise _fail(where, f"linked_id_fields names {link!r}, not a person-id field")

    checks = _strs(raw, "record_checks", where)
    for check in checks:
        needed = RECORD_CHECKS.get(check)
        if needed is None:
            raise _fail(where, f"unknown record check {check!r} (known: {sorted(RECORD_CHECKS)})")
        missing = sorted(needed - by_id.keys())
        if missing:
            raise _fail(where, f"record check {check!r} needs fields {missing}")

    for f in fields:
        _check_field_refs(f, by_id, tables, where)
    _check_subject_block(by_id, subject_kinds, where)

    return Item(
        id=item_id,
        name_zh=name_zh,
        name_en=name_en,
        category=_str(raw, "category", where),
        subject_kinds=subject_kinds,
        fields=fields,
        share_type=share_type,
        disclosure_modes=modes,
        info_nature=info_nature,
        severity_rule=severity_rule,
        legal_basis=legal_basis,
        provider=_str(raw, "provider", where),
        natural_key=natural_key,
        personal=personal,
        decided_on_field=decided_on,
        conduct_end_field=conduct_end,
        linked_id_fields=linked,
        valid_until_field=valid_until,
        revoked_when=revoked_when,
        ended_when=ended_when,
        ended_on_field=ended_on,
        max_disclosure_months=max_months,
        data_standard=_str(raw, "data_standard", where, ""),
        record_checks=checks,
    )


def _field(raw: Any, item_where: str, tables: Mapping[str, CodeTable]) -> Field:
    if not isinstance(raw, dict):
        raise _fail(item_where, "a field is not a table")
    field_id = _str(raw, "id", item_where)
    where = f"{item_where} field {field_id}"
    if not _ID.match(field_id):
        raise _fail(where, "id must be lower_snake_case")
    name_zh = _str(raw, "name_zh", where)
    for name in (field_id, name_zh):
        reason = prohibited_reason(name)
        if reason:
            raise _fail(where, f"prohibited information ({reason})")
    type_text = _str(raw, "type", where)
    kind, max_len, precision, scale = _parse_type(type_text, where)
    exact_len = kind == "C" and not type_text.startswith("C..")
    code_table = raw.get("code_table")
    if kind in ("code", "code_list"):
        if not isinstance(code_table, str):
            raise _fail(where, f"a {kind} field needs a code_table")
        if code_table not in tables:
            raise _fail(where, f"unknown code table {code_table!r}")
    elif code_table is not None:
        raise _fail(where, f"a {kind} field cannot have a code_table")
    sensitivity = _str(raw, "sensitivity", where, "public")
    if sensitivity not in SENSITIVITIES:
        raise _fail(where, f"sensitivity {sensitivity!r} not in {sorted(SENSITIVITIES)}")
    unit = raw.get("unit")
    if unit is not None and (kind != "N" or unit not in MONEY_UNITS):
        raise _fail(where, f"unit {unit!r}: only N fields carry a unit, and it is 元 or 万元")
    if kind == "N" and unit is None and (_MONEY_ID.search(field_id) or _looks_money(name_zh)):
        raise _fail(where, "a money field must state its unit ('元' or '万元')")
    required = _str(raw, "required", where, "O")
    try:
        parse_rule(required)
    except ValueError as error:
        raise _fail(where, f"required rule {required!r}: {error}") from None
    check = raw.get("check")
    if check is not None and (
        not isinstance(check, str) or not (check in FIXED_CHECKS or check.startswith("person_id:"))
    ):
        raise _fail(
            where,
            f"check {check!r} must be one of {sorted(FIXED_CHECKS)} or 'person_id:<id type field>'",
        )
    if check is not None and kind != "C":
        raise _fail(where, "identifier checks apply to C fields only")
    length = FIXED_CHECKS.get(check) if isinstance(check, str) else None
    if length is not None and not (exact_len and max_len == length):
        raise _fail(where, f"check {check!r} needs type C{length} (a fixed length)")
    past = raw.get("past", False)
    if not isinstance(past, bool) or (past and kind != "date"):
        raise _fail(where, "'past' is a boolean for date fields")
    return Field(
        id=field_id,
        name_zh=name_zh,
        kind=kind,
        max_len=max_len,
        precision=precision,
        scale=scale,
        required=required,
        code_table=code_table,
        sensitivity=sensitivity,
        unit=unit,
        check=check,
        past=past,
        note=_str(raw, "note", where, ""),
        exact_len=exact_len,
    )


def _looks_money(name_zh: str) -> bool:
    return any(mark in name_zh for mark in _MONEY_NAME)


def _parse_type(text: str, where: str) -> tuple[str, int | None, int | None, int | None]:
    if text in ("date", "code", "code_list", "bool"):
        return text, None, None, None
    match = _TYPE_C.match(text)
    if match:
        if int(match[2]) < 1:
            raise _fail(where, f"type {text!r}: a length of at least 1")
        return "C", int(match[2]), None, None
    match = _TYPE_N.match(text)
    if match:
        precision = int(match[1])
        scale = int(match[2] or 0)
        if not 0 < precision <= 38 or scale > precision:
            raise _fail(where, f"type {text!r}: need 0 < p <= 38 and q <= p")
        return "N", None, precision, scale
    raise _fail(where, f"type {text!r} not one of C..n, N..p,q, date, code, code_list, bool")


def _check_field_refs(
    f: Field, by_id: Mapping[str, Field], tables: Mapping[str, CodeTable], item_where: str
) -> None:
    where = f"{item_where} field {f.id}"
    assert f.kind in FIELD_KINDS
    condition = parse_rule(f.required)
    if condition is not None:
        other = by_id.get(condition.field_id)
        if other is None:
            raise _fail(where, f"required rule {f.required!r} names unknown field")
        if condition.op == "contains" and other.kind != "code_list":
            raise _fail(where, f"required rule {f.required!r}: 'contains' needs a code_list")
        if condition.op == "ge" and other.kind != "date":
            raise _fail(where, f"required rule {f.required!r}: '>=' needs a date field")
        if other.code_table is not None:
            table = tables[other.code_table]
            for value in condition.values:
                if table.lookup(value) is None:
                    raise _fail(
                        where,
                        f"required rule {f.required!r}: {value!r} is not in code table "
                        f"{other.code_table}",
                    )
    if f.check and f.check.startswith("person_id:"):
        type_field = by_id.get(f.check.split(":", 1)[1])
        if type_field is None or type_field.code_table != "id_type":
            raise _fail(where, f"check {f.check!r} must name an id_type code field")


def _validity(
    raw: Mapping[str, Any],
    by_id: Mapping[str, Field],
    tables: Mapping[str, CodeTable],
    where: str,
    *,
    info_nature: str,
    decided_on: object,
) -> tuple[str | None, str | None]:
    """The item's `valid_until` (a date field ending disclosure) and `revoked_when` (an
    equality rule on a field of the item). Only for items that are not dishonesty (those have
    令第36号 periods) and that name their start (`decided_on`)."""
    valid_until = raw.get("valid_until")
    revoked_when = raw.get("revoked_when")
    if valid_until is None and revoked_when is None:
        return None, None
    if info_nature == "dishonesty":
        raise _fail(
            where,
            "valid_until/revoked_when apply to items that are not dishonesty (a dishonesty "
            "entry ends with ended_when/ended_on, within its 令第36号 period)",
        )
    if decided_on is None:
        raise _fail(where, "valid_until/revoked_when need 'decided_on' (the date it runs from)")
    if valid_until is not None and (
        not isinstance(valid_until, str)
        or valid_until not in by_id
        or by_id[valid_until].kind != "date"
        or valid_until == decided_on
    ):
        raise _fail(where, f"valid_until {valid_until!r} must name a date field of its own")
    if revoked_when is not None:
        _check_state_rule("revoked_when", revoked_when, by_id, tables, where)
    return valid_until, revoked_when


def _ending(
    raw: Mapping[str, Any],
    by_id: Mapping[str, Field],
    tables: Mapping[str, CodeTable],
    where: str,
    *,
    decided_on: object,
) -> tuple[str | None, str | None]:
    """The item's `ended_when` (an equality rule on a field: 名单状态=移出) and `ended_on` (the
    date field it ended on: 移出日期), given together on an item that names its start
    (`decided_on`). The date field must be required whenever the rule holds (`M` or the same
    rule), so an ended entry always says when it ended."""
    ended_when = raw.get("ended_when")
    ended_on = raw.get("ended_on")
    if ended_when is None and ended_on is None:
        return None, None
    if ended_when is None or ended_on is None:
        raise _fail(where, "ended_when and ended_on go together (the state and the day it ended)")
    if decided_on is None:
        raise _fail(where, "ended_when/ended_on need 'decided_on' (the date it runs from)")
    if (
        not isinstance(ended_on, str)
        or ended_on not in by_id
        or by_id[ended_on].kind != "date"
        or ended_on == decided_on
    ):
        raise _fail(where, f"ended_on {ended_on!r} must name a date field of its own")
    _check_state_rule("ended_when", ended_when, by_id, tables, where)
    if by_id[ended_on].required not in ("M", ended_when):
        raise _fail(
            where,
            f"ended_on field {ended_on!r} must be required when {ended_when!r} holds (required "
            f"= 'M' or {ended_when!r}): an ended entry must say the day it ended",
        )
    return ended_when, ended_on


def _check_state_rule(
    name: str,
    rule: object,
    by_id: Mapping[str, Field],
    tables: Mapping[str, CodeTable],
    where: str,
) -> None:
    """Refuse a state rule (`revoked_when`, `ended_when`) that is not 'FIELD=V' on a field of
    the item with every V in its code table."""
    if not isinstance(rule, str):
        raise _fail(where, f"{name} must be a rule 'FIELD=V1|V2'")
    try:
        condition = parse_rule(rule)
    except ValueError as error:
        raise _fail(where, f"{name} {rule!r}: {error}") from None
    other = None if condition is None else by_id.get(condition.field_id)
    if condition is None or condition.op != "eq" or other is None:
        raise _fail(where, f"{name} {rule!r} must be 'FIELD=V' on a field")
    if other.code_table is not None:
        for value in condition.values:
            if tables[other.code_table].lookup(value) is None:
                raise _fail(
                    where,
                    f"{name} {rule!r}: {value!r} is not in code table {other.code_table}",
                )


def _check_severity_rule(
    rule: str, by_id: Mapping[str, Field], tables: Mapping[str, CodeTable], where: str
) -> None:
    if rule == "none":
        return
    kind, _, arg = rule.partition(":")
    if kind == "fixed" and arg in SEVERITIES:
        return
    if kind == "field" and arg in by_id:
        table_id = by_id[arg].code_table
        if table_id is not None and all(tables[table_id].by_key(s) is not None for s in SEVERITIES):
            return
        raise _fail(where, f"severity_rule {rule!r}: the field must use a table keyed by severity")
    raise _fail(
        where,
        f"severity_rule {rule!r} must be 'none', 'fixed:<minor|general|severe>' or "
        "'field:<field id>'",
    )


def _check_subject_block(by_id: Mapping[str, Field], kinds: frozenset[str], where: str) -> None:
    """The validator derives the subject from these fields, so the item must have them."""
    if len(kinds) > 1 and "subject_category" not in by_id:
        raise _fail(where, "an item for several subject kinds needs a subject_category field")
    if "natural_person" in kinds and not {"id_type", "id_number"} <= by_id.keys():
        raise _fail(where, "an item for natural persons needs id_type and id_number fields")
    if kinds & {"organisation", "individual_business"} and "uscc" not in by_id:
        raise _fail(where, "an item for organisations needs a uscc field")
