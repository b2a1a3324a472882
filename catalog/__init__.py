"""The unified public-credit catalogue (see docs/decisions/0001-package-interfaces.md).

Pure: no IO beyond loading its own data files, no crypto, no network. `default_catalog()` is the
shipped catalogue; `validate_record` turns a mapped row into a canonical `NormalisedRecord` or a
list of field errors; identifier, disclosure-period and working-day rules live beside it.
"""

from catalog.errors import CatalogError, CatalogInconsistent, InvalidIdentifier, UnknownItem
from catalog.identifiers import (
    mask_identifier,
    normalize_admin_division,
    normalize_org_code,
    normalize_ric,
    normalize_uscc,
    redact_identifiers,
    redacted_prefix,
    ric_full_age,
    shown_text,
)
from catalog.loader import default_catalog, load_catalog
from catalog.model import (
    Catalog,
    CodeEntry,
    CodeTable,
    Field,
    FieldError,
    Item,
    NormalisedRecord,
    ValidationResult,
)
from catalog.periods import (
    DisclosurePeriod,
    add_months,
    disclosure_period,
    never_disclosed,
    record_period,
)
from catalog.prohibited import prohibited_reason
from catalog.validation import (
    PeriodFacts,
    parse_date,
    period_facts,
    record_subject_kind,
    validate_record,
)
from catalog.workdays import (
    WorkCalendar,
    WorkingDayResult,
    load_holiday_file,
    register_holidays,
    working_days_after,
    working_days_after_checked,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogInconsistent",
    "CodeEntry",
    "CodeTable",
    "DisclosurePeriod",
    "Field",
    "FieldError",
    "InvalidIdentifier",
    "Item",
    "NormalisedRecord",
    "PeriodFacts",
    "UnknownItem",
    "ValidationResult",
    "WorkCalendar",
    "WorkingDayResult",
    "add_months",
    "default_catalog",
    "disclosure_period",
    "load_catalog",
    "load_holiday_file",
    "mask_identifier",
    "never_disclosed",
    "normalize_admin_division",
    "normalize_org_code",
    "normalize_ric",
    "normalize_uscc",
    "parse_date",
    "period_facts",
    "prohibited_reason",
    "record_period",
    "record_subject_kind",
    "redact_identifiers",
    "redacted_prefix",
    "register_holidays",
    "ric_full_age",
    "shown_text",
    "validate_record",
    "working_days_after",
    "working_days_after_checked",
]
