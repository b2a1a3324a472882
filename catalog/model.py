"""The catalogue's value types: a catalogue, its items, fields and code tables, and the results
of validating a record against them.

Every object here is immutable once built. A `Catalog` is only ever built by `catalog.loader`,
after every consistency rule has passed, so code that holds one may rely on those rules
(no natural-person item is public, every referenced code table exists, money has a unit ...).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from catalog.errors import UnknownItem

SUBJECT_KINDS = frozenset({"natural_person", "organisation", "individual_business"})
SHARE_TYPES = frozenset({"unconditional", "conditional", "none"})
DISCLOSURE_MODES = frozenset({"public", "authorised_query", "gov_sharing"})
INFO_NATURES = frozenset({"basic", "dishonesty", "other"})
SENSITIVITIES = frozenset({"public", "personal", "identifier", "sensitive"})
FIELD_KINDS = frozenset({"C", "N", "date", "code", "code_list", "bool"})
SEVERITIES = ("minor", "general", "severe")


@dataclass(frozen=True)
class CodeEntry:
    """One value of a code table: the canonical label and the other spellings that mean it."""

    label: str  # canonical: the label text of the national exchange
    codes: tuple[str, ...] = ()  # local numeric codes, e.g. "01"
    aliases: tuple[str, ...] = ()  # other spellings in use, e.g. "居民身份证" for 身份证
    key: str | None = None  # stable English key where code needs one ("natural_person", "severe")
    until: datetime.date | None = None  # last decision date the value may be used for (old lists)


@dataclass(frozen=True)
class CodeTable:
    """A code table; `lookup` accepts a label, a code or an alias and returns the entry."""

    id: str
    name_zh: str
    entries: tuple[CodeEntry, ...]
    source: str = ""
    open_prefix: str | None = None  # e.g. "其他-": any value with this prefix is accepted as is
    _index: dict[str, tuple[int, CodeEntry]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for position, entry in enumerate(self.entries):
            for spelling in (entry.label, *entry.codes, *entry.aliases):
                self._index.setdefault(spelling, (position, entry))

    def lookup(self, value: str) -> CodeEntry | None:
        """Return the entry a label, code or alias names, or None (open-prefix values too)."""
        found = self._index.get(value.strip())
        return found[1] if found else None

    def position(self, value: str) -> int | None:
        """Return the table order of a label, code or alias (for sorting code lists), or None."""
        found = self._index.get(value.strip())
        return found[0] if found else None

    def labels(self) -> tuple[str, ...]:
        """Return the canonical labels in table order."""
        return tuple(entry.label for entry in self.entries)

    def by_key(self, key: str) -> CodeEntry | None:
        """Return the entry with this English key, or None."""
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None


@dataclass(frozen=True)
class Field:
    """One data item (column) of a catalogue item."""

    id: str
    name_zh: str
    kind: str  # "C" | "N" | "date" | "code" | "code_list" | "bool"
    max_len: int | None
    precision: int | None
    scale: int | None
    required: str  # "M" | "O" | a conditional rule, e.g. "subject_category=自然人"
    code_table: str | None
    sensitivity: str  # "public" | "personal" | "identifier" | "sensitive"
    unit: str | None  # money: "元" or "万元", always explicit
    # identifier check to run: "uscc" | "org_code" | "admin_division" | "person_id:<id type field>"
    check: str | None = None
    past: bool = False  # a date that cannot lie after `today` (decisions, listings)
    note: str = ""
    # `C<n>` (no dots) is a fixed length: exactly n characters; `C..n` is at most n (facts §4.1)
    exact_len: bool = False


@dataclass(frozen=True)
class Item:
    """One information item of the catalogue (a kind of record) with its sharing attributes."""

    id: str
    name_zh: str
    name_en: str
    category: str
    subject_kinds: frozenset[str]
    fields: tuple[Field, ...]
    share_type: str
    disclosure_modes: frozenset[str]
    info_nature: str
    severity_rule: str  # "none" | "fixed:<severity>" | "field:<field id>"
    legal_basis: str
    provider: str
    natural_key: tuple[str, ...]  # field ids; "subject_id" names the derived subject id
    personal: bool  # True when the item can hold a natural person's data
    decided_on_field: str | None = None  # the date that starts disclosure
    # the date the dishonest conduct ended (Shandong Art. 38 counts the 5-year cap from it)
    conduct_end_field: str | None = None
    linked_id_fields: tuple[str, ...] = ()  # person-id fields linked to the subject (Art. 31)
    # a date field ending the entry's validity (红名单 有效期至): disclosure stops after it
    valid_until_field: str | None = None
    # a condition (catalog.conditions syntax) marking an entry revoked (状态=撤销): never shown
    revoked_when: str | None = None
    # a condition marking a dishonesty-list entry as ended (名单状态=移出) and the date field it
    # ended on (移出日期): not disclosed or shared from that day on
    ended_when: str | None = None
    ended_on_field: str | None = None
    max_disclosure_months: int | None = None  # the item's longest disclosure (Shandong 有效期限)
    # "summary_procedure", "responsible_person", "birth_date_matches_id"
    record_checks: tuple[str, ...] = ()
    data_standard: str = ""
    _by_id: dict[str, Field] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update({f.id: f for f in self.fields})

    def field(self, field_id: str) -> Field:
        """Return the field with this id; raises UnknownItem naming the item and field."""
        try:
            return self._by_id[field_id]
        except KeyError:
            raise UnknownItem(f"item {self.id!r} has no field {field_id!r}") from None

    def has_field(self, field_id: str) -> bool:
        """Return True when the item has a field with this id."""
        return field_id in self._by_id


@dataclass(frozen=True)
class Catalog:
    """A loaded, consistent catalogue of one version."""

    version: str
    items: Mapping[str, Item]
    code_tables: Mapping[str, CodeTable]
    title: str = ""
    # per-item compiled validators, filled lazily by catalog.validation (not part of equality)
    _compiled: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def item(self, item_id: str) -> Item:
        """Return the item with this id; raises UnknownItem (naming the id and the version)."""
        try:
            return self.items[item_id]
        except KeyError:
            raise UnknownItem(
                f"unknown catalogue item {item_id!r} in catalogue version {self.version}"
            ) from None

    def __getstate__(self) -> dict[str, Any]:
        # A copy sent to another process (a feed-checking worker) carries the catalogue, not the
        # compiled validators: those are closures, and the copy compiles its own on first use.
        state = dict(self.__dict__)
        state["_compiled"] = {}
        return state

    def check_version(self, version: str) -> None:
        """Refuse a record validated against another catalogue version (raises UnknownItem)."""
        if version != self.version:
            raise UnknownItem(
                f"unknown catalogue version {version!r} (this node has {self.version})"
            )


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a record, in words a clerk understands (no personal data)."""

    field_id: str
    field_name_zh: str
    code: str
    message: str


