"""Validating one record against its catalogue item.

`validate_record` is pure (no IO, no clock: `today` is passed in) and compiles each item's checks
once per catalogue, so it runs at tens of thousands of records per second (bench/catalog.py).
It refuses, with one FieldError per problem (field id, Chinese name, code, and a bilingual
message a clerk can act on):

- unknown fields (`unknown_field`), or `prohibited` when the name is prohibited information;
- text longer than `C..n`, or of another length than a fixed `C<n>`, or with control
  characters, numbers outside `N..p,q` or negative,
  dates that are not YYYY-MM-DD / YYYY/MM/DD / YYYYMMDD (or 2024年1月5日), decision dates after
  `today`, values outside a code table, booleans other than 是/否/true/false/1/0;
- missing mandatory fields, and conditionally mandatory ones when their rule holds;
- invalid identifiers (RIC for 身份证 numbers, USCC, GB 11714 organisation codes, 6-digit
  GB/T 2260 division codes), a subject kind the item does not hold;
- a stated birth date that contradicts the one in the 身份证 number (`birth_date_mismatch`);
- a dishonesty record decided from 2026-04-01 without 失信程度 (令第36号), whatever the
  catalogue's required rule says: without a grade it would have no lawful period;
- pre-2021 penalty types for decisions after 2021-07-14;
- summary-procedure penalties (Shandong Art. 13; rule in `_summary_procedure`);
- a severe-dishonesty organisation record without legal representative or principal (Art. 31);
- a validity end (`Item.valid_until_field`, the red list's 有效期至) on or before the decision
  day, a list entry's 移出日期 (`Item.ended_on_field`) before its listing day, a penalty's
  处罚有效期 before its decision day, and a licence's or qualification's 有效期至 before its
  有效期自 (`date_order`); an entry marked 移出 without its 移出日期 (`required`).

An entry whose validity has ended, that is revoked (`Item.revoked_when`, 状态=撤销) or that
has left its list (`Item.ended_when`, 名单状态=移出) is NOT refused: it gets `disclosure_end`
(the end, the decision day for a revoked one, the day before its 移出日期 for a removed one),
so it is stored `expired` and, as a new version, ends the earlier one that was still
disclosed (docs/catalog.md, "Validity of red-list entries", "Removal from a dishonesty
list"). `disclosure_end` is also bounded by the item's 有效期限 (`Item.max_disclosure_months`,
Shandong Art. 10), counted from the decision day.

Messages never contain an ID number or a person's name: values of non-public fields are not
shown, identifiers are masked.
"""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from catalog.conditions import Condition, parse_rule
from catalog.errors import InvalidIdentifier
from catalog.identifiers import (
    INVISIBLE_FORMAT_CHARS,
    USCC_PLACEHOLDER,
    compact,
    mask_identifier,
    normalize_admin_division,
    normalize_org_code,
    normalize_ric,
    normalize_uscc,
    ric_birth_date,
)
from catalog.loader import default_catalog
from catalog.model import (
    Catalog,
    CodeTable,
    Field,
    FieldError,
    Item,
    NormalisedRecord,
    ValidationResult,
)
from catalog.periods import ORDER_36_EFFECTIVE, UNGRADED, add_months
from catalog.prohibited import prohibited_reason

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DATE_SEP = re.compile(
    r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
)
_DATE_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DATE_ZH = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$")
_NUMBER = re.compile(r"^\+?(\d*)(?:\.(\d*))?$")
_GROUPED = re.compile(r"^\+?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")
_LIST_SPLIT = re.compile(r"[;；,，|]")
_TRUE = frozenset({"true", "1", "是", "y", "yes", "t"})
_FALSE = frozenset({"false", "0", "否", "n", "no", "f"})
_EARLIEST_YEAR = 1800
_HIDDEN = "（值已隐藏 value hidden）"

# 行政处罚法 Art. 51: fines a summary procedure may impose, in 万元 (200 元 / 3000 元)
_SUMMARY_FINE_LIMIT = {
    "natural_person": Decimal("0.02"),
    "individual_business": Decimal("0.02"),
    "organisation": Decimal("0.3"),
}
_SUMMARY_TYPES = frozenset({"警告", "罚款"})
# What a value is trimmed of: Unicode whitespace (as str.strip) and the invisible format
# characters exports carry (zero-width spaces and joiners, word joiner, byte-order mark), so that
# a mandatory name made only of them counts as missing instead of passing as a name.
_BLANK = "".join(ch for ch in map(chr, range(0x3001)) if ch.isspace()) + INVISIBLE_FORMAT_CHARS


