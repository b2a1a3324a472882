"""The catalogue's error family."""


class CatalogError(Exception):
    """Root of every error raised by the catalogue package."""


class CatalogInconsistent(CatalogError):  # noqa: N818 - names fixed by docs/decisions/0001
    """A catalogue file breaks one of its rules (the message names item, field and rule)."""


class InvalidIdentifier(CatalogError):  # noqa: N818 - names fixed by docs/decisions/0001
    """An ID number or USCC is malformed; the message says what is wrong, never the full value."""


class UnknownItem(CatalogError):  # noqa: N818 - names fixed by docs/decisions/0001
    """An item id or catalogue version is not in the catalogue."""
