"""The catalogue's error family."""


class CatalogError(Exception):
    """Root of every error raised by the catalogue package."""


class CatalogInconsistent(CatalogError):
    """A catalogue file breaks one of the rules it must keep (the message names item, field, rule)."""


class InvalidIdentifier(CatalogError):
    """An ID number or USCC is malformed; the message says what is wrong, never the full value."""


class UnknownItem(CatalogError):
    """An item id or catalogue version is not in the catalogue."""
