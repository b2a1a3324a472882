"""The catalogue's error family."""


class CatalogError(Exception):
    """Root of every error raised by the catalogue package."""


class CatalogInconsistent(CatalogError):
    """A catalogue file breaks one of its rules (the message names item, field and rule)."""


class InvalidIdentifier(CatalogError):
    """An ID number or USCC is malformed; the message says what is wrong, never the full value."""


class UnknownItem(CatalogError):
    """An item id or catalogue version is not in the catalogue."""
