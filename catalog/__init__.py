"""The unified public-credit catalogue (see docs/decisions/0001-package-interfaces.md)."""

from catalog.errors import CatalogError, CatalogInconsistent, InvalidIdentifier, UnknownItem

__all__ = ["CatalogError", "CatalogInconsistent", "InvalidIdentifier", "UnknownItem"]