class _Bad(Exception):
    """A field value is refused: `code` and the bilingual `text` (without the field name)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True)
class _Spec:
    field: Field
    normalise: Callable[[str], str]
    condition: Condition | None
    until: Mapping[str, datetime.date]  # labels of old code values -> last decision date


@dataclass(frozen=True)
class _Compiled:
    item: Item
    specs: Mapping[str, _Spec]
    order: tuple[_Spec, ...]
    mandatory: frozenset[str]
    conditional: tuple[_Spec, ...]
    id_checks: tuple[_Spec, ...]
    past: tuple[_Spec, ...]
    dated_codes: tuple[_Spec, ...]
    kind_by_label: Mapping[str, str]
    severity_by_label: Mapping[str, str]
    id_type_keys: Mapping[str, str]
    siblings: Mapping[str, tuple[str, ...]]  # subject kind -> items of this category that hold it
    revoked: Condition | None = None  # Item.revoked_when, values canonicalised
    ended: Condition | None = None  # Item.ended_when, values canonicalised


def _shown(f: Field, value: str) -> str:
    """How a bad value appears in its message: an identifier masked, anything else not at all.

    Not even a "public" field's value: a row whose columns slipped (an unquoted comma in a
    name) puts a person's name or number into a public field, and messages reach the console
    and logs. The reject report (0600) keeps the raw row for the operator.
    """
    if f.sensitivity == "identifier":
        return repr(mask_identifier(value))
    return _HIDDEN


def _error(f: Field, code: str, text: str) -> FieldError:
    return FieldError(f.id, f.name_zh, code, f"{f.name_zh}: {text}")


# --- value normalisers, one per field kind --------------------------------------------------


def _text(max_len: int | None, *, exact: bool = False) -> Callable[[str], str]:
    def normalise(value: str) -> str:
        if not value.isprintable() and _CONTROL.search(value):
            raise _Bad("bad_text", "含有控制字符 (contains control characters)")
        if max_len is not None and len(value) > max_len:
            raise _Bad(
                "too_long",
                f"长度 {len(value)} 超过上限 {max_len} (too long: {len(value)} > {max_len} "
                "characters)",
            )
        if exact and max_len is not None and len(value) != max_len:
            # `C<n>` without dots is a fixed length (facts §4.1: `C..n` is the variable one)
            raise _Bad(
                "bad_length",
                f"长度 {len(value)} 应为 {max_len} (fixed length: exactly {max_len} characters)",
            )
        return value

    return normalise


def parse_date(value: str) -> datetime.date:
    """Parse a date written YYYY-MM-DD, YYYY/MM/DD, YYYY.MM.DD, YYYYMMDD or 2024年1月5日 (an
    optional time of day is ignored); raises ValueError for anything else or an impossible day."""
    text = value
    if len(text) == 10 and text[4] == "-" and text[7] == "-" and text[:4].isdigit():
        day = datetime.date.fromisoformat(text)
    else:
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        match = _DATE_SEP.match(text) or _DATE_COMPACT.match(text) or _DATE_ZH.match(text)
        if match is None:
            raise ValueError("not a date")
        day = datetime.date(int(match[1]), int(match[2]), int(match[3]))
    if day.year < _EARLIEST_YEAR:
        raise ValueError("year before 1800")
    return day


def _date(f: Field) -> Callable[[str], str]:
    def normalise(value: str) -> str:
        try:
            return parse_date(value).isoformat()
        except ValueError:
            raise _Bad(
                "bad_date",
                f"日期无效 {_shown(f, value)} (expected YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)",
            ) from None

    return normalise


def _number(f: Field) -> Callable[[str], str]:
    precision = f.precision or 18
    scale = f.scale or 0
    int_digits = precision - scale
    what = f"N..{precision},{scale}"

    def normalise(value: str) -> str:
        text = value
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        if "," in text and _GROUPED.match(text):
            text = text.replace(",", "")
        if text.startswith("-"):
            raise _Bad("bad_number", f"不能为负数 {_shown(f, value)} (must not be negative)")
        match = _NUMBER.match(text)
        if match is None or not (match[1] or match[2]):
            raise _Bad(
                "bad_number",
                f"数值无效 {_shown(f, value)} (expected a plain decimal number, {what})",
            )
        whole = match[1].lstrip("0")
        frac = (match[2] or "").rstrip("0")
        if len(whole) > int_digits or len(frac) > scale:
            raise _Bad(
                "bad_number",
                f"数值超出范围 {_shown(f, value)} (at most {int_digits} digits before and "
                f"{scale} after the point, {what})",
            )
        return (whole or "0") + ("." + frac if frac else "")

    return normalise


def _unknown_code(f: Field, table: CodeTable, value: str) -> _Bad:
    labels = table.labels()
    hint = "、".join(labels[:8]) + ("…" if len(labels) > 8 else "")
    if table.open_prefix:
        hint += f"、{table.open_prefix}<名称>"
    return _Bad(
        "unknown_code",
        f"代码 {_shown(f, value)} 不在代码表《{table.name_zh}》中 (unknown code; expected: {hint})",
    )


def _code(f: Field, table: CodeTable) -> Callable[[str], str]:
    prefix = table.open_prefix
    labels = {
        spelling: entry.label
        for entry in table.entries
        for spelling in (entry.label, *entry.codes, *entry.aliases)
    }

    def normalise(value: str) -> str:
        label = labels.get(value)
        if label is not None:
            return label
        if prefix and value.startswith(prefix) and len(value) > len(prefix):
            return value
        raise _unknown_code(f, table, value)

    return normalise


def _code_list(f: Field, table: CodeTable) -> Callable[[str], str]:
    single = _code(f, table)
    known = {label: table.position(label) for label in table.labels()}

    def normalise(value: str) -> str:
        position = known.get(value)
        if position is not None:  # the common case: one canonical value
            return value
        found: dict[str, int] = {}
        extra: list[str] = []
        for raw_part in _LIST_SPLIT.split(value):
            part = raw_part.strip()
            if not part:
                continue
            pieces = [part] if table.lookup(part) is not None else part.split("、")
            for piece in pieces:
                label = single(piece.strip())
                position = table.position(label)
                if position is None:
                    if label not in extra:
                        extra.append(label)
                else:
                    found[label] = position
        if not found and not extra:
            raise _Bad("required", "必填项缺失 (required)")
        return ";".join([*sorted(found, key=found.__getitem__), *extra])

    return normalise


def _bool(f: Field) -> Callable[[str], str]:
    def normalise(value: str) -> str:
        lowered = value.lower()
        if lowered in _TRUE:
            return "true"
        if lowered in _FALSE:
            return "false"
        raise _Bad("bad_bool", f"应为“是”或“否” {_shown(f, value)} (expected true/false, 是/否)")

    return normalise


# --- compiling an item once per catalogue ---------------------------------------------------


def _compile(catalog: Catalog, item: Item) -> _Compiled:
    cached = catalog._compiled.get(item.id)
    if isinstance(cached, _Compiled):
        return cached
    specs: dict[str, _Spec] = {}
    for f in item.fields:
        table = catalog.code_tables[f.code_table] if f.code_table else None
        normalise: Callable[[str], str]
        if f.kind == "C":
            # identifiers are measured after separators are removed (catalog.identifiers)
            normalise = _text(None if f.check else f.max_len, exact=f.exact_len)
        elif f.kind == "N":
            normalise = _number(f)
        elif f.kind == "date":
            normalise = _date(f)
        elif f.kind == "bool":
            normalise = _bool(f)
        elif f.kind == "code" and table is not None:
            normalise = _code(f, table)
        elif table is not None:
            normalise = _code_list(f, table)
        else:  # pragma: no cover - the loader guarantees code fields have tables
            raise AssertionError(f.id)
        until = {e.label: e.until for e in table.entries if e.until is not None} if table else {}
        specs[f.id] = _Spec(f, normalise, None, until)
    # canonicalise the values of conditional rules through the other field's normaliser
    for field_id, spec in list(specs.items()):
        condition = parse_rule(spec.field.required)
        if condition is None:
            continue
        other = specs[condition.field_id]
        values = condition.values
        if condition.op != "ge":
            values = frozenset(other.normalise(v) for v in values)
        specs[field_id] = _Spec(
            spec.field,
            spec.normalise,
            Condition(condition.field_id, condition.op, values, condition.text),
            spec.until,
        )
    kinds = catalog.code_tables.get("subject_category")
    severity = catalog.code_tables.get("severity")
    id_types = catalog.code_tables.get("id_type")
    siblings: dict[str, tuple[str, ...]] = {}
    for kind in ("natural_person", "organisation", "individual_business"):
        siblings[kind] = tuple(
            other.id
            for other in catalog.items.values()
            if other.category == item.category and kind in other.subject_kinds
        )
    order = tuple(specs.values())
    revoked = _state_rule(item.revoked_when, specs)
    ended = _state_rule(item.ended_when, specs)
    compiled = _Compiled(
        item=item,
        specs=specs,
        order=order,
        mandatory=frozenset(s.field.id for s in order if s.field.required == "M"),
        conditional=tuple(s for s in order if s.condition is not None),
        id_checks=tuple(s for s in order if s.field.check),
        past=tuple(s for s in order if s.field.past),
        dated_codes=tuple(s for s in order if s.until),
        kind_by_label={e.label: e.key for e in kinds.entries if e.key} if kinds else {},
        severity_by_label={e.label: e.key for e in severity.entries if e.key} if severity else {},
        id_type_keys={e.label: e.key for e in id_types.entries if e.key} if id_types else {},
        siblings=siblings,
        revoked=revoked,
        ended=ended,
    )
    catalog._compiled[item.id] = compiled
    return compiled


# --- the record-level checks ----------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _uscc_cached(value: str) -> tuple[bool, str]:
    """Return (True, canonical code) or (False, the refusal message)."""
    # Organisations' codes repeat in every record of an authority; they are public, so caching
    # them is safe (person IDs are never cached).
    try:
        return True, normalize_uscc(value)
    except InvalidIdentifier as error:
        return False, str(error)


def _person_id(
    c: _Compiled, spec: _Spec, out: dict[str, str], value: str, today: datetime.date
) -> str:
    """Return the canonical id: a RIC for 身份证, else `<证件类型>:<compact number>`."""
    type_field = (spec.field.check or "").split(":", 1)[1]
    type_label = out.get(type_field, "身份证")  # the older 双公示 field was 法定代表人身份证号
    if c.id_type_keys.get(type_label) == "ric":
        return normalize_ric(value, today=today)
    number = compact(value)
    limit = spec.field.max_len or 64
    if not number or len(number) > limit:
        raise InvalidIdentifier(f"ID number {mask_identifier(number)}: length {len(number)}")
    return f"{type_label}:{number}"


def _summary_procedure(c: _Compiled, out: Mapping[str, str], kind: str) -> FieldError | None:
    """Shandong Art. 13 / 行政处罚法 Art. 51.

    Refuse when 处罚程序 is 简易程序. When it is not given, refuse penalties made only of 警告
    and/or 罚款 whose fine is at most 200 元 (natural person, individual business) or 3000 元
    (organisation): the penalties a summary procedure may impose. A record that states
    处罚程序=普通程序 is accepted whatever its size."""
    procedure = out.get("procedure")
    if procedure == "简易程序":
        return _error(
            c.specs["procedure"].field,
            "summary_procedure",
            "简易程序作出的行政处罚不纳入公共信用信息数据清单 (summary-procedure penalties are "
            "excluded: 山东省社会信用条例第十三条)",
        )
    if procedure is not None or "penalty_types" not in out:
        return None
    types = set(out["penalty_types"].split(";"))
    if not types <= _SUMMARY_TYPES:
        return None
    fine = Decimal(out.get("fine_wan_yuan", "0"))
    limit = _SUMMARY_FINE_LIMIT[kind]
    if "罚款" in types and fine > limit:
        return None
    return _error(
        c.specs["penalty_types"].field,
        "summary_procedure",
        f"仅警告或 {int(limit * 10000)} 元以下罚款且未注明处罚程序，"
        "视为简易程序处罚，不纳入数据清单；"
        "如按普通程序作出，请填写 处罚程序=普通程序 (warning or small fine without a stated "
        "procedure counts as summary procedure: 山东省社会信用条例第十三条, 行政处罚法第五十一条)",
    )


def _birth_date_matches_id(c: _Compiled, out: Mapping[str, str]) -> FieldError | None:
    """GB 11643: positions 7-14 of a citizen ID number are the birth date; a stated 出生日期
    that differs contradicts the number (one of the two is wrong). Neither value is shown."""
    stated, number = out.get("birth_date"), out.get("id_number")
    if stated is None or number is None or c.id_type_keys.get(out.get("id_type", "")) != "ric":
        return None
    born = ric_birth_date(number)
    if born is None or born.isoformat() == stated:
        return None
    return _error(
        c.specs["birth_date"].field,
        "birth_date_mismatch",
        "出生日期与证件号码中的出生日期不一致 (birth_date contradicts the birth date in "
        "id_number 证件号码; GB 11643)",
    )


# record check -> (start field, end field, message): the end may be the start day, not before
_DATE_ORDER: Mapping[str, tuple[str, str, str]] = {
    "penalty_valid_after_decision": (
        "decision_date",
        "penalty_valid_until",
        "处罚有效期不得早于处罚决定日期 (must not be before the decision date)",
    ),
    "valid_to_after_valid_from": (
        "valid_from",
        "valid_to",
        "有效期至不得早于有效期自 (must not be before valid_from)",
    ),
}


def _date_order(c: _Compiled, out: Mapping[str, str], check: str) -> FieldError | None:
    """An end date before its start date (one of the two is wrong); neither value is shown.
    A missing or bad date is reported by its own check, not here."""
    start, end, message = _DATE_ORDER[check]
    if start not in out or end not in out:
        return None
    if datetime.date.fromisoformat(out[end]) >= datetime.date.fromisoformat(out[start]):
        return None
    return _error(c.specs[end].field, "date_order", message)


def _responsible_person(c: _Compiled, out: Mapping[str, str], kind: str) -> FieldError | None:
    """Shandong Art. 31: an organisation on a severe-dishonesty list names its legal
    representative or principal, with an ID number so the person can be linked."""
    if kind != "organisation":
        return None
    if ("legal_rep_name" in out and "legal_rep_id_number" in out) or (
        "principal_name" in out and "principal_id_number" in out
    ):
        return None
    return _error(
        c.specs["legal_rep_name"].field,
        "legal_rep_missing",
        "严重失信的法人或非法人组织须载明法定代表人或主要负责人的姓名和证件号码 (legal "
        "representative or principal with ID number required: 山东省社会信用条例第三十一条)",
    )


def record_subject_kind(
    item_id: str, fields: Mapping[str, str | None], *, catalog: Catalog | None = None
) -> str | None:
    """The kind of subject (`natural_person`, `organisation`, `individual_business`) a record
    of `item_id` with these `fields` is about, as `validate_record` reads it; None when the
    fields name no kind the item holds (an unknown item, or no or an unknown 主体类别)."""
    cat = catalog or default_catalog()
    item = cat.items.get(item_id)
    if item is None:
        return None
    c = _compile(cat, item)
    if "subject_category" in c.specs:
        kind = c.kind_by_label.get((fields.get("subject_category") or "").strip(), "")
    else:
        (kind,) = item.subject_kinds
    return kind if kind in item.subject_kinds else None


def validate_record(
    item_id: str,
    values: Mapping[str, str | None],
    *,
    today: datetime.date,
    catalog: Catalog | None = None,
) -> ValidationResult:
    """Validate and normalise one record of `item_id` (see the module docstring for every rule).

    Returns a ValidationResult with the canonical record, or with every FieldError found (the
    record is then None). Raises UnknownItem for an item not in the catalogue. Pure: the same
    input always gives the same result.
    """
    cat = catalog if catalog is not None else default_catalog()
    c = _compile(cat, cat.item(item_id))
    item = c.item
    errors: list[FieldError] = []
    failed: set[str] = set()
    out: dict[str, str] = {}

    for key, raw in values.items():
        spec = c.specs.get(key)
        if spec is None:
            reason = prohibited_reason(key)
            if reason:
                errors.append(FieldError(key, "", "prohibited", f"{key}: {reason}"))
            else:
                errors.append(
                    FieldError(
                        key,
                        "",
                        "unknown_field",
                        f"{key}: 目录项“{item.name_zh}”中没有此数据项 (unknown field of item "
                        f"{item.id})",
                    )
                )
            continue
        if raw is None:
            continue
        text = (raw if raw.__class__ is str else str(raw)).strip(_BLANK)
        if not text:
            continue
        try:
            out[key] = spec.normalise(text)
        except _Bad as bad:
            errors.append(_error(spec.field, bad.code, bad.text))
            failed.add(key)

    missing = c.mandatory.difference(out, failed)
    if missing:
        errors.extend(
            _error(spec.field, "required", "必填项缺失 (required)")
            for spec in c.order
            if spec.field.id in missing
        )
    for spec in c.conditional:
        fid = spec.field.id
        if fid in out or fid in failed:
            continue
        if spec.condition is not None and spec.condition.holds(out):
            errors.append(
                _error(
                    spec.field,
                    "required",
                    f"必填项缺失：{spec.condition.text} 时必填 (required when "
                    f"{spec.condition.text})",
                )
            )

    # the subject
    if "subject_category" in c.specs:
        kind = c.kind_by_label.get(out.get("subject_category", ""), "")
    else:
        (kind,) = item.subject_kinds
    if kind and kind not in item.subject_kinds:
        others = [i for i in c.siblings.get(kind, ()) if i != item.id]
        hint = f"; use item {others[0]}" if others else ""
        errors.append(
            _error(
                c.specs["subject_category"].field,
                "wrong_subject_kind",
                f"本目录项不收录“{out['subject_category']}”的记录 (item {item.id} does not hold "
                f"this subject kind{hint})",
            )
        )

    # identifiers
    for spec in c.id_checks:
        fid = spec.field.id
        value = out.get(fid)
        if value is None:
            continue
        check = spec.field.check or ""
        try:
            if check == "uscc":
                good, text = _uscc_cached(value)
                if good:
                    out[fid] = text
                    continue
                if fid != "uscc" or compact(value) != USCC_PLACEHOLDER:
                    raise InvalidIdentifier(text)
                if kind != "individual_business":
                    raise InvalidIdentifier(
                        "USCC 00000000000000000X is allowed only for 个体工商户"
                    )
                out[fid] = USCC_PLACEHOLDER
                if "business_reg_no" not in out and "business_reg_no" in c.specs:
                    errors.append(
                        _error(
                            c.specs["business_reg_no"].field,
                            "required",
                            "统一社会信用代码为 00000000000000000X 时必填 (required when the "
                            "USCC is the individual-business placeholder)",
                        )
                    )
            elif check == "org_code":
                out[fid] = normalize_org_code(value)
            elif check == "admin_division":
                out[fid] = normalize_admin_division(value)
            else:
                out[fid] = _person_id(c, spec, out, value, today)
        except InvalidIdentifier as error:
            errors.append(_error(spec.field, "bad_identifier", f"证件号码/代码无效: {error}"))
            out.pop(fid, None)
            failed.add(fid)

    today_iso = today.isoformat()
    for spec in c.past:
        value = out.get(spec.field.id)
        if value is not None and value > today_iso:
            errors.append(
                _error(
                    spec.field,
                    "future_date",
                    f"日期晚于今天 {_shown(spec.field, value)} (date after today, {today_iso})",
                )
            )

    decided_on: datetime.date | None = None
    if item.decided_on_field and item.decided_on_field in out:
        decided_on = datetime.date.fromisoformat(out[item.decided_on_field])
    for spec in c.dated_codes:
        value = out.get(spec.field.id)
        if value is None or decided_on is None:
            continue
        for label in value.split(";"):
            until = spec.until.get(label)
            if until is not None and decided_on > until:
                errors.append(
                    _error(
                        spec.field,
                        "outdated_code",
                        f"“{label}”是旧目录的值，只适用于 {until} 及以前作出的决定 (value of the "
                        f"old list, valid for decisions up to {until})",
                    )
                )

    if kind in item.subject_kinds:
        for check in item.record_checks:
            if check == "summary_procedure":
                # a fine that did not parse has its own error; read as 0 it would add a
                # second, wrong one (a "small fine")
                fine_failed = "fine_wan_yuan" in failed
                problem = None if fine_failed else _summary_procedure(c, out, kind)
            elif check == "responsible_person":
                problem = _responsible_person(c, out, kind)
            elif check in _DATE_ORDER:
                problem = _date_order(c, out, check)
            else:
                problem = _birth_date_matches_id(c, out)
            if problem is not None:
                errors.append(problem)

    rule = item.severity_rule
    severity: str | None = None
    if rule.startswith("fixed:"):
        severity = rule[6:]
    elif rule.startswith("field:"):
        # A dishonesty record without 失信程度: lawful only before 2026-04-01, when 令第58号 set
        # one period for every grade. It is still 失信信息 with a period and the 5-year cap.
        severity = c.severity_by_label.get(out.get(rule[6:], ""), UNGRADED)
        if (
            severity == UNGRADED
            and decided_on is not None
            and decided_on >= ORDER_36_EFFECTIVE
            and all(e.field_id != rule[6:] for e in errors)  # the catalogue rule said it
        ):
            errors.append(
                _error(
                    c.specs[rule[6:]].field,
                    "required",
                    "必填项缺失：2026-04-01 及以后作出的决定须填写失信程度 (required for decisions "
                    "from 2026-04-01: 令第36号)",
                )
            )

    disclosure_end = _disclosure_end(c, out, decided_on, errors)

    if errors:
        return ValidationResult(None, tuple(errors))

    if kind == "natural_person":
        subject_id = out.get("id_number", "")
    elif out.get("uscc") == USCC_PLACEHOLDER:
        subject_id = "工商注册号:" + compact(out.get("business_reg_no", ""))
    else:
        subject_id = out.get("uscc", "")

    # Shandong Art. 31 links an organisation's record to the persons responsible for it; a
    # natural person's record naming someone (a child's 法定代理人) stays that person's own,
    # or it would be released on the other person's query and grant.
    linked: list[str] = []
    for fid in item.linked_id_fields if kind != "natural_person" else ():
        linked_id = out.get(fid)
        if linked_id and linked_id != subject_id and linked_id not in linked:
            linked.append(linked_id)

    conduct_ended_on: datetime.date | None = None
    if item.conduct_end_field and item.conduct_end_field in out:
        conduct_ended_on = datetime.date.fromisoformat(out[item.conduct_end_field])

    record = NormalisedRecord(
        item_id=item.id,
        catalog_version=cat.version,
        fields=MappingProxyType(out),
        subject_kind=kind,
        subject_id=subject_id,
        linked_subject_ids=tuple(linked),
        severity=severity,
        decided_on=decided_on,
        natural_key=tuple(
            subject_id if k == "subject_id" else out.get(k, "") for k in item.natural_key
        ),
        conduct_ended_on=conduct_ended_on,
        disclosure_end=disclosure_end,
    )
    return ValidationResult(record, ())


def _disclosure_end(
    c: _Compiled,
    out: Mapping[str, str],
    decided_on: datetime.date | None,
    errors: list[FieldError],
) -> datetime.date | None:
    """The record's `disclosure_end` (NormalisedRecord): the last day its own facts and its
    item let it be disclosed, None when nothing but its period (if any) bounds it.

    The decision day (the empty window) for a revoked entry; otherwise the earliest of its
    valid-until date, the day before its removal date when it is ended (名单状态=移出: from the
    移出日期 on it is not disclosed, 令第36号 Art. 3) and the last day of the item's 有效期限
    (`Item.max_disclosure_months` months from the decision day, Shandong Art. 10).
    Appends `date_order` (no value in the message) for a valid-until date not after the
    decision day or a removal date before it; a removal on the listing day itself is accepted
    and gives the empty window.
    """
    item = c.item
    if decided_on is None or item.decided_on_field is None:
        return None  # the decision day is missing or bad: already an error, or no such field
    if c.revoked is not None and c.revoked.holds(out):
        return decided_on
    ends: list[datetime.date] = []
    if item.max_disclosure_months is not None:
        ends.append(add_months(decided_on, item.max_disclosure_months))
    ended_on = item.ended_on_field
    if c.ended is not None and ended_on is not None and ended_on in out and c.ended.holds(out):
        # a missing 移出日期 is already a `required` error: the loader makes the field
        # required whenever `ended_when` holds
        removed = datetime.date.fromisoformat(out[ended_on])
        if removed < decided_on:
            errors.append(
                _error(
                    c.specs[ended_on].field,
                    "date_order",
                    f"不得早于{c.specs[item.decided_on_field].field.name_zh} (must not be "
                    "before the listing/decision date)",
                )
            )
            return None
        ends.append(max(removed - datetime.timedelta(days=1), decided_on))
    if item.valid_until_field is not None and item.valid_until_field in out:
        until = datetime.date.fromisoformat(out[item.valid_until_field])
        if until <= decided_on:
            errors.append(
                _error(
                    c.specs[item.valid_until_field].field,
                    "date_order",
                    "有效期至须晚于列入/决定日期 (must be after the decision date)",
                )
            )
            return None
        ends.append(until)
    return min(ends, default=None)


def _state_rule(rule: str | None, specs: Mapping[str, _Spec]) -> Condition | None:
    """An item's state rule (`revoked_when`, `ended_when`) with its values canonicalised, so
    that it holds for a row that wrote a code or an alias."""
    condition = parse_rule(rule) if rule else None
    if condition is None:
        return None
    return Condition(
        condition.field_id,
        condition.op,
        frozenset(specs[condition.field_id].normalise(v) for v in condition.values),
        condition.text,
    )


@dataclass(frozen=True)
class PeriodFacts:
    """What decides a record's disclosure window (the arguments of `record_period`)."""

    severity: str | None
    decided_on: datetime.date | None
    conduct_ended_on: datetime.date | None
    disclosure_end: datetime.date | None


