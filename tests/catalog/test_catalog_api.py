"""The public surface of `catalog` (docs/decisions/0001) is exported, sorted and documented."""

from __future__ import annotations

import inspect

import catalog

CONTRACT = {
    "CatalogError",
    "CatalogInconsistent",
    "InvalidIdentifier",
    "UnknownItem",
    "default_catalog",
    "load_catalog",
    "Catalog",
    "Item",
    "Field",
    "FieldError",
    "NormalisedRecord",
    "ValidationResult",
    "validate_record",
    "normalize_ric",
    "normalize_uscc",
    "mask_identifier",
    "DisclosurePeriod",
    "disclosure_period",
    "working_days_after",
    "prohibited_reason",
    "register_holidays",
    "working_days_after_checked",
    "WorkingDayResult",
}


def test_all_is_sorted_and_complete() -> None:
    assert catalog.__all__ == sorted(catalog.__all__)
    assert set(catalog.__all__) >= CONTRACT
    for name in catalog.__all__:
        assert hasattr(catalog, name), name


def test_public_callables_are_documented() -> None:
    for name in catalog.__all__:
        obj = getattr(catalog, name)
        if callable(obj):
            assert inspect.getdoc(obj), name


def test_validate_record_signature_matches_the_contract() -> None:
    params = inspect.signature(catalog.validate_record).parameters
    assert list(params) == ["item_id", "values", "today", "catalog"]
    assert params["today"].kind is inspect.Parameter.KEYWORD_ONLY