@dataclass(frozen=True)
class NormalisedRecord:
    """A record that passed validation, in canonical form.

    `severity` is None exactly when the item is not dishonesty information; a dishonesty record
    always has one: its grade, or `catalog.periods.UNGRADED` when it was decided before
    2026-04-01 without 失信程度. `conduct_ended_on` is the stated end of the dishonest conduct
    (Shandong Art. 38), when the item has that field and the record fills it.
    `disclosure_end` is the last day the record may be disclosed by its own facts and its
    item, when any says so: the earliest of the red list's 有效期至 (`Item.valid_until_field`),
    the day before a list entry's 移出日期 (`Item.ended_when` / `Item.ended_on_field`) and the
    last day of the item's 有效期限 (`Item.max_disclosure_months`, from the decision day); the
    decision day itself (the empty window: never disclosed) when the entry is revoked
    (`Item.revoked_when`) or was removed on the day it was listed. `catalog.record_period`
    turns it into the window, bounding a dishonesty record's 令第36号 period with it.
    """

    item_id: str
    catalog_version: str
    fields: Mapping[str, str]
    subject_kind: str
    subject_id: str
    linked_subject_ids: tuple[str, ...]
    severity: str | None
    decided_on: datetime.date | None
    natural_key: tuple[str, ...]
    conduct_ended_on: datetime.date | None = None
    disclosure_end: datetime.date | None = None


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of `validate_record`: a record, or the reasons it was refused."""

    record: NormalisedRecord | None
    errors: tuple[FieldError, ...]

    @property
    def ok(self) -> bool:
        """True when the record was accepted (no errors)."""
        return self.record is not None and not self.errors