def period_facts(
    item_id: str, values: Mapping[str, str | None], *, catalog: Catalog | None = None
) -> PeriodFacts:
    """Read leniently, from the fields of a record an earlier release accepted, only what
    decides its disclosure window: for a stored record that no longer passes
    `validate_record` (a check added since), whose window must still be bounded.

    Each field is normalised as `validate_record` would; one that does not normalise counts as
    absent, and nothing else is checked. Severity, decision day, end of the conduct and
    `disclosure_end` (the decision day for a revoked entry; valid-until, removal and the
    item's 有效期限) follow
    `validate_record`'s rules, except that where validation refuses the record they give the
    decision day (the empty window): a validity end on or before the decision day, a removal
    date before it, and an ended entry (移出) that states no removal date. Raises UnknownItem
    for an item not in the catalogue. Pure.
    """
    cat = catalog if catalog is not None else default_catalog()
    c = _compile(cat, cat.item(item_id))
    item = c.item
    out: dict[str, str] = {}
    for key, raw in values.items():
        spec = c.specs.get(key)
        text = (raw or "").strip()
        if spec is None or not text:
            continue
        try:
            out[key] = spec.normalise(text)
        except _Bad:
            continue

    def day(field_id: str | None) -> datetime.date | None:
        if not field_id or field_id not in out:
            return None
        try:
            return datetime.date.fromisoformat(out[field_id])
        except ValueError:
            return None

    decided_on = day(item.decided_on_field)
    rule = item.severity_rule
    severity: str | None = None
    if rule.startswith("fixed:"):
        severity = rule[6:]
    elif rule.startswith("field:"):
        severity = c.severity_by_label.get(out.get(rule[6:], ""), UNGRADED)
    end: datetime.date | None = None
    if decided_on is not None:
        if c.revoked is not None and c.revoked.holds(out):
            end = decided_on
        else:
            ends: list[datetime.date] = []
            if item.max_disclosure_months is not None:
                ends.append(add_months(decided_on, item.max_disclosure_months))
            if c.ended is not None and c.ended.holds(out):
                # ended on a day it does not state: ended by now (the refresh stores yesterday)
                removed = day(item.ended_on_field) or decided_on
                ends.append(removed - datetime.timedelta(days=1))
            until = day(item.valid_until_field)
            if until is not None:
                ends.append(until)
            end = None if not ends else max(min(ends), decided_on)
    return PeriodFacts(severity, decided_on, day(item.conduct_end_field), end)
